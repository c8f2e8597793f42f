"""The fixed-point solver on a toy denoiser with a known spectrum, and its report in saved inversions."""

import json
import math

import pytest
import torch

from vidinvert.exact import FixedPointReport, NotConvergedWarning, describe, invert_fixed_point, solve_fixed_point
from vidinvert.inversion import Inversion, invert, text_model_fn
from vidinvert.provenance import parse_meta
from vidinvert.metrics import relative_error
from vidinvert.sampling import sample_ddim


def gaussian_denoiser(scales: torch.Tensor, schedule, dtype=torch.float32):
    """``model_fn`` predicting v exactly for data ``x0 ~ N(0, diag(scales^2))``: the posterior mean is
    ``sa s^2 / (a s^2 + 1 - a) x``, so directions with ``s^2 << 1 - a`` are nearly projected away, as a trained
    denoiser does near t = 0. ``dtype`` rounds the output as a model running in it would."""

    def model_fn(x, i, t):
        a = float(schedule.alpha_from[i])
        sa, sb = math.sqrt(a), math.sqrt(1 - a)
        x0_hat = sa * scales**2 / (a * scales**2 + 1 - a) * x
        return ((sa * x - x0_hat) / sb).to(dtype).float()

    return model_fn


@pytest.fixture
def toy(tiny_pipes):
    from vidinvert.models import VideoModel

    schedule = VideoModel(tiny_pipes["5b"]).schedule(10)
    generator = torch.Generator().manual_seed(0)
    scales = torch.logspace(-1.3, 0, 512).view(1, 1, 2, 16, 16)  # [B, T, C, h, w]: well and ill conditioned directions
    x0 = torch.randn(1, 1, 2, 16, 16, generator=generator)
    return schedule, scales, x0


def test_the_clean_end_step_is_ill_conditioned_and_acceleration_helps(toy):
    schedule, scales, x0 = toy
    fn = gaussian_denoiser(scales, schedule)
    _, plain = solve_fixed_point(fn, x0, schedule, tol=1e-8, max_iter=8, slow_anderson=0)
    _, fast = solve_fixed_point(fn, x0, schedule, tol=1e-8, max_iter=8)
    assert plain.steps[-1].stop == "cap" and plain.steps[0].stop in ("tol", "predicted")  # only the clean end is hard
    assert fast.clean_residual < 0.9 * plain.clean_residual
    # the round trip's error is the clean-end step's residual
    trajectory, report = solve_fixed_point(fn, x0, schedule, tol=1e-8, max_iter=8)
    back = sample_ddim(fn, trajectory[0], schedule)
    assert relative_error(back, x0) == pytest.approx(report.clean_residual, rel=0.05)


def test_clean_max_iter_spends_more_only_on_the_clean_end_step(toy):
    schedule, scales, x0 = toy
    fn = gaussian_denoiser(scales, schedule)
    _, base = solve_fixed_point(fn, x0, schedule, tol=1e-8, max_iter=8)
    _, more = solve_fixed_point(fn, x0, schedule, tol=1e-8, max_iter=8, clean_max_iter=16)
    assert more.steps[-1].evaluations > 8 and max(more.evaluations[:-1]) <= 8
    assert more.clean_residual < base.clean_residual


def test_later_steps_follow_the_clean_end_residual(toy):
    schedule, scales, x0 = toy
    fn = gaussian_denoiser(scales, schedule)
    _, follow = solve_fixed_point(fn, x0, schedule, tol=1e-8, max_iter=8)
    _, strict = solve_fixed_point(fn, x0, schedule, tol=1e-8, max_iter=8, follow=0.0)
    assert follow.steps[0].target == pytest.approx(1e-3 * follow.clean_residual)
    assert sum(follow.evaluations) < sum(strict.evaluations)


