"""Planning a job without loading it (``engine.budget``, ``models.traced``): the live-bytes count is exact on known
tensors; the trace of a fake model equals the same run on real weights (bytes alive at the peak and FLOPs, per
phase); the predicted peak of a whole CLI job is within 15% of the measured one; every published checkpoint can be
planned at its published size; the pre-flight check refuses before loading, naming what fits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vidinvert.cli import main
from vidinvert.engine import budget
from vidinvert.engine.budget import LiveBytes, plan_job
from vidinvert.errors import VidinvertError
from vidinvert.models import open_model
from vidinvert.models.published import PUBLISHED
from vidinvert.settings import EditConfig, InvertSettings, ModelSettings, ReadSettings

MIB = 2**20


def test_live_bytes_counts_new_storages_until_freed():
    a = torch.ones(1000, 250)  # 1 MB, made before the mode: not counted
    with LiveBytes() as live:
        b = a * 2  # +1 MB
        view = b[:10]  # a view: its storage is b's
        c = b + 1  # +1 MB: 2 MB alive
        del b, view, c  # 0 alive
        a.mul_(3)  # in place: nothing new
        d = torch.zeros(500, 500, dtype=torch.bfloat16)  # +0.5 MB
    assert live.peaks["start"] == 2 * 1000 * 250 * 4
    assert live.now == 500 * 500 * 2
    del d
    assert live.now == 0


def test_live_bytes_answers_scalars_a_trace_cannot_know():
    from vidinvert.models.traced import fake_mode

    mode = fake_mode()
    with mode:
        x = torch.zeros(4)
    with LiveBytes():
        assert bool(torch.isfinite(x).all()) is True
        assert float(x.norm()) == 0.0


def _phases_real(name: str, frames: int, size: int, steps: int, prompts: list[str]):
    """The job's phases on real weights, with the code the plan traces: (phase -> live bytes at peak, flops)."""
    from vidinvert.editing import edit
    from vidinvert.engine.plan import family_defaults
    from vidinvert.engine.run import decode
    from vidinvert.engine.source import Source, invert_source

    model = open_model(ModelSettings(name=name))
    read, invert_settings, config = family_defaults(model, ReadSettings(), InvertSettings(steps=steps), EditConfig(),
                                                    inverting=True)
    live, out = LiveBytes(), {}

    def run(phase, fn):
        counter = FlopCounterMode(display=False)
        with live.during(phase), counter, torch.no_grad():
            value = fn()
        out[phase] = (live.peaks[phase], counter.get_total_flops())
        return value

    with live:
        clip_frames = torch.zeros(frames, 3, size, size)
        latents = run("encode", lambda: model.encode(clip_frames))
        source = Source(clip=budget._FakeClip(clip_frames), latents=latents, hash="x", read=read)
        inversion = run("invert", lambda: invert_source(model, source, invert_settings))
        edited = run("edit", lambda: edit(model, inversion, prompts, config))
        run("decode", lambda: decode(model, edited))
    return out


@pytest.mark.parametrize("name", ["tiny", "tiny-wan"])
def test_trace_of_a_fake_model_equals_the_real_run(name):
    """Same code, fake tensors: every phase's bytes alive at its peak and its FLOPs equal the run on real weights
    (steps = TRACED_STEPS, so nothing is extrapolated)."""
    prompts = ["a red car", "a blue car"]
    steps = budget.TRACED_STEPS
    real = _phases_real(name, 9, 64, steps, prompts)
    plan = plan_job(None, prompts, ModelSettings(name=name), ReadSettings(height=64, width=64),
                    InvertSettings(steps=steps), frames=9, flop_rate=1e12)
    planned = {p.name: (p.peak_bytes, p.flops) for p in plan.phases if p.name != "load"}
    assert planned == real
    assert plan.seconds == pytest.approx(plan.flops / 1e12)


def test_more_steps_add_trajectory_entries_and_scale_flops():
    settings = dict(prompts=["a red car"], model_settings=ModelSettings(name="tiny"),
                    read=ReadSettings(height=64, width=64))
    two = plan_job(None, **settings, invert_settings=InvertSettings(steps=2), frames=9, flop_rate=1e12)
    ten = plan_job(None, **settings, invert_settings=InvertSettings(steps=10), frames=9, flop_rate=1e12)
    entry = 1 * 3 * 4 * 8 * 8 * 4  # one float32 trajectory entry [1, T=3, C=4, 8, 8] of the tiny model at 64x64
    a, b = {p.name: p for p in two.phases}, {p.name: p for p in ten.phases}
    assert b["edit"].peak_bytes - a["edit"].peak_bytes == 8 * entry
    assert b["encode"] == a["encode"] and b["load"] == a["load"]
    assert b["invert"].flops == 5 * a["invert"].flops and b["edit"].flops == 5 * a["edit"].flops


TEXT_TO_VIDEO = sorted(h for h, r in PUBLISHED.items() if r.pipeline in ("CogVideoXPipeline", "WanPipeline"))
LAYOUTS = ["THUDM/CogVideoX-5b", "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
           "Wan-AI/Wan2.2-T2V-A14B-Diffusers"]  # RoPE CogVideoX; Wan's 48-channel VAE and per-token timesteps; two experts


