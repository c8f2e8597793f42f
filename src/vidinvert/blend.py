"""Local blend: confine an edit to where the edit prompt and the source prompt disagree.

The mask follows DiffEdit (Couairon et al. 2022): the model's clean-latent predictions under the source prompt and
under the edit prompt differ where the edit applies (the object being recoloured) and agree elsewhere. Here the
predictions are taken on the stored inverted latents (deterministic, no fresh noise), at a few mid-schedule levels,
and averaged. During the edit, after every step, the latent outside the mask is replaced by the inversion's own
latent at the same noise level (the source's), as in Prompt-to-Prompt's local blend; the region inside keeps the
edit. With an exact inversion everything outside the mask is then the source, and the object cannot drift far from
where the mask puts it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .settings import BlendConfig  # noqa: F401  (re-exported)
from .guidance import conditioned
from .inversion import Inversion
from .models.base import VideoFamily
from .models.condition import ImageRows
from .sampling import split_prediction

AGREE = 1e-6  # mean |x0 difference| per level below which two prompts count as agreeing (latents are O(1))


def mask_levels(count: int, levels: int) -> list[int]:
    """Indices, among ``count`` edit steps, of the mid-schedule levels the mask is averaged over (30% to 70%)."""
    fractions = torch.linspace(0.3, 0.7, levels).tolist() if levels > 1 else [0.5]
    return sorted({min(count - 1, round(count * f)) for f in fractions})


@torch.no_grad()
def edit_mask(model: VideoFamily, inversion: Inversion, source_prompt: str, prompts: list[str],
              config: BlendConfig, offset: int = 0, images=None) -> torch.Tensor:
    """Binary masks ``[K, T, 1, h, w]`` (float32, 1 = edited) of where each of the K prompts departs from
    ``source_prompt`` (``""``: the inversion's prompt, and when that is empty too, the empty text: DiffEdit's
    reference when no caption is at hand), from the model's clean-latent predictions on the stored trajectory
    (steps ``offset`` on). Costs ``config.levels`` transformer calls of batch ``K + 1``.

    Per latent frame, the disagreement is scaled by its largest value and thresholded; a frame where the prompts
    agree everywhere gets an empty mask (nothing there is edited).

    ``images``: an image-to-video model's conditions of the K edits (``ImageRows``, K rows); the source row takes
    the inversion's own (``inversion.condition``), so an edited first frame counts as a departure too.
    """
    source_prompt = source_prompt or inversion.meta.prompt
    schedule = inversion.schedule(model)[offset:]
    picks = mask_levels(len(schedule), config.levels)
    image = None if images is None else ImageRows.cat([inversion.condition, images])  # [1 + K] rows
    fn = conditioned(model.predict, model.encode_text([source_prompt, *prompts]), image)  # rows [source, p_1 .. p_K]
    total = None
    for j in picks:
        x = inversion.trajectory[offset + j].float()  # [1, T, C, h, w]
        batch = x.expand(len(prompts) + 1, -1, -1, -1, -1)  # [1 + K, T, C, h, w]
        pred = fn(batch, j, schedule.timesteps[j])  # unguided: one row per text
        x0, _ = split_prediction(batch, pred, float(schedule.alpha_from[j]), schedule.prediction_type)
        diff = (x0[1:] - x0[:1]).abs().mean(dim=2, keepdim=True)  # [K, T, 1, h, w]
        total = diff if total is None else total + diff
    peak = total.amax(dim=(3, 4), keepdim=True)  # [K, T, 1, 1, 1]
    mask = ((total >= config.threshold * peak) & (peak > AGREE * len(picks))).float()  # [K, T, 1, h, w]
    if config.grow:
        k, t, _, h, w = mask.shape
        size = 2 * config.grow + 1
        grown = F.max_pool2d(mask.reshape(k * t, 1, h, w), size, stride=1, padding=config.grow)  # [K*T, 1, h, w]
        mask = grown.reshape(k, t, 1, h, w)
    return mask


def blend_step(mask: torch.Tensor, edited: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``edited`` where the binary ``mask`` is 1, ``source`` elsewhere (exactly); ``source`` ``[1, ...]`` broadcasts
    over the K edits ``[K, ...]``, the mask ``[K, T, 1, h, w]`` over channels."""
    return torch.where(mask.bool(), edited, source)
