"""The model options GPU users need, end to end through the CLI on the tiny models (and once on the demo model):
group offloading, layerwise fp8 casting, the attention backend, LoRAs; each recorded in the settings JSON, each bad
value a one-line error (exit status 2) naming the option.

On the CPU group offloading moves weights from the CPU to the CPU, so its output equals the plain run's bit for bit;
fp8 storage changes the weights, so its output is close to, not equal to, the plain run's.
"""

import hashlib
import json

import pytest
import torch

from vidinvert.cli import main
from vidinvert.export import write_video
from vidinvert.inversion import Inversion
from vidinvert.models import load_pipeline
from vidinvert.video import read_video

CASTING_BOUND = 0.1  # fp8 (e4m3: 3 mantissa bits) weights: mean |difference| of the decoded frames, in [-1, 1] units


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from conftest import moving_square

    return write_video(moving_square(32, 32, 9), tmp_path_factory.mktemp("clip") / "clip.mp4", fps=8)


def _edit(tmp_path, video, tag, *flags, model="tiny", code=0):
    """``vidinvert edit`` with two steps; returns (decoded frames [F, C, H, W], settings JSON, inverted noise)."""
    out = tmp_path / f"{tag}.mp4"
    argv = ["edit", str(video), "--prompt", "a red disc", "--steps", "2", "--model", model, "-o", str(out),
            "--save-inversion", str(tmp_path / f"{tag}.inv"), "--no-comparison", "--quiet", *flags]
    assert main(argv) == code
    settings = json.loads(out.with_suffix(".json").read_text())
    return read_video(out).frames, settings, Inversion.load(tmp_path / f"{tag}.inv").noise


def _lora(tmp_path, model="tiny", component="transformer", name="style"):
    """A random LoRA (peft, rank 2, B not zero) on every attention projection of ``model``'s ``component``, saved
    with diffusers' ``save_lora_weights``; returns its file."""
    from peft import LoraConfig, get_peft_model_state_dict

    pipe = load_pipeline(model, device="cpu")
    transformer = getattr(pipe, component)
    torch.manual_seed(0)
    transformer.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v"]))
    layers = {k: v * 4 for k, v in get_peft_model_state_dict(transformer).items()}  # large enough to show
    folder = tmp_path / name  # a second expert's LoRA is saved as any transformer's (--lora-2 says where it goes)
    type(pipe).save_lora_weights(folder, transformer_lora_layers=layers)
    return folder / "pytorch_lora_weights.safetensors"


