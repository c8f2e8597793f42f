"""Temporal windows (``windows.py``): blend weights, the one-window path bit for bit, the exact solve over windows,
saving, reference rows per window, both families, settings errors and the CLI reading a whole long clip."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_one_line_error, moving_square

from vidinvert.editing import EditConfig, InjectionConfig, edit
from vidinvert.inversion import Inversion, invert, text_model_fn
from vidinvert.metrics import relative_error
from vidinvert.models import VideoModel
from vidinvert.provenance import parse_meta
from vidinvert.sampling import sample_ddim
from vidinvert.settings import InvertSettings, ReadSettings
from vidinvert.tiny import TinyConfig, build_tiny_pipeline
from vidinvert.windows import WindowedModel, plan, resolve, windowed


def _latents(model, frames: int, seed: int = 0) -> torch.Tensor:
    """Smooth random clean latents ``[1, frames, C, h, w]`` at the model's native size."""
    height, width = model.native_size()
    channels = model.transformer.config.in_channels
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 1, channels, height // 8, width // 8, generator=g)
    drift = torch.randn(1, 1, channels, height // 8, width // 8, generator=g)
    ramp = torch.linspace(0, 1, frames).view(1, frames, 1, 1, 1)
    return base + 0.5 * ramp * drift  # [1, T, C, h, w]


@pytest.fixture(scope="module")
def model():
    return VideoModel(build_tiny_pipeline(TinyConfig(style="5b")), name="tiny-5b")


# ---- the plan -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames,size,overlap", [(5, 3, 1), (9, 3, 1), (17, 3, 1), (7, 3, 2), (33, 13, 3),
                                                 (33, 21, 10), (22, 21, 5), (40, 4, 1), (6, 5, 2)])
def test_window_weights_sum_to_one_at_every_latent_frame(frames, size, overlap):
    windows = plan(frames, size, overlap)
    weights = windows.weights()  # [count, T]
    assert torch.allclose(weights.sum(dim=0), torch.ones(frames), atol=1e-6)
    assert (weights >= 0).all()
    for k, (start, stop) in enumerate(windows.spans()):
        assert weights[k, :start].eq(0).all() and weights[k, stop:].eq(0).all()  # nothing outside its window
        assert stop - start == size
    assert windows.starts[0] == 0 and windows.spans()[-1][1] == frames  # the whole clip, no frame left out
    for (_, stop), (start, _) in zip(windows.spans(), windows.spans()[1:]):
        assert stop - start >= overlap  # neighbours share at least the overlap


def test_demo_windows_double_with_the_clip():
    """Demo model (3 latent frames per window, overlap 1): 9, 17, 33, 65 frames -> 1, 2, 4, 8 windows."""
    assert [plan(t, 3, 1).count if t > 3 else 1 for t in (3, 5, 9, 17)] == [1, 2, 4, 8]


# ---- one window: today's path -----------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::vidinvert.exact.NotConvergedWarning")
def test_one_window_clip_is_todays_path_bit_for_bit(model, frames):
    latents = model.encode(frames)  # [1, 3, C, h, w]: one window of the tiny model's 13
    assert windowed(model, resolve(model, latents.shape[1], "auto")) is model
    today = invert(model, latents, steps=4, method="fixed-point", max_iter=3)
    for window in ("auto", 3):
        again = invert(model, latents, steps=4, method="fixed-point", max_iter=3, window=window)
        assert torch.equal(again.trajectory, today.trajectory)
        assert (again.meta.window, again.meta.window_overlap) == (0, 0)
        assert torch.equal(edit(model, again, "a blue box", EditConfig()), edit(model, today, "a blue box", EditConfig()))


