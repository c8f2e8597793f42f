"""The diffusers-backed family base: what every family adapter does the same way over its pipeline.

``DiffusersFamily`` wraps a loaded diffusers text-to-video pipeline (placed on its device, in its dtype, possibly
with CPU-offload hooks, by ``registry.load_pipeline``) and implements the ``VideoFamily`` protocol of ``base.py``
except for what differs per family. A family module (``cogvideox.py``, ``wan.py``) subclasses it with its class
attributes and supplies only:

- ``native_size``, ``tokens_per_row``, ``predict`` (the transformer call: timesteps, positions, experts);
- ``_scheduler_schedule`` and ``_split_last`` (how the schedule is read off its scheduler and where the last step
  is cut);
- ``scale_latents`` / ``unscale_latents`` (the VAE's latent scaling rule);
- ``_vae_working_set`` (the VAE's share of the memory estimate) and ``_check_positions`` (its position table's
  limits);
- in ``__init__``: ``text_length``, ``size_multiple``, ``trained_frames``, ``temporal_patch``, ``default_frames``,
  ``default_negative_prompt``.
"""

from __future__ import annotations

from functools import cached_property

import torch

from ..errors import VidinvertError
from ..schedule import Schedule
from ..settings import DEFAULT_GUIDANCE, MAX_STEPS
from .condition import I2V_MODELS
from .injection import TransformerSites, injected
from .parts import PromptCache, check_frame_layout, fingerprint, transformer_step_bytes
from .published import match

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")  # what every family's pipeline holds


