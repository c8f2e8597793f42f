"""Guidance and row layout as wrappers of ``model_fn`` (the sampler never sees them).

A sampler takes ``model_fn(x, i, t) -> prediction`` (``sampling.ModelFn``). Below it sits a *rows function*
``fn(rows, i, t) -> prediction`` that evaluates transformer rows as given (one call of the model, or several). The
wrappers here turn one into the other:

- ``conditioned(predict, text)``: a rows function from the model's ``predict(rows, t, text)`` and the rows' texts.
- ``Cfg`` / ``cfg(fn, guidance)``: classifier-free guidance; each latent row becomes the rows
  ``[uncond, cond]`` (or ``[cond]`` alone where guidance changes nothing), all evaluated in one call of ``fn``, and
  the pairs are combined as ``u + s (c - u)``.
- ``join_rows(*groups)`` and ``with_reference(fn, reference, count)``: several groups of rows in one call, e.g.
  ``[main rows | reference rows]``, and the prediction split back per group.

Rows of a guided batch are ordered ``[uncond_1, cond_1, uncond_2, cond_2, ...]``, one pair per prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import torch

RowsFn = Callable[[torch.Tensor, int, int], torch.Tensor]  # (rows [N, T, C, h, w], i, t) -> prediction [N, ...]
Scale = Union[float, Callable[[int, int], float]]  # a guidance scale, or one per step as a function of (i, t)


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


@dataclass(frozen=True)
class Cfg:
    """Classifier-free guidance of one group of latent rows: which rows to evaluate, and how to combine them."""

    scale: Scale  # s in u + s (c - u); a function of (i, t) where it changes per step (dynamic, per expert)
    with_uncond: bool  # evaluate [uncond, cond] per latent row; False: the cond row alone, returned unchanged

    @property
    def group(self) -> int:
        """Transformer rows per latent row (``G``)."""
        return 2 if self.with_uncond else 1

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, ...]`` latents -> ``[B * G, ...]`` rows in ``guided_texts`` order (``x`` itself without uncond)."""
        return x.repeat_interleave(2, dim=0) if self.with_uncond else x

    def combine(self, pred: torch.Tensor, i: int, t: int) -> torch.Tensor:
        """``[B * G, ...]`` predictions of ``rows(x)`` -> ``[B, ...]`` guided predictions at step ``i`` (timestep
        ``t``)."""
        if not self.with_uncond:
            return pred
        scale = self.scale(i, t) if callable(self.scale) else self.scale
        return combine(pred, pred.shape[0] // 2, scale, True)


def cfg(fn: RowsFn, guidance: Cfg):
    """``model_fn(x, i, t)`` with classifier-free guidance: the ``[B * G]`` rows of ``x`` ``[B, ...]`` in one call of
    ``fn``, combined per latent row. ``model_fn.batch_rows`` is ``G`` (transformer rows per latent row)."""

    def model_fn(x: torch.Tensor, i: int, t: int) -> torch.Tensor:
        return guidance.combine(fn(guidance.rows(x), i, t), i, t)

    model_fn.batch_rows = guidance.group
    return model_fn


def conditioned(predict: Callable[..., torch.Tensor], text: torch.Tensor, image=None) -> RowsFn:
    """The rows function ``fn(rows, i, t) = predict(rows, t, text[, image])``.

    Args:
        predict: the model's ``predict(rows [N, ...], t, text [N, L, D], image=None)``.
        text: ``[P, L, D]`` embeddings of the rows; repeated when the rows are ``N = n P`` (several latents under
            the same texts, e.g. ``[neg, p]`` for each latent of an inversion).
        image: an image-to-video model's condition of the same ``P`` rows (``models.condition.ImageRows``, one row
            for all of them allowed), repeated like ``text``; ``None`` for a text-to-video model.
    """
    if image is not None and len(image) != text.shape[0]:
        if len(image) != 1:
            raise ValueError(f"{len(image)} image conditions for {text.shape[0]} text rows")
        image = image.repeat(text.shape[0])

    def fn(rows: torch.Tensor, i: int, t: int) -> torch.Tensor:
        n = rows.shape[0] // text.shape[0]
        texts = text if n == 1 else text.repeat(n, 1, 1)  # [N, L, D]
        if image is None:
            return predict(rows, t, texts)
        return predict(rows, t, texts, image.repeat(n))

    return fn



def join_rows(*groups: torch.Tensor):
    """Several groups of rows in one batch: ``([g_1 | g_2 | ...], split)``, where ``split(pred)`` returns the
    prediction's rows of each group (views), in order."""
    sizes = [g.shape[0] for g in groups]
    return torch.cat(groups), lambda pred: pred.split(sizes)


def with_reference(fn: RowsFn, reference: Callable[[int], torch.Tensor], count: int) -> RowsFn:
    """A rows function over main rows that evaluates ``[main rows | count reference rows]`` in one call of ``fn``
    and returns the main rows' prediction.

    Args:
        fn: rows function of the whole batch (its text and attention layout cover the reference rows).
        reference: ``i -> [1, T, C, h, w]`` latent of the reference rows at step ``i``.
        count: reference rows (1 for a reference row shared by every main row).
    """

    def main_fn(main: torch.Tensor, i: int, t: int) -> torch.Tensor:
        ref = reference(i).to(main.device, main.dtype).expand(count, -1, -1, -1, -1)  # [R, T, C, h, w]
        rows, split = join_rows(main, ref)  # [M + R, ...]
        return split(fn(rows, i, t))[0]  # [M, ...]

    return main_fn