# ---- windows: one map, exact inversion --------------------------------------------------------------------------
def test_fixed_point_round_trip_over_three_windows(model):
    latents = _latents(model, 7)  # windows of 3 sharing 1 frame: [0, 3), [2, 5), [4, 7)
    inversion = invert(model, latents, steps=10, method="fixed-point", tol=1e-7, max_iter=20, window=3, overlap=0.34)
    assert inversion.windows().spans() == [(0, 3), (2, 5), (4, 7)]
    fn = text_model_fn(windowed(model, inversion.windows()), "", "", 1.0)
    error = relative_error(sample_ddim(fn, inversion.noise, inversion.schedule(model)), latents)
    print(f"3-window fixed-point round trip: {error:.2e}")
    assert error <= 1e-5
    edited = edit(model, inversion, "", EditConfig(guidance=1.0))  # the editor takes the same windows
    assert relative_error(edited, latents) <= 1e-5


def test_windowed_prediction_is_the_weighted_blend(model):
    latents = _latents(model, 5)
    windows = plan(5, 3, 1)
    text = model.encode_text([""])
    blended = WindowedModel(model, windows).predict(latents, 500, text)
    weights = windows.weights()
    expected = torch.zeros_like(latents)
    for k, (start, stop) in enumerate(windows.spans()):
        expected[:, start:stop] += weights[k, start:stop].view(1, -1, 1, 1, 1) * model.predict(latents[:, start:stop], 500, text)
    assert torch.allclose(blended, expected, atol=1e-6)
    assert torch.equal(blended[:, :2], model.predict(latents[:, :3], 500, text)[:, :2])  # weight 1 off the seam


def test_save_load_keeps_the_windows_and_old_files_are_one_window(model, tmp_path):
    latents = _latents(model, 5)
    inversion = invert(model, latents, steps=3, window=3, overlap=0.25)
    loaded = Inversion.load(inversion.save(tmp_path / "x.inv"))
    assert (loaded.meta.window, loaded.meta.window_overlap) == (3, 1)
    assert loaded.windows() == inversion.windows() and loaded.windows().count == 2
    assert torch.equal(edit(model, loaded, "a blue box", EditConfig()), edit(model, inversion, "a blue box", EditConfig()))
    raw = inversion.meta.to_json()
    for key in ("window", "window_overlap"):
        raw.pop(key)
    old = parse_meta(json.loads(json.dumps(raw)), "old.inv")  # a file saved before windows
    assert (old.window, old.window_overlap) == (0, 0)
    from vidinvert.errors import VidinvertError

    for bad in ({"window": 5, "window_overlap": 1}, {"window": 3, "window_overlap": 3}, {"window": 0, "window_overlap": 1}):
        with pytest.raises(VidinvertError, match="damaged"):
            parse_meta({**raw, **bad}, "bad.inv")


def test_reference_rows_of_each_window_read_that_windows_trajectory(model, monkeypatch):
    latents = _latents(model, 5)
    inversion = invert(model, latents, steps=3, window=3)
    seen = []
    original = model.predict

    def spy(x, t, text):
        seen.append(x.clone())
        return original(x, t, text)

    monkeypatch.setattr(model, "predict", spy)
    edit(model, inversion, "a blue box", EditConfig(rows_per_call=None))  # main rows [uncond, cond] + 1 reference
    spans = inversion.windows().spans()
    assert len(seen) == len(inversion.meta.timesteps) * len(spans)
    for call, x in enumerate(seen):
        step, (start, stop) = divmod(call, len(spans))[0], spans[call % len(spans)]
        assert x.shape[:2] == (3, stop - start)  # window-local rows
        assert torch.equal(x[-1], inversion.trajectory[step][0, start:stop])  # this window of the stored step


