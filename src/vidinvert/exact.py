"""Exact inversion: solve each DDIM step backwards by (accelerated) fixed-point iteration.

Sampling step ``i`` is linear in its input and the model's prediction there (``sampling.step_coefficients``):
``x_to = A x_from + B f(x_from)``. Plain DDIM inversion evaluates ``f`` at the wrong point (``x_to``), so sampling
does not return to the clean latents. Here, per step, we solve ``x_from = (x_to - B f(x_from)) / A`` by iterating that
map from an initial guess until the step's relative residual ``||A x + B f(x) - x_to|| / ||x_to||`` reaches its
target (the "fixed-point" inversion of e.g. Pan et al. 2023 and Garibi et al. 2024, "ReNoise").

Why steps differ, and what each stop means:

1. Noisy steps are well conditioned: the map contracts fast and plain iteration converges in a few evaluations.
2. The clean-end step (``alpha_to`` = 1) is not: a trained denoiser near t = 0 is close to a projection, so its
   output barely depends on most input directions and many inputs give nearly the same clean latent. The plain map
   then contracts slowly (rate 0.8-0.9 per evaluation). When the measured contraction is slow the solver switches to
   over-relaxed Anderson mixing (type II, short history), which gains most per evaluation there. Whatever residual
   this step reaches *is* the round trip's error: sampling ends with this step.
3. Because the clean-end step is solved first, the error the round trip will have is known from then on; the other
   steps stop at a fraction (``follow``) of it instead of spending evaluations on a precision the result cannot show.
4. In bf16/fp16 the model's rounding puts a floor under every residual. The solver estimates it from the model's
   dtype (``precision``) and stops a step that has stalled near it ("floor") rather than spending its cap.

The initial guess reuses the previous step's final prediction (the model output at a neighbouring timestep), so no
evaluation is spent on a plain DDIM guess except at the first step. ``FixedPointReport`` records, per step, the
evaluations, the final residual, the floor and why it stopped; ``describe`` turns it into one line for users.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .errors import Note
from .sampling import ModelFn, StepCallback, check_finite, ddim_move, step_coefficients
from .schedule import Schedule

STOPS = ("tol", "predicted", "floor", "cap")  # why a step stopped (see StepReport.stop)
SLOW_RATE = 0.5  # measured contraction above which a step switches to accelerated mixing
FLOOR_FACTOR = 4.0  # rounding floor = FLOOR_FACTOR x unit roundoff x |B| ||f|| / ||x_to|| (see _rounding_floor)
STALL_RATE = 0.8  # near the floor, a step whose residual shrinks by less than this factor has stalled


# A round trip within this relative latent error does not show in decoded frames: the demo model's reconstruct at
# 25 fixed-point steps stopped at 5.0e-03 and decoded to 68.4 dB against the VAE's own round trip (docs/guide.md)
VISIBLE_RESIDUAL = 1e-2


class NotConvergedWarning(UserWarning):
    """A fixed-point inversion step stopped at its iteration cap above its target, by enough to show."""


class StoppedShortNote(Note):
    """Fixed-point steps stopped at their cap above the target, but the round trip is within ``VISIBLE_RESIDUAL``."""


@dataclass(frozen=True)
class StepReport:
    """How one inversion step was solved."""

    step: int  # index of the step in sampling order
    timestep: int  # model timestep of the step
    evaluations: int  # model evaluations spent on it
    residual: float  # final relative residual ||A x + B f(x) - x_to|| / ||x_to|| (predicted when stop="predicted")
    target: float  # residual it aimed for: max(tol, follow x the clean-end residual)
    floor: float  # residual the model's rounding allows (estimated from its dtype)
    stop: str  # "tol": reached the target; "predicted": the measured contraction predicts it one evaluation early;
    #           "floor": stalled at the rounding floor; "cap": stopped at max_iter above the target and the floor


@dataclass(frozen=True)
class FixedPointReport:
    """What a fixed-point inversion reached, per step in sampling order.

    The round trip's relative latent error is about ``clean_residual`` (the last sampling step's residual) when the
    other steps are solved below it; ``describe(report)`` says so in one line.
    """

    steps: tuple[StepReport, ...]
    tol: float  # requested per-step residual
    precision: str  # dtype the model ran in, e.g. "float32", "bfloat16"

    @property
    def evaluations(self) -> tuple[int, ...]:
        return tuple(s.evaluations for s in self.steps)

    @property
    def residuals(self) -> tuple[float, ...]:
        return tuple(s.residual for s in self.steps)

    @property
    def clean_residual(self) -> float:
        """Residual of the least noisy step: the floor of the round trip's relative latent error."""
        return self.steps[-1].residual if self.steps else 0.0

    @property
    def unconverged(self) -> tuple[StepReport, ...]:
        """Steps that stopped at their cap above both target and floor."""
        return tuple(s for s in self.steps if s.stop == "cap")

    def summary(self) -> dict:
        """Plain fields for a JSON summary (per-step lists in sampling order)."""
        count = max(len(self.steps), 1)
        return {
            "evaluations": sum(self.evaluations),
            "evaluations_per_step": round(sum(self.evaluations) / count, 3),
            "max_evaluations_step": max(self.evaluations, default=0),
            "clean_end_residual": float(f"{self.clean_residual:.3g}"),
            "max_residual": float(f"{max(self.residuals, default=0.0):.3g}"),
            "stopped_at_floor": sum(s.stop == "floor" for s in self.steps),
            "stopped_at_cap": len(self.unconverged),
            "precision": self.precision,
        }


