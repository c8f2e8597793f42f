"""Tiny, randomly initialised but complete CogVideoX pipelines, built deterministically in code.

They exist because no real CogVideoX weights can be downloaded where this project is built and tested. Every part
is the real diffusers/transformers class (transformer, VAE, T5 encoder, CogVideoXDDIMScheduler with CogVideoX's own
v-prediction, zero-terminal-SNR configuration, and a fast tokenizer made in-process), so ``save_pretrained`` and
``CogVideoXPipeline.from_pretrained`` take the same path that real weights take. The weights are random: outputs are
noise-like, which is enough to prove the mathematics (round trips, equivalences), not the visual quality of an edit.

Three styles mirror the published checkpoints:
- ``"2b"``: sincos positional embeddings (no RoPE) and ``snr_shift_scale=3.0``, like THUDM/CogVideoX-2b;
- ``"5b"``: rotary positional embeddings and ``snr_shift_scale=1.0``, like THUDM/CogVideoX-5b;
- ``"1.5"``: RoPE plus temporal patches (``patch_size_t=2``, no patch bias), like THUDM/CogVideoX1.5-5B.

What every tiny family shares lives here too, and ``tiny_wan.py`` builds on it: the vocabulary and its tokenizer,
the (U)T5 text encoder, the transformer sizes and ``build`` (seeded components -> pipeline in a dtype, eval mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The world the tokenizer knows: enough words for captions of simple synthetic clips and for tests.
VOCABULARY = (
    "a an the of on in with and to at is moving moves left right up down diagonally bouncing bounce still "
    "red green blue yellow orange purple white black gray pink cyan magenta brown "
    "disc circle ball square box triangle star shape object background sky grass sea road "
    "small large big tiny dark light bright video clip frame cat dog car bird person walking running "
    "slowly quickly across over under from into"
).split()
VOCABULARY = tuple(dict.fromkeys(VOCABULARY))  # unique, order kept
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


@dataclass(frozen=True)
class TinyConfig:
    """Sizes of a tiny pipeline. Latent frames = (frames - 1) / 4 + 1; latent size = pixels / 8."""

    style: str = "5b"  # "5b": RoPE + shift 1.0; "2b": sincos positions + shift 3.0; "1.5": RoPE + temporal patches
    num_layers: int = 2  # transformer blocks
    num_heads: int = 2  # attention heads per block
    head_dim: int = 16  # channels per head (RoPE needs a multiple of 16)
    text_dim: int = 32  # T5 hidden size
    text_len: int = 16  # tokens per prompt (the transformer's max_text_seq_length)
    latent_channels: int = 4  # VAE latent channels
    vae_channels: int = 8  # VAE block width
    sample_frames: int = 49  # pixel frames the positional table is built for (as CogVideoX)
    sample_size: int = 64  # pixel height and width the positional table is built for
    seed: int = 0  # every weight is drawn from this seed
    image_to_video: bool = False  # CogVideoXImageToVideoPipeline: image latents on the channels (1.5: ofs embedding)


def make_tokenizer(max_length: int = 16):
    """A T5-like fast tokenizer over ``VOCABULARY``: lower-cases, splits on white space and punctuation, appends ``</s>``."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + VOCABULARY)}
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def scheduler_config(style: str) -> dict:
    """CogVideoX's published scheduler settings; only ``snr_shift_scale`` differs between 2b (3.0) and 5b (1.0)."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        snr_shift_scale=3.0 if style == "2b" else 1.0,
    )


def make_text_encoder(text_dim: int, head_dim: int, umt5: bool = False):
    """A small randomly initialised ``T5EncoderModel`` (CogVideoX's) or, with ``umt5``, ``UMT5EncoderModel`` (Wan's)
    over ``VOCABULARY`` (2 layers, 4 heads of ``head_dim``), drawn from torch's current random state."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_class, model_class = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    return model_class(
        config_class(
            vocab_size=len(SPECIAL_TOKENS) + len(VOCABULARY),
            d_model=text_dim,
            d_kv=head_dim,
            d_ff=2 * text_dim,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )


def transformer_sizes(config, channels: int) -> dict:
    """The keyword sizes every family's diffusers transformer takes, from a tiny config's sizes."""
    return dict(num_attention_heads=config.num_heads, attention_head_dim=config.head_dim, in_channels=channels,
                out_channels=channels, num_layers=config.num_layers)


def build(pipeline_class, components, config, dtype: torch.dtype, **pipeline_config):
    """A complete ``pipeline_class`` on the CPU: the tokenizer over ``VOCABULARY`` for ``config.text_len`` tokens and
    the ``components(config)`` (models and scheduler, keyword -> part) drawn from ``config.seed``, every model in
    ``dtype`` (built in float32) and in eval mode."""
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(config.seed)
        parts = components(config)
    pipe = pipeline_class(tokenizer=make_tokenizer(config.text_len), **parts, **pipeline_config)
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return pipe


def build_tiny_pipeline(config: TinyConfig = TinyConfig(), dtype: torch.dtype = torch.float32):
    """A complete ``diffusers.CogVideoXPipeline`` of ``config``'s sizes and style with random weights drawn from
    ``config.seed``, every model in ``dtype``, on the CPU in eval mode."""
    if config.style not in ("2b", "5b", "1.5"):
        raise ValueError(f"unknown tiny style {config.style!r}; use '2b', '5b' or '1.5'")
    from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline

    pipeline_class = CogVideoXImageToVideoPipeline if config.image_to_video else CogVideoXPipeline
    return build(pipeline_class, _components, config, dtype)


def _components(config: TinyConfig) -> dict:
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    rope = config.style != "2b"
    temporal_patches = 2 if config.style == "1.5" else None
    latent_size = config.sample_size // 8
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(config.vae_channels,) * 4,
        latent_channels=config.latent_channels,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
        sample_height=config.sample_size,
        sample_width=config.sample_size,
        # per diffusers' CogVideoX 1.5 I2V conversion: its image latents are divided by the scaling factor
        invert_scale_latents=config.image_to_video and config.style == "1.5",
    )
    sizes = transformer_sizes(config, config.latent_channels)
    if config.image_to_video:  # per convert_cogvideox_to_diffusers.py (i2v): noise and image latents on the channels
        sizes["in_channels"] = 2 * config.latent_channels
    transformer = CogVideoXTransformer3DModel(
        **sizes,
        ofs_embed_dim=4 * config.head_dim if config.image_to_video and config.style == "1.5" else None,
        time_embed_dim=4 * config.head_dim,
        text_embed_dim=config.text_dim,
        sample_width=latent_size,
        sample_height=latent_size,
        sample_frames=config.sample_frames,
        patch_size=2,
        patch_size_t=temporal_patches,
        patch_bias=temporal_patches is None,
        temporal_compression_ratio=4,
        max_text_seq_length=config.text_len,
        use_rotary_positional_embeddings=rope,
        use_learned_positional_embeddings=False,
    )
    text_encoder = make_text_encoder(config.text_dim, head_dim=8)
    scheduler = CogVideoXDDIMScheduler(**scheduler_config(config.style))
    return dict(vae=vae, transformer=transformer, text_encoder=text_encoder, scheduler=scheduler)
