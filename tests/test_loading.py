"""Loading pipelines the way real weights load, and the CogVideoX adapter's own checks (what every family shares is
in test_families.py)."""

import json
import warnings

import pytest
import torch

from vidinvert.errors import VidinvertError
from vidinvert.models import CogVideoXModel, load_pipeline, resolve_device, resolve_dtype


def test_save_pretrained_then_load_pipeline_gives_the_same_model(tiny_pipes, tmp_path, frames):
    for style, pipe in tiny_pipes.items():
        folder = tmp_path / style
        pipe.save_pretrained(folder)
        loaded = CogVideoXModel(load_pipeline(str(folder), dtype="fp32", device="cpu"))
        original = CogVideoXModel(pipe)
        assert loaded.fingerprint() == original.fingerprint()
        x = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        text = original.encode_text(["a red disc"])
        assert torch.equal(loaded.encode_text(["a red disc"]), text)
        assert torch.allclose(loaded.predict(x, 400, text), original.predict(x, 400, text), atol=1e-6)
        assert loaded.pipe.scheduler.config.snr_shift_scale == (3.0 if style == "2b" else 1.0)


def test_load_pipeline_errors(tmp_path):
    with pytest.raises(VidinvertError, match="model not found"):
        load_pipeline(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VidinvertError, match="no model_index.json"):
        load_pipeline(str(tmp_path / "empty"))
    other = tmp_path / "sd"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(VidinvertError, match="StableDiffusionPipeline pipeline, which vidinvert cannot edit"):
        load_pipeline(str(other))
    with pytest.raises(VidinvertError, match="unknown dtype"):
        resolve_dtype("fp8")
    with pytest.raises(VidinvertError, match="unknown device"):
        resolve_device("quantum")
    if not torch.cuda.is_available():
        with pytest.raises(VidinvertError, match="no CUDA device"):
            resolve_device("cuda")
        with pytest.raises(VidinvertError, match="needs a CUDA device"):
            load_pipeline("tiny", cpu_offload="model", device="cpu")


def test_cogvideox_1_5_layout_pads_latent_frames_like_the_pipeline(frames):
    """Temporal patches (p_t = 2) with an odd latent frame count: padded at the front, stripped after."""
    from vidinvert.editing import EditConfig, edit
    from vidinvert.inversion import invert
    from vidinvert.tiny import TinyConfig, build_tiny_pipeline

    model = CogVideoXModel(build_tiny_pipeline(TinyConfig(style="1.5")))
    assert model.config.patch_size_t == 2
    latents = model.encode(frames)  # [1, 3, 4, 8, 8]: 3 latent frames, not a multiple of 2
    text = model.encode_text(["a red disc"])
    pred = model.predict(latents, 500, text)
    assert pred.shape == latents.shape
    padded = torch.cat([latents[:, :1], latents], dim=1)  # what predict feeds the transformer
    direct = model.transformer(hidden_states=padded, encoder_hidden_states=text,
                               timestep=torch.tensor([500]), image_rotary_emb=model.rotary(4, 8, 8),
                               return_dict=False)[0]
    assert torch.allclose(pred, direct[:, 1:], atol=1e-6)
    inversion = invert(model, latents, steps=4)
    assert edit(model, inversion, "a blue box", EditConfig()).shape == latents.shape


def test_frame_counts_beyond_the_position_table_warn(tiny_model):
    frames = torch.zeros(53, 3, 64, 64)  # the tiny models' tables are made for 49 frames, as CogVideoX's
    with pytest.warns(UserWarning, match="more than the 49 this model's positions were made for"):
        tiny_model.check_frames(frames)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_model.check_frames(torch.zeros(9, 3, 64, 64))


def test_learned_position_tables_refuse_other_sizes(tiny_model, monkeypatch):
    from types import SimpleNamespace

    learned = SimpleNamespace(**{**dict(tiny_model.config), "use_learned_positional_embeddings": True})
    monkeypatch.setattr(tiny_model, "config", learned)
    with pytest.raises(VidinvertError, match="learned position table only takes 64x64"):
        tiny_model.check_frames(torch.zeros(9, 3, 64, 128))


def test_fp16_on_the_cpu_is_refused_before_loading(tmp_path, capsys):
    from vidinvert.cli import main

    assert main(["edit", "--model", "tiny", "--dtype", "fp16", "--device", "cpu", "--prompt", "x",
                 "-o", str(tmp_path / "o.mp4")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "vidinvert: error: fp16 does not run on the CPU in useful time (diffusers does not support fp16 there); use "
        "--dtype fp32 or bf16 on the CPU, or fp16 on a CUDA device"]
    assert not list(tmp_path.iterdir())
