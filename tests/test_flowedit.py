"""FlowEdit on the tiny random-weight Wan (fp32, CPU): identities, an independent step-by-step reference, batching,
evaluation counts, refusals and the CLI end to end."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_one_line_error, moving_square
from vidinvert.cli import main
from vidinvert.editing import EditStats
from vidinvert.errors import SettingsError
from vidinvert.export import write_video
from vidinvert.flowedit import flowedit
from vidinvert.models import load_pipeline, wrap
from vidinvert.settings import EditConfig, FlowEditConfig
from vidinvert.video import read_video

SOURCE = "a red square moving right"
TARGET = "a blue disc moving right"


def frames(height: int = 48, width: int = 64, count: int = 9) -> torch.Tensor:
    """The moving-square clip at Wan's tiny size ``[F, 3, H, W]``."""
    return moving_square(height, width, count)


@pytest.fixture(scope="module")
def wan():
    model = wrap(load_pipeline("tiny-wan", device="cpu", dtype=torch.float32), name="tiny-wan")
    assert model.dtype == torch.float32
    return model


@pytest.fixture(scope="module")
def x_src(wan) -> torch.Tensor:
    return wan.encode(frames())  # [1, T, C, h, w]


def config(guidance: float = 5.0, **flow) -> EditConfig:
    return EditConfig(method="flowedit", guidance=guidance, seed=7, flowedit=FlowEditConfig(**flow))


def reference_flowedit(model, x_src, source, target, guidance, source_guidance, steps, n_max, n_min, n_avg, seed):
    """The algorithm written out plainly, one prompt, every branch its own transformer call (no batching)."""
    schedule = model.schedule(steps)
    sigmas = [float(s) for s in schedule.sigma_from] + [float(schedule.sigma_to[-1])]
    embed = {text: model.encode_text([text]) for text in ("", source, target)}

    def velocity(z, t, text, scale):
        cond = model.predict(z, t, embed[text])
        return cond if scale == 1 else model.predict(z, t, embed[""]) + scale * (cond - model.predict(z, t, embed[""]))

    gen = torch.Generator().manual_seed(seed)
    z_edit, x_tar = x_src.clone(), None
    for i in range(steps - n_max, steps):
        t, s, s_next = schedule.timesteps[i], sigmas[i], sigmas[i + 1]
        if i < steps - n_min:
            dv = 0
            for _ in range(n_avg):
                eps = torch.randn(x_src.shape, generator=gen)
                z_src = (1 - s) * x_src + s * eps
                z_tar = z_edit + z_src - x_src
                dv = dv + (velocity(z_tar, t, target, guidance) - velocity(z_src, t, source, source_guidance)) / n_avg
            z_edit = z_edit + (s_next - s) * dv
        else:
            if x_tar is None:
                eps = torch.randn(x_src.shape, generator=gen)
                x_tar = z_edit + (1 - s) * x_src + s * eps - x_src
            x_tar = x_tar + (s_next - s) * velocity(x_tar, t, target, guidance)
    return z_edit if x_tar is None else x_tar


def test_same_prompt_and_guidance_returns_the_source(wan, x_src):
    """v_tar - v_src = 0 when z_tar = z_src, so z_edit never leaves x_src; a different prompt does move it."""
    same = flowedit(wan, x_src, SOURCE, [SOURCE], config(5.0, source_guidance=5.0, n_max=4), steps=4)
    assert same.shape == x_src.shape
    assert (same - x_src).abs().max().item() <= 1e-6
    moved = flowedit(wan, x_src, SOURCE, [TARGET], config(5.0, source_guidance=5.0, n_max=4), steps=4)
    assert (moved - x_src).abs().max().item() > 1e-3


def test_n_max_zero_returns_the_source_without_evaluating(wan, x_src):
    stats = EditStats()
    out = flowedit(wan, x_src, SOURCE, [TARGET, "x"], config(n_max=0), steps=4, stats=stats)
    assert torch.equal(out, x_src.repeat(2, 1, 1, 1, 1)) and stats.batch_rows == [] and stats.steps == 0


