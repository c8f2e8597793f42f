"""The Wan recipe of the demo model: ``python -m training.train --family wan --out DIR``.

The same world, stages and recipe as the CogVideoX demo (``train.py``; 7000 transformer steps, not 4500), with
Wan's parts, all real diffusers/transformers classes saved with ``WanPipeline.save_pretrained`` (load with
``WanPipeline.from_pretrained(DIR)`` or ``vidinvert --model demo-wan``):

1. ``AutoencoderKLWan`` (Wan 2.1's causal VAE layout; v2: widths 16-32-64, ``dim_mult`` 1-2-4, two down stages, so
   4x spatial compression as the CogVideoX demo v2, and 4x temporal; v1 had Wan's three stages, 8x spatial; 8 latent
   channels), trained like the CogVideoX demo's VAE; then its ``latents_mean`` /
   ``latents_std`` are set per channel from the training latents, as published Wan VAEs carry them.
2. ``UMT5EncoderModel``: small, random and frozen (``tiny_wan.make_text_encoder``), over the same word-level tokenizer;
   prompts are 16 tokens, zero-padded after the prompt as ``WanPipeline.encode_prompt`` does.
3. ``WanTransformer3DModel`` (patch 1x2x2, RoPE, RMS norm across heads, text through cross-attention), trained with
   the rectified-flow objective Wan uses: ``x_s = (1 - s) x0 + s eps`` at ``s`` drawn uniformly in (0, 1), timestep
   ``1000 s``, MSE of the prediction against ``eps - x0``. The scheduler is ``FlowMatchEulerDiscreteScheduler`` with a
   shift of 2 (the 480p models use 3; these frames are 64x64), so ``WanPipeline.__call__`` samples with the same Euler
   steps vidinvert's sampler takes.
"""

from __future__ import annotations

import torch

FLOW_SHIFT = 2.0


def build_components(config):
    """Fresh (seeded) VAE, transformer, text encoder, tokenizer and scheduler of the Wan layout."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    from vidinvert.tiny import make_tokenizer
    from vidinvert.tiny_wan import make_text_encoder

    base = config.vae_channels[0]
    torch.manual_seed(config.seed)
    vae = AutoencoderKLWan(
        base_dim=base,
        z_dim=config.latent_channels,
        dim_mult=[c // base for c in config.vae_channels],
        num_res_blocks=1,
        temperal_downsample=[False] * (len(config.vae_channels) - 3) + [True, True],  # 4x in time
        scale_factor_spatial=2 ** (len(config.vae_channels) - 1),  # WanPipeline sizes its latents by this (default 8)
        latents_mean=[0.0] * config.latent_channels,  # set from the training latents after the VAE stage
        latents_std=[1.0] * config.latent_channels,
    )
    torch.manual_seed(config.seed + 1)
    transformer = WanTransformer3DModel(
        patch_size=(1, config.patch_size, config.patch_size),
        num_attention_heads=config.heads,
        attention_head_dim=config.head_dim,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        text_dim=config.text_dim,
        freq_dim=256,
        ffn_dim=4 * config.heads * config.head_dim,
        num_layers=config.layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
    )
    torch.manual_seed(config.seed + 2)
    text_encoder = make_text_encoder(config.text_dim)
    tokenizer = make_tokenizer(config.text_len)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT)
    return vae, transformer, text_encoder, tokenizer, scheduler


def make_pipeline(vae, transformer, text_encoder, tokenizer, scheduler):
    from diffusers import WanPipeline

    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                       scheduler=scheduler)


def set_latent_stats(vae, latents: torch.Tensor) -> str:
    """Store per-channel mean and std of raw latents ``[N, T, C, h, w]`` in the VAE config; returns a log line."""
    mean = latents.mean(dim=(0, 1, 3, 4))
    std = latents.std(dim=(0, 1, 3, 4))
    vae.register_to_config(latents_mean=[round(float(v), 6) for v in mean],
                           latents_std=[round(float(v), 6) for v in std])
    return (f"per-channel latents_mean {[round(float(v), 3) for v in mean]}, "
            f"latents_std {[round(float(v), 3) for v in std]}")


class FlowObjective:
    """Rectified flow: ``x_s = (1 - s) x0 + s eps``, the model predicts ``eps - x0`` at timestep ``1000 s``."""

    def __init__(self, pipe, latent_shape: tuple[int, ...]):
        config = pipe.vae.config
        shape = (1, 1, config.z_dim, 1, 1)  # latents here are [B, T, C, h, w]
        self.mean = torch.tensor(config.latents_mean).view(shape)
        self.std = torch.tensor(config.latents_std).view(shape)
        self.num_train = pipe.scheduler.config.num_train_timesteps

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents ``[B, T, C, h, w]`` -> normalised per channel, as ``WanModel.encode`` does."""
        return (z - self.mean) / self.std

    def draw_t(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(batch, generator=generator)  # s in [0, 1)

    def fixed_t(self, count: int) -> torch.Tensor:
        return torch.linspace(0.02, 0.98, count)

    def loss(self, model, x0, text, s, noise):
        """x0, noise ``[B, T, C, h, w]`` (normalised latents); text ``[B, L, D]``; s ``[B]`` noise levels."""
        level = s.view(-1, 1, 1, 1, 1)
        noisy = ((1 - level) * x0 + level * noise).permute(0, 2, 1, 3, 4)  # [B, C, T, h, w]
        target = (noise - x0).permute(0, 2, 1, 3, 4)
        pred = model(hidden_states=noisy, timestep=s * self.num_train, encoder_hidden_states=text,
                     return_dict=False)[0]
        return torch.mean((pred.float() - target) ** 2)


def generate(pipe, prompt: str, steps: int, guidance: float, generator: torch.Generator, text_len: int) -> torch.Tensor:
    """One 9-frame 64x64 text-to-video sample from ``WanPipeline.__call__``: ``[F, 3, H, W]`` in [0, 1]."""
    return pipe(prompt=prompt, negative_prompt="", height=64, width=64, num_frames=9, num_inference_steps=steps,
                guidance_scale=guidance, generator=generator, output_type="pt", max_sequence_length=text_len).frames[0]