def describe(report: FixedPointReport) -> str:
    """One line on what the inversion reached, e.g. for the ``reconstruct`` summary or a warning.

    Examples: ``"exact inversion: 25 steps, 3.6 evaluations/step (max 8); round trip to 4.1e-03 (clean-end step)"``,
    and when steps stopped early: ``"...; 25 steps stopped at the bfloat16 rounding floor"``.
    """
    s = report.summary()
    steps = len(report.steps)
    text = (
        f"exact inversion: {steps} steps, {s['evaluations_per_step']:g} evaluations/step "
        f"(max {s['max_evaluations_step']}); round trip to {report.clean_residual:.1e} relative latent error"
    )
    if report.clean_residual > report.tol:
        text += " (limited by the clean-end step)"
    if s["stopped_at_floor"]:
        text += f"; {s['stopped_at_floor']} step(s) stopped at the {report.precision} rounding floor"
    if report.unconverged:
        worst = max(report.unconverged, key=lambda r: r.residual)
        text += (
            f"; {len(report.unconverged)} step(s) stopped at max_iter, worst step {worst.step} (timestep "
            f"{worst.timestep}) at {worst.residual:.1e}"
        )
    return text


def _unit_roundoff(precision: torch.dtype | str | None) -> float:
    """Unit roundoff of the dtype the model computes in (float32 when unknown)."""
    dtype = precision if isinstance(precision, torch.dtype) else getattr(torch, str(precision or "float32"))
    return float(torch.finfo(dtype).eps) / 2


def _rounding_floor(coef_b: float, pred: torch.Tensor, norm: torch.Tensor, roundoff: float) -> float:
    """Residual the model's rounding alone leaves: its output carries relative errors of a few unit roundoffs, which
    enter the residual through ``B f``."""
    return FLOOR_FACTOR * roundoff * abs(coef_b) * float(pred.norm() / norm)


def _anderson(history_x: list, history_g: list) -> torch.Tensor:
    """Anderson mixing (type II) of iterates ``x_k`` and their images ``g(x_k)``; returns the next iterate."""
    residuals = [(g - x).flatten().double() for x, g in zip(history_x, history_g)]
    if len(residuals) == 1:
        return history_g[-1]
    diffs = torch.stack([residuals[j + 1] - residuals[j] for j in range(len(residuals) - 1)], dim=1)  # [n, m]
    gammas = torch.linalg.lstsq(diffs, residuals[-1].unsqueeze(1)).solution.squeeze(1)  # [m]
    g_diffs = [history_g[j + 1] - history_g[j] for j in range(len(history_g) - 1)]
    step = sum(float(gamma) * d for gamma, d in zip(gammas, g_diffs))
    return history_g[-1] - step