def test_bf16_rounding_floor_stops_steps_instead_of_spending_the_cap(toy):
    schedule, scales, x0 = toy
    scales = scales.clamp_min(0.5)  # well conditioned: only rounding limits the residual
    fn32 = gaussian_denoiser(scales, schedule)
    fn16 = gaussian_denoiser(scales, schedule, torch.bfloat16)
    _, exact32 = solve_fixed_point(fn32, x0, schedule, tol=1e-7, max_iter=20)
    _, naive = solve_fixed_point(fn16, x0, schedule, tol=1e-7, max_iter=20)  # told float32: no floor
    _, aware = solve_fixed_point(fn16, x0, schedule, tol=1e-7, max_iter=20, precision=torch.bfloat16)
    assert sum(aware.evaluations) <= sum(naive.evaluations)
    assert sum(aware.evaluations) <= 1.5 * sum(exact32.evaluations)
    assert aware.clean_residual <= 1.5 * naive.clean_residual
    assert aware.precision == "bfloat16" and all(s.floor > 10 * e.floor for s, e in zip(aware.steps, exact32.steps))


def test_a_round_trip_short_of_its_target_but_invisible_is_a_note_not_a_warning(toy, monkeypatch):
    """The same stop is a warning above ``VISIBLE_RESIDUAL`` and a calm note (an ``errors.Note``, which front ends
    list as notes) below it."""
    import warnings

    from vidinvert import exact
    from vidinvert.engine import collect_warnings
    from vidinvert.errors import Note

    schedule, scales, x0 = toy
    fn = gaussian_denoiser(scales, schedule)
    _, report = solve_fixed_point(fn, x0, schedule, tol=1e-8, max_iter=4)
    worst = max(r.residual for r in report.unconverged)
    for visible, category in ((worst / 2, exact.NotConvergedWarning), (worst * 2, exact.StoppedShortNote)):
        monkeypatch.setattr(exact, "VISIBLE_RESIDUAL", visible)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exact.warn_if_unconverged(report)
        assert [w.category for w in caught] == [category]
        assert (category is exact.StoppedShortNote) == issubclass(category, Note)
        assert f"{worst:.1e}" in str(caught[0].message)
    problems, notes = [], []
    with collect_warnings(problems, notes):
        exact.warn_if_unconverged(report, stacklevel=0)  # a note now (VISIBLE_RESIDUAL = worst * 2), raised from the library
    assert problems == [] and len(notes) == 1 and "below the" in notes[0]


def test_report_summary_and_the_warning_say_what_was_reached(toy):
    schedule, scales, x0 = toy
    fn = gaussian_denoiser(scales, schedule)
    with pytest.warns(NotConvergedWarning, match=r"round trip to \d\.\de-\d\d relative latent error"):
        _, evaluations = invert_fixed_point(fn, x0, schedule, tol=1e-8, max_iter=4)
    _, report = solve_fixed_point(fn, x0, schedule, tol=1e-8, max_iter=4)
    assert isinstance(report, FixedPointReport) and report.evaluations == evaluations
    summary = report.summary()
    assert summary["max_evaluations_step"] == 4 and summary["stopped_at_cap"] >= 1
    assert summary["clean_end_residual"] == pytest.approx(report.clean_residual, rel=1e-2)
    assert "limited by the clean-end step" in describe(report)


def test_residuals_are_saved_and_old_files_still_load(tiny_model, frames, tmp_path):
    latents = tiny_model.encode(frames)
    inversion = invert(tiny_model, latents, steps=6, method="fixed-point", max_iter=12)
    assert len(inversion.meta.residuals) == 7 and inversion.report is not None  # 6 steps, the last cut in two
    assert inversion.meta.residuals[-1] == pytest.approx(inversion.report.clean_residual, rel=1e-3)
    back = sample_ddim(text_model_fn(tiny_model, "", "", 1.0), inversion.noise, inversion.schedule(tiny_model))
    assert relative_error(back, latents) <= max(2e-5, 2 * inversion.meta.residuals[-1])
    loaded = Inversion.load(inversion.save(tmp_path / "a.inv"))
    assert loaded.meta == inversion.meta
    raw = json.loads(json.dumps(loaded.meta.to_json()))
    raw.pop("residuals")  # a file written before residuals were stored
    assert parse_meta(raw, tmp_path / "old.inv").residuals == ()
    assert invert(tiny_model, latents, steps=3).meta.residuals == ()  # ddim: none