@pytest.mark.parametrize("hub_id", TEXT_TO_VIDEO)
def test_every_published_text_to_video_checkpoint_builds_as_a_fake_model(hub_id):
    """Every model of the checkpoint at its published size, in bf16 (a Wan VAE in float32), without memory."""
    from vidinvert.models.traced import fake_mode, traced_model, weights_bytes

    record = PUBLISHED[hub_id]
    model = traced_model(ModelSettings(name=hub_id, dtype="bf16"), fake_mode(), "cuda")
    assert model.published is record
    weights = weights_bytes(model.pipe)  # parameters and buffers
    for component, count in record.parameters.items():
        element = 4 if (component == "vae" and record.family == "wan") else 2
        module = model.pipe.components[component]
        assert sum(p.numel() * p.element_size() for p in module.parameters()) == count * element, component
        assert weights[component] >= count * element


@pytest.mark.slow
@pytest.mark.parametrize("hub_id", LAYOUTS)
def test_each_published_layout_plans_at_its_published_frame_size(hub_id):
    record = PUBLISHED[hub_id]
    plan = plan_job(None, ["a red car"], ModelSettings(name=hub_id, dtype="bf16"), ReadSettings(),
                    InvertSettings(steps=50), frames=9, device="cuda", device_memory=80 * 10**9)
    assert plan.published == hub_id and (plan.height, plan.width, plan.frames) == (record.height, record.width, 9)
    assert plan.peak_bytes > sum(plan.weights.values()) and plan.flops > 0
    record_json = plan.record()
    assert record_json["peak_bytes"] == plan.peak_bytes and set(record_json["phases"]) == {"encode", "invert", "edit",
                                                                                            "decode"}


def test_plan_cli_prints_one_json_object(capsys):
    assert main(["plan", "--model", "tiny", "--prompt", "a red car", "--height", "64", "--width", "64", "--steps", "2",
                 "--device-memory", "24GB", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["device_memory_bytes"] == 24 * 10**9 and record["fits"] is True
    assert record["peak_bytes"] == max(p["peak_bytes"] for p in record["phases"].values())


@pytest.mark.parametrize("value", ["24XB", "-3GB", "lots"])
def test_plan_refuses_a_bad_device_memory_in_one_line(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["plan", "--model", "tiny", "--prompt", "x", "--device-memory", value])
    assert exit_.value.code == 2
    assert "--device-memory" in capsys.readouterr().err


def test_preflight_refuses_before_loading_and_names_what_fits(tmp_path, monkeypatch, capsys):
    """A folder (the demo's configs, no weights: loading it would fail) asked for a size whose decode does not fit:
    refused by the plan, with the option that fits, before any weight is read. 128x128: the demo VAE tiles at 32 px,
    and a tiled plan traces every tile (512x512 took minutes)."""
    from vidinvert.demo import MODEL_DIR
    from vidinvert.models.published import _write_json

    folder = tmp_path / "model"
    for path in MODEL_DIR.rglob("*.json"):
        target = folder / path.relative_to(MODEL_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_json(target, json.loads(path.read_text()))
    for sub in ("tokenizer",):
        for path in (MODEL_DIR / sub).iterdir():
            (folder / sub / path.name).write_bytes(path.read_bytes())
    plain = plan_job(None, ["x"], ModelSettings(name=str(folder)), ReadSettings(height=128, width=128), frames=9,
                     device_memory=2**40)
    tiled = plan_job(None, ["x"], ModelSettings(name=str(folder), vae_tiling=True), ReadSettings(height=128, width=128),
                     frames=9, device_memory=2**40)
    assert tiled.peak_bytes < plain.peak_bytes
    room = (tiled.peak_bytes + plain.peak_bytes) // 2 - budget.resident_bytes()
    monkeypatch.setattr("vidinvert.models.device.available_memory", lambda device: room)
    code = main(["edit", "--model", str(folder), "--prompt", "x", "--height", "128", "--width", "128", "--steps", "2",
                 "-o", str(tmp_path / "out.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "error: this job needs about" in err and "fits with --vae-tiling" in err
    assert not list(tmp_path.glob("out*"))


@pytest.mark.slow
def test_predicted_peak_of_a_cli_job_is_within_15_percent_of_the_measured(tmp_path):
    """The demo model, 9 frames of 256x256: ``plan --json``'s peak_bytes against the job's own peak resident memory
    (``peak_rss_mib`` of its settings JSON), each in a fresh process."""
    args = ["--prompt", "a green disc", "--height", "256", "--width", "256", "--steps", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    plan = subprocess.run([sys.executable, "-m", "vidinvert.cli", "plan", *args, "--json"], capture_output=True,
                          text=True, env=env, check=True)
    predicted = json.loads(plan.stdout)["peak_bytes"]
    out = tmp_path / "edit.mp4"
    subprocess.run([sys.executable, "-m", "vidinvert.cli", "edit", *args, "-o", str(out)], capture_output=True,
                   env=env, check=True)
    measured = json.loads(out.with_suffix(".json").read_text())["result"]["peak_rss_mib"] * MIB
    assert abs(predicted / measured - 1) <= 0.15, (predicted / MIB, measured / MIB)


def test_load_peak_is_the_loaded_weights_plus_the_one_loading_twice():
    """Components load in order; the one loading holds its files' pages (reclaimable) beside its tensors."""
    assert budget._load_peak({"text_encoder": 4, "transformer": 10, "vae": 1}, {"text_encoder": 2, "transformer": 5,
                                                                                "vae": 1}) == (4 + 5 + 10, 5)
    assert budget._load_peak({"transformer": 10}, {}) == (10, 0)  # a model built in code reads no files