class DiffusersFamily:
    """A diffusers pipeline as the samplers see it (the ``VideoFamily`` protocol), less what each family supplies.

    Args:
        pipe: a loaded pipeline of the family (from ``load_pipeline`` or built by hand).
        name: how the model is named in saved inversions and settings (default: the pipeline's path, or
            ``default_name``).
    """

    family: str  # the registry's name of the family (``registry.FAMILIES`` value), saved with inversions
    label: str  # the family as users read it, in errors
    default_name: str  # the name when neither ``name`` nor the pipeline's path gives one
    sites: TransformerSites  # where injection goes in the family's transformer
    takes_image = False  # the model can condition rows on a frame (``encode_image``): an image-to-video model
    needs_image = False  # every row must be conditioned on a frame (False where it also generates from text alone)

    def __init__(self, pipe, name: str | None = None):
        missing = [n for n in COMPONENTS if getattr(pipe, n, None) is None]
        if missing or not hasattr(pipe.transformer, self.sites.blocks):
            what = ", ".join(missing) or "blocks"
            raise VidinvertError(f"{type(pipe).__name__} is not a {self.label} text-to-video pipeline (missing {what})",
                                 "load one with vidinvert.load_pipeline")
        self.pipe = pipe
        self.name = name or getattr(pipe, "name_or_path", None) or self.default_name
        self.transformer = pipe.transformer
        self.vae = pipe.vae
        self.config = pipe.transformer.config
        self.spatial_factor = pipe.vae_scale_factor_spatial  # pixels per latent cell
        self.temporal_factor = pipe.vae_scale_factor_temporal  # pixel frames per latent frame (after the first)
        self.recommended_edit: dict = {}  # edit settings the model folder recommends (registry.wrap fills it)
        self.recommended_invert: dict = {}  # inversion settings it recommends (its temporal windows)
        self.published = match(pipe)  # the published checkpoint it is an architecture of (its size and frames), or None

    # ---- identity -------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where inputs go: the pipeline's execution device, which accounts for CPU-offload hooks (per diffusers
        pipelines/pipeline_utils.py)."""
        return self.pipe._execution_device

    @property
    def dtype(self) -> torch.dtype:
        """The transformer's parameter dtype (text embeddings are cast to it; the VAE keeps its own)."""
        return self.transformer.dtype

    @property
    def experts(self) -> tuple:
        """The transformers that may run (one here; Wan 2.2 A14B has two)."""
        return (self.transformer,)

    def _fingerprint_configs(self) -> tuple:
        return (self.pipe.scheduler.config,)

    def fingerprint(self) -> str:
        """A short hash of the configs and a sample of the weights: tells one model from another cheaply. LoRAs and
        fp8 weight storage count too (``placement.identity``; nothing is added for a model with neither)."""
        from .placement import identity

        return fingerprint((*self.experts, self.vae), self._fingerprint_configs() + identity(self.experts))

    @property
    def num_blocks(self) -> int:
        return len(getattr(self.transformer, self.sites.blocks))

    @property
    def default_guidance(self) -> tuple[float, float | None]:
        """``(guidance, second expert's or None)`` the published checkpoint this model is an architecture of is
        sampled with (``published.py``), else ``(settings.DEFAULT_GUIDANCE, None)``."""
        if self.published is None:
            return DEFAULT_GUIDANCE, None
        return self.published.guidance_scale, self.published.guidance_scale_2

    def frames_for(self, count: int) -> int:
        """The largest ``k t + 1`` frame count (``t`` the VAE's temporal factor, 4 for every family) not above
        ``count``."""
        return count - (count - 1) % self.temporal_factor

    def schedule(self, num_steps: int, split_clean_end: bool = False) -> Schedule:
        """The forward scheduler's own schedule for ``num_steps`` steps (inversion uses the same one); with
        ``split_clean_end`` its last step is cut in two (``_split_last``, ``schedule.split_last_step``)."""
        limit = min(MAX_STEPS, int(self.pipe.scheduler.config.num_train_timesteps))
        if not 1 <= num_steps <= limit:
            raise VidinvertError(f"steps must be between 1 and {limit} for this model, got {num_steps}", "use e.g. 50")
        schedule = self._scheduler_schedule(num_steps)
        return self._split_last(schedule) if split_clean_end else schedule

    def expert_for(self, t) -> int:
        """Which expert evaluates timestep ``t``: always 0 with one transformer."""
        return 0

    # ---- attention --------------------------------------------------------------------------------------------
    def attention_width(self) -> int:
        return self.config.num_attention_heads * self.config.attention_head_dim

    def memory_need(self, frames: int, height: int, width: int, rows: int) -> dict[str, int]:
        """Rough peak bytes of the VAE and of one transformer step (weights, already loaded, not counted).

        VAE: about ten tensors of its first width alive at full resolution (one tile with tiling) over the frames
        it works on at once (``_vae_working_set``), plus the frames in and out. Transformer: per layer about ten
        ``rows x tokens x width`` tensors alive, attention computed without a tokens^2 matrix.
        """
        vae = self.vae
        elem = torch.finfo(vae.dtype).bits // 8
        tile_h, tile_w = height, width
        if getattr(vae, "use_tiling", False):
            tile_h = min(height, getattr(vae, "tile_sample_min_height", height))
            tile_w = min(width, getattr(vae, "tile_sample_min_width", width))
        channels, at_once = self._vae_working_set(frames)
        vae_bytes = 10 * channels * at_once * tile_h * tile_w * elem
        vae_bytes += 2 * frames * 3 * height * width * 4  # the frames in and out, float32
        return {"vae": int(vae_bytes), "transformer": transformer_step_bytes(self, frames, height, width, rows)}

    def injected(self, config, state):
        """Install key/value injection in every block's self-attention of every expert; restore the originals on
        exit or error (``injection.injected``)."""
        return injected(self.experts, self.sites, config, state)

    def encode_image(self, frame: torch.Tensor, latent_frames: int, generator: torch.Generator | None = None,
                     sample: bool = False):
        """An image-to-video model's condition of one row (``condition.ImageRows``) from a frame ``[C, H, W]`` in
        [-1, 1], for latents of ``latent_frames`` frames; a text-to-video model takes none."""
        raise VidinvertError(f"{self.name} is a text-to-video model: it cannot be conditioned on a first frame",
                             f"use an image-to-video model ({I2V_MODELS})")

    # ---- text -----------------------------------------------------------------------------------------------
    @cached_property
    def _prompts(self) -> PromptCache:
        return PromptCache(self.pipe, self.text_length)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Embeddings ``[len(prompts), L, D]`` from the pipeline's own ``encode_prompt``, in the transformer dtype;
        warns when a prompt is cut to L tokens."""
        return self._prompts.encode(prompts, self.device, self.dtype)

    # ---- VAE ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, frames: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False) -> torch.Tensor:
        """Frames ``[F, C, H, W]`` in [-1, 1] -> float32 latents ``[1, T, C', h, w]``, scaled by ``scale_latents``.

        Args:
            frames: ``F = 4k + 1`` RGB frames; H and W divisible by ``size_multiple``.
            generator: used only when ``sample`` is True.
            sample: draw from the VAE posterior (what CogVideoX's public reference does) instead of taking its mean
                (deterministic, the default).
        """
        self.check_frames(frames)
        video = frames.to(device=self.device, dtype=self.vae.dtype).unsqueeze(0).permute(0, 2, 1, 3, 4)  # [1, C, F, H, W]
        posterior = self.vae.encode(video).latent_dist
        latents = posterior.sample(generator) if sample else posterior.mode()  # [1, C', T, h, w]
        return self.scale_latents(latents).permute(0, 2, 1, 3, 4).float()  # [1, T, C', h, w]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, T, C', h, w]`` -> float32 frames ``[B, F, C, H, W]`` in [-1, 1], ``F = (T - 1) k + 1``.

        The VAE may decode more frames than that (CogVideoX's decodes an even number of latent frames as if none
        were the lone first frame: 2 latents -> 8 frames), so the last ``F`` are kept (the alignment that matches
        the encoded frames on a trained VAE; tests/test_engine.py checks it on the demo).
        """
        z = latents.to(device=self.device, dtype=self.vae.dtype).permute(0, 2, 1, 3, 4)  # [B, C', T, h, w]
        video = self.vae.decode(self.unscale_latents(z)).sample  # [B, C, F', H, W], F' >= F
        frames = (latents.shape[1] - 1) * self.temporal_factor + 1
        video = video[:, :, -frames:]  # [B, C, F, H, W]
        return video.permute(0, 2, 1, 3, 4).float().clamp(-1, 1)  # [B, F, C, H, W]

    def check_frames(self, frames: torch.Tensor) -> None:
        """One-line errors for frame tensors the VAE or transformer cannot take."""
        self._check_positions(*check_frame_layout(frames, self.temporal_factor, self.size_multiple, self.label))

    # ---- what each family supplies --------------------------------------------------------------------------
    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's latents ``[B, C', T, h, w]`` -> the transformer's (the family's scaling rule)."""
        raise NotImplementedError

    def unscale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of ``scale_latents``, in the VAE's dtype."""
        raise NotImplementedError

    def _scheduler_schedule(self, num_steps: int) -> Schedule:
        raise NotImplementedError

    def _split_last(self, schedule: Schedule) -> Schedule:
        raise NotImplementedError

    def _vae_working_set(self, frames: int) -> tuple[int, int]:
        """``(channels, frames)`` of the VAE's full-resolution tensors while it works on ``frames`` frames."""
        raise NotImplementedError

    def _check_positions(self, count: int, height: int, width: int) -> None:
        raise NotImplementedError
