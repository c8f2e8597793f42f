"""Wan family adapter (Wan 2.1 T2V, Wan 2.2 T2V-A14B and TI2V-5B): wraps a diffusers ``WanPipeline``.

``WanModel`` is the family base (``family.DiffusersFamily``) plus what is Wan's own: the VAE's per-channel latent
normalisation, the flow-matching schedule read off the pipeline's scheduler, video-only self-attention tokens, the
RoPE table's limits and one transformer evaluation per call. Wan 2.2's two experts (``transformer`` at timesteps
>= ``boundary_ratio x 1000``, ``transformer_2`` below, per diffusers pipelines/wan/pipeline_wan.py) are switched
inside ``predict``, so inversion and editing switch at the same boundary; TI2V-5B's per-token timesteps
(``expand_timesteps``) are built there too.
"""

from __future__ import annotations

import torch

from ..errors import VidinvertError
from ..schedule import Schedule, flow_schedule_from_scheduler, split_last_step
from .family import DiffusersFamily
from .wan_attention import SITES

TEXT_LENGTH = 512  # UMT5 tokens a prompt is padded/cut to (WanPipeline.__call__'s max_sequence_length default)
NATIVE_SIZE = (480, 832)  # WanPipeline.__call__'s default height/width (Wan 2.1 480p, Wan 2.2 A14B)
NATIVE_SIZE_TI2V = (704, 1280)  # Wan2.2-TI2V-5B's model card size (its 720p mode)
DEFAULT_FRAMES = 81  # WanPipeline.__call__'s default num_frames
# The uncond text of Wan models that can read it (``WanModel.default_negative_prompt``). WanPipeline itself has no
# default negative prompt (None: an empty uncond text), but Wan's reference code samples with this one whenever none
# is given (per Wan2.1 wan/text2video.py: an empty ``n_prompt`` becomes ``sample_neg_prompt`` of
# wan/configs/shared_config.py), the Wan-AI model cards pass it, and diffusers' WanPipeline example passes an English
# rendering of it. So a Wan model with Wan's UMT5 tokenizer gets it when the user gives none. In English: bright
# tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, still, overall gray,
# worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly drawn hands, poorly
# drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy background, three legs,
# many people in the background, walking backwards.
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
UMT5_VOCABULARY = 250_000  # a tokenizer with at least this many tokens is Wan's UMT5 one (256k), which reads it


