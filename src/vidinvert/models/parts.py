"""Pieces every family adapter needs the same way: a model fingerprint, prompt embeddings cached per prompt, and
the transformer's share of the memory estimate."""

from __future__ import annotations

import hashlib
import json
import warnings

import torch
from torch._subclasses.fake_tensor import is_fake

from ..errors import VidinvertError


def transformer_step_bytes(model, frames: int, height: int, width: int, rows: int) -> int:
    """Rough peak bytes of one transformer step over ``rows`` batch rows of a ``frames`` x ``height`` x ``width``
    clip: per layer about ten ``rows x tokens x width`` tensors alive (hidden states, norms, q/k/v, attention
    output, the feed-forward), attention computed without a tokens^2 matrix."""
    latent_frames = (frames - 1) // model.temporal_factor + 1
    shape = (1, latent_frames, 0, height // model.spatial_factor, width // model.spatial_factor)
    return 10 * rows * model.tokens_per_row(shape) * model.attention_width() * (torch.finfo(model.dtype).bits // 8)


def config_json(config) -> bytes:
    """A config as canonical JSON, without diffusers' bookkeeping keys (``_name_or_path``, versions...)."""
    public = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    return json.dumps(public, sort_keys=True, default=str).encode()


def fingerprint(modules, configs=()) -> str:
    """A short hash of each module's config and a sample of its weights, then of ``configs``: tells one model from
    another cheaply. The byte order is fixed: saved inversions compare it."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(config_json(module.config))
        params = list(module.parameters())
        for p in (params[0], params[-1]):
            if is_fake(p):  # a planned model (traced.py) has no values: its shapes stand in
                digest.update(str((tuple(p.shape), p.dtype)).encode())
                continue
            digest.update(p.detach().flatten()[:256].float().cpu().numpy().tobytes())
    for config in configs:
        digest.update(config_json(config))
    return digest.hexdigest()[:16]


class PromptCache:
    """Prompt embeddings from a pipeline's own ``encode_prompt``, computed once per prompt.

    Args:
        pipe: a diffusers pipeline with ``encode_prompt`` and ``tokenizer``.
        text_length: tokens a prompt is padded/cut to; a longer prompt warns with the part that was cut.
    """

    def __init__(self, pipe, text_length: int):
        self.pipe, self.text_length = pipe, text_length
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, prompts: list[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Embeddings ``[len(prompts), L, D]``."""
        out = []
        for prompt in prompts:
            if prompt not in self._cache:
                self._warn_if_cut(prompt)
                embeds, _ = self.pipe.encode_prompt(prompt, do_classifier_free_guidance=False,
                                                    max_sequence_length=self.text_length, device=device, dtype=dtype)
                self._cache[prompt] = embeds  # [1, L, D]
            out.append(self._cache[prompt])
        return torch.cat(out)  # [B, L, D]

    def _warn_if_cut(self, prompt: str) -> None:
        ids = self.pipe.tokenizer(prompt, add_special_tokens=True).input_ids
        if len(ids) > self.text_length:
            cut = self.pipe.tokenizer.decode(ids[self.text_length - 1 :], skip_special_tokens=True)
            warnings.warn(f"prompt longer than the model's {self.text_length} tokens; this part was cut: {cut!r}",
                          stacklevel=5)


def check_frame_layout(frames: torch.Tensor, temporal_factor: int, size_multiple: int, family: str) -> tuple[int, ...]:
    """One-line errors for frames ``[F, 3, H, W]`` that break a ``temporal_factor``k+1 frame rule or a size multiple;
    returns ``(F, H, W)``."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise VidinvertError(f"frames must be [F, 3, H, W], got {tuple(frames.shape)}", "read them with read_video")
    count, _, height, width = frames.shape
    if (count - 1) % temporal_factor:
        raise VidinvertError(f"{count} frames do not fit {family}'s {temporal_factor}k+1 rule",
                             f"use {count - (count - 1) % temporal_factor} frames")
    m = size_multiple
    if height % m or width % m:
        raise VidinvertError(f"frame size {height}x{width} is not divisible by {m}",
                             f"resize to {max(m, height // m * m)}x{max(m, width // m * m)}")
    return count, height, width
