"""Wan family adapter (Wan 2.1 T2V / I2V, Wan 2.2 T2V-A14B / I2V-A14B and TI2V-5B): wraps a diffusers
``WanPipeline`` or ``WanImageToVideoPipeline``.

``WanModel`` is the family base (``family.DiffusersFamily``) plus what is Wan's own: the VAE's per-channel latent
normalisation, the flow-matching schedule read off the pipeline's scheduler, video-only self-attention tokens, the
RoPE table's limits and one transformer evaluation per call. Wan 2.2's two experts (``transformer`` at timesteps
>= ``boundary_ratio x 1000``, ``transformer_2`` below, per diffusers pipelines/wan/pipeline_wan.py) are switched
inside ``predict``, so inversion and editing switch at the same boundary; TI2V-5B's per-token timesteps
(``expand_timesteps``) are built there too, and so is its optional first frame (held clean, per diffusers
pipeline_wan_i2v.py with ``expand_timesteps``). ``WanI2VModel`` is Wan 2.1 I2V and Wan 2.2 I2V-A14B: every row is
conditioned on a frame through mask + condition latents on the channels and, for Wan 2.1, a CLIP image embedding
(per diffusers pipeline_wan_i2v.py). ``adapter_class`` picks the adapter of a loaded pipeline.
"""

from __future__ import annotations

from functools import cached_property

import torch