# ---- both families ----------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::vidinvert.exact.NotConvergedWarning")
def test_wan_inverts_and_edits_in_windows():
    from vidinvert.models.wan import WanModel
    from vidinvert.tiny_wan import TinyWanConfig, build_tiny_wan_pipeline, native_size

    wan = WanModel(build_tiny_wan_pipeline(TinyWanConfig(style="2.1")), name="tiny-wan", native_size=native_size("2.1"))
    assert wan.temporal_patch == 1 and resolve(wan, 30, "auto").size == 21  # 81 frames -> 21 latent frames
    latents = wan.encode(moving_square(48, 64, 17))  # [1, 5, C, h, w]
    inversion = invert(wan, latents, steps=6, method="fixed-point", tol=1e-7, max_iter=16, window=3)
    assert inversion.windows().count == 2
    error = relative_error(edit(wan, inversion, "", EditConfig(guidance=1.0)), latents)
    assert error <= 1e-5
    assert edit(wan, inversion, "a blue box", EditConfig()).shape == latents.shape


# ---- settings -------------------------------------------------------------------------------------------------
def test_bad_window_settings_are_one_line_errors(model):
    assert_one_line_error(lambda: resolve(model, 5, 9), "window", "longer than the clip")
    assert_one_line_error(lambda: InvertSettings(window=3, overlap=1.0), "overlap", "below 1")
    assert_one_line_error(lambda: InvertSettings(window=3, overlap=1.5), "overlap", "below 1")  # not "in (0, 1]"
    assert_one_line_error(lambda: InvertSettings(window=3, overlap=0.0), "overlap")
    assert_one_line_error(lambda: InvertSettings(window="wide"), "window")
    assert_one_line_error(lambda: resolve(model, 5, 1), "window", "too short")
    patched = VideoModel(build_tiny_pipeline(TinyConfig(style="1.5")), name="tiny-1.5")
    assert patched.temporal_patch == 2
    assert_one_line_error(lambda: resolve(patched, 9, 3), "temporal patch (2)")
    assert resolve(patched, 9, 4).size == 4
    assert_one_line_error(lambda: invert(model, _latents(model, 5), steps=2, window=3, record_kv=True), "window")
    assert InvertSettings(window="13").window == 13  # a CLI string is read as a count


@pytest.mark.parametrize("name, size", [("tiny", 13), ("tiny-2b", 13), ("tiny-1.5", 12), ("tiny-wan", 21),
                                        ("tiny-wan22", 21)])
def test_auto_window_is_a_valid_window_of_every_family(name, size):
    """auto = the trained length in latent frames, rounded down to the temporal patch: CogVideoX 1.5's 49 trained
    frames are 13 latent frames, which its patch of 2 cannot cut, so 12 (97 frames = 25 latent frames: 3 windows)."""
    from vidinvert.models import open_model
    from vidinvert.settings import ModelSettings

    family = open_model(ModelSettings(name=name, device="cpu", dtype="fp32"))
    windows = resolve(family, 25, "auto")
    assert windows.size == size and windows.size % family.temporal_patch == 0 and windows.count > 1
    assert (windows.size - 1) * family.temporal_factor + 1 <= family.trained_frames  # within the trained length


def test_cli_auto_window_on_cogvideox_1_5_inverts_a_97_frame_clip(clip97, tmp_path):
    from vidinvert.cli import main

    inv = tmp_path / "c.inv"
    assert main(["invert", str(clip97), "--model", "tiny-1.5", "--steps", "1", "--window", "auto", "--height", "32",
                 "--width", "32", "-o", str(inv), "--quiet"]) == 0
    saved = Inversion.load(inv)
    assert saved.meta.frames == 97 and (saved.meta.window, saved.windows().count) == (12, 3)