@pytest.mark.parametrize("n_min,n_avg", [(0, 1), (1, 2)])
def test_matches_a_plain_step_by_step_reference(wan, x_src, n_min, n_avg):
    got = flowedit(wan, x_src, SOURCE, [TARGET], config(5.0, source_guidance=2.0, n_max=3, n_min=n_min, n_avg=n_avg),
                   steps=5)
    want = reference_flowedit(wan, x_src, SOURCE, TARGET, 5.0, 2.0, steps=5, n_max=3, n_min=n_min, n_avg=n_avg, seed=7)
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()
    assert (got - x_src).abs().max().item() > 1e-3


def test_a_batch_of_prompts_equals_single_runs(wan, x_src):
    prompts = [TARGET, "a green triangle", SOURCE]
    cfg = config(4.0, n_max=3, n_min=1, n_avg=2)
    batch = flowedit(wan, x_src, SOURCE, prompts, cfg, steps=4)
    singles = torch.cat([flowedit(wan, x_src, SOURCE, [p], cfg, steps=4) for p in prompts])
    assert batch.shape[0] == 3
    assert torch.allclose(batch, singles, atol=1e-5, rtol=0)


@pytest.mark.parametrize("guidance,source_guidance,rows", [(5.0, 3.5, (2, 2)), (1.0, 1.0, (1, 1)), (5.0, 1.0, (1, 2))])
def test_evaluations_per_step_follow_the_formula(wan, x_src, guidance, source_guidance, rows):
    """Editing step: n_avg calls of S + K G rows; sampling (n_min) step: one call of K G rows."""
    source_rows, target_rows = rows
    k, steps, n_max, n_min, n_avg = 2, 6, 4, 1, 2
    stats = EditStats()
    flowedit(wan, x_src, SOURCE, [TARGET, "x"], config(guidance, source_guidance=source_guidance, n_max=n_max,
                                                       n_min=n_min, n_avg=n_avg), steps=steps, stats=stats)
    editing = [source_rows + k * target_rows] * (n_avg * (n_max - n_min))
    assert stats.batch_rows == editing + [k * target_rows] * n_min and stats.steps == n_max
    if guidance != 1.0 and source_guidance != 1.0:
        assert sum(stats.batch_rows[: n_avg * (n_max - n_min)]) / (n_max - n_min) / n_avg == 2 + 2 * k  # 4 for K=1


def test_default_n_max_is_33_of_50(wan, x_src):
    stats = EditStats()
    flowedit(wan, x_src, SOURCE, [TARGET], config(1.0, source_guidance=1.0), steps=6, stats=stats)
    assert stats.steps == round(6 * 33 / 50) == 4


def test_cogvideox_is_refused(tiny_model, x_src):
    assert_one_line_error(lambda: flowedit(tiny_model, x_src, SOURCE, [TARGET], config(), steps=4),
                          "FlowEdit needs a flow-matching model (Wan)")


def test_settings_are_validated():
    with pytest.raises(SettingsError, match="n_min"):
        FlowEditConfig(n_max=2, n_min=3)
    with pytest.raises(SettingsError, match="noise draws"):
        FlowEditConfig(n_avg=0)
    with pytest.raises(SettingsError, match="source guidance"):
        FlowEditConfig(source_guidance=0.5)
    with pytest.raises(SettingsError, match="K-RNR"):
        EditConfig(method="flowedit", krnr=2)
    with pytest.raises(SettingsError, match="edit method"):
        EditConfig(method="sdedit")
    with pytest.raises(SettingsError, match="exceeds the 4 steps"):
        FlowEditConfig(n_max=5).editing_steps(4)
    with pytest.raises(SettingsError, match="must not exceed"):
        FlowEditConfig(n_min=4).editing_steps(4)  # the default n_max is round(4 x 33/50) = 3
    assert FlowEditConfig(n_min=3).editing_steps(4) == (3, 3)