from ..errors import VidinvertError
from ..schedule import Schedule, flow_schedule_from_scheduler, split_last_step
from .condition import ImageRows
from .family import DiffusersFamily
from .parts import PromptCache
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
        self._sigmas: dict[float, float] = {}  # model timestep -> sigma of the schedules handed out (``sigma_at``)

    @cached_property
    def _prompts(self) -> PromptCache:
        """Prompts through ``WanPipeline``'s own prompt code, whatever the pipeline class (``_WanPrompts``)."""
        pipe = _WanPrompts(self.pipe) if type(self.pipe).__name__ == "WanImageToVideoPipeline" else self.pipe
        return PromptCache(pipe, self.text_length)

    @property
    def takes_image(self) -> bool:
        """TI2V-5B (``expand_timesteps``) can hold its first latent frame on a given frame; other text-to-video Wan
        models take none. It still generates from text alone, so ``needs_image`` stays False."""
        return self.expand_timesteps

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
            return self._remember(flow_schedule_from_scheduler(self.pipe.scheduler, num_steps))
        except TypeError as err:
            raise VidinvertError(f"cannot read a flow schedule off this Wan pipeline: {err}",
                                 "use FlowMatchEulerDiscreteScheduler or UniPC with use_flow_sigmas") from None

    def _split_last(self, schedule: Schedule) -> Schedule:
        """The last step cut at half its sigma (halfway from its level to the clean latent)."""
        sigma = float(schedule.alpha_from[-1]) / 2
        if sigma > 0:
            train = float(self.pipe.scheduler.config.num_train_timesteps)
            schedule = self._remember(split_last_step(schedule, sigma * train, sigma))
        return schedule

    def _remember(self, schedule: Schedule) -> Schedule:
        """Note each step's sigma by its timestep (``sigma_at``); returns ``schedule``."""
        self._sigmas.update({float(t): float(s) for t, s in zip(schedule.timesteps, schedule.sigma_from)})
        return schedule

    def sigma_at(self, t) -> float:
        """The sigma a step at model timestep ``t`` starts from: that of the latest schedule this model handed out
        with ``t`` (exact: UniPC's integer timesteps, and the float32 ones of the Euler scheduler, lose digits of
        it), else ``t / num_train_timesteps``."""
        sigma = self._sigmas.get(float(t))
        return float(t) / float(self.pipe.scheduler.config.num_train_timesteps) if sigma is None else sigma

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

    # ---- image condition -------------------------------------------------------------------------------------
    @torch.no_grad()
    def _encode_condition(self, video: torch.Tensor, generator: torch.Generator | None, sample: bool) -> torch.Tensor:
        """Pixel frames ``[1, C, F, H, W]`` (float32, [-1, 1]) -> scaled float32 latents ``[1, T, C', h, w]``.

        Per diffusers pipeline_wan_i2v.py ``prepare_latents``: the frames go to the VAE in its dtype, the posterior's
        mode is taken (``retrieve_latents(..., sample_mode="argmax")``; the pipeline never draws, so ``sample`` has
        no pipeline counterpart) and cast to float32 before the ``(z - mean) / std`` scaling."""
        posterior = self.vae.encode(video.to(device=self.device, dtype=self.vae.dtype)).latent_dist
        latents = (posterior.sample(generator) if sample else posterior.mode()).float()  # [1, C', T, h, w]
        return self.scale_latents(latents).permute(0, 2, 1, 3, 4)  # [1, T, C', h, w]

    def encode_image(self, frame: torch.Tensor, latent_frames: int, generator: torch.Generator | None = None,
                     sample: bool = False) -> ImageRows:
        """TI2V-5B: one frame ``[C, H, W]`` in [-1, 1] -> ``first`` ``[1, 1, C', h, w]``, the frame encoded alone and
        scaled: the clean first latent frame (per diffusers pipeline_wan_i2v.py ``prepare_latents`` with
        ``expand_timesteps``: ``video_condition = image``). A text-to-video Wan model takes none."""
        if not self.expand_timesteps:
            return super().encode_image(frame, latent_frames, generator, sample)
        self.check_frames(frame[None])
        return ImageRows(first=self._encode_condition(frame.float()[None, :, None], generator, sample))

    def _with_image(self, latents: torch.Tensor, image: ImageRows | None) -> torch.Tensor:
        """The transformer's input rows ``[B, T, C'', h, w]``: TI2V-5B's first latent frame replaced by the clean
        condition (per diffusers pipeline_wan_i2v.py: ``(1 - first_frame_mask) * condition + first_frame_mask *
        latents``); the latents alone without an image."""
        if image is None:
            return latents
        if not self.expand_timesteps:
            raise ValueError("a text-to-video Wan model takes no image condition")
        first = self._first(latents, image)
        return torch.cat([first.to(latents.dtype), latents[:, 1:]], dim=1)

    def _first(self, latents: torch.Tensor, image: ImageRows) -> torch.Tensor:
        """TI2V's clean first latent frame of each row ``[B, 1, C', h, w]``, on the latents' device."""
        first = image["first"].to(latents.device)
        if first.shape[0] != latents.shape[0] or first.shape[2:] != latents.shape[2:]:
            raise ValueError(f"image condition {tuple(first.shape)} does not fit latents {tuple(latents.shape)}")
        return first

    def _timesteps(self, shape: tuple[int, ...], t, image: ImageRows | None) -> torch.Tensor:
        """``[B]`` timesteps, or TI2V-5B's one per video token ``[B, T * h/p * w/p]``, 0 on the first frame's tokens
        when it is held on a frame (per diffusers pipeline_wan.py / pipeline_wan_i2v.py: ``first_frame_mask[0][0][:,
        ::2, ::2] * t``)."""
        batch = shape[0]
        if not self.expand_timesteps:
            return torch.full((batch,), float(t), device=self.device, dtype=torch.float32)
        timestep = torch.full((batch, self.tokens_per_row(shape)), float(t), device=self.device, dtype=torch.float32)
        if image is not None:
            timestep[:, : self.tokens_per_row((batch, 1, *shape[2:]))] = 0.0
        return timestep

    def _clip(self, image: ImageRows | None, dtype: torch.dtype) -> torch.Tensor | None:
        """The CLIP image embedding of each row for ``encoder_hidden_states_image`` (Wan 2.1 I2V), else None."""
        return None

    def _held_first_frame(self, velocity: torch.Tensor, latents: torch.Tensor, t, image: ImageRows | None):
        """TI2V-5B with a frame: the first latent frame's velocity is the one whose clean estimate ``x - sigma v`` is
        the condition itself.

        Why: diffusers' pipeline lets that frame drift through its steps (the model's output there, at timestep 0, is
        ignored) and overwrites it with the condition after the loop; the other frames never read it, since every
        model input carries the condition instead. ``v = (x - c) / sigma`` makes every Euler/DDIM step land on the
        line to ``c`` and the last one (to sigma 0) exactly on it, so our output equals the pipeline's, and the step
        stays a function of x alone, which inversion needs (a latent whose first frame is ``c`` keeps it there).
        """
        if image is None or not self.expand_timesteps:
            return velocity
        x = latents[:, :1].to(device=velocity.device, dtype=torch.float32)
        first = self._first(latents, image).to(device=velocity.device, dtype=torch.float32)
        return torch.cat([(x - first) / self.sigma_at(t), velocity[:, 1:]], dim=1)

    # ---- transformer ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, latents: torch.Tensor, t, text: torch.Tensor, image: ImageRows | None = None) -> torch.Tensor:
        """One transformer evaluation (the expert for ``t`` on Wan 2.2 A14B).

        Args:
            latents: ``[B, T, C', h, w]`` (any float dtype; cast to the model dtype here).
            t: the model timestep (``sigma * 1000`` as the scheduler hands it), shared by the batch.
            text: ``[B, L, D]`` prompt embeddings from ``encode_text``.
            image: the condition of each row (``encode_image``); ``None`` for text-to-video (and TI2V without a
                frame).

        Returns:
            float32 flow velocity ``[B, T, C', h, w]``.
        """
        model = self.experts[self.expert_for(t)]
        rows = self._with_image(latents, image)  # [B, T, C'', h, w]
        x = rows.to(device=self.device, dtype=model.dtype).permute(0, 2, 1, 3, 4).contiguous()  # [B, C'', T, h, w]
        out = model(
            hidden_states=x,
            timestep=self._timesteps(tuple(latents.shape), t, image),
            encoder_hidden_states=text.to(device=self.device, dtype=model.dtype),
            encoder_hidden_states_image=self._clip(image, model.dtype),
            return_dict=False,
        )[0]  # [B, C', T, h, w]
        return self._held_first_frame(out.permute(0, 2, 1, 3, 4).float(), latents, t, image)


