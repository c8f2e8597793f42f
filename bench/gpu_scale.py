"""Full-size CogVideoX-5b cost per mode on a GPU, with random weights (nothing is downloaded).

Builds ``CogVideoXTransformer3DModel`` with the published CogVideoX-5b configuration (48 heads x 64, 42 layers,
RoPE, 226 text tokens of width 4096; 5.57 B parameters) and ``AutoencoderKLCogVideoX`` with its published
configuration (the diffusers defaults with ``scaling_factor=0.7``), in bf16 on CUDA, for 49 frames at 480x720
(13 latent frames of 60x90). The T5-XXL text encoder is replaced by a 1-layer random T5 stub with the real output
width (4096) and length (226 tokens): prompt embeddings are random vectors of the right shape, which changes nothing
in the transformer's cost (T5 runs once per prompt and is not timed here). Weights are random, so the videos are
noise; the timings and memory are those of the real architecture.

Per mode (see bench/speed.py: reference_compatible, default, kv_reuse, prompts_4) it reports seconds per phase
and per step, the transformer batch sizes, and the peak GPU memory (``torch.cuda.max_memory_allocated``, reset at
each phase; weights included). It also prints the size the kv_reuse cache would need at this size.

    python bench/gpu_scale.py                       # CUDA, bf16, 49x480x720, 10 steps, all modes
    python bench/gpu_scale.py --steps 50 --modes default,prompts_4
    python bench/gpu_scale.py --layers 4            # same widths, fewer blocks (quick smoke test on a GPU)
    python bench/gpu_scale.py --tiny                # CPU-sized: 2 layers, 2 heads x 64, 9 frames at 64x64, fp32
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is a folder of scripts, not a package
import common as bc  # noqa: E402

# THUDM/CogVideoX-5b transformer/config.json: the diffusers defaults except 48 heads, 42 layers and RoPE
# (scripts/convert_cogvideox_to_diffusers.py: "For 5B, num_layers is 42 ... num_attention_heads is 48 ...
# use_rotary_positional_embeddings is True"). Written out in full so nothing depends on diffusers' defaults.
TRANSFORMER_5B = dict(
    num_attention_heads=48,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    flip_sin_to_cos=True,
    freq_shift=0,
    time_embed_dim=512,
    text_embed_dim=4096,
    num_layers=42,
    dropout=0.0,
    attention_bias=True,
    sample_width=90,
    sample_height=60,
    sample_frames=49,
    patch_size=2,
    patch_size_t=None,
    temporal_compression_ratio=4,
    max_text_seq_length=226,
    activation_fn="gelu-approximate",
    timestep_activation_fn="silu",
    norm_elementwise_affine=True,
    norm_eps=1e-5,
    spatial_interpolation_scale=1.875,
    temporal_interpolation_scale=1.0,
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=False,
)
# THUDM/CogVideoX-5b vae/config.json: the diffusers defaults with scaling_factor 0.7 (2b: 1.15258426).
VAE_5B = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("CogVideoXDownBlock3D",) * 4,
    up_block_types=("CogVideoXUpBlock3D",) * 4,
    block_out_channels=(128, 256, 256, 512),
    latent_channels=16,
    layers_per_block=3,
    act_fn="silu",
    norm_eps=1e-6,
    norm_num_groups=32,
    temporal_compression_ratio=4,
    sample_height=480,
    sample_width=720,
    scaling_factor=0.7,
    force_upcast=True,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
FULL_PARAMS_5B = 5_570_283_072  # parameters of TRANSFORMER_5B (counted on the meta device; published: ~5.6 B)
FULL_KV_TOKENS = 226 + 13 * 30 * 45  # text + 13 latent frames x (60/2) x (90/2) patches = 17776


def tiny_configs(frames: int, height: int, width: int) -> tuple[dict, dict]:
    """The CPU-sized stand-in: same structure and text width, 2 layers, 2 heads x 64, a narrow VAE."""
    transformer = dict(TRANSFORMER_5B, num_attention_heads=2, num_layers=2,
                       sample_height=height // 8, sample_width=width // 8, sample_frames=frames)
    vae = dict(VAE_5B, block_out_channels=(8,) * 4, layers_per_block=1, norm_num_groups=2,
               sample_height=height, sample_width=width)
    return transformer, vae


def build_pipeline(transformer_cfg: dict, vae_cfg: dict, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A ``CogVideoXPipeline`` of random weights, created directly on ``device`` in ``dtype``."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from vidinvert.tiny import SPECIAL_TOKENS, VOCABULARY, make_tokenizer, scheduler_config

    previous = torch.get_default_dtype()
    torch.manual_seed(seed)
    try:
        torch.set_default_dtype(dtype)  # initialise in the target dtype: 5.6 B fp32 parameters would need 22 GB
        with torch.device(device):
            transformer = CogVideoXTransformer3DModel(**transformer_cfg)
            vae = AutoencoderKLCogVideoX(**vae_cfg)
            text_encoder = T5EncoderModel(T5Config(  # stub: real output width, 1 layer, random weights
                vocab_size=len(SPECIAL_TOKENS) + len(VOCABULARY), d_model=transformer_cfg["text_embed_dim"], d_kv=8,
                d_ff=64, num_layers=1, num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
                pad_token_id=0, eos_token_id=1))
    finally:
        torch.set_default_dtype(previous)
    pipe = CogVideoXPipeline(
        tokenizer=make_tokenizer(transformer_cfg["max_text_seq_length"]),
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(**scheduler_config("5b")),  # snr_shift_scale 1.0, as published for 5b
    )
    pipe.to(device=device, dtype=dtype)  # buffers made outside torch factories
    for module in (transformer, vae, text_encoder):
        module.eval().requires_grad_(False)
    return pipe


def kv_estimate(steps: int, layers: int, tokens: int, inner_dim: int, element_size: int) -> dict:
    """Size of a full kv_reuse cache: steps x layers x (K, V) x tokens x inner_dim x bytes."""
    per_step = layers * 2 * tokens * inner_dim * element_size
    return {
        "formula": "steps x layers x 2 (K,V) x tokens x inner_dim x bytes",
        "layers": layers, "tokens": tokens, "inner_dim": inner_dim, "bytes_per_element": element_size,
        "per_step_gib": round(per_step / 2**30, 4),
        "steps": steps, "gib": round(steps * per_step / 2**30, 4),
        "gib_at_50_steps": round(50 * per_step / 2**30, 4),
    }


def measure_mode(model, latents, mode, steps, device, kv_budget_gb, kv_method) -> dict:
    from vidinvert.counting import CallCounter

    is_cuda = device.type == "cuda"
    timer, counter = bc.Timer(cuda_memory=is_cuda), CallCounter(model.transformer)
    try:
        info = bc.run_mode(model, latents, mode, steps, timer, counter, kv_budget_gb=kv_budget_gb,
                           kv_method=kv_method, decode="first")
    except torch.OutOfMemoryError as err:  # report it as a result: that is what this bench is for
        info = {"available": False, "reason": f"out of GPU memory: {str(err).splitlines()[0][:200]}"}
    finally:
        counter.close()
    calls = counter.summary()
    if not info.get("available", True):
        return {"mode": mode, **info, "phases_s": {k: round(v, 3) for k, v in timer.seconds.items()},
                "peak_gpu_mib": timer.peak_gpu_mib or None}
    p = {k: round(v, 3) for k, v in timer.seconds.items()}
    total = p["invert"] + p["edit"]
    return {
        "mode": mode,
        **info,
        "steps": steps,
        "phases_s": p,
        "invert_s_per_step": round(p["invert"] / steps, 4),
        "edit_s_per_step": round(p["edit"] / steps, 4),
        "decode_s_per_video": p["decode"],
        "total_s": round(total, 3),
        "per_edit_s": round(total / info["num_prompts"], 3),
        "total_s_at_50_steps": round(total / steps * 50, 1),
        "transformer_calls": calls,
        "batch_check": bc.batch_check(mode, calls, info["rows_per_call"] is not None),
        "peak_gpu_mib": timer.peak_gpu_mib or None,
        "peak_gpu_mib_max": max(timer.peak_gpu_mib.values()) if timer.peak_gpu_mib else None,
        "peak_rss_mib": bc.peak_rss_mib(),
    }


def to_markdown(data: dict) -> str:
    cfg = data["config"]
    headers = ["mode", "invert batch", "edit batch", "invert s/step", "edit s/step", "decode s/video",
               "total s (inv+edit)", "per edit s", "speedup", "total s at 50 steps", "peak GPU MiB"]
    rows = []
    for mode in cfg["modes"]:
        r = data[mode]
        if not r.get("available", True):
            rows.append([mode] + ["-"] * 5 + [r.get("reason", "not available")] + ["-"] * 4)
            continue
        calls = r["transformer_calls"]
        batch = lambda phase: "/".join(calls.get(phase, {}).get("batch_sizes", {})) or "-"  # noqa: E731
        speed = r.get("speedup_vs_reference")
        rows.append([mode, batch("invert"), batch("edit"), r["invert_s_per_step"], r["edit_s_per_step"],
                     r["decode_s_per_video"], r["total_s"], r["per_edit_s"],
                     f"{speed:.2f}x" if speed else ("1.00x (base)" if mode == "reference_compatible" else "-"), r["total_s_at_50_steps"],
                     r["peak_gpu_mib_max"] if r["peak_gpu_mib_max"] is not None else "- (CPU)"])
    est, full = data["kv_cache_estimate"], data["kv_cache_estimate_full_size"]
    return "\n".join([
        f"# Full-size scale ({cfg['preset']}, {cfg['frames']} frames at {cfg['height']}x{cfg['width']}, "
        f"{cfg['steps']} steps, {cfg['dtype']} on {data['machine'].get('gpu', cfg['device'])})",
        "",
        data["note"],
        "",
        f"Transformer: {cfg['transformer_params'] / 1e9:.3f} B parameters ({cfg['layers']} layers); latents "
        f"{cfg['latent_shape']}; VAE tiling {'on' if cfg['vae_tiling'] else 'off'}; encode {data['encode_s']} s "
        f"(once, shared by the modes). Decode is timed for the first edited video of each mode.",
        "",
        bc.markdown_table(headers, rows),
        "",
        f"kv_reuse cache at this size: {est['gib']} GiB for {est['steps']} steps ({est['per_step_gib']} GiB per "
        f"step; {est['gib_at_50_steps']} GiB at 50 steps). Full size (CogVideoX-5b, 49x480x720, tokens "
        f"{full['tokens']} = 226 + 13*30*45, inner dim {full['inner_dim']}, 42 layers, bf16): "
        f"{full['per_step_gib']} GiB per step, {full['gib_at_50_steps']} GiB at 50 steps.",
    ])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda; --tiny: cpu)")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None, help="default bf16 (--tiny: fp32)")
    parser.add_argument("--frames", type=int, default=None, help="pixel frames, 4k+1 (default 49; --tiny: 9)")
    parser.add_argument("--height", type=int, default=None, help="pixel height (default 480; --tiny: 64)")
    parser.add_argument("--width", type=int, default=None, help="pixel width (default 720; --tiny: 64)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default 10; --tiny: 2)")
    parser.add_argument("--layers", type=int, default=None, help="override num_layers (default 42; --tiny: 2)")
    parser.add_argument("--modes", default=",".join(bc.MODES), help="comma-separated subset of " + ",".join(bc.MODES))
    parser.add_argument("--kv-budget-gb", type=float, default=4.0, help="memory budget of the recorded keys/values")
    parser.add_argument("--kv-method", choices=("ddim", "fixed-point"), default="ddim", help="kv_reuse inversion")
    parser.add_argument("--vae-tiling", choices=("on", "off"), default=None, help="default on (--tiny: off)")
    parser.add_argument("--tiny", action="store_true", help="CPU-sized config (2 layers, 2 heads x 64, 9x64x64, fp32)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", default=None, help="folder for gpu_scale.{json,md} (default: write nothing)")
    args = parser.parse_args(argv)
    load_at_start = bc.load_average()
    bc.setup(args.threads)
    from vidinvert.models import DTYPES, VideoModel

    tiny = args.tiny
    device = torch.device(args.device or ("cpu" if tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available here: run on a GPU machine, or use --tiny (CPU-sized) / --device cpu")
    dtype = DTYPES[args.dtype or ("fp32" if tiny else "bf16")]
    frames, height, width = args.frames or (9 if tiny else 49), args.height or (64 if tiny else 480), \
        args.width or (64 if tiny else 720)
    steps = args.steps or (2 if tiny else 10)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in bc.MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; use {', '.join(bc.MODES)}")
    transformer_cfg, vae_cfg = tiny_configs(frames, height, width) if tiny else (dict(TRANSFORMER_5B), dict(VAE_5B))
    if args.layers:
        transformer_cfg["num_layers"] = args.layers
    vae_tiling = (args.vae_tiling or ("off" if tiny else "on")) == "on"

    pipe = build_pipeline(transformer_cfg, vae_cfg, device, dtype)
    if vae_tiling:
        pipe.vae.enable_tiling()
    model = VideoModel(pipe, name="cogvideox-5b-random" if not tiny else "cogvideox-5b-tiny-random")
    params = sum(p.numel() for p in model.transformer.parameters())
    weights_gpu_mib = round(torch.cuda.memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None

    clip = bc.synthetic_clip(frames, height, width)
    model.encode_text([""])
    timer = bc.Timer(cuda_memory=device.type == "cuda")
    with timer.phase("encode"):
        latents = model.encode(clip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = model.encode_text(["", bc.EDIT_PROMPT])
        for rows in (1, 4):  # warm-up: kernels, cuBLAS handles and allocator pools for both batch sizes
            model.predict(latents.expand(rows, -1, -1, -1, -1), 999, text[:1].expand(rows, -1, -1))
    if device.type == "cuda":
        torch.cuda.synchronize()

    results = {}
    for mode in modes:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        results[mode] = measure_mode(model, latents, mode, steps, device, args.kv_budget_gb, args.kv_method)
        print(f"{mode}: {json.dumps(bc.json_safe(results[mode]))[:400]}", file=sys.stderr)
    ref = results.get("reference_compatible")
    if ref and ref.get("available", True):
        for mode, r in results.items():
            if mode != "reference_compatible" and r.get("available", True):
                r["speedup_vs_reference"] = round(ref["total_s"] / (r["per_edit_s"] if mode == "prompts_4"
                                                                    else r["total_s"]), 3)

    _, latent_frames, _, lat_h, lat_w = latents.shape
    p = transformer_cfg["patch_size"]
    tokens = transformer_cfg["max_text_seq_length"] + latent_frames * (lat_h // p) * (lat_w // p)
    inner = transformer_cfg["num_attention_heads"] * transformer_cfg["attention_head_dim"]
    element = torch.empty((), dtype=dtype).element_size()
    machine = bc.machine_info(str(device), load_at_start)
    data = {
        **results,
        "note": ("Random weights (no download); T5-XXL replaced by a 1-layer random T5 stub of width "
                 f"{transformer_cfg['text_embed_dim']} (random prompt embeddings of the right shape, not timed). "
                 "Peak GPU memory is torch.cuda.max_memory_allocated, reset at the start of each phase, weights "
                 "included." + (" " + bc.cpu_note(machine, 1) if device.type == "cpu" else "")),
        "encode_s": round(timer.seconds["encode"], 3),
        "encode_peak_gpu_mib": timer.peak_gpu_mib.get("encode"),
        "weights_gpu_mib": weights_gpu_mib,
        "kv_cache_estimate": kv_estimate(steps, transformer_cfg["num_layers"], tokens, inner, element),
        "kv_cache_estimate_full_size": kv_estimate(50, 42, FULL_KV_TOKENS, 48 * 64, 2),
        "config": {
            "preset": "tiny (CPU-sized CogVideoX-5b structure)" if tiny else "CogVideoX-5b",
            "transformer": {k: (list(v) if isinstance(v, tuple) else v) for k, v in transformer_cfg.items()},
            "vae": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vae_cfg.items()},
            "transformer_params": params, "layers": transformer_cfg["num_layers"], "device": str(device),
            "dtype": str(dtype).replace("torch.", ""), "frames": frames, "height": height, "width": width,
            "steps": steps, "modes": modes, "latent_shape": list(latents.shape), "vae_tiling": vae_tiling,
            "kv_method": args.kv_method, "kv_budget_gb": args.kv_budget_gb,
        },
        "machine": machine,
    }
    markdown = to_markdown(data)
    print(markdown)
    print(json.dumps(bc.json_safe(data)))
    for path in bc.write_results("gpu_scale", data, markdown, args.out):
        print(f"wrote {path}", file=sys.stderr)
    return data


if __name__ == "__main__":
    main()