@pytest.fixture
def clip_path(tmp_path):
    clip = frames(count=9)
    return write_video(torch.cat([clip, clip.flip(0)[1:]]), tmp_path / "clip.mp4", fps=16)  # 17 frames


def test_cli_flowedit_end_to_end(clip_path, tmp_path, capsys):
    out = tmp_path / "fe.mp4"
    assert main(["edit", str(clip_path), "--model", "tiny-wan", "--method", "flowedit", "--prompt", "x",
                 "--steps", "4", "--n-max", "3", "--source-prompt", SOURCE, "-o", str(out), "--quiet",
                 "--metrics"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["frames"], summary["size"], summary["method"]) == (17, [48, 64], "flowedit")
    assert [m["pairs"] for m in summary["metrics"]] == [16]  # against the frames read
    assert summary["batch_rows"] == [4] and summary["transformer_calls"] == 3  # 2 source + 2 target rows, 3 steps
    written = read_video(str(out), 48, 64, max_frames=100)
    assert written.frames.shape[0] == 17  # the frames read, all written
    assert read_video(str(tmp_path / "fe_comparison.mp4"), 48, 128, max_frames=100).frames.shape[0] == 17
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["edit"]["method"] == "flowedit" and record["edit"]["flowedit"]["source_prompt"] == SOURCE
    assert record["invert"] is None and record["inversion"] is None


def test_cli_flowedit_refusals(clip_path, tmp_path, capsys):
    def refused(*args: str) -> str:
        code = main(["edit", str(clip_path), "--method", "flowedit", "--prompt", "x", "--steps", "4",
                     "-o", str(tmp_path / "r.mp4"), *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        return err[0]

    assert "flow-matching model (Wan)" in refused("--model", "tiny")
    assert "saved inversion" in refused("--model", "tiny-wan", "--save-inversion", str(tmp_path / "a.inv"))
    assert "n_max (5) exceeds the 4 steps" in refused("--model", "tiny-wan", "--n-max", "5")
    assert not (tmp_path / "r.mp4").exists()


@pytest.mark.slow
def test_cli_flowedit_edits_a_long_clip_in_windows(clip97, tmp_path, capsys):
    """--window applies to FlowEdit as to an inversion's edit: every frame is read (97, not Wan's 81) and each
    transformer evaluation runs per window (``windows.py``: the windowed model is one map of the whole latent)."""
    out = tmp_path / "w.mp4"
    assert main(["edit", str(clip97), "--model", "tiny-wan", "--method", "flowedit", "--prompt", TARGET, "--steps",
                 "2", "--n-max", "1", "--window", "auto", "--height", "32", "--width", "32", "-o", str(out),
                 "--quiet", "--no-comparison"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 97 and (summary["flowedit"]["window"], summary["flowedit"]["window_overlap"]) == (21, 5)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["read"]["max_frames"] is None and record["result"]["flowedit"]["window"] == 21


@pytest.mark.parametrize("flags, words", [
    (["--model", "tiny-wan", "--inversion", "fixed-point", "--tol", "1e-3"],
     "--inversion and --tol do not apply to FlowEdit, which makes no inversion; drop them, or use --method inversion"),
    (["--model", "tiny-wan", "--split-clean-end", "on", "--inversion-guidance", "2"],
     "--inversion-guidance and --split-clean-end do not apply to FlowEdit"),
    (["--model", "tiny-2b", "--window", "2"], "FlowEdit needs a flow-matching model (Wan)"),
])
def test_cli_flowedit_refuses_before_the_model_loads(clip_path, tmp_path, capsys, no_model, flags, words):
    out = tmp_path / "r.mp4"
    assert main(["edit", str(clip_path), "--method", "flowedit", "--prompt", "x", "--steps", "4", "-o", str(out),
                 *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidinvert: error: ") and words in err[0], err
    assert not list(tmp_path.glob("r*"))