class WanI2VModel(WanModel):
    """A Wan image-to-video pipeline (``WanImageToVideoPipeline`` without ``expand_timesteps``): Wan 2.1 I2V 14B,
    whose transformer also reads a CLIP image embedding, and Wan 2.2 I2V A14B (two experts, no CLIP). Every row is
    conditioned on a frame: a mask and the latents of ``[frame, black frames]`` ride on the channels.

    Args: as ``WanModel``.
    """

    takes_image = needs_image = True
    label = "Wan image-to-video"

    def __init__(self, pipe, name: str | None = None, native_size: tuple[int, int] | None = None,
                 trained_frames: int | None = None):
        super().__init__(pipe, name, native_size, trained_frames)
        if self.expand_timesteps:
            raise VidinvertError("a Wan image-to-video pipeline with expand_timesteps is TI2V-5B",
                                 "wrap it with vidinvert.models.wrap (WanModel holds its first frame)")
        if self.config.image_dim is not None and getattr(pipe, "image_encoder", None) is None:
            raise VidinvertError("this Wan 2.1 image-to-video pipeline has no image_encoder (CLIP)",
                                 "load the full Wan2.1-I2V folder (image_encoder and image_processor)")

    @torch.no_grad()
    def encode_image(self, frame: torch.Tensor, latent_frames: int, generator: torch.Generator | None = None,
                     sample: bool = False) -> ImageRows:
        """One frame ``[C, H, W]`` in [-1, 1] -> the condition of one row, per diffusers pipeline_wan_i2v.py:

        - ``condition`` ``[1, T, t + C', h, w]``: the mask (``t`` = the VAE's temporal factor channels, ones on the
          first latent frame, zeros after: ``prepare_latents``' ``mask_lat_size``) then the scaled latents of the
          frame followed by ``(T - 1) t`` black frames (``video_condition``, encoded as one video);
        - ``clip`` ``[1, N, D]`` where the transformer reads an image embedding (``image_dim``, Wan 2.1): the
          pipeline's own ``encode_image`` (the CLIP processor, then the encoder's second-to-last hidden states) on
          the frame as an 8-bit image.
        """
        self.check_frames(frame[None])
        count = (latent_frames - 1) * self.temporal_factor + 1  # pixel frames
        frame = frame.float()
        video = torch.cat([frame[None, :, None], frame.new_zeros((1, frame.shape[0], count - 1, *frame.shape[1:]))],
                          dim=2)  # [1, C, F, H, W]
        latents = self._encode_condition(video, generator, sample)  # [1, T, C', h, w]
        mask = latents.new_zeros((1, latent_frames, self.temporal_factor, *latents.shape[3:]))
        mask[:, 0] = 1.0
        tensors = {"condition": torch.cat([mask, latents], dim=2)}  # [1, T, t + C', h, w]
        if self.config.image_dim is not None:
            tensors["clip"] = self.pipe.encode_image(_as_image(frame), self.device).float()  # [1, N, D]
        return ImageRows(**tensors)

    def _with_image(self, latents: torch.Tensor, image: ImageRows | None) -> torch.Tensor:
        """``[latents | mask | condition latents]`` on the channels (per diffusers pipeline_wan_i2v.py:
        ``torch.cat([latents, condition], dim=1)``)."""
        if image is None:
            raise VidinvertError("an image-to-video model needs a frame to condition on", "pass --first-frame")
        cond = image["condition"].to(latents.device, latents.dtype)  # [B, T, t + C', h, w]
        if cond.shape[:2] != latents.shape[:2] or cond.shape[3:] != latents.shape[3:]:
            raise ValueError(f"image condition {tuple(cond.shape)} does not fit latents {tuple(latents.shape)}")
        return torch.cat([latents, cond], dim=2)

    def _clip(self, image: ImageRows | None, dtype: torch.dtype) -> torch.Tensor | None:
        """The rows' CLIP embeddings in the transformer dtype (per diffusers pipeline_wan_i2v.py: ``image_embeds``,
        the same for the guided and unguided rows)."""
        if image is None or "clip" not in image.tensors:
            return None
        return image["clip"].to(device=self.device, dtype=dtype)


