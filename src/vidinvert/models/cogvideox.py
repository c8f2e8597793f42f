"""CogVideoX family adapter: wraps a diffusers CogVideoX pipeline and exposes exactly what the samplers need.

``VideoModel`` turns a pipeline into ``predict(latents, t, text) -> prediction`` plus the VAE and text encoder, so
the samplers, the inversion and the editor never touch diffusers directly. Works for every CogVideoX text-to-video
layout: 2b (sincos positions), 5b (RoPE), 1.5 (RoPE + temporal patches, padded here as the pipeline does).
"""

from __future__ import annotations

import warnings

import torch

from ..errors import VidinvertError
from ..schedule import Schedule, schedule_from_scheduler, split_last_step
from ..settings import MAX_STEPS
from .parts import PromptCache, check_frame_layout, fingerprint, transformer_step_bytes

DEFAULT_FRAMES = 49  # CogVideoXPipeline.__call__'s default num_frames


class VideoModel:
    """What the samplers see of a CogVideoX pipeline (the ``VideoFamily`` protocol of ``models/base.py``).

    Args:
        pipe: a loaded ``CogVideoXPipeline`` (from ``load_pipeline`` or built by hand).
        name: how the model is named in saved inversions and settings (default: the pipeline's path or "tiny").
    """

    def __init__(self, pipe, name: str | None = None):
        missing = [n for n in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler") if getattr(pipe, n, None) is None]
        if missing or not hasattr(pipe.transformer, "transformer_blocks"):
            raise VidinvertError(
                f"{type(pipe).__name__} is not a CogVideoX text-to-video pipeline (missing {', '.join(missing) or 'blocks'})",
                "load one with vidinvert.load_pipeline",
            )
        self.family = "cogvideox"
        self.pipe = pipe
        self.name = name or getattr(pipe, "name_or_path", None) or "tiny"
        self.transformer = pipe.transformer
        self.vae = pipe.vae
        self.config = pipe.transformer.config
        self.text_length = self.config.max_text_seq_length  # prompts are padded/cut to this many tokens
        self.spatial_factor = pipe.vae_scale_factor_spatial  # pixels per latent cell
        self.temporal_factor = pipe.vae_scale_factor_temporal  # pixel frames per latent frame (after the first)
        self.size_multiple = self.spatial_factor * self.config.patch_size  # frame sizes must divide by this
        self.trained_frames = int(self.config.sample_frames)  # pixel frames the positions were made for
        self.temporal_patch = int(self.config.patch_size_t or 1)  # latent frames per patch (2 for CogVideoX 1.5)
        self.default_frames = DEFAULT_FRAMES  # frames read when none are asked for
        self.default_negative_prompt = ""  # CogVideoXPipeline's default (no negative text), the public script's too
        self.recommended_edit: dict = {}  # edit settings the model folder recommends (registry.wrap fills it)
        self._rope_cache: dict = {}
        self._prompts = PromptCache(pipe, self.text_length)

    # ---- identity -------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        # per diffusers pipelines/pipeline_utils.py: the execution device accounts for CPU-offload hooks
        return self.pipe._execution_device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def fingerprint(self) -> str:
        """A short hash of the configs and a sample of the weights: tells one model from another cheaply."""
        return fingerprint((self.transformer, self.vae), (self.pipe.scheduler.config,))

    @property
    def num_blocks(self) -> int:
        return len(self.transformer.transformer_blocks)

    def native_size(self) -> tuple[int, int]:
        """(height, width) in pixels the transformer was configured for."""
        return self.config.sample_height * self.spatial_factor, self.config.sample_width * self.spatial_factor

    def frames_for(self, count: int) -> int:
        """The largest ``4k + 1`` frame count (CogVideoX's rule) not above ``count``."""
        return count - (count - 1) % self.temporal_factor

    def schedule(self, num_steps: int, split_clean_end: bool = False) -> Schedule:
        """The forward scheduler's own schedule for ``num_steps`` steps (inversion uses the same one); with
        ``split_clean_end`` its last step is cut in two at half its timestep (``schedule.split_last_step``)."""
        limit = min(MAX_STEPS, int(self.pipe.scheduler.config.num_train_timesteps))
        if not 1 <= num_steps <= limit:
            raise VidinvertError(f"steps must be between 1 and {limit} for this model, got {num_steps}", "use e.g. 50")
        schedule = schedule_from_scheduler(self.pipe.scheduler, num_steps)
        middle = schedule.timesteps[-1] // 2
        if split_clean_end and middle > 0:
            schedule = split_last_step(schedule, middle, float(self.pipe.scheduler.alphas_cumprod[middle]))
        return schedule

    # ---- attention --------------------------------------------------------------------------------------------
    def tokens_per_row(self, latent_shape: tuple[int, ...]) -> int:
        """Text plus video tokens of one row of latents ``[B, T, C', h, w]`` (frames padded to ``patch_size_t``)."""
        _, frames, _, height, width = latent_shape
        if self.config.patch_size_t:  # CogVideoX 1.5 pads the frames to a multiple of patch_size_t
            frames = -(-frames // self.config.patch_size_t)
        p = self.config.patch_size
        return self.text_length + frames * (height // p) * (width // p)

    def attention_width(self) -> int:
        return self.config.num_attention_heads * self.config.attention_head_dim

    def memory_need(self, frames: int, height: int, width: int, rows: int) -> dict[str, int]:
        """Rough peak bytes of the VAE and of one transformer step (weights, already loaded, not counted).

        VAE: its first block works at full resolution on a batch of frames at a time (per diffusers
        ``autoencoder_kl_cogvideox.py``: ``num_sample_frames_batch_size`` plus the causal padding), with about ten
        tensors of ``block_out_channels[0]`` channels alive; with tiling only one tile is at full resolution.
        Transformer: per layer about ten ``rows x tokens x width`` tensors alive (hidden states, norms, q/k/v,
        attention output, the 4x feed-forward), attention itself computed without a tokens^2 matrix.
        """
        vae = self.vae
        elem = torch.finfo(vae.dtype).bits // 8
        tile_h, tile_w = height, width
        if getattr(vae, "use_tiling", False):
            tile_h, tile_w = min(height, vae.tile_sample_min_height), min(width, vae.tile_sample_min_width)
        batch = min(frames, getattr(vae, "num_sample_frames_batch_size", 8) + 2)
        vae_bytes = 10 * vae.config.block_out_channels[0] * batch * tile_h * tile_w * elem
        vae_bytes += 2 * frames * 3 * height * width * 4  # the frames in and out, float32
        return {"vae": int(vae_bytes), "transformer": transformer_step_bytes(self, frames, height, width, rows)}

    def injected(self, config, state):
        """Install key/value injection in every block's self-attention (see ``cogvideox_attention.injected``)."""
        from .cogvideox_attention import injected

        return injected(self.transformer, config, state)

    # ---- text -----------------------------------------------------------------------------------------------
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """T5 embeddings ``[len(prompts), L, D]`` in the transformer dtype; warns when a prompt is cut to L
        tokens."""
        return self._prompts.encode(prompts, self.device, self.dtype)

    # ---- VAE ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, frames: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False) -> torch.Tensor:
        """Frames ``[F, C, H, W]`` in [-1, 1] -> float32 latents ``[1, T, C', H/8, W/8]`` scaled by the VAE factor.

        Args:
            frames: ``F = 4k + 1`` RGB frames; H and W divisible by ``size_multiple``.
            generator: used only when ``sample`` is True.
            sample: draw from the VAE posterior (what the public reference does) instead of taking its mean
                (deterministic, the default).
        """
        self.check_frames(frames)
        video = frames.to(device=self.device, dtype=self.vae.dtype).unsqueeze(0).permute(0, 2, 1, 3, 4)  # [1, C, F, H, W]
        posterior = self.vae.encode(video).latent_dist
        latents = posterior.sample(generator) if sample else posterior.mode()  # [1, C', T, h, w]
        latents = latents.permute(0, 2, 1, 3, 4).float()  # [1, T, C', h, w]
        return latents * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, T, C', h, w]`` -> float32 frames ``[B, F, C, H, W]`` in [-1, 1], ``F = (T - 1) k + 1``.

        CogVideoX's VAE decodes an even number of latent frames as if none were the lone first frame (2 latents ->
        8 frames, 12 -> 48), so the front of the result holds ``k - 1`` extra frames; they are dropped (the tail is
        the alignment that matches the encoded frames on a trained VAE; tests/test_jobs.py checks it on the demo).
        """
        z = latents.to(device=self.device, dtype=self.vae.dtype) / self.vae.config.scaling_factor
        video = self.vae.decode(z.permute(0, 2, 1, 3, 4)).sample  # [B, C, F', H, W], F' >= F
        frames = (latents.shape[1] - 1) * self.temporal_factor + 1
        video = video[:, :, -frames:]  # [B, C, F, H, W]
        return video.permute(0, 2, 1, 3, 4).float().clamp(-1, 1)  # [B, F, C, H, W]

    def check_frames(self, frames: torch.Tensor) -> None:
        """One-line errors for frame tensors the VAE or transformer cannot take."""
        count, height, width = check_frame_layout(frames, self.temporal_factor, self.size_multiple, "CogVideoX")
        self._check_positions(count, height, width)

    def _check_positions(self, count: int, height: int, width: int) -> None:
        """Learned position tables fix the size (refused otherwise); sincos/RoPE tables extend, with a warning past
        the frame count the model was trained on (per diffusers embeddings.py ``CogVideoXPatchEmbed``)."""
        native_h = self.config.sample_height * self.spatial_factor
        native_w = self.config.sample_width * self.spatial_factor
        trained = self.config.sample_frames
        if self.config.use_learned_positional_embeddings and (height, width) != (native_h, native_w):
            raise VidinvertError(
                f"this model's learned position table only takes {native_h}x{native_w} frames, not {height}x{width}",
                f"use --height {native_h} --width {native_w}",
            )
        if count > trained:
            warnings.warn(
                f"{count} frames is more than the {trained} this model's positions were made for; quality may drop "
                f"(use --window auto to edit in windows of that length, or --max-num-frames {trained})",
                stacklevel=3,
            )

    # ---- transformer ----------------------------------------------------------------------------------------
    def expert_for(self, t) -> int:
        """CogVideoX has one transformer: always 0."""
        return 0

    def rotary(self, latent_frames: int, height: int, width: int):
        """RoPE tables for a latent video of this size, or ``None`` for models with sincos positions (2b)."""
        if not self.config.use_rotary_positional_embeddings:
            return None
        key = (latent_frames, height, width, str(self.device))
        if key not in self._rope_cache:
            # per diffusers pipelines/cogvideo/pipeline_cogvideox.py: the pipeline's own table builder, in pixels
            self._rope_cache[key] = self.pipe._prepare_rotary_positional_embeddings(
                height * self.spatial_factor, width * self.spatial_factor, latent_frames, self.device
            )
        return self._rope_cache[key]

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, t: int, text: torch.Tensor) -> torch.Tensor:
        """One transformer evaluation.

        Args:
            latents: ``[B, T, C', h, w]`` (any float dtype; cast to the model dtype here).
            t: the model timestep, shared by the batch.
            text: ``[B, L, D]`` prompt embeddings from ``encode_text``.

        Returns:
            float32 prediction ``[B, T, C', h, w]`` (a velocity for CogVideoX's v-prediction).
        """
        batch, frames, _, height, width = latents.shape
        pad = 0
        p_t = self.config.patch_size_t
        if p_t is not None and frames % p_t:
            # per diffusers pipeline_cogvideox.py (CogVideoX 1.5): pad the front to a multiple of patch_size_t
            pad = p_t - frames % p_t
            latents = torch.cat([latents[:, :1].expand(-1, pad, -1, -1, -1), latents], dim=1)  # [B, T+pad, C', h, w]
        x = latents.to(device=self.device, dtype=self.dtype)
        timestep = torch.full((batch,), int(t), device=self.device, dtype=torch.long)
        out = self.transformer(
            hidden_states=x,
            encoder_hidden_states=text.to(device=self.device, dtype=self.dtype),
            timestep=timestep,
            image_rotary_emb=self.rotary(frames + pad, height, width),
            return_dict=False,
        )[0]
        return out[:, pad:].float()
