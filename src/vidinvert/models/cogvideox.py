"""CogVideoX family adapter: a diffusers CogVideoX pipeline on the family base (``family.DiffusersFamily``).

``CogVideoXModel`` keeps only what is CogVideoX's own: the DDIM schedule with its v-prediction, the transformer call
(one timestep per row, RoPE tables from the pipeline, temporal-patch padding), the ``[text; video]`` token layout,
the VAE's single scaling factor and its position tables' limits. Works for every CogVideoX text-to-video layout: 2b
(sincos positions), 5b (RoPE), 1.5 (RoPE + temporal patches, padded here as the pipeline does).
"""

from __future__ import annotations

import warnings

import torch

from ..errors import VidinvertError
from ..schedule import Schedule, schedule_from_scheduler, split_last_step
from .cogvideox_attention import SITES
from .condition import ImageRows
from .family import DiffusersFamily

DEFAULT_FRAMES = 49  # CogVideoXPipeline.__call__'s default num_frames


class CogVideoXModel(DiffusersFamily):
    """What the samplers see of a CogVideoX pipeline (the ``VideoFamily`` protocol of ``models/base.py``).

    Args:
        pipe: a loaded ``CogVideoXPipeline`` (from ``load_pipeline`` or built by hand).
        name: how the model is named in saved inversions and settings (default: the pipeline's path or "tiny").
    """

    family, label, default_name, sites = "cogvideox", "CogVideoX", "tiny", SITES

    def __init__(self, pipe, name: str | None = None):
        super().__init__(pipe, name)
        self.text_length = self.config.max_text_seq_length  # prompts are padded/cut to this many tokens
        self.size_multiple = self.spatial_factor * self.config.patch_size  # frame sizes must divide by this
        self.trained_frames = int(self.config.sample_frames)  # pixel frames the positions were made for
        self.temporal_patch = int(self.config.patch_size_t or 1)  # latent frames per patch (2 for CogVideoX 1.5)
        # frames read when none are asked for: the published generation length (81 for CogVideoX 1.5), else 49
        self.default_frames = self.published.num_frames if self.published else DEFAULT_FRAMES
        self.default_negative_prompt = ""  # CogVideoXPipeline's default (no negative text), the public script's too
        self._rope_cache: dict = {}

    def native_size(self) -> tuple[int, int]:
        """(height, width) in pixels the model is run at by default: a published checkpoint's own (CogVideoX 1.5's
        768x1360, whose position table is sized 2400x2400), else what the transformer was configured for."""
        if self.published is not None:
            return self.published.height, self.published.width
        return self.config.sample_height * self.spatial_factor, self.config.sample_width * self.spatial_factor

    def _scheduler_schedule(self, num_steps: int) -> Schedule:
        return schedule_from_scheduler(self.pipe.scheduler, num_steps)

    def _split_last(self, schedule: Schedule) -> Schedule:
        """The last step cut at half its timestep."""
        middle = schedule.timesteps[-1] // 2
        if middle > 0:
            schedule = split_last_step(schedule, middle, float(self.pipe.scheduler.alphas_cumprod[middle]))
        return schedule

    # ---- attention and memory -------------------------------------------------------------------------------
    def tokens_per_row(self, latent_shape: tuple[int, ...]) -> int:
        """Text plus video tokens of one row of latents ``[B, T, C', h, w]`` (frames padded to ``patch_size_t``)."""
        _, frames, _, height, width = latent_shape
        if self.config.patch_size_t:  # CogVideoX 1.5 pads the frames to a multiple of patch_size_t
            frames = -(-frames // self.config.patch_size_t)
        p = self.config.patch_size
        return self.text_length + frames * (height // p) * (width // p)

    def _vae_working_set(self, frames: int) -> tuple[int, int]:
        """Its first block works at full resolution on a batch of frames at a time (per diffusers
        ``autoencoder_kl_cogvideox.py``: ``num_sample_frames_batch_size`` plus the causal padding)."""
        batch = min(frames, getattr(self.vae, "num_sample_frames_batch_size", 8) + 2)
        return self.vae.config.block_out_channels[0], batch

    # ---- VAE ------------------------------------------------------------------------------------------------
    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """float32 ``latents x scaling_factor`` (per diffusers pipeline_cogvideox.py)."""
        return latents.float() * self.vae.config.scaling_factor

    def unscale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents / self.vae.config.scaling_factor

    def _check_positions(self, count: int, height: int, width: int) -> None:
        """Learned position tables fix the size (refused otherwise); sincos/RoPE tables extend, with a warning past
        the frame count the model was trained on (per diffusers embeddings.py ``CogVideoXPatchEmbed``)."""
        native_h, native_w = self.native_size()
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
    def _with_image(self, latents: torch.Tensor, image: ImageRows | None, pad: int) -> torch.Tensor:
        """The transformer's input rows from latents padded by ``pad`` frames: a text-to-video model takes the
        latents alone."""
        if image is not None:
            raise ValueError("a text-to-video model takes no image condition")
        return latents

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
    def predict(self, latents: torch.Tensor, t: int, text: torch.Tensor, image: ImageRows | None = None) -> torch.Tensor:
        """One transformer evaluation.

        Args:
            latents: ``[B, T, C', h, w]`` (any float dtype; cast to the model dtype here).
            t: the model timestep, shared by the batch.
            text: ``[B, L, D]`` prompt embeddings from ``encode_text``.
            image: an image-to-video model's condition of each row (``encode_image``); ``None`` for text-to-video.

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
        x = self._with_image(latents, image, pad).to(device=self.device, dtype=self.dtype)  # [B, T+pad, C'(+C'), h, w]
        timestep = torch.full((batch,), int(t), device=self.device, dtype=torch.long)
        ofs = None  # CogVideoX 1.5 I2V's offset embedding takes 2.0 (per diffusers pipeline_cogvideox_image2video.py)
        if self.config.ofs_embed_dim is not None:
            ofs = torch.full((1,), 2.0, device=self.device, dtype=self.dtype)
        out = self.transformer(
            hidden_states=x,
            encoder_hidden_states=text.to(device=self.device, dtype=self.dtype),
            timestep=timestep,
            ofs=ofs,
            image_rotary_emb=self.rotary(frames + pad, height, width),
            return_dict=False,
        )[0]
        return out[:, pad:].float()


class CogVideoXI2VModel(CogVideoXModel):
    """A CogVideoX image-to-video pipeline (CogVideoX-5b-I2V, CogVideoX1.5-5B-I2V, the I2V demo): every row is
    conditioned on a frame, whose latents are concatenated to the row's on the channels."""

    takes_image = needs_image = True
    label = "CogVideoX image-to-video"

    @torch.no_grad()
    def encode_image(self, frame: torch.Tensor, latent_frames: int, generator: torch.Generator | None = None,
                     sample: bool = False) -> ImageRows:
        """One frame ``[C, H, W]`` in [-1, 1] -> the condition of one row: ``latents`` ``[1, T, C', h, w]``, the frame
        encoded alone and scaled, then ``T - 1`` zero latent frames (per diffusers pipeline_cogvideox_image2video.py
        ``prepare_latents``; ``sample`` draws from the posterior with ``generator``, as the pipeline does)."""
        video = frame.to(device=self.device, dtype=self.vae.dtype)[None, :, None]  # [1, C, 1, H, W]
        posterior = self.vae.encode(video).latent_dist
        first = (posterior.sample(generator) if sample else posterior.mode()).permute(0, 2, 1, 3, 4).float()
        if getattr(self.vae.config, "invert_scale_latents", False):  # CogVideoX 1.5 I2V divides (per the pipeline)
            first = first / self.vae.config.scaling_factor
        else:
            first = first * self.vae.config.scaling_factor
        rest = first.new_zeros((1, latent_frames - 1, *first.shape[2:]))
        return ImageRows(latents=torch.cat([first, rest], dim=1))  # [1, T, C', h, w]

    def _with_image(self, latents: torch.Tensor, image: ImageRows | None, pad: int) -> torch.Tensor:
        """``[latents | image latents]`` on the channels. Where the frames were padded (CogVideoX 1.5) the image
        latents get zero frames at the end, so the frame sits at position 0 as in the pipeline, which builds
        ``[frame, 0, ...]`` for the padded length and drops the first latent frame of its output."""
        if image is None:
            raise VidinvertError("an image-to-video model needs a frame to condition on", "pass --first-frame")
        cond = image["latents"].to(latents.device, latents.dtype)  # [B, T, C', h, w]
        if cond.shape[0] != latents.shape[0] or cond.shape[1] + pad != latents.shape[1]:
            raise ValueError(f"image condition {tuple(cond.shape)} does not fit latents {tuple(latents.shape)}")
        if pad:
            cond = torch.cat([cond, cond.new_zeros((cond.shape[0], pad, *cond.shape[2:]))], dim=1)
        return torch.cat([latents, cond], dim=2)


VideoModel = CogVideoXModel  # the adapter's name from when CogVideoX was the only family (compat, tests, bench)
