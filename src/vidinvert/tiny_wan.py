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
  with per-token timesteps (``expand_timesteps``), like Wan-AI/Wan2.2-TI2V-5B-Diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import tiny

STYLES = ("2.1", "2.2", "2.2-5b")
BOUNDARY_RATIO = 0.875  # Wan2.2-T2V-A14B's model_index.json value


@dataclass(frozen=True)
class TinyWanConfig:
    """Sizes of a tiny Wan pipeline. Latent frames = (frames - 1) / 4 + 1."""

    style: str = "2.1"  # "2.1", "2.2" (two experts) or "2.2-5b" (expand_timesteps, 48-channel VAE)
    num_layers: int = 2  # transformer blocks
    num_heads: int = 2  # attention heads per block
    head_dim: int = 12  # channels per head (Wan's RoPE splits it into t/h/w parts)
    text_dim: int = 32  # UMT5 hidden size
    text_len: int = 16  # tokens per prompt (the pipeline's max_sequence_length; 512 for real models)
    height: int = 48  # native pixel height of the tiny model (real Wan: 480)
    width: int = 64  # native pixel width (real Wan: 832)
    seed: int = 0  # every weight is drawn from this seed


def native_size(style: str) -> tuple[int, int]:
    """(height, width) in pixels a tiny model of ``style`` is made for (multiples of its ``size_multiple``)."""
    return (64, 64) if style == "2.2-5b" else (TinyWanConfig.height, TinyWanConfig.width)


def make_text_encoder(text_dim: int):
    """A small randomly initialised ``UMT5EncoderModel`` over ``tiny.VOCABULARY`` (heads of 8), from torch's random
    state."""
    return tiny.make_text_encoder(text_dim, head_dim=8, umt5=True)


def _transformer(config: TinyWanConfig, channels: int):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        **tiny.transformer_sizes(config, channels),
        patch_size=(1, 2, 2),
        text_dim=config.text_dim,
        freq_dim=256,
        ffn_dim=32,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def build_tiny_wan_pipeline(config: TinyWanConfig = TinyWanConfig(), dtype: torch.dtype = torch.float32):
    """A complete ``diffusers.WanPipeline`` of ``config``'s sizes and style with random weights drawn from
    ``config.seed``, every model in ``dtype``, on the CPU in eval mode."""
    if config.style not in STYLES:
        raise ValueError(f"unknown tiny Wan style {config.style!r}; use one of {', '.join(STYLES)}")
    from diffusers import WanPipeline

    return tiny.build(WanPipeline, _components, config, dtype,
                      boundary_ratio=BOUNDARY_RATIO if config.style == "2.2" else None,
                      expand_timesteps=config.style == "2.2-5b")


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
    transformer_2 = _transformer(config, channels) if config.style == "2.2" else None
    text_encoder = make_text_encoder(config.text_dim)
    if config.style == "2.1":
        scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    else:  # what the published Wan 2.2 folders ship
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                            flow_shift=5.0 if five_b else 3.0)
    return dict(vae=vae, transformer=transformer, transformer_2=transformer_2, text_encoder=text_encoder,
                scheduler=scheduler)
