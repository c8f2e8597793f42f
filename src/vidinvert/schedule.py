"""The noise schedule of one sampling run, taken as data from the forward scheduler (never rebuilt from its config).

Two kinds of schedule share one ``Schedule`` type: DDIM (CogVideoX; levels are alpha-bar values, the model predicts
``v``, ``eps`` or ``x0``) and flow matching (Wan; levels are sigmas, ``x = (1 - sigma) x0 + sigma eps``, the model
predicts the velocity ``v ~ eps - x0``; ``prediction_type == "flow"``). ``sampling.step_coefficients`` and
``sampling.split_prediction`` say how a step moves for each, so the samplers, the exact solver and the blend serve both.

The public reference builds ``DDIMInverseScheduler(**pipe.scheduler.config)``; that class ignores CogVideoX's
``snr_shift_scale`` (and computes ``scaled_linear`` betas in float32 instead of float64), so for CogVideoX-2b
(shift 3.0) its inversion runs on another noise schedule than sampling. Here both directions read the one
``alphas_cumprod`` table of the pipeline's own scheduler.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedule:
    """Per-step noise levels of a run, in sampling order (noisiest step first).

    Step ``i`` of sampling evaluates the model at ``timesteps[i]`` and moves the latent from noise level
    ``alpha_from[i]`` to ``alpha_to[i]``. Inversion runs the same steps backwards: step ``i`` moves from
    ``alpha_to[i]`` to ``alpha_from[i]`` with the model at ``timesteps[i]``.

    Args:
        timesteps: model timestep of each step, descending, length N (ints for DDIM; for flow matching whatever the
            scheduler hands the model: ``sigma * 1000`` as floats for ``FlowMatchEulerDiscreteScheduler``).
        alpha_from: float64 ``[N]`` level at the start of each sampling step: alpha-bar (DDIM kinds) or sigma
            (``"flow"``; also readable as ``sigma_from``).
        alpha_to: float64 ``[N]`` level at the end of each sampling step (alpha-bar or sigma, as ``alpha_from``).
        prediction_type: what the model predicts: ``"v_prediction"``, ``"epsilon"``, ``"sample"`` (DDIM) or
            ``"flow"`` (a flow-matching velocity on sigma levels).
    """

    timesteps: tuple
    alpha_from: torch.Tensor
    alpha_to: torch.Tensor
    prediction_type: str

    @property
    def is_flow(self) -> bool:
        return self.prediction_type == "flow"

    @property
    def sigma_from(self) -> torch.Tensor:
        """Flow matching: sigma at the start of each sampling step."""
        if not self.is_flow:
            raise AttributeError("a DDIM schedule has alpha-bar levels, not sigmas")
        return self.alpha_from

    @property
    def sigma_to(self) -> torch.Tensor:
        """Flow matching: sigma at the end of each sampling step."""
        if not self.is_flow:
            raise AttributeError("a DDIM schedule has alpha-bar levels, not sigmas")
        return self.alpha_to

    def __len__(self) -> int:
        return len(self.timesteps)

    def tail(self, count: int) -> "Schedule":
        """The last ``count`` steps (the least noisy part): what a partial inversion covers."""
        if not 0 < count <= len(self):
            raise ValueError(f"count must be in 1..{len(self)}, got {count}")
        return self[len(self) - count :]

    def __getitem__(self, steps: slice) -> "Schedule":
        """A contiguous run of steps, e.g. ``schedule[:k]`` (the noisiest k)."""
        if not isinstance(steps, slice) or steps.step not in (None, 1):
            raise TypeError("a Schedule is sliced with a contiguous slice, e.g. schedule[2:]")
        return Schedule(self.timesteps[steps], self.alpha_from[steps], self.alpha_to[steps], self.prediction_type)


def split_last_step(schedule: Schedule, timestep: float, level: float) -> Schedule:
    """The schedule with its last (clean-end) step cut in two at model timestep ``timestep``, noise level ``level``
    (alpha-bar for DDIM kinds, sigma for ``"flow"``).

    A trained denoiser is close to a projection near t = 0, so the one big step into the clean latent is the
    ill-conditioned one to invert; two shorter steps invert to a smaller residual for a few more evaluations.
    Sampling must use the same split schedule (an inversion records it).
    """
    if not 0 < timestep < schedule.timesteps[-1]:
        raise ValueError(f"the split timestep must lie inside the last step (0, {schedule.timesteps[-1]}), got {timestep}")
    mid = torch.tensor([level], dtype=torch.float64)
    timestep = int(timestep) if isinstance(schedule.timesteps[-1], int) else float(timestep)
    return Schedule(schedule.timesteps + (timestep,), torch.cat([schedule.alpha_from, mid]),
                    torch.cat([schedule.alpha_to[:-1], mid, schedule.alpha_to[-1:]]), schedule.prediction_type)


def schedule_from_scheduler(scheduler, num_steps: int) -> Schedule:
    """Read the DDIM schedule of ``num_steps`` steps off a diffusers DDIM-family scheduler.

    The scheduler is copied, so the pipeline's own scheduler keeps its state. The previous level of each step follows
    diffusers' DDIM step: ``t - num_train_timesteps // num_steps``, or ``final_alpha_cumprod`` below zero
    (per diffusers schedulers/scheduling_ddim_cogvideox.py ``step``).

    Args:
        scheduler: e.g. ``CogVideoXDDIMScheduler`` (anything with ``alphas_cumprod``, ``final_alpha_cumprod``,
            ``set_timesteps`` and a ``config`` holding ``num_train_timesteps`` and ``prediction_type``).
        num_steps: number of sampling steps, >= 1.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    for name in ("alphas_cumprod", "final_alpha_cumprod", "set_timesteps"):
        if not hasattr(scheduler, name):
            raise TypeError(f"{type(scheduler).__name__} is not a DDIM-family scheduler (no {name})")
    work = copy.deepcopy(scheduler)
    work.set_timesteps(num_steps)
    timesteps = tuple(int(t) for t in work.timesteps)
    table = scheduler.alphas_cumprod.to(torch.float64)
    final = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float64)
    ratio = scheduler.config.num_train_timesteps // num_steps
    alpha_from = torch.stack([table[t] for t in timesteps])
    alpha_to = torch.stack([table[t - ratio] if t - ratio >= 0 else final for t in timesteps])
    return Schedule(timesteps, alpha_from, alpha_to, scheduler.config.prediction_type)