class _WanPrompts:
    """A ``WanImageToVideoPipeline`` whose prompts are encoded by ``WanPipeline``'s ``encode_prompt`` and
    ``_get_t5_prompt_embeds`` (the I2V pipeline's are copies of them, per diffusers pipeline_wan_i2v.py "Copied
    from"). Why: diffusers 0.42's pipeline_wan_i2v.py calls ``ftfy.fix_text`` unguarded, a NameError without the
    optional ftfy package, where pipeline_wan.py calls it only when ftfy is installed; the embeddings are the same
    either way. Everything else is the pipeline's own."""

    def __init__(self, pipe):
        self._pipe = pipe

    def __getattr__(self, name: str):
        if name == "_pipe":  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        return getattr(self._pipe, name)

    def encode_prompt(self, *args, **kwargs):
        from diffusers import WanPipeline

        return WanPipeline.encode_prompt(self, *args, **kwargs)

    def _get_t5_prompt_embeds(self, *args, **kwargs):
        from diffusers import WanPipeline

        return WanPipeline._get_t5_prompt_embeds(self, *args, **kwargs)


def _as_image(frame: torch.Tensor):
    """A frame ``[C, H, W]`` in [-1, 1] as the 8-bit RGB ``PIL.Image`` the pipeline's CLIP processor takes (exactly
    the image a ``[0, 255] / 255 * 2 - 1`` frame came from)."""
    from PIL import Image

    pixels = ((frame.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # [C, H, W]
    return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy())


def adapter_class(pipe) -> type[WanModel]:
    """The adapter of a loaded Wan pipeline: ``WanI2VModel`` for a ``WanImageToVideoPipeline`` (Wan 2.1 I2V, Wan 2.2
    I2V A14B), ``WanModel`` otherwise, TI2V-5B included (``expand_timesteps``, in either pipeline class)."""
    i2v = type(pipe).__name__ == "WanImageToVideoPipeline"
    return WanI2VModel if i2v and not pipe.config.get("expand_timesteps", False) else WanModel
