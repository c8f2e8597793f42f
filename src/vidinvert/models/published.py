"""The published CogVideoX and Wan checkpoints as data, and pipeline folders built from them without the hub.

Each ``PublishedModel`` holds what a diffusers folder of that checkpoint declares: ``model_index.json`` and every
component's config (as the installed diffusers/transformers read it: keys added to a class since the checkpoint was
saved appear with their defaults), plus the generation defaults its authors publish. ``write_folder`` turns a record
into a loadable folder (configs only, or random weights at the published sizes) for tests and benchmarks where no
weights can be downloaded; ``meta_model`` builds one component on the meta device to count parameters for free.

Sources (every value below cites one): diffusers ``scripts/convert_cogvideox_to_diffusers.py`` and
``scripts/convert_wan_to_diffusers.py`` (the scripts that made the hub folders), the pipelines' docstrings, the
authors' reference code (THUDM/CogVideo ``inference/cli_demo.py``, Wan-Video/Wan2.1 and Wan2.2 ``wan/configs``,
``generate.py``, README), and the hub folders' own config files where a stored copy was found.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

COGVIDEOX_TEXT_LEN = 226  # per convert_cogvideox_to_diffusers.py TOKENIZER_MAX_LENGTH
WAN_TEXT_LEN = 512  # per Wan2.1 wan/configs/shared_config.py text_len (WanPipeline max_sequence_length)
WEIGHTS = ("random", "none")  # write_folder: random weights at the published sizes, or configs only
LAYER_KEY = {"T5EncoderModel": "num_layers", "UMT5EncoderModel": "num_layers",
             "CLIPVisionModel": "num_hidden_layers"}  # the depth key write_folder shrinks in each encoder


@dataclass(frozen=True)
class PublishedModel:
    """One published diffusers checkpoint: its folder's configs and the defaults its authors publish.

    Dict fields hold JSON data exactly as in the folder's files; treat them as read-only.
    """

    hub_id: str  # the diffusers repository on the Hugging Face hub
    family: str  # vidinvert family (a ``registry.FAMILIES`` value) the pipeline belongs to
    model_index: dict  # model_index.json: pipeline class, pipeline flags, {component: [library, class] or [None, None]}
    configs: dict  # {component folder: its config.json / scheduler_config.json / preprocessor_config.json}
    parameters: dict  # {model component: parameter count as published}, counted on the meta device
    dtype: str  # dtype the authors' examples run the pipeline in (their torch_dtype)
    height: int  # native pixel height
    width: int  # native pixel width
    num_frames: int  # frames of the published generation length
    fps: int  # frame rate the authors export at
    steps: int  # published number of inference steps
    guidance_scale: float  # classifier-free guidance (the high-noise expert's, for two-expert models)
    guidance_scale_2: float | None  # the low-noise expert's guidance (two-expert models only)
    negative_prompt: str | None  # the authors' default negative prompt, None where they use none

    @property
    def pipeline(self) -> str:
        """The diffusers pipeline class (``model_index.json`` ``_class_name``)."""
        return self.model_index["_class_name"]

    @property
    def flow_shift(self) -> float | None:
        """The scheduler's flow shift (flow-matching models), None for CogVideoX's DDPM-style schedule."""
        return self.configs["scheduler"].get("flow_shift")

    @property
    def models(self) -> tuple[str, ...]:
        """The components that are neural networks (those with parameters), in ``configs`` order."""
        return tuple(name for name in self.configs if name in self.parameters)


# ---------------------------------------------------------------------------------------------------------------------
# Shared components. Where a class gained keys after a checkpoint was saved, they carry the class default, which is
# what diffusers uses when it loads the hub folder.

# per convert_cogvideox_to_diffusers.py convert_transformer + get_transformer_init_kwargs("1.0") with the 2b
# arguments (--num_layers 30 --num_attention_heads 30, no RoPE); matches THUDM/CogVideoX-2b transformer/config.json
_COGVIDEOX_TRANSFORMER = {
    "_class_name": "CogVideoXTransformer3DModel", "activation_fn": "gelu-approximate", "attention_bias": True,
    "attention_head_dim": 64, "dropout": 0.0, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 16,
    "max_text_seq_length": 226, "norm_elementwise_affine": True, "norm_eps": 1e-05, "num_attention_heads": 30,
    "num_layers": 30, "ofs_embed_dim": None, "out_channels": 16, "patch_bias": True, "patch_size": 2,
    "patch_size_t": None, "sample_frames": 49, "sample_height": 60, "sample_width": 90,
    "spatial_interpolation_scale": 1.875, "temporal_compression_ratio": 4, "temporal_interpolation_scale": 1.0,
    "text_embed_dim": 4096, "time_embed_dim": 512, "timestep_activation_fn": "silu",
    "use_learned_positional_embeddings": False, "use_rotary_positional_embeddings": False,
}
# the 5B-wide transformer: per the script's help ("For 5B, it is 42" layers, 48 heads, RoPE)
_COGVIDEOX_5B = {**_COGVIDEOX_TRANSFORMER, "num_attention_heads": 48, "num_layers": 42,
                 "use_rotary_positional_embeddings": True}
# CogVideoX 1.5: per get_transformer_init_kwargs("1.5") (temporal patches, no patch bias, 300x300 sample table)
_COGVIDEOX_15 = {**_COGVIDEOX_5B, "patch_bias": False, "patch_size_t": 2, "sample_frames": 81,
                 "sample_height": 300, "sample_width": 300}

# per convert_cogvideox_to_diffusers.py convert_vae: AutoencoderKLCogVideoX defaults with the 2b scaling factor
# (--scaling_factor "For CogVideoX-2B ... 1.15258426. For 5B, it is 0.7"; version 1.5 adds invert_scale_latents)
_COGVIDEOX_VAE = {
    "_class_name": "AutoencoderKLCogVideoX", "act_fn": "silu", "block_out_channels": [128, 256, 256, 512],
    "down_block_types": ["CogVideoXDownBlock3D"] * 4, "force_upcast": True, "in_channels": 3,
    "invert_scale_latents": False, "latent_channels": 16, "latents_mean": None, "latents_std": None,
    "layers_per_block": 3, "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_height": 480,
    "sample_width": 720, "scaling_factor": 1.15258426, "shift_factor": None, "temporal_compression_ratio": 4,
    "up_block_types": ["CogVideoXUpBlock3D"] * 4, "use_post_quant_conv": False, "use_quant_conv": False,
}
_COGVIDEOX_VAE_5B = {**_COGVIDEOX_VAE, "scaling_factor": 0.7}
_COGVIDEOX_VAE_15 = {**_COGVIDEOX_VAE_5B, "invert_scale_latents": True}

# per convert_cogvideox_to_diffusers.py __main__ (CogVideoXDDIMScheduler.from_config); snr_shift_scale "For
# CogVideoX-2B ... 3.0. For 5B, it is 1.0"; matches THUDM/CogVideoX-2b scheduler/scheduler_config.json
_COGVIDEOX_DDIM = {
    "_class_name": "CogVideoXDDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": False, "clip_sample_range": 1.0, "num_train_timesteps": 1000,
    "prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "sample_max_value": 1.0,
    "set_alpha_to_one": True, "snr_shift_scale": 3.0, "steps_offset": 0, "timestep_spacing": "trailing",
    "trained_betas": None,
}
_COGVIDEOX_DDIM_5B = {**_COGVIDEOX_DDIM, "snr_shift_scale": 1.0}

# google/t5-v1_1-xxl encoder, per convert_cogvideox_to_diffusers.py text_encoder_id; values as in its config.json
_T5_XXL = {
    "architectures": ["T5EncoderModel"], "model_type": "t5", "d_ff": 10240, "d_kv": 64, "d_model": 4096,
    "decoder_start_token_id": 0, "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1,
    "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": True,
    "layer_norm_epsilon": 1e-06, "num_decoder_layers": 24, "num_heads": 64, "num_layers": 24, "pad_token_id": 0,
    "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32, "tie_word_embeddings": False,
    "vocab_size": 32128,
}
# google/umt5-xxl encoder, per convert_wan_to_diffusers.py __main__ (UMT5EncoderModel.from_pretrained); values as in
# Wan-AI/Wan2.1-T2V-1.3B-Diffusers text_encoder/config.json
_UMT5_XXL = {**_T5_XXL, "architectures": ["UMT5EncoderModel"], "model_type": "umt5", "scalable_attention": True,
             "tokenizer_class": "T5Tokenizer", "vocab_size": 256384}

# laion/CLIP-ViT-H-14-laion2B-s32B-b79K vision tower, per convert_wan_to_diffusers.py (image_encoder for I2V); the
# published folders hold a CLIPVisionModel (Wan2.1 README: CLIPVisionModel.from_pretrained(..., "image_encoder"))
_CLIP_VIT_H = {
    "architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model", "attention_dropout": 0.0,
    "dropout": 0.0, "hidden_act": "gelu", "hidden_size": 1280, "image_size": 224, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 5120, "layer_norm_eps": 1e-05, "num_attention_heads": 16,
    "num_channels": 3, "num_hidden_layers": 32, "patch_size": 14, "projection_dim": 1024,
}
# its image processor (OpenAI CLIP normalisation), as CLIPImageProcessor saves it in the Wan-AI diffusers folders
_CLIP_PROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224},
}

# per convert_wan_to_diffusers.py get_transformer_config("Wan-T2V-14B") diffusers_config (the 1.3B, I2V and 2.2
# entries differ as noted at each record)
_WAN_TRANSFORMER = {
    "_class_name": "WanTransformer3DModel", "added_kv_proj_dim": None, "attention_head_dim": 128,
    "cross_attn_norm": True, "eps": 1e-06, "ffn_dim": 13824, "freq_dim": 256, "image_dim": None, "in_channels": 16,
    "num_attention_heads": 40, "num_layers": 40, "out_channels": 16, "patch_size": [1, 2, 2],
    "pos_embed_seq_len": None, "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 1024, "text_dim": 4096,
}
# per get_transformer_config("Wan-I2V-14B-480p" / "-720p"): image_dim 1280 (CLIP), added_kv_proj_dim, 36 channels
_WAN_I2V_TRANSFORMER = {**_WAN_TRANSFORMER, "added_kv_proj_dim": 5120, "image_dim": 1280, "in_channels": 36}

# per convert_wan_to_diffusers.py convert_vae: AutoencoderKLWan() with its defaults (the Wan2.1 VAE's statistics)
_WAN_VAE = {
    "_class_name": "AutoencoderKLWan", "attn_scales": [], "base_dim": 96, "decoder_base_dim": None,
    "dim_mult": [1, 2, 4, 4], "dropout": 0.0, "in_channels": 3, "is_residual": False,
    "latents_mean": [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                     0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
    "latents_std": [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916],
    "num_res_blocks": 2, "out_channels": 3, "patch_size": None, "scale_factor_spatial": 8,
    "scale_factor_temporal": 4, "temperal_downsample": [False, True, True], "z_dim": 16,
}
# per convert_wan_to_diffusers.py vae22_diffusers_config (Wan2.2 VAE: 48 channels, 16x16 pixels per latent);
# its "clip_output" key was dropped from AutoencoderKLWan (diffusers #12041) and is left out
_WAN22_VAE = {
    **_WAN_VAE, "base_dim": 160, "decoder_base_dim": 256, "in_channels": 12, "is_residual": True,
    "latents_mean": [-0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813,
                     0.0891, 0.157, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108,
                     -0.2158, 0.2502, -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.123, -0.0313,
                     -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.052, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944,
                     0.3573, -0.0548, -0.1681, -0.0667],
    "latents_std": [0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.499, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
                    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
                    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
                    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.06, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744],
    "out_channels": 12, "patch_size": 2, "scale_factor_spatial": 16, "z_dim": 48,
}

# per convert_wan_to_diffusers.py __main__: UniPCMultistepScheduler(prediction_type="flow_prediction",
# use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=...) with 3.0 for every model but TI2V (5.0); matches
# the Wan-AI/Wan2.1-VACE-14B-diffusers scheduler_config.json stored copy
_WAN_UNIPC = {
    "_class_name": "UniPCMultistepScheduler", "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
    "disable_corrector": [], "dynamic_thresholding_ratio": 0.995, "final_sigmas_type": "zero", "flow_shift": 3.0,
    "lower_order_final": True, "num_train_timesteps": 1000, "predict_x0": True, "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False, "sample_max_value": 1.0, "shift_terminal": None, "sigma_max": None,
    "sigma_min": None, "solver_order": 2, "solver_p": None, "solver_type": "bh2", "steps_offset": 0,
    "thresholding": False, "time_shift_type": "exponential", "timestep_spacing": "linspace", "trained_betas": None,
    "use_beta_sigmas": False, "use_dynamic_shifting": False, "use_exponential_sigmas": False,
    "use_flow_sigmas": True, "use_karras_sigmas": False,
}

# Wan's default negative prompt, per Wan2.1/Wan2.2 wan/configs/shared_config.py sample_neg_prompt
_WAN_NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
                 "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
                 "三条腿，背景人很多，倒着走")


def _cogvideox_index(pipeline: str) -> dict:
    """model_index.json of a CogVideoX folder (per convert_cogvideox_to_diffusers.py: T5Tokenizer, DDIM)."""
    return {"_class_name": pipeline, "scheduler": ["diffusers", "CogVideoXDDIMScheduler"],
            "text_encoder": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "T5Tokenizer"],
            "transformer": ["diffusers", "CogVideoXTransformer3DModel"],
            "vae": ["diffusers", "AutoencoderKLCogVideoX"]}


def _wan_index(pipeline: str, experts: int = 1, boundary_ratio: float | None = None, expand_timesteps: bool = False,
               clip: bool = False) -> dict:
    """model_index.json of a Wan folder as ``save_pretrained`` writes it (optional components as ``[None, None]``)."""
    index = {"_class_name": pipeline, "boundary_ratio": boundary_ratio, "expand_timesteps": expand_timesteps,
             "scheduler": ["diffusers", "UniPCMultistepScheduler"],
             "text_encoder": ["transformers", "UMT5EncoderModel"],
             "tokenizer": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "WanTransformer3DModel"],
             "transformer_2": ["diffusers", "WanTransformer3DModel"] if experts == 2 else [None, None],
             "vae": ["diffusers", "AutoencoderKLWan"]}
    if pipeline == "WanImageToVideoPipeline":
        index["image_encoder"] = ["transformers", "CLIPVisionModel"] if clip else [None, None]
        index["image_processor"] = ["transformers", "CLIPImageProcessor"] if clip else [None, None]
    return dict(sorted(index.items()))


def _cogvideox(hub_id, pipeline, transformer, vae, scheduler, parameters, dtype, height, width, frames, fps):
    # CogVideoX defaults: 50 steps, guidance 6, no negative prompt (per CogVideoXPipeline.__call__ defaults and
    # THUDM/CogVideo inference/cli_demo.py generate_video)
    return PublishedModel(hub_id, "cogvideox", _cogvideox_index(pipeline),
                          {"transformer": transformer, "vae": vae, "scheduler": scheduler, "text_encoder": _T5_XXL},
                          parameters, dtype, height, width, frames, fps, steps=50, guidance_scale=6.0,
                          guidance_scale_2=None, negative_prompt=None)


# Parameter counts: computed with meta_model (parameters, not buffers); see tests/test_published.py.
PUBLISHED: dict[str, PublishedModel] = {model.hub_id: model for model in (
    # 480x720, 49 frames at 8 fps: per cli_demo.py RESOLUTION_MAP["cogvideox-2b"] and CogVideoXPipeline's docstring
    # (export_to_video(..., fps=8)); run in fp16 (docstring: torch_dtype=torch.float16), the 5B ones in bf16
    _cogvideox("THUDM/CogVideoX-2b", "CogVideoXPipeline", _COGVIDEOX_TRANSFORMER, _COGVIDEOX_VAE, _COGVIDEOX_DDIM,
               {"transformer": 1_693_783_872, "vae": 215_583_907, "text_encoder": 4_762_310_656},
               "float16", 480, 720, 49, 8),
    _cogvideox("THUDM/CogVideoX-5b", "CogVideoXPipeline", _COGVIDEOX_5B, _COGVIDEOX_VAE_5B, _COGVIDEOX_DDIM_5B,
               {"transformer": 5_570_283_072, "vae": 215_583_907, "text_encoder": 4_762_310_656},
               "bfloat16", 480, 720, 49, 8),
    # per convert_transformer(i2v=True): 32 input channels (noise + image latents) and learned positions (1.0 I2V)
    _cogvideox("THUDM/CogVideoX-5b-I2V", "CogVideoXImageToVideoPipeline",
               {**_COGVIDEOX_5B, "in_channels": 32, "use_learned_positional_embeddings": True},
               _COGVIDEOX_VAE_5B, _COGVIDEOX_DDIM_5B,
               {"transformer": 5_570_479_680, "vae": 215_583_907, "text_encoder": 4_762_310_656},
               "bfloat16", 480, 720, 49, 8),
    # 768x1360, 81 frames at 16 fps: per cli_demo.py RESOLUTION_MAP["cogvideox1.5-5b"] and its docstring ("CogVideoX1.5
    # produces either 81 or 161 frames ... at 16 fps")
    _cogvideox("THUDM/CogVideoX1.5-5B", "CogVideoXPipeline", _COGVIDEOX_15, _COGVIDEOX_VAE_15, _COGVIDEOX_DDIM_5B,
               {"transformer": 5_570_676_352, "vae": 215_583_907, "text_encoder": 4_762_310_656},
               "bfloat16", 768, 1360, 81, 16),
    # per convert_transformer(i2v=True) for 1.5: 32 channels and the ofs embedding (ofs_embed_dim=512)
    _cogvideox("THUDM/CogVideoX1.5-5B-I2V", "CogVideoXImageToVideoPipeline",
               {**_COGVIDEOX_15, "in_channels": 32, "ofs_embed_dim": 512},
               _COGVIDEOX_VAE_15, _COGVIDEOX_DDIM_5B,
               {"transformer": 5_571_594_880, "vae": 215_583_907, "text_encoder": 4_762_310_656},
               "bfloat16", 768, 1360, 81, 16),

    # Wan 2.1 T2V 1.3B: transformer per get_transformer_config("Wan-T2V-1.3B"); 480x832 only (Wan2.1
    # wan/configs/__init__.py SUPPORTED_SIZES["t2v-1.3B"]), 81 frames (generate.py frame_num), 16 fps
    # (shared_config.sample_fps), 50 steps (generate.py sample_steps); guidance 6 per the Wan2.1 README ("If you are
    # using the T2V-1.3B model, we recommend setting the parameter --sample_guide_scale 6", which also suggests a shift
    # of 8-12; the published scheduler ships flow_shift 3.0)
    PublishedModel(
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "wan", _wan_index("WanPipeline"),
        {"transformer": {**_WAN_TRANSFORMER, "ffn_dim": 8960, "num_attention_heads": 12, "num_layers": 30},
         "vae": _WAN_VAE, "scheduler": _WAN_UNIPC, "text_encoder": _UMT5_XXL},
        {"transformer": 1_418_996_800, "vae": 126_892_531, "text_encoder": 5_680_910_336},
        "bfloat16", 480, 832, 81, 16, steps=50, guidance_scale=6.0, guidance_scale_2=None,
        negative_prompt=_WAN_NEGATIVE),
    # Wan 2.1 T2V 14B: 720x1280 (generate.py --size default "1280*720"), guidance 5 (generate.py sample_guide_scale,
    # WanPipeline docstring), 50 steps
    PublishedModel(
        "Wan-AI/Wan2.1-T2V-14B-Diffusers", "wan", _wan_index("WanPipeline"),
        {"transformer": _WAN_TRANSFORMER, "vae": _WAN_VAE, "scheduler": _WAN_UNIPC, "text_encoder": _UMT5_XXL},
        {"transformer": 14_288_491_584, "vae": 126_892_531, "text_encoder": 5_680_910_336},
        "bfloat16", 720, 1280, 81, 16, steps=50, guidance_scale=5.0, guidance_scale_2=None,
        negative_prompt=_WAN_NEGATIVE),
    # Wan 2.1 I2V 14B (480P / 720P): transformer per get_transformer_config("Wan-I2V-14B-480p"/"-720p"), CLIP image
    # encoder (WanImageToVideoPipeline with image_encoder, image_processor); 40 steps for i2v (generate.py), guidance
    # 5 (README diffusers example); negative prompt per wan/configs/wan_i2v_14B.py ("镜头晃动，" + the shared one)
    *(PublishedModel(
        f"Wan-AI/Wan2.1-I2V-14B-{resolution}-Diffusers", "wan", _wan_index("WanImageToVideoPipeline", clip=True),
        {"transformer": _WAN_I2V_TRANSFORMER, "vae": _WAN_VAE, "scheduler": _WAN_UNIPC, "text_encoder": _UMT5_XXL,
         "image_encoder": _CLIP_VIT_H, "image_processor": _CLIP_PROCESSOR},
        {"transformer": 16_394_878_784, "vae": 126_892_531, "text_encoder": 5_680_910_336,
         "image_encoder": 630_766_080},
        "bfloat16", height, width, 81, 16, steps=40, guidance_scale=5.0, guidance_scale_2=None,
        negative_prompt="镜头晃动，" + _WAN_NEGATIVE) for resolution, height, width in (("480P", 480, 832),
                                                                                    ("720P", 720, 1280))),

    # Wan 2.2 TI2V 5B: transformer per get_transformer_config("Wan2.2-TI2V-5B"), VAE vae22_diffusers_config,
    # flow_shift 5.0 and expand_timesteps=True (convert_wan_to_diffusers.py __main__); 704x1280, 121 frames, 24 fps,
    # 50 steps, guidance 5.0 per Wan2.2 wan/configs/wan_ti2v_5B.py (and the diffusers PR #12004 example)
    PublishedModel(
        "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "wan", _wan_index("WanPipeline", expand_timesteps=True),
        {"transformer": {**_WAN_TRANSFORMER, "ffn_dim": 14336, "in_channels": 48, "num_attention_heads": 24,
                         "num_layers": 30, "out_channels": 48},
         "vae": _WAN22_VAE, "scheduler": {**_WAN_UNIPC, "flow_shift": 5.0}, "text_encoder": _UMT5_XXL},
        {"transformer": 4_999_787_712, "vae": 704_688_668, "text_encoder": 5_680_910_336},
        "bfloat16", 704, 1280, 121, 24, steps=50, guidance_scale=5.0, guidance_scale_2=None,
        negative_prompt=_WAN_NEGATIVE),
    # Wan 2.2 T2V A14B: two experts of the 14B shape (transformer = high noise, transformer_2 = low noise) switched at
    # boundary_ratio 0.875 (convert_wan_to_diffusers.py __main__); 720x1280, 81 frames, 16 fps, 40 steps, guidance
    # 4.0 (high noise) / 3.0 (low noise) per Wan2.2 wan/configs/wan_t2v_A14B.py sample_guide_scale = (3.0, 4.0)
    # "low noise, high noise" (its reference sample_shift is 12.0; the diffusers folder ships flow_shift 3.0)
    PublishedModel(
        "Wan-AI/Wan2.2-T2V-A14B-Diffusers", "wan", _wan_index("WanPipeline", experts=2, boundary_ratio=0.875),
        {"transformer": _WAN_TRANSFORMER, "transformer_2": _WAN_TRANSFORMER, "vae": _WAN_VAE,
         "scheduler": _WAN_UNIPC, "text_encoder": _UMT5_XXL},
        {"transformer": 14_288_491_584, "transformer_2": 14_288_491_584, "vae": 126_892_531,
         "text_encoder": 5_680_910_336},
        "bfloat16", 720, 1280, 81, 16, steps=40, guidance_scale=4.0, guidance_scale_2=3.0,
        negative_prompt=_WAN_NEGATIVE),
    # Wan 2.2 I2V A14B: per get_transformer_config("Wan2.2-I2V-14B-720p") (36 channels, no CLIP: added_kv_proj_dim
    # None) and boundary_ratio 0.9 (convert_wan_to_diffusers.py __main__); 40 steps, guidance 3.5 / 3.5 per Wan2.2
    # wan/configs/wan_i2v_A14B.py (reference sample_shift 5.0; the diffusers folder ships 3.0)
    PublishedModel(
        "Wan-AI/Wan2.2-I2V-A14B-Diffusers", "wan",
        _wan_index("WanImageToVideoPipeline", experts=2, boundary_ratio=0.9),
        {"transformer": {**_WAN_TRANSFORMER, "in_channels": 36},
         "transformer_2": {**_WAN_TRANSFORMER, "in_channels": 36}, "vae": _WAN_VAE, "scheduler": _WAN_UNIPC,
         "text_encoder": _UMT5_XXL},
        {"transformer": 14_288_901_184, "transformer_2": 14_288_901_184, "vae": 126_892_531,
         "text_encoder": 5_680_910_336},
        "bfloat16", 720, 1280, 81, 16, steps=40, guidance_scale=3.5, guidance_scale_2=3.5,
        negative_prompt=_WAN_NEGATIVE),
)}


# ---------------------------------------------------------------------------------------------------------------------
# Building components and folders.

def _plain(value):
    """JSON-equal form of a config value (tuples and lists compare equal)."""
    return json.loads(json.dumps(value, default=str))


def _flags(config) -> dict:
    """A pipeline's own flags (``boundary_ratio``, ``expand_timesteps``), unset ones left out."""
    return {k: v for k, v in dict(config).items()
            if not k.startswith("_") and not isinstance(v, (list, tuple, dict)) and v not in (None, False)}


