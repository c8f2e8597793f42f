"""DDIM sampling and inversion as plain functions over ``(model_fn, latents, schedule)``.

A ``model_fn(x, i, t)`` takes latents ``x`` ``[B, T, C, H', W']`` (float32), the step index ``i`` of the schedule
and its timestep ``t``, and returns the model's prediction with the layout of ``x`` (guidance already applied).
Latents stay float32 here whatever dtype the model runs in.

Notation (DDIM paper, Song et al. 2020): ``a`` is alpha-bar, ``x = sqrt(a) x0 + sqrt(1 - a) eps``. For flow
matching (``prediction_type == "flow"``, rectified flow as Wan uses it) the level is sigma,
``x = (1 - sigma) x0 + sigma eps``, and the model predicts the velocity ``v = eps - x0``; the DDIM move between two
levels is then exactly the Euler step ``x + (sigma_to - sigma_from) v``. Names keep DDIM's ``a`` for either level.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .errors import VidinvertError
from .schedule import Schedule

ModelFn = Callable[[torch.Tensor, int, int], torch.Tensor]
StepCallback = Callable[[int, int, torch.Tensor], None]


def split_prediction(x: torch.Tensor, pred: torch.Tensor, a: float, prediction_type: str):
    """Turn a model prediction at noise level ``a`` into ``(x0, eps)``.

    Args:
        x: latents at level ``a``, any layout.
        pred: the model output for ``x``, same layout.
        a: alpha-bar (or sigma, for ``"flow"``) of the level ``x`` is at.
        prediction_type: ``"v_prediction"``, ``"epsilon"``, ``"sample"`` or ``"flow"``.
    """
    if prediction_type == "flow":  # x = (1 - s) x0 + s eps, v = eps - x0
        return x - a * pred, x + (1.0 - a) * pred
    sa, sb = math.sqrt(a), math.sqrt(1.0 - a)
    if prediction_type == "v_prediction":
        return sa * x - sb * pred, sa * pred + sb * x
    if prediction_type == "epsilon":
        return (x - sb * pred) / sa, pred
    if prediction_type == "sample":
        return pred, (x - sa * pred) / sb
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def ddim_move(x: torch.Tensor, pred: torch.Tensor, a_here: float, a_there: float, prediction_type: str) -> torch.Tensor:
    """Deterministic DDIM move (eta = 0) of ``x`` from level ``a_here`` to ``a_there`` given the prediction at ``x``.

    Computes ``x' = sqrt(a_there) x0 + sqrt(1 - a_there) eps``; used forwards (``a_there > a_here``, towards clean)
    and, as plain DDIM inversion, backwards. For ``"flow"`` this is the Euler step ``x + (s_there - s_here) v``
    (the same move, written as ``FlowMatchEulerDiscreteScheduler.step`` computes it).
    """
    if prediction_type == "flow":
        return x + (a_there - a_here) * pred
    x0, eps = split_prediction(x, pred, a_here, prediction_type)
    return math.sqrt(a_there) * x0 + math.sqrt(1.0 - a_there) * eps


def step_coefficients(a_from: float, a_to: float, prediction_type: str) -> tuple[float, float]:
    """``(A, B)`` such that the sampling step is linear: ``x_to = A x_from + B pred`` (pred taken at ``x_from``).

    Derived from ``ddim_move``; used to solve the step backwards exactly (``x_from = (x_to - B pred) / A``).
    For ``"flow"`` (Euler): ``A = 1``, ``B = s_to - s_from``.
    """
    if prediction_type == "flow":
        return 1.0, a_to - a_from
    sa, sb = math.sqrt(a_from), math.sqrt(1.0 - a_from)
    ta, tb = math.sqrt(a_to), math.sqrt(1.0 - a_to)
    if prediction_type == "v_prediction":  # x0 = sa x - sb v, eps = sa v + sb x
        return ta * sa + tb * sb, tb * sa - ta * sb
    if prediction_type == "epsilon":  # x0 = (x - sb eps) / sa
        return ta / sa, tb - ta * sb / sa
    if prediction_type == "sample":  # eps = (x - sa x0) / sb
        return tb / sb, ta - tb * sa / sb
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def check_finite(x: torch.Tensor, i: int, t: int, phase: str) -> None:
    """Stop at the first step whose latents hold NaN/inf, naming the step (nothing later is computed or kept)."""
    if not torch.isfinite(x).all():
        raise VidinvertError(
            f"{phase} produced NaN/inf latents at step {i} (timestep {t})",
            "fp16 overflows easily: use --dtype bf16 or fp32; also check the input video",
        )


def sample_ddim(
    model_fn: ModelFn,
    x: torch.Tensor,
    schedule: Schedule,
    callback: StepCallback | None = None,
    post_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run DDIM sampling (eta = 0) from ``x`` at level ``schedule.alpha_from[0]`` to the end of the schedule.

    Args:
        model_fn: ``(x [B, T, C, H', W'], i, t) -> prediction`` with guidance applied.
        x: float32 latents ``[B, T, C, H', W']`` at the first step's noise level.
        schedule: steps in sampling order.
        callback: called as ``callback(i, t, x_after_step)`` after each step.
        post_step: ``(i, x_after_step) -> x`` applied after each step, before the callback (e.g. a local blend).

    Returns:
        float32 latents ``[B, T, C, H', W']`` after the last step.
    """
    x = x.float()
    for i, t in enumerate(schedule.timesteps):
        pred = model_fn(x, i, t).float()
        x = ddim_move(x, pred, float(schedule.alpha_from[i]), float(schedule.alpha_to[i]), schedule.prediction_type)
        if post_step is not None:
            x = post_step(i, x)
        check_finite(x, i, t, "sampling")
        if callback is not None:
            callback(i, t, x)
    return x


def invert_ddim(
    model_fn: ModelFn,
    x0: torch.Tensor,
    schedule: Schedule,
    callback: StepCallback | None = None,
    store_device: torch.device | str | None = None,
) -> torch.Tensor:
    """Plain DDIM inversion: walk the schedule backwards, evaluating the model at the less noisy latent.

    Matches diffusers' ``DDIMInverseScheduler`` step for step when given the same alpha table: inversion step ``i``
    (sampling step ``N-1-i``) evaluates the model at timestep ``t`` on the latent at level ``alpha_to`` and moves it
    to ``alpha_from``.

    Args:
        model_fn: ``(x, i, t) -> prediction``; ``i`` is the sampling-order index of the step.
        x0: float32 clean latents ``[B, T, C, H', W']`` (at level ``alpha_to[-1]``).
        schedule: steps in sampling order.
        callback: called as ``callback(i, t, x_noisier)`` after each inversion step, ``i`` descending.
        store_device: where the trajectory is kept (e.g. ``"cpu"`` to spare GPU memory); default: ``x0``'s.

    Returns:
        float32 trajectory ``[N, B, T, C, H', W']`` in sampling order: entry ``i`` is the latent at the start of
        sampling step ``i`` (entry 0 is the fully inverted noise).
    """
    x = x0.float()
    trajectory = [None] * len(schedule)
    for i in reversed(range(len(schedule))):
        t = schedule.timesteps[i]
        pred = model_fn(x, i, t).float()
        x = ddim_move(x, pred, float(schedule.alpha_to[i]), float(schedule.alpha_from[i]), schedule.prediction_type)
        check_finite(x, i, t, "inversion")
        trajectory[i] = x if store_device is None else x.to(store_device)
        if callback is not None:
            callback(i, t, x)
    return torch.stack(trajectory)  # [N, B, T, C, H', W']
