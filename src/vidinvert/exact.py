"""Exact inversion: solve each DDIM step backwards by fixed-point iteration.

Sampling step ``i`` is linear in its input and the model's prediction there (``sampling.step_coefficients``):
``x_to = A x_from + B f(x_from)``. Plain DDIM inversion evaluates ``f`` at the wrong point (``x_to``), so sampling
does not return to the clean latents. Here, per step, we solve ``x_from = (x_to - B f(x_from)) / A`` by iterating
that map (damped when it diverges, as it can for the few large steps of a short schedule) from an initial guess until the step's residual ``||A x + B f(x) - x_to|| / ||x_to||`` is below ``tol``
(this is the "fixed-point" inversion of e.g. Pan et al. 2023 and Garibi et al. 2024, "ReNoise"). Optional Anderson
acceleration (type II, small history) mixes the last iterates to converge in fewer evaluations.

The initial guess reuses the previous step's final prediction (the model output at a neighbouring timestep), so no
evaluation is spent on a plain DDIM guess except at the first step.
"""

from __future__ import annotations

import warnings

import torch

from .sampling import ModelFn, StepCallback, check_finite, ddim_move, step_coefficients
from .schedule import Schedule


class NotConvergedWarning(UserWarning):
    """A fixed-point inversion step stopped at its iteration cap above tolerance."""


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


def invert_fixed_point(
    model_fn: ModelFn,
    x0: torch.Tensor,
    schedule: Schedule,
    tol: float = 1e-6,
    max_iter: int = 10,
    anderson: int = 0,
    callback: StepCallback | None = None,
    store_device: torch.device | str | None = None,
    verify: bool = False,
):
    """Invert ``x0`` so that ``sample_ddim`` with the same ``model_fn`` returns to it, up to ``tol`` per step.

    Args:
        model_fn: ``(x, i, t) -> prediction`` (guided); must be the one sampling will use.
        x0: float32 clean latents ``[B, T, C, h, w]``.
        schedule: steps in sampling order.
        tol: stop a step when its relative residual is below this.
        max_iter: model evaluations allowed per step; at the cap the step keeps its best iterate and a
            ``NotConvergedWarning`` names the step and its residual.
        anderson: history length for Anderson acceleration (0 = plain iteration; 2-3 is typical).
        callback: ``callback(i, t, x_noisier)`` after each step, ``i`` descending.
        store_device: where the trajectory is kept; default: ``x0``'s.
        verify: evaluate the model at every accepted latent. By default a step may stop one evaluation early, when
            the contraction measured on its last two iterates predicts the next iterate's residual to be below
            ``tol / 2`` (the residual shrinks geometrically, so this saves about one evaluation per step); verifying
            is needed when the evaluation at the accepted latent is itself used (exact key/value recording).

    Returns:
        ``(trajectory [N, B, T, C, h, w] in sampling order, evaluations per step as a tuple in sampling order)``.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    x_to = x0.float()
    trajectory = [None] * len(schedule)
    evaluations = [0] * len(schedule)
    previous_pred = None
    for i in reversed(range(len(schedule))):
        t = schedule.timesteps[i]
        a_from, a_to = float(schedule.alpha_from[i]), float(schedule.alpha_to[i])
        coef_a, coef_b = step_coefficients(a_from, a_to, schedule.prediction_type)
        count = 0
        if previous_pred is None:  # first step: a plain DDIM guess, which costs one evaluation
            previous_pred = model_fn(x_to, i, t).float()
            count += 1
        guess = ddim_move(x_to, previous_pred, a_to, a_from, schedule.prediction_type)
        norm = x_to.norm().clamp_min(1e-30)
        best, best_residual, best_pred = guess, float("inf"), previous_pred
        history_x, history_g = [], []
        x, damping, previous_residual = guess, 1.0, None
        while count < max_iter:
            pred = model_fn(x, i, t).float()
            count += 1
            residual = float((coef_a * x + coef_b * pred - x_to).norm() / norm)
            if residual <= tol:
                best, best_residual, best_pred = x, residual, pred
                break
            if residual >= best_residual:  # diverging (large steps near the clean end): damp and restart
                damping *= 0.5
                history_x, history_g, previous_residual = [], [], None
                x = best + damping * ((x_to - coef_b * best_pred) / coef_a - best)
                continue
            best, best_residual, best_pred = x, residual, pred
            mapped = x + damping * ((x_to - coef_b * pred) / coef_a - x)
            if anderson > 0:
                history_x, history_g = (history_x + [x])[-(anderson + 1) :], (history_g + [mapped])[-(anderson + 1) :]
                x = _anderson(history_x, history_g)
            else:
                x = mapped
            rate = residual / previous_residual if previous_residual else None  # measured contraction
            if not verify and rate is not None and rate < 0.5 and rate * residual <= tol / 2:
                best, best_residual = x, rate * residual  # predicted, not evaluated
                break
            previous_residual = residual
        if best_residual > tol:
            warnings.warn(
                f"fixed-point inversion did not converge at step {i} (timestep {t}): residual {best_residual:.2e} "
                f"> tol {tol:.0e} after {count} evaluations; raise max_iter or use anderson",
                NotConvergedWarning,
                stacklevel=2,
            )
        check_finite(best, i, t, "inversion")
        trajectory[i] = best if store_device is None else best.to(store_device)
        evaluations[i], previous_pred = count, best_pred
        x_to = best
        if callback is not None:
            callback(i, t, best)
    return torch.stack(trajectory), tuple(evaluations)  # [N, B, T, C, h, w]
