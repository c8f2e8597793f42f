"""What the samplers, the inversion and the editor need from a model family: the ``VideoFamily`` protocol.

A family module (``cogvideox.py``, ``wan.py``) wraps a diffusers pipeline in a class with these members, a subclass
of ``family.DiffusersFamily`` (what every family does the same way) that keeps only what differs. Nothing above this
layer (``sampling``, ``exact``, ``inversion``, ``editing``, ``blend``, ``krnr``, ``engine``) reads a pipeline
directly, so a new family is a new module (adapter and injection processor) plus one line in ``registry.FAMILIES``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import torch

from ..attention import InjectionConfig, InjectionState
from ..schedule import Schedule


@runtime_checkable
class VideoFamily(Protocol):
    """A loaded video model as the rest of vidinvert sees it.

    Layout: pixel frames ``[F, C, H, W]`` in [-1, 1]; latents float32 ``[B, T, C', h, w]`` (batch, latent frames,
    channels, height, width); text embeddings ``[B, L, D]`` in the model dtype.
    """

    family: str  # "cogvideox", "wan"
    name: str  # how the model is named in saved inversions and settings
    spatial_factor: int  # pixels per latent cell
    temporal_factor: int  # pixel frames per latent frame (after the first)
    size_multiple: int  # frame height and width must divide by this
    text_length: int  # tokens a prompt is padded/cut to
    trained_frames: int  # pixel frames of the clips the model was trained on (its temporal window, see windows.py)
    temporal_patch: int  # latent frames per transformer patch along time (windows are multiples of it)
    default_frames: int  # frames read when none are asked for (ReadSettings.max_frames None): the pipeline's own
    default_negative_prompt: str  # uncond text when none is given (EditConfig/InvertSettings.negative_prompt None)
    recommended_edit: dict  # edit settings the model folder recommends (settings.MODEL_SETTINGS_FILE), or {}
    recommended_invert: dict  # inversion settings it recommends ({"window": "auto"} for a short-clip model), or {}

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def num_blocks(self) -> int: ...

    def fingerprint(self) -> str:
        """A short hash telling one model (configs and weights) from another."""

    @property
    def default_guidance(self) -> tuple[float, float | None]:
        """(guidance, second expert's or None) the model's authors publish (``settings.DEFAULT_GUIDANCE`` if none)."""

    def native_size(self) -> tuple[int, int]:
        """(height, width) in pixels the model was made for."""

    def frames_for(self, count: int) -> int:
        """The largest frame count ``<= count`` the model takes (its frame rule, e.g. 4k+1)."""

    def schedule(self, num_steps: int, split_clean_end: bool = False) -> Schedule:
        """The sampling schedule of ``num_steps`` steps, read from the pipeline's own scheduler; with
        ``split_clean_end`` the last step is cut in two (one more step, see ``schedule.split_last_step``)."""

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Embeddings ``[len(prompts), L, D]``."""

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[F, C, H, W]`` -> float32 latents ``[1, T, C', h, w]``."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, T, C', h, w]`` -> float32 frames ``[B, F, C, H, W]`` in [-1, 1], ``F`` the frame count the
        latents were encoded from."""

    def check_frames(self, frames: torch.Tensor) -> None:
        """One-line errors for frames the model cannot take."""

    def predict(self, latents: torch.Tensor, t: int, text: torch.Tensor) -> torch.Tensor:
        """One transformer evaluation -> float32 prediction shaped like ``latents``."""

    def expert_for(self, t) -> int:
        """Which expert evaluates timestep ``t``: 0, or 1 for the low-noise expert of a two-expert model (Wan 2.2
        A14B), where a second guidance scale applies."""

    def tokens_per_row(self, latent_shape: tuple[int, ...]) -> int:
        """Tokens one batch row of latents ``[B, T, C', h, w]`` puts through self-attention."""

    def memory_need(self, frames: int, height: int, width: int, rows: int) -> dict[str, int]:
        """Rough peak bytes, per phase (``"vae"``, ``"transformer"``), of working on ``frames`` frames of
        ``height`` x ``width`` with ``rows`` transformer batch rows; used to refuse hopeless sizes up front."""

    def attention_width(self) -> int:
        """Heads x head size of the self-attention."""

    def injected(self, config: InjectionConfig, state: InjectionState) -> AbstractContextManager:
        """Install the family's injection processors for the block; restore the originals on exit or error."""


def negative_prompt_for(model: VideoFamily, given: str | None) -> str:
    """The uncond text an edit or inversion uses: ``given``, or the model's ``default_negative_prompt`` when ``None``
    (the one place the family default is applied; ``""`` for adapters without one)."""
    return getattr(model, "default_negative_prompt", "") if given is None else given