def solve_fixed_point(
    model_fn: ModelFn,
    x0: torch.Tensor,
    schedule: Schedule,
    tol: float = 1e-6,
    max_iter: int = 8,
    anderson: int = 0,
    callback: StepCallback | None = None,
    store_device: torch.device | str | None = None,
    verify: bool = False,
    precision: torch.dtype | str | None = None,
    follow: float = 1e-3,
    slow_anderson: int = 2,
    relaxation: float = 1.6,
    clean_max_iter: int | None = None,
) -> tuple[torch.Tensor, FixedPointReport]:
    """Invert ``x0`` so that ``sample_ddim`` with the same ``model_fn`` returns to it as closely as the steps allow.

    Args:
        model_fn: ``(x, i, t) -> prediction`` (guided); must be the one sampling will use.
        x0: float32 clean latents ``[B, T, C, h, w]``.
        schedule: steps in sampling order.
        tol: per-step relative residual to reach.
        max_iter: model evaluations allowed per step; at the cap a step keeps its best iterate.
        anderson: Anderson history used from the first iteration of every step (0 = plain iteration until a step is
            measured to converge slowly).
        callback: ``callback(i, t, x_noisier)`` after each step, ``i`` descending.
        store_device: where the trajectory is kept; default: ``x0``'s.
        verify: evaluate the model at every accepted latent. By default a step may stop one evaluation early, when
            the contraction measured on its last two iterates predicts the next iterate's residual to be below
            half its target; verifying is needed when the evaluation at the accepted latent is itself used (exact
            key/value recording).
        precision: dtype the model computes in (e.g. ``model.dtype``); sets the rounding floor. None: float32.
        follow: the steps after the first solved one aim at ``max(tol, follow x its residual)``: the round trip
            cannot be closer than that first (clean-end) step, so finer solves elsewhere buy nothing. 0: all ``tol``.
        slow_anderson: Anderson history a step switches to once its measured contraction is slower than
            ``SLOW_RATE`` (0: never switch).
        relaxation: step length of the mixed iteration once switched (1 = the plain map; over-relaxing gains most
            at the ill-conditioned clean end).
        clean_max_iter: evaluations allowed for the first solved (clean-end) step, whose residual is the round
            trip's error; None: ``max_iter``. Raising it buys fidelity where the other steps need no more.

    Returns:
        ``(trajectory [N, B, T, C, h, w] in sampling order, FixedPointReport)``.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    roundoff = _unit_roundoff(precision)
    x_to = x0.float()
    trajectory = [None] * len(schedule)
    reports: list = [None] * len(schedule)
    previous_pred, first_residual = None, None
    for i in reversed(range(len(schedule))):
        t = schedule.timesteps[i]
        a_from, a_to = float(schedule.alpha_from[i]), float(schedule.alpha_to[i])
        coef_a, coef_b = step_coefficients(a_from, a_to, schedule.prediction_type)
        target = tol if first_residual is None else max(tol, follow * first_residual)
        cap = clean_max_iter if first_residual is None and clean_max_iter else max_iter
        count = 0
        if previous_pred is None:  # first step: a plain DDIM guess, which costs one evaluation
            previous_pred = model_fn(x_to, i, t).float()
            count += 1
        guess = ddim_move(x_to, previous_pred, a_to, a_from, schedule.prediction_type)
        norm = x_to.norm().clamp_min(1e-30)
        floor = _rounding_floor(coef_b, previous_pred, norm, roundoff)
        best, best_residual, best_pred, stop = guess, float("inf"), previous_pred, "cap"
        history_x, history_g = [], []
        x, damping, previous_residual, history, beta = guess, 1.0, None, anderson, 1.0
        while count < cap:
            pred = model_fn(x, i, t).float()
            count += 1
            residual = float((coef_a * x + coef_b * pred - x_to).norm() / norm)
            if residual <= target:
                best, best_residual, best_pred, stop = x, residual, pred, "tol"
                break
            rate = residual / previous_residual if previous_residual else None  # measured contraction
            if residual <= 2 * floor and rate is not None and rate > STALL_RATE:
                if residual < best_residual:
                    best, best_residual, best_pred = x, residual, pred
                stop = "floor"  # rounding noise, not the solve, sets the residual now
                break
            if residual >= (2 if history else 1) * best_residual:  # diverging (large steps of a short schedule)
                # Anderson mixing is not monotone, so only a doubling counts as diverging there; damp and restart
                damping *= 0.5
                history_x, history_g, previous_residual = [], [], None
                x = best + damping * ((x_to - coef_b * best_pred) / coef_a - best)
                continue
            if residual < best_residual:
                best, best_residual, best_pred = x, residual, pred
            if rate is not None and rate > SLOW_RATE and slow_anderson > history:  # ill-conditioned: accelerate
                history, beta = slow_anderson, relaxation
            mapped = x + beta * damping * ((x_to - coef_b * pred) / coef_a - x)
            if history > 0:
                history_x, history_g = (history_x + [x])[-(history + 1) :], (history_g + [mapped])[-(history + 1) :]
                x = _anderson(history_x, history_g)
            else:
                x = mapped
            predicted = (rate or 1.0) * residual
            if not verify and history == 0 and rate is not None and rate < SLOW_RATE and predicted <= target / 2:
                best, best_residual, stop = x, predicted, "predicted"  # predicted, not evaluated
                break
            previous_residual = residual
        if stop == "cap" and best_residual <= 2 * floor:
            stop = "floor"
        check_finite(best, i, t, "inversion")
        trajectory[i] = best if store_device is None else best.to(store_device)
        reports[i] = StepReport(i, int(t), count, best_residual, target, floor, stop)
        previous_pred = best_pred
        if first_residual is None:
            first_residual = best_residual
        x_to = best
        if callback is not None:
            callback(i, t, best)
    precision_name = str(precision if precision is not None else torch.float32).replace("torch.", "")
    report = FixedPointReport(tuple(reports), tol, precision_name)
    return torch.stack(trajectory), report  # [N, B, T, C, h, w]


def invert_fixed_point(model_fn: ModelFn, x0: torch.Tensor, schedule: Schedule, **options):
    """``solve_fixed_point`` returning ``(trajectory, evaluations per step)``, warning when a step hit its cap.

    The ``NotConvergedWarning`` names the worst capped step and says what the cap means for the round trip.
    """
    trajectory, report = solve_fixed_point(model_fn, x0, schedule, **options)
    warn_if_unconverged(report, stacklevel=3)
    return trajectory, report.evaluations


def warn_if_unconverged(report: FixedPointReport, stacklevel: int = 2) -> None:
    """Say once when some step stopped at its cap: calmly (a ``StoppedShortNote``) when the worst residual is within
    ``VISIBLE_RESIDUAL``, else a ``NotConvergedWarning``; both with the ``describe`` line."""
    if not report.unconverged:
        return
    worst = max(report.unconverged, key=lambda r: r.residual)
    if worst.residual <= VISIBLE_RESIDUAL:
        warnings.warn(
            f"fixed-point inversion reached {worst.residual:.1e} at worst (step {worst.step}, timestep "
            f"{worst.timestep}, after {worst.evaluations} evaluations; target {worst.target:.0e}), below the {VISIBLE_RESIDUAL:.0e} that would show in decoded "
            f"frames; {describe(report)}; raise --max-iter or --clean-max-iter to get closer",
            StoppedShortNote,
            stacklevel=stacklevel + 1,
        )
        return
    warnings.warn(
        f"fixed-point inversion did not converge at step {worst.step} (timestep {worst.timestep}): residual {worst.residual:.2e} > target "
        f"{worst.target:.0e} after {worst.evaluations} evaluations; {describe(report)}",
        NotConvergedWarning,
        stacklevel=stacklevel + 1,
    )