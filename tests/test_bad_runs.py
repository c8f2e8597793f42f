"""Runs that go wrong: numerical faults, memory exhaustion, interruption and output safety."""

import json

import pytest
import torch

from vidinvert.attention import InjectionConfig
from vidinvert.cli import main
from vidinvert.editing import EditConfig, EditStats, edit
from vidinvert.errors import VidinvertError
from vidinvert.inversion import invert
from vidinvert.metrics import relative_error
from vidinvert.models import VideoModel
from vidinvert.outputs import plan_outputs
from vidinvert.export import write_video


@pytest.fixture
def video(tmp_path, frames):
    return write_video(frames, tmp_path / "clip.mp4", fps=8)


def _fail_at_call(monkeypatch, call_index, make_error=None, nan=False):
    """Make VideoModel.predict return NaN (or raise) from its ``call_index``-th call on."""
    original = VideoModel.predict
    calls = {"n": 0}

    def predict(self, latents, t, text):
        calls["n"] += 1
        if calls["n"] >= call_index:
            if make_error is not None:
                raise make_error()
            if nan:
                return original(self, latents, t, text) * float("nan")
        return original(self, latents, t, text)

    monkeypatch.setattr(VideoModel, "predict", predict)
    return calls


def test_nan_stops_at_its_step_with_a_hint(tiny_model, frames, monkeypatch):
    latents = tiny_model.encode(frames)
    _fail_at_call(monkeypatch, 3, nan=True)
    with pytest.raises(VidinvertError, match=r"inversion produced NaN/inf latents at step 3 \(timestep \d+\).*bf16"):
        invert(tiny_model, latents, steps=6)


def test_nan_during_edit_leaves_no_output(video, tmp_path, monkeypatch, capsys):
    _fail_at_call(monkeypatch, 6, nan=True)  # 4 inversion calls, then the edit's 2nd step
    out = tmp_path / "out.mp4"
    assert main(["edit", str(video), "--prompt", "x", "--steps", "4", "-o", str(out), "--quiet"]) == 2
    assert "sampling produced NaN/inf latents at step 1" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_out_of_memory_is_one_line_with_what_to_try(video, tmp_path, monkeypatch, capsys):
    _fail_at_call(monkeypatch, 2, make_error=lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert main(["edit", str(video), "--prompt", "x", "--steps", "3", "-o", str(tmp_path / "o.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "out of memory during inversion" in err and "cpu offload" in err and "VAE tiling" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_unwritable_output_folder_is_refused_before_any_compute(video, tmp_path, monkeypatch, capsys):
    calls = _fail_at_call(monkeypatch, 10**9)
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    assert main(["edit", str(video), "--prompt", "x", "-o", str(blocker / "out.mp4")]) == 2
    assert "cannot create output folder" in capsys.readouterr().err
    with pytest.raises(VidinvertError, match="cannot create output folder|not writable"):
        plan_outputs([tmp_path.parent / "/proc/vidinvert-test/out.mp4"], force=False)
    assert calls["n"] == 0
    created = tmp_path / "new" / "deeper"
    plan_outputs([created / "out.mp4"], force=False)
    assert created.is_dir()


def test_interrupted_inversion_resumes_from_its_checkpoint(video, tmp_path, monkeypatch, capsys):
    out = tmp_path / "clip.inv"
    args = ["invert", str(video), "--model", "tiny", "--steps", "6", "--checkpoint-every", "2", "-o", str(out), "--quiet"]
    _fail_at_call(monkeypatch, 5, make_error=KeyboardInterrupt)  # dies during the 5th step
    assert main(args) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists() and (tmp_path / "clip.inv.partial").is_dir()
    monkeypatch.undo()
    calls = _fail_at_call(monkeypatch, 10**9)
    assert main(args) == 0
    assert calls["n"] == 2  # 4 saved steps resumed, 2 computed
    assert not (tmp_path / "clip.inv.partial").exists()
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["result"]["steps"] == 6
    # the resumed inversion equals an uninterrupted one
    fresh = tmp_path / "fresh.inv"
    monkeypatch.undo()
    assert main(["invert", str(video), "--model", "tiny", "--steps", "6", "-o", str(fresh), "--quiet"]) == 0
    from vidinvert.inversion import Inversion

    assert torch.allclose(Inversion.load(out).trajectory, Inversion.load(fresh).trajectory, atol=1e-6)


def test_checkpoint_of_other_settings_is_not_used(tiny_model, frames, tmp_path):
    latents = tiny_model.encode(frames)
    path = tmp_path / "x.partial"
    from vidinvert.checkpoint import InversionCheckpoint

    saver = InversionCheckpoint(path, 1, {"other": "settings"})
    saver.step(5, 100, torch.zeros_like(latents))
    assert path.is_dir()
    result = invert(tiny_model, latents, steps=6, checkpoint=path, checkpoint_every=2)
    assert result.meta.resumed_steps == 0 and not path.exists()
    assert torch.allclose(result.trajectory, invert(tiny_model, latents, steps=6).trajectory)


def test_kv_reuse_after_fixed_point_equals_recomputing_the_reference(tiny_model, frames):
    latents = tiny_model.encode(frames)
    inversion = invert(tiny_model, latents, steps=12, method="fixed-point", max_iter=20, record_kv=True)
    stored = len(inversion.meta.timesteps)  # 12 steps, the last one cut in two
    assert stored == 13 and inversion.kv_cache.exact and sorted(inversion.kv_cache.entries) == list(range(stored))
    stats = EditStats()
    reused = edit(tiny_model, inversion, "a blue box", EditConfig(injection=InjectionConfig(reuse_kv=True)), stats=stats)
    assert stats.batch_rows == [2] * stored  # no reference row evaluated
    recomputed = edit(tiny_model, inversion, "a blue box", EditConfig())
    assert relative_error(reused, recomputed) < 1e-4


def test_kv_reuse_refusals_and_budget(tiny_model, frames):
    latents = tiny_model.encode(frames)
    plain = invert(tiny_model, latents, steps=3)
    with pytest.raises(VidinvertError, match="record_kv"):
        edit(tiny_model, plain, "x", EditConfig(injection=InjectionConfig(reuse_kv=True)))
    with pytest.warns(UserWarning, match="over the .* budget; nothing recorded"):
        small = invert(tiny_model, latents, steps=3, record_kv=True, kv_budget_gb=1e-6)
    assert small.kv_cache is None
    with pytest.raises(ValueError, match="reference text 'inversion'"):
        InjectionConfig(reuse_kv=True, reference_text="edit")