class WanModel(DiffusersFamily):
    """What the samplers see of a Wan pipeline (the ``VideoFamily`` protocol of ``models/base.py``).

    Args:
        pipe: a loaded ``WanPipeline`` (from ``load_pipeline`` or built by hand).
        name: how the model is named in saved inversions and settings (default: the pipeline's path or "tiny-wan").
        native_size: (height, width) the model is run at by default; default: Wan's (480x832, or 704x1280 for a
            TI2V-5B layout).
        trained_frames: pixel frames of the clips it was trained on, its temporal window and the frames read by
            default (Wan's config does not carry it); default: Wan's 81.
    """

    family, label, default_name, sites = "wan", "Wan", "tiny-wan", SITES

    def __init__(self, pipe, name: str | None = None, native_size: tuple[int, int] | None = None,
                 trained_frames: int | None = None):
        super().__init__(pipe, name)
        self.transformer_2 = getattr(pipe, "transformer_2", None)
        self.boundary_ratio = pipe.config.get("boundary_ratio", None)
        self.expand_timesteps = bool(pipe.config.get("expand_timesteps", False))
        if self.boundary_ratio is not None and self.transformer_2 is None:
            raise VidinvertError("this Wan pipeline has a boundary_ratio but no transformer_2",
                                 "load the full Wan 2.2 folder (both experts)")
        limit = getattr(pipe.tokenizer, "model_max_length", TEXT_LENGTH) or TEXT_LENGTH
        self.text_length = int(min(TEXT_LENGTH, limit))  # prompts are padded/cut to this many tokens
        _, p_h, p_w = self.config.patch_size
        self.size_multiple = self.spatial_factor * max(p_h, p_w)  # frame sizes must divide by this (16 or 32)
        published = self.published.num_frames if self.published else None  # 121 for TI2V-5B
        self.trained_frames = trained_frames or published or DEFAULT_FRAMES  # else Wan's 81 frames (21 latent)
        self.temporal_patch = int(self.config.patch_size[0])  # latent frames per patch (1 for Wan 2.1/2.2)
        self._native = native_size or (self.published and (self.published.height, self.published.width)) or (
            NATIVE_SIZE_TI2V if self.expand_timesteps else NATIVE_SIZE)  # a published checkpoint's own, else Wan's
        self.default_frames = self.trained_frames  # frames read when none are asked for
        # The published negative prompt for a model whose tokenizer is Wan's UMT5 (any Wan-AI checkpoint, on the hub
        # or copied to a folder); "" for the tiny and demo models, whose small vocabularies would read it as unknowns.
        readable = len(pipe.tokenizer) >= UMT5_VOCABULARY
        self.default_negative_prompt = DEFAULT_NEGATIVE_PROMPT if readable else ""

    @property
    def experts(self) -> tuple:
        """The transformers that may run: ``(transformer,)`` or, for Wan 2.2 A14B, ``(transformer, transformer_2)``."""
        return (self.transformer,) if self.transformer_2 is None else (self.transformer, self.transformer_2)

    def _fingerprint_configs(self) -> tuple:
        return (self.pipe.scheduler.config, self.pipe.config)

    def native_size(self) -> tuple[int, int]:
        """(height, width) in pixels the model is run at by default (multiples of ``size_multiple``)."""
        return self._native

    def _scheduler_schedule(self, num_steps: int) -> Schedule:
        """The forward scheduler's flow-matching sigmas."""
        try:
            return flow_schedule_from_scheduler(self.pipe.scheduler, num_steps)
        except TypeError as err:
            raise VidinvertError(f"cannot read a flow schedule off this Wan pipeline: {err}",
                                 "use FlowMatchEulerDiscreteScheduler or UniPC with use_flow_sigmas") from None

    def _split_last(self, schedule: Schedule) -> Schedule:
        """The last step cut at half its sigma (halfway from its level to the clean latent)."""
        sigma = float(schedule.alpha_from[-1]) / 2
        if sigma > 0:
            train = float(self.pipe.scheduler.config.num_train_timesteps)
            schedule = split_last_step(schedule, sigma * train, sigma)
        return schedule

    def boundary_timestep(self) -> float | None:
        """Timestep at and above which ``transformer`` runs and below which ``transformer_2`` does (Wan 2.2 A14B)."""
        if self.boundary_ratio is None:
            return None
        return self.boundary_ratio * self.pipe.scheduler.config.num_train_timesteps

    def expert_for(self, t) -> int:
        """0 for ``transformer``, 1 for ``transformer_2`` at timestep ``t`` (per diffusers pipeline_wan.py)."""
        boundary = self.boundary_timestep()
        return 0 if boundary is None or t >= boundary else 1

    # ---- attention and memory -------------------------------------------------------------------------------
    def tokens_per_row(self, latent_shape: tuple[int, ...]) -> int:
        """Video tokens of one row of latents ``[B, T, C', h, w]`` (text enters through cross-attention only)."""
        _, frames, _, height, width = latent_shape
        p_t, p_h, p_w = self.config.patch_size
        return (frames // p_t) * (height // p_h) * (width // p_w)

    def _vae_working_set(self, frames: int) -> tuple[int, int]:
        """Wan's causal VAE runs a few frames at a time (per diffusers ``autoencoder_kl_wan.py``: the first frame,
        then chunks of ``temporal factor`` frames, with cached features) at ``base_dim`` channels."""
        return self.vae.config.base_dim, min(frames, self.temporal_factor + 2)

    # ---- VAE ------------------------------------------------------------------------------------------------
    def _latent_stats(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(mean, std)`` ``[1, C', 1, 1, 1]`` of the VAE's latents (from its config)."""
        shape = (1, self.vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean).view(shape).to(device, dtype)
        std = torch.tensor(self.vae.config.latents_std).view(shape).to(device, dtype)
        return mean, std

    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``(z - latents_mean) / latents_std`` per channel (per diffusers pipeline_wan_video2video.py
        ``prepare_latents``, which multiplies by ``1 / latents_std``)."""
        mean, std = self._latent_stats(latents.device, latents.dtype)
        return (latents - mean) * (1.0 / std)

    def unscale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Undoes ``scale_latents`` as ``WanPipeline.__call__`` does."""
        mean, std = self._latent_stats(latents.device, latents.dtype)
        return latents / (1.0 / std) + mean

    def _check_positions(self, count: int, height: int, width: int) -> None:
        """The longest axis of the patch grid must fit the transformer's RoPE table."""
        latent_frames = (count - 1) // self.temporal_factor + 1
        p_t, p_h, p_w = self.config.patch_size
        longest = max(latent_frames // p_t, height // self.spatial_factor // p_h, width // self.spatial_factor // p_w)
        if longest > self.config.rope_max_seq_len:
            raise VidinvertError(
                f"{count} frames of {height}x{width} need {longest} positions along one axis, over this model's "
                f"RoPE table of {self.config.rope_max_seq_len}",
                "use fewer frames or a smaller size",
            )

    # ---- transformer ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, latents: torch.Tensor, t, text: torch.Tensor) -> torch.Tensor:
        """One transformer evaluation (the expert for ``t`` on Wan 2.2 A14B).

        Args:
            latents: ``[B, T, C', h, w]`` (any float dtype; cast to the model dtype here).
            t: the model timestep (``sigma * 1000`` as the scheduler hands it), shared by the batch.
            text: ``[B, L, D]`` prompt embeddings from ``encode_text``.

        Returns:
            float32 flow velocity ``[B, T, C', h, w]``.
        """
        batch, frames, _, height, width = latents.shape
        model = self.experts[self.expert_for(t)]
        x = latents.to(device=self.device, dtype=model.dtype).permute(0, 2, 1, 3, 4).contiguous()  # [B, C', T, h, w]
        if self.expand_timesteps:
            # per diffusers pipeline_wan.py (Wan 2.2 TI2V): one timestep per video token, [B, T * h/2 * w/2]
            tokens = self.tokens_per_row(tuple(latents.shape))
            timestep = torch.full((batch, tokens), float(t), device=self.device, dtype=torch.float32)
        else:
            timestep = torch.full((batch,), float(t), device=self.device, dtype=torch.float32)
        out = model(
            hidden_states=x,
            timestep=timestep,
            encoder_hidden_states=text.to(device=self.device, dtype=model.dtype),
            return_dict=False,
        )[0]  # [B, C', T, h, w]
        return out.permute(0, 2, 1, 3, 4).float()