def _refused(capsys, argv, *words):
    """``main(argv)`` exits with status 2 and one stderr line naming every word."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err, err
    line = err[-1].lower()
    for word in words:
        assert word.lower() in line, line
    return line


@pytest.mark.parametrize("model", ["tiny", "tiny-wan"])
def test_group_offload_equals_the_plain_run_and_is_recorded(tmp_path, video, model):
    plain, _, plain_noise = _edit(tmp_path, video, "plain", model=model)
    for mode, blocks in (("block", 2), ("leaf", 1)):
        frames, settings, noise = _edit(tmp_path, video, mode, "--group-offload", mode, "--group-offload-blocks",
                                        str(blocks), model=model)
        assert torch.equal(noise, plain_noise) and torch.equal(frames, plain)
        assert (settings["model"]["group_offload"], settings["model"]["group_offload_blocks"]) == (mode, blocks)


def test_layerwise_casting_is_close_to_the_plain_run_and_is_recorded(tmp_path, video):
    plain, plain_settings, plain_noise = _edit(tmp_path, video, "plain")
    frames, settings, noise = _edit(tmp_path, video, "fp8", "--layerwise-casting", "fp8_e4m3")
    assert not torch.equal(noise, plain_noise)
    assert 0 < (frames - plain).abs().mean() < CASTING_BOUND
    assert settings["model"]["layerwise_casting"] == "fp8_e4m3"
    assert settings["model"]["dtype_resolved"] == "float32"  # the compute dtype; only storage is fp8
    # fp8 weights are another model: an inversion made without them is not reused with them
    assert settings["inversion"]["model_fingerprint"] != plain_settings["inversion"]["model_fingerprint"]


def test_attention_backend_native_equals_the_default_and_is_recorded(tmp_path, video, capsys):
    plain, _, _ = _edit(tmp_path, video, "plain")
    frames, settings, _ = _edit(tmp_path, video, "native", "--attention-backend", "native")
    assert torch.equal(frames, plain) and settings["model"]["attention_backend"] == "native"
    _refused(capsys, ["edit", str(video), "--prompt", "x", "--model", "tiny", "--attention-backend", "flash",
                      "-o", str(tmp_path / "f.mp4")], "attention backend 'flash'", "native")
    _refused(capsys, ["edit", str(video), "--prompt", "x", "--model", "tiny", "--attention-backend", "warp",
                      "-o", str(tmp_path / "w.mp4")], "attention backend 'warp'", "use one of")


def test_lora_changes_the_output_scale_zero_does_not_and_the_inversion_knows_it(tmp_path, video, capsys):
    lora = _lora(tmp_path)
    plain, _, _ = _edit(tmp_path, video, "plain")
    frames, settings, _ = _edit(tmp_path, video, "lora", "--lora", f"{lora}:0.8")
    assert (frames - plain).abs().mean() > 1e-3
    assert settings["model"]["lora"] == [{"path": str(lora), "scale": 0.8}]
    assert settings["model"]["lora_resolved"] == [{"file": lora.name, "scale": 0.8,
                                                   "sha256": hashlib.sha256(lora.read_bytes()).hexdigest()}]
    zero, _, _ = _edit(tmp_path, video, "zero", "--lora", f"{lora}:0")
    assert torch.equal(zero, plain)
    # an inversion made with the LoRA is refused without it
    _refused(capsys, ["edit", str(tmp_path / "lora.inv"), "--prompt", "x", "--model", "tiny", "-o",
                      str(tmp_path / "reuse.mp4")], "another model")


def test_lora_2_reaches_the_second_expert(tmp_path, video):
    lora = _lora(tmp_path, "tiny-wan22", "transformer_2")
    plain, _, _ = _edit(tmp_path, video, "plain", model="tiny-wan22")
    frames, settings, _ = _edit(tmp_path, video, "lora2", "--lora-2", str(lora), model="tiny-wan22")
    assert (frames - plain).abs().mean() > 1e-4
    assert settings["model"]["lora_2"] == [{"path": str(lora), "scale": 1.0}] and settings["model"]["lora"] == []


def test_wan_vae_stays_float32_whatever_the_dtype(tmp_path, video):
    _, settings, _ = _edit(tmp_path, video, "bf16", "--dtype", "bf16", model="tiny-wan")
    assert (settings["model"]["dtype_resolved"], settings["model"]["vae_dtype_resolved"]) == ("bfloat16", "float32")
    _, settings, _ = _edit(tmp_path, video, "bf16c", "--dtype", "bf16", model="tiny")
    assert settings["model"]["vae_dtype_resolved"] == "bfloat16"  # CogVideoX's VAE follows --dtype


def test_bad_values_are_one_line_errors_naming_the_option(tmp_path, video, capsys):
    from safetensors.torch import save_file

    edit = ["edit", str(video), "--prompt", "x", "--model", "tiny", "-o", str(tmp_path / "bad.mp4")]
    _refused(capsys, [*edit, "--lora", str(tmp_path / "missing.safetensors")], "lora file not found")
    _refused(capsys, [*edit, "--lora", f"{_lora(tmp_path)}:1e9"], "lora scale")
    _refused(capsys, [*edit, "--lora-2", str(_lora(tmp_path))], "lora 2", "second expert")
    save_file({"weight": torch.zeros(2)}, tmp_path / "plain.safetensors")
    _refused(capsys, [*edit, "--lora", str(tmp_path / "plain.safetensors")], "lora", "could not be loaded")
    wan = _lora(tmp_path, "tiny-wan", name="wan")  # Wan's block names: nothing of CogVideoX's matches
    _refused(capsys, [*edit, "--lora", str(wan)], "lora", str(wan))
    _refused(capsys, [*edit, "--group-offload", "leaf", "--cpu-offload", "model"], "group offload", "cpu offload")
    _refused(capsys, [*edit, "--group-offload-blocks", "0"], "group offload blocks")
    _refused(capsys, [*edit, "--group-offload", "disk"], "--group-offload")
    _refused(capsys, [*edit, "--layerwise-casting", "fp4"], "--layerwise-casting")


def test_lora_text_splits_at_a_numeric_tail_only(tmp_path):
    from vidinvert.settings import LoraFile, parse_lora

    odd = tmp_path / "a:b.safetensors"
    odd.write_bytes(b"")
    assert parse_lora(str(odd)) == LoraFile(str(odd), 1.0)
    assert parse_lora(f"{odd}:0.5") == LoraFile(str(odd), 0.5)
    assert parse_lora([str(odd), 2]) == LoraFile(str(odd), 2.0)


@pytest.mark.slow
def test_demo_model_with_group_offload_fp8_and_a_lora(tmp_path, video):
    from vidinvert.demo import model_available

    if not model_available():
        pytest.skip("the demo model is not installed")
    lora = _lora(tmp_path, "demo")
    plain, _, _ = _edit(tmp_path, video, "plain", model="demo")
    frames, settings, _ = _edit(tmp_path, video, "all", "--group-offload", "block", "--layerwise-casting",
                                "fp8_e4m3", "--lora", f"{lora}:0.5", model="demo")
    assert 0 < (frames - plain).abs().mean() < 0.5
    model = settings["model"]
    assert (model["group_offload"], model["layerwise_casting"], model["lora_resolved"][0]["scale"]) == (
        "block", "fp8_e4m3", 0.5)
