"""Tiny, randomly initialised but complete Wan pipelines (2.1 and 2.2 layouts), built deterministically in code.

Like ``tiny.py`` for CogVideoX: every part is the real diffusers/transformers class (``WanTransformer3DModel``,
``AutoencoderKLWan``, a ``UMT5EncoderModel``, a flow-matching scheduler, the in-process tokenizer of ``tiny.py``),
so ``save_pretrained`` and ``WanPipeline.from_pretrained`` take the path real weights take. The sizes follow
diffusers' own Wan pipeline tests (tests/pipelines/wan/test_wan.py, test_wan_22.py). Weights are random: outputs
are noise-like, enough to check the mathematics, not the look of an edit.

Styles mirror the published checkpoints:
- ``"2.1"``: one transformer, 16 latent channels, ``FlowMatchEulerDiscreteScheduler(shift=7.0)``, like
  Wan-AI/Wan2.1-T2V-1.3B-Diffusers (which ships UniPC with ``flow_shift``; the Euler scheduler is what
  ``WanPipeline.__call__`` can be compared with step for step);
- ``"2.2"``: two experts (``transformer`` for high noise, ``transformer_2`` below ``boundary_ratio``) and the UniPC
  ``use_flow_sigmas`` scheduler config, like Wan-AI/Wan2.2-T2V-A14B-Diffusers;
- ``"2.2-5b"``: one transformer on 48-channel latents from the patchified residual VAE (16 pixels per latent cell)
  with per-token timesteps (``expand_timesteps``), like Wan-AI/Wan2.2-TI2V-5B-Diffusers (a ``WanPipeline``; its
  first-frame mode is ``WanImageToVideoPipeline(**pipe.components, expand_timesteps=True)``);
- ``"2.1-i2v"``: a ``WanImageToVideoPipeline`` like Wan-AI/Wan2.1-I2V-14B-480P-Diffusers: 36 input channels (noise,
  mask, condition latents), a tiny CLIP vision tower and processor (``image_dim``, ``added_kv_proj_dim``) and the
  2.1 Euler scheduler; its prompts are 512 tokens, since diffusers' ``WanAttnProcessor`` splits the image tokens
  off the text as "all but the last 512";
- ``"2.2-i2v"``: a ``WanImageToVideoPipeline`` like Wan-AI/Wan2.2-I2V-A14B-Diffusers: two 36-channel experts, no
  CLIP, ``boundary_ratio`` 0.9 and the UniPC flow config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from . import tiny

STYLES = ("2.1", "2.2", "2.2-5b", "2.1-i2v", "2.2-i2v")
I2V_STYLES = ("2.1-i2v", "2.2-i2v")  # built as WanImageToVideoPipeline
BOUNDARY_RATIO = 0.875  # Wan2.2-T2V-A14B's model_index.json value
BOUNDARY_RATIO_I2V = 0.9  # Wan2.2-I2V-A14B's
CLIP_TEXT_LENGTH = 512  # text tokens WanAttnProcessor assumes when it splits image tokens off (transformer_wan.py)


@dataclass(frozen=True)
class TinyWanConfig:
    """Sizes of a tiny Wan pipeline. Latent frames = (frames - 1) / 4 + 1."""

    style: str = "2.1"  # "2.1", "2.2" (two experts), "2.2-5b" (expand_timesteps, 48-channel VAE), "2.1-i2v" or
    #                     "2.2-i2v" (image-to-video, see the module docstring)
    num_layers: int = 2  # transformer blocks
    num_heads: int = 2  # attention heads per block
    head_dim: int = 12  # channels per head (Wan's RoPE splits it into t/h/w parts)
    text_dim: int = 32  # UMT5 hidden size
    text_len: int = 16  # tokens per prompt (the pipeline's max_sequence_length; 512 for real models and "2.1-i2v")
    height: int = 48  # native pixel height of the tiny model (real Wan: 480)
    width: int = 64  # native pixel width (real Wan: 832)
    seed: int = 0  # every weight is drawn from this seed
    clip_dim: int = 8  # hidden size of the "2.1-i2v" CLIP vision tower (real: 1280), the transformer's image_dim


def native_size(style: str) -> tuple[int, int]:
    """(height, width) in pixels a tiny model of ``style`` is made for (multiples of its ``size_multiple``)."""
    return (64, 64) if style == "2.2-5b" else (TinyWanConfig.height, TinyWanConfig.width)


def make_text_encoder(text_dim: int):
    """A small randomly initialised ``UMT5EncoderModel`` over ``tiny.VOCABULARY`` (heads of 8), from torch's random
    state."""
    return tiny.make_text_encoder(text_dim, head_dim=8, umt5=True)


def _transformer(config: TinyWanConfig, channels: int):
    """One expert; image-to-video styles take ``2 C' + 4`` input channels (noise, mask, condition latents; per
    diffusers' convert_wan_to_diffusers.py I2V configs) and "2.1-i2v" a CLIP embedding (``image_dim``) read by
    added key/value projections in the cross-attention (``added_kv_proj_dim`` = the model width, as published)."""
    from diffusers import WanTransformer3DModel

    sizes = tiny.transformer_sizes(config, channels)
    if config.style in I2V_STYLES:
        sizes["in_channels"] = 2 * channels + 4  # 4 = the VAE's temporal factor: the mask's channels
    clip = config.style == "2.1-i2v"
    return WanTransformer3DModel(
        **sizes,
        image_dim=config.clip_dim if clip else None,
        added_kv_proj_dim=config.num_heads * config.head_dim if clip else None,
        patch_size=(1, 2, 2),
        text_dim=config.text_dim,
        freq_dim=256,
        ffn_dim=32,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def build_tiny_wan_pipeline(config: TinyWanConfig = TinyWanConfig(), dtype: torch.dtype = torch.float32):
    """A complete ``diffusers.WanPipeline`` (``WanImageToVideoPipeline`` for the I2V styles) of ``config``'s sizes
    and style with random weights drawn from ``config.seed``, every model in ``dtype``, on the CPU in eval mode."""
    if config.style not in STYLES:
        raise ValueError(f"unknown tiny Wan style {config.style!r}; use one of {', '.join(STYLES)}")
    from diffusers import WanImageToVideoPipeline, WanPipeline

    if config.style == "2.1-i2v":
        config = replace(config, text_len=CLIP_TEXT_LENGTH)
    pipeline_class = WanImageToVideoPipeline if config.style in I2V_STYLES else WanPipeline
    return tiny.build(pipeline_class, _components, config, dtype,
                      boundary_ratio={"2.2": BOUNDARY_RATIO, "2.2-i2v": BOUNDARY_RATIO_I2V}.get(config.style),
                      expand_timesteps=config.style == "2.2-5b")


def _image_encoder(config: TinyWanConfig) -> dict:
    """A tiny CLIP vision tower (17 tokens of ``clip_dim``: 4x4 patches of 16x16 pixels plus the class token) and
    its processor, as diffusers' tests/pipelines/wan/test_wan_image_to_video.py builds them; a ``CLIPVisionModel``
    as the published Wan 2.1 I2V folders hold (its second-to-last hidden states are the embedding)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=config.clip_dim, intermediate_size=2 * config.clip_dim,
                                               projection_dim=config.clip_dim, num_hidden_layers=2,
                                               num_attention_heads=2, image_size=16, patch_size=4))
    processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    return dict(image_encoder=encoder, image_processor=processor)


def _components(config: TinyWanConfig) -> dict:
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    five_b = config.style == "2.2-5b"
    if five_b:  # per diffusers tests/pipelines/wan/test_wan_22.py (Wan225BPipelineFastTests)
        vae = AutoencoderKLWan(base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True,
                               patch_size=2, latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
                               dim_mult=[1, 1, 1, 1], num_res_blocks=1, scale_factor_spatial=16,
                               scale_factor_temporal=4, temperal_downsample=[False, True, True])
    else:  # the default latents_mean/std of the 16-channel Wan 2.1 VAE
        vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True])
    channels = vae.config.z_dim
    transformer = _transformer(config, channels)
    transformer_2 = _transformer(config, channels) if config.style in ("2.2", "2.2-i2v") else None
    text_encoder = make_text_encoder(config.text_dim)
    if config.style in ("2.1", "2.1-i2v"):
        scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    else:  # what the published Wan 2.2 folders ship
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                            flow_shift=5.0 if five_b else 3.0)
    parts = dict(vae=vae, transformer=transformer, transformer_2=transformer_2, text_encoder=text_encoder,
                 scheduler=scheduler)
    return {**parts, **_image_encoder(config)} if config.style == "2.1-i2v" else parts
