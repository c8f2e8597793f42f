"""Classifier-free guidance as a batch layout plus a combine step (a wrapper, not a sampler of its own).

Rows of a guided batch are ordered ``[uncond_1, cond_1, uncond_2, cond_2, ...]``, one pair per prompt; with
guidance 1 (or identical uncond/cond text, where guidance changes nothing) only the cond rows are evaluated.
"""

from __future__ import annotations

import math

import torch


def needs_uncond(scale: float, prompt: str, negative_prompt: str) -> bool:
    """Whether guidance changes the prediction: scale != 1 and the two texts differ.

    With identical texts both branches predict the same, ``u + s (c - u) = c``: the public reference still runs both
    (inversion with guidance 6 on two empty prompts), which doubles the cost for nothing.
    """
    return scale != 1.0 and prompt != negative_prompt


def guided_texts(prompts: list[str], negative_prompt: str, with_uncond: bool) -> list[str]:
    """The text of each main row: ``[neg, p1, neg, p2, ...]`` with guidance, ``[p1, p2, ...]`` without."""
    if not with_uncond:
        return list(prompts)
    return [text for prompt in prompts for text in (negative_prompt, prompt)]


def combine(pred: torch.Tensor, num_prompts: int, scale: float, with_uncond: bool) -> torch.Tensor:
    """Guided prediction per prompt.

    Args:
        pred: ``[num_prompts * G, ...]`` predictions in ``guided_texts`` order, ``G = 2`` with uncond else 1.
        num_prompts: K.
        scale: guidance scale ``s``: ``u + s (c - u)``.
        with_uncond: whether the rows hold uncond/cond pairs.

    Returns:
        ``[num_prompts, ...]``.
    """
    if not with_uncond:
        return pred
    pairs = pred.view(num_prompts, 2, *pred.shape[1:])  # [K, 2, ...]
    uncond, cond = pairs[:, 0], pairs[:, 1]
    return uncond + scale * (cond - uncond)


def dynamic_scale(scale: float, timestep: int, num_steps: int) -> float:
    """CogVideoX's ``use_dynamic_cfg`` schedule: guidance grows from 1 towards ``1 + scale`` as noise decreases.

    Per diffusers pipelines/cogvideo/pipeline_cogvideox.py (which evaluates it with the model timestep ``t``).
    """
    return 1 + scale * (1 - math.cos(math.pi * ((num_steps - timestep) / num_steps) ** 5.0)) / 2