def test_cli_overlap_without_a_window_is_refused_before_the_model_loads(tmp_path, capsys, no_model):
    from vidinvert.cli import main
    from vidinvert.export import write_video

    clip = write_video(moving_square(32, 32, 9), tmp_path / "c.mp4", fps=8.0)
    for method in ("inversion", "flowedit"):
        assert main(["edit", str(clip), "--model", "tiny-wan", "--method", method, "--prompt", "x", "--overlap-fraction", "0.5",
                     "-o", str(tmp_path / "o.mp4")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["vidinvert: error: --overlap-fraction applies to temporal windows, and no --window is given; "
                       "give --window too, or drop --overlap-fraction"]
    assert not list(tmp_path.glob("o*"))


def test_memory_need_of_a_windowed_model_is_one_windows(model):
    one = model.memory_need(9, 64, 64, 3)["transformer"]
    assert WindowedModel(model, plan(17, 3, 1)).memory_need(65, 64, 64, 3)["transformer"] == one


# ---- the CLI reads the whole clip -------------------------------------------------------------------------------
def test_cli_windowed_reconstruct_reads_every_frame(tmp_path):
    from vidinvert.cli import main
    from vidinvert.export import write_video

    clip = tmp_path / "long.mp4"
    write_video(moving_square(64, 64, 61), clip, fps=8.0)  # more than ReadSettings' 49
    out = tmp_path / "r.mp4"
    assert main(["reconstruct", str(clip), "--model", "tiny", "--steps", "2", "--window", "3", "--overlap", "0.3",
                 "-o", str(out), "--no-comparison", "--save-inversion", str(tmp_path / "r.inv")]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["result"]["frames"] == 61
    assert record["read"]["max_frames"] is None and record["invert"]["window"] == 3
    assert (record["inversion"]["window"], record["inversion"]["window_overlap"]) == (3, 1)
    assert Inversion.load(tmp_path / "r.inv").windows().count == 8  # 16 latent frames
    assert ReadSettings().max_frames is None  # left to the job: the model's default frames unless windowed


# ---- long inversions resume; the batch job file takes the window -----------------------------------------------
def test_windowed_inversion_resumes_from_its_checkpoint(model, tmp_path, monkeypatch):
    from vidinvert.checkpoint import InversionCheckpoint

    latents = _latents(model, 5)
    path = tmp_path / "clip.inv.partial"
    real_step = InversionCheckpoint.step

    def step_then_stop(self, i, t, x):
        real_step(self, i, t, x)
        if len(self.done) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(InversionCheckpoint, "step", step_then_stop)
    with pytest.raises(KeyboardInterrupt):
        invert(model, latents, steps=4, window=3, checkpoint=path, checkpoint_every=1)
    monkeypatch.undo()
    one_window = invert(model, latents, steps=4, checkpoint=path, checkpoint_every=1)  # other windows: not resumed
    assert one_window.meta.resumed_steps == 0
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(InversionCheckpoint, "step", step_then_stop)
        invert(model, latents, steps=4, window=3, checkpoint=path, checkpoint_every=1)
    monkeypatch.undo()
    resumed = invert(model, latents, steps=4, window=3, checkpoint=path, checkpoint_every=1)
    assert resumed.meta.resumed_steps == 2 and not path.exists()
    assert torch.equal(resumed.trajectory, invert(model, latents, steps=4, window=3).trajectory)


def test_batch_rows_take_a_window(tmp_path):
    from vidinvert.batch.jobfile import ClipJob, clip_defaults, read_jobs

    (tmp_path / "a.mp4").write_bytes(b"")
    path = tmp_path / "jobs.jsonl"
    path.write_text(json.dumps({"video": "a.mp4", "prompts": ["x"], "window": "auto", "overlap": 0.5}) + "\n"
                    + json.dumps({"video": "a.mp4", "prompts": ["x"], "window": 3, "overlap": 1.5}) + "\n")
    good, bad = read_jobs(path, clip_defaults())
    assert isinstance(good, ClipJob) and good.invert.window == "auto" and good.invert.overlap == 0.5
    assert good.read.max_frames is None  # a windowed clip is read whole
    assert not isinstance(bad, ClipJob) and "overlap" in bad.error


def test_a_saved_inversion_keeps_its_windows(tmp_path):
    from vidinvert.cli import main
    from vidinvert.export import write_video

    clip = tmp_path / "long.mp4"
    write_video(moving_square(64, 64, 21), clip, fps=8.0)
    inv = tmp_path / "c.inv"
    assert main(["invert", str(clip), "--model", "tiny", "--steps", "2", "--window", "3", "-o", str(inv), "--quiet"]) == 0
    same = ["edit", str(inv), "--model", "tiny", "--prompt", "x", "--no-comparison", "--quiet"]
    assert main(same + ["--window", "3", "-o", str(tmp_path / "a.mp4")]) == 0  # the same windows: fine
    assert main(same + ["-o", str(tmp_path / "b.mp4")]) == 0  # none asked for: the inversion's
    assert main(same + ["--window", "4", "-o", str(tmp_path / "c.mp4")]) == 2  # other windows: one-line error


# ---- window borders for the seam score --------------------------------------------------------------------------
def test_pixel_borders_are_where_windows_start_and_stop():
    """Demo layout, 33 frames = 9 latent frames in windows [0,3) [2,5) [4,7) [6,9): pixel spans [0,9) [5,17)
    [13,25) [21,33); a border b is between frames b-1 and b (``metrics.seam_score``)."""
    assert plan(9, 3, 1).pixel_borders(4) == (5, 9, 13, 17, 21, 25)
    assert plan(5, 3, 2).pixel_borders(4) == (1, 5, 9, 13)  # stride 1: every latent frame's edge
    assert plan(9, 9, 0).pixel_borders(4) == ()  # one window
    for windows in (plan(17, 3, 1), plan(40, 13, 3), plan(22, 21, 5)):
        weights = windows.weights()  # [count, T]
        pixel_frames = 4 * (windows.frames - 1) + 1
        latent_of = [0] + [(f - 1) // 4 + 1 for f in range(1, pixel_frames)]  # pixel frame -> its latent frame
        changes = {f for f in range(1, pixel_frames)
                   if not torch.equal(weights[:, latent_of[f]] > 0, weights[:, latent_of[f - 1]] > 0)}
        assert set(windows.pixel_borders(4)) == changes  # exactly where the set of contributing windows changes


def test_cli_windowed_edit_measures_a_seam_score_and_one_window_does_not(tmp_path):
    from vidinvert.cli import main
    from vidinvert.export import write_video

    clip = tmp_path / "long.mp4"
    write_video(moving_square(64, 64, 21), clip, fps=8.0)  # 6 latent frames
    for window, expect_seam in (("3", True), (None, False)):
        out = tmp_path / f"e{window}.mp4"
        args = ["edit", str(clip), "--model", "tiny", "--steps", "2", "--prompt", "a red disc", "-o", str(out),
                "--no-comparison", "--metrics", "--quiet"] + (["--window", window] if window else [])
        assert main(args) == 0
        metrics = json.loads(out.with_suffix(".json").read_text())["result"]["metrics"]
        assert len(metrics) == 1 and metrics[0]["pairs"] == 20
        assert (metrics[0]["seam_score"] is not None) == expect_seam
    # the recorded score is the metric of the written frames at the windows' borders, recomputed here independently
    from vidinvert.engine import run_edit
    from vidinvert.metrics import seam_score
    from vidinvert.settings import InvertSettings, ModelSettings, OutputSettings

    job = run_edit(str(clip), ["a red disc"], ModelSettings(name="tiny"), invert_settings=InvertSettings(
        steps=2, window=3), output=OutputSettings(output=str(tmp_path / "lib.mp4"), comparison=False,
                                                  progress=False, metrics=True))
    borders = job.prepared.inversion.windows().pixel_borders(4)
    assert len(borders) >= 2  # Windows.pixel_borders is checked against hand-made windows above
    expected = seam_score(job.videos[0], job.prepared.source.clip.frames, borders)
    recorded = json.loads((tmp_path / "e3.json").read_text())["result"]["metrics"][0]["seam_score"]
    assert recorded == pytest.approx(expected, abs=5e-7) and job.metrics[0].seam_score == pytest.approx(expected)