def match(pipe) -> PublishedModel | None:
    """The published checkpoint a loaded pipeline is an architecture of: the same pipeline class, every key of the
    record's transformer config equal and the same pipeline flags; ``None`` for anything else (tiny, demo and
    custom models). Checkpoints that share all three (Wan 2.1 I2V 480P / 720P) give the first."""
    return match_configs(type(pipe).__name__, dict(pipe.transformer.config), getattr(pipe, "config", {}))


def match_configs(pipeline: str, transformer: dict, index: dict) -> PublishedModel | None:
    """``match`` from a folder's files: its pipeline class, transformer config and ``model_index.json``."""
    config, flags = _plain(dict(transformer)), _plain(_flags(index))
    for record in PUBLISHED.values():
        wanted = record.configs["transformer"]
        if (record.pipeline == pipeline and flags == _plain(_flags(record.model_index))
                and all(config.get(k) == _plain(v) for k, v in wanted.items() if not k.startswith("_"))):
            return record
    return None


def _library_class(model: PublishedModel, component: str) -> tuple[str, type]:
    """(library, class) of ``component`` as ``model_index.json`` names it."""
    import diffusers
    import transformers

    library, class_name = model.model_index[component]
    return library, getattr(diffusers if library == "diffusers" else transformers, class_name)