def flow_schedule_from_scheduler(scheduler, num_steps: int) -> Schedule:
    """Read the flow-matching schedule of ``num_steps`` steps (sigmas after the scheduler's shift) off a scheduler.

    The scheduler is copied, so the pipeline's own scheduler keeps its state. Sigmas and timesteps are exactly the
    scheduler's after ``set_timesteps`` (its shift, terminal stretch and final sigma applied), so sampling with the
    Euler step ``x <- x + (sigma_next - sigma) v`` on them is ``FlowMatchEulerDiscreteScheduler.step`` (per
    diffusers schedulers/scheduling_flow_match_euler_discrete.py). For ``UniPCMultistepScheduler`` with
    ``use_flow_sigmas`` (what published Wan folders ship) the same sigmas are read; vidinvert then steps them with
    Euler, not UniPC's multistep corrector (inversion needs a one-step map).

    Args:
        scheduler: ``FlowMatchEulerDiscreteScheduler`` (no dynamic shifting) or ``UniPCMultistepScheduler`` with
            ``use_flow_sigmas=True``.
        num_steps: number of sampling steps, >= 1.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    name = type(scheduler).__name__
    config = scheduler.config
    if name == "UniPCMultistepScheduler" and not config.get("use_flow_sigmas", False):
        raise TypeError("UniPCMultistepScheduler without use_flow_sigmas is not a flow-matching scheduler")
    if not hasattr(scheduler, "sigmas") or not hasattr(scheduler, "set_timesteps"):
        raise TypeError(f"{name} is not a flow-matching scheduler (no sigmas)")
    if config.get("use_dynamic_shifting", False):
        raise TypeError(f"{name} uses dynamic shifting, which needs a resolution-dependent mu; not supported")
    if config.get("invert_sigmas", False) or config.get("stochastic_sampling", False):
        raise TypeError(f"{name} with inverted sigmas or stochastic sampling is not a deterministic flow sampler")
    work = copy.deepcopy(scheduler)
    work.set_timesteps(num_steps)
    sigmas = work.sigmas.to(torch.float64).cpu()  # [N + 1], the final sigma appended
    stamps = work.timesteps.cpu()
    if sigmas.shape[0] != num_steps + 1 or stamps.shape[0] != num_steps:
        raise TypeError(f"{name} gave {stamps.shape[0]} timesteps for {num_steps} steps")
    timesteps = tuple(float(t) for t in stamps) if stamps.is_floating_point() else tuple(int(t) for t in stamps)
    return Schedule(timesteps, sigmas[:-1].clone(), sigmas[1:].clone(), "flow")