def _build(library: str, cls: type, config: dict):
    """An instance of ``cls`` from a config dict (a diffusers config, or a transformers config.json dict)."""
    if library == "diffusers":
        return cls.from_config(config)
    return cls(cls.config_class.from_dict(config))


def _text_config(model: PublishedModel, component: str, text_layers: int) -> dict:
    """An encoder's config with ``text_layers`` layers (width, heads and vocabulary as published)."""
    config = dict(model.configs[component])
    config[LAYER_KEY[config["architectures"][0]]] = text_layers
    return config


def meta_model(model: PublishedModel, component: str) -> torch.nn.Module:
    """``component`` (e.g. ``"transformer"``, ``"text_encoder"``) of ``model`` at its published size, built on the
    meta device: shapes without memory, for counting parameters or planning placement."""
    if component not in model.parameters:
        raise ValueError(f"{component!r} is not a model of {model.hub_id}; models: {', '.join(model.models)}")
    library, cls = _library_class(model, component)
    with torch.device("meta"):
        return _build(library, cls, model.configs[component])


def parameter_count(module: torch.nn.Module) -> int:
    """Number of parameter elements (buffers not included)."""
    return sum(p.numel() for p in module.parameters())


def _stand_in_tokenizer(model: PublishedModel):
    """The tokenizer written in place of the published SentencePiece one (which cannot be built offline): the tiny
    models' word-level tokenizer (``tiny.make_tokenizer``) at the published prompt length; its ids fit any vocab."""
    from ..tiny import make_tokenizer

    return make_tokenizer(COGVIDEOX_TEXT_LEN if model.family == "cogvideox" else WAN_TEXT_LEN)


def _random_weights(library: str, cls: type, config: dict, dtype: torch.dtype, seed: int):
    """``cls`` at ``config``'s size with random ``dtype`` weights, made without first building float32 ones.

    Parameters are created empty (accelerate's ``init_empty_weights``; buffers are computed as usual) and filled
    from ``seed``: norm scales (1-D weights, ``gamma``) with ones, biases with zeros, the rest from N(0, 0.02).
    """
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        module = _build(library, cls, config)
    generator = torch.Generator().manual_seed(seed)
    made = {}  # id of an empty parameter -> its filled one, so parameters shared by two modules stay shared
    for owner in module.modules():
        for name, param in list(owner._parameters.items()):
            if param is None:
                continue
            if id(param) not in made:
                value = torch.empty(param.shape, dtype=dtype)
                if name.endswith("bias"):
                    value.zero_()
                elif name == "gamma" or (param.ndim == 1 and name.endswith("weight")):
                    value.fill_(1.0)
                else:
                    value.normal_(0.0, 0.02, generator=generator)
                made[id(param)] = torch.nn.Parameter(value, requires_grad=False)
            owner._parameters[name] = made[id(param)]
    if hasattr(module, "tie_weights"):  # transformers ties after loading, which empty weights skipped
        module.tie_weights()
    return module.to(dtype).eval()  # saved buffers too (CogVideoX's sincos table is computed in float64)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def write_folder(model: PublishedModel, path: str | Path, *, text_layers: int = 2, weights: str = "random",
                 dtype: torch.dtype | None = None) -> Path:
    """Write a diffusers pipeline folder of ``model`` that ``DiffusionPipeline.from_pretrained`` can load.

    Args:
        model: the record (a ``PUBLISHED`` value).
        path: the folder to write (created; existing files of the same names are replaced).
        text_layers: layers of the text encoder (and CLIP image encoder), which keep their published width, heads
            and vocabulary; their published depth (24 / 32 layers) only slows a benchmark without changing it.
        weights: ``"random"`` writes safetensors weights (transformers and VAE at their published sizes, so a 14B
            model needs ~28 GB of memory and disk in bf16); ``"none"`` writes configs only.
        dtype: dtype of random weights; default ``model.dtype`` (what the authors run the model in).

    Returns:
        The folder. Its ``model_index.json`` is ``model.model_index`` except the tokenizer entry, which names the
        stand-in word-level tokenizer written in ``tokenizer/`` (no network, so no SentencePiece model).
    """
    import diffusers

    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, not {weights!r}")
    if text_layers < 1:
        raise ValueError(f"text_layers must be at least 1, not {text_layers}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = dtype or getattr(torch, model.dtype)
    tokenizer = _stand_in_tokenizer(model)
    tokenizer.save_pretrained(folder / "tokenizer")
    index = {**model.model_index, "_diffusers_version": diffusers.__version__,
             "tokenizer": ["transformers", type(tokenizer).__name__]}
    _write_json(folder / "model_index.json", index)
    for seed, (component, config) in enumerate(model.configs.items()):
        library, cls = _library_class(model, component)
        sub = folder / component
        if component == "scheduler":
            _write_json(sub / "scheduler_config.json", {**config, "_diffusers_version": diffusers.__version__})
        elif component == "image_processor":
            _write_json(sub / "preprocessor_config.json", config)
        elif library == "diffusers":
            if weights == "none":
                _write_json(sub / "config.json", {**config, "_diffusers_version": diffusers.__version__})
            else:
                _random_weights(library, cls, config, dtype, seed).save_pretrained(sub, safe_serialization=True)
        else:  # a transformers encoder, shrunk in depth
            config = _text_config(model, component, text_layers)
            if weights == "none":
                cls.config_class.from_dict(config).save_pretrained(sub)
            else:
                _random_weights(library, cls, config, dtype, seed).save_pretrained(sub, safe_serialization=True)
    return folder
