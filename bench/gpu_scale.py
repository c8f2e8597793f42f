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

Then (``--wan``, default all) Wan 2.1 T2V 1.3B (81 frames at 480x832) and Wan 2.2 TI2V-5B (121 frames at 704x1280)
at their published sizes: each built on the device from ``vidinvert.models.published.PUBLISHED``'s configs with
random weights (the UMT5 text encoder at 2 layers of the published width and vocabulary, as ``write_folder`` writes
it; the VAE in float32 as ``load_pipeline`` loads Wan's), ``--wan-steps`` steps (default 4), two edits: plain
inversion + one injected edit, and FlowEdit; seconds per phase and peak ``torch.cuda.max_memory_allocated``.
Beside each measured edit (CogVideoX-5b's ``default`` mode too) goes ``vidinvert plan --json``'s ``peak_bytes`` for
the same edit, planned on a configs-only folder (``write_folder(..., weights="none")``) in a background process
while the GPU works; ``--no-plan`` skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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


# ---- Wan at published sizes -------------------------------------------------------------------------------------
WAN_MODELS = {  # short name -> (PUBLISHED hub id, frames, height, width at the published size)
    "wan2.1-t2v-1.3b": ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 81, 480, 832),
    "wan2.2-ti2v-5b": ("Wan-AI/Wan2.2-TI2V-5B-Diffusers", 121, 704, 1280),
}
WAN_MODES = ("inversion", "flowedit")  # speed_wan.py's inversion_1 and flowedit_1, plus the decode of the result
TEXT_LAYERS = 2  # the stand-in text encoder's depth (write_folder's default)


def published_configs(hub_id: str, tiny: bool = False) -> dict:
    """The component configs of a published Wan checkpoint as ``write_folder(text_layers=2)`` writes them;
    ``tiny``: 2 transformer blocks of 2 heads (published head width), a narrow VAE and text encoder, for the CPU."""
    from vidinvert.models.published import LAYER_KEY, PUBLISHED
    from vidinvert.tiny import SPECIAL_TOKENS, VOCABULARY

    record = PUBLISHED[hub_id]
    configs = {k: dict(v) for k, v in record.configs.items()}
    text = configs["text_encoder"]
    text[LAYER_KEY[text["architectures"][0]]] = TEXT_LAYERS
    if tiny:
        t = configs["transformer"]
        t.update(num_layers=2, num_attention_heads=2, ffn_dim=256)
        text.update(vocab_size=len(SPECIAL_TOKENS) + len(VOCABULARY), d_ff=64, d_kv=8, num_heads=4,
                    relative_attention_num_buckets=8)
        vae = configs["vae"]
        vae["base_dim"] = 16
        if "decoder_base_dim" in vae and vae["decoder_base_dim"]:
            vae["decoder_base_dim"] = 16
    return configs


def build_wan(hub_id: str, device: torch.device, dtype: torch.dtype, tiny: bool = False, seed: int = 0):
    """A Wan pipeline of random weights at ``hub_id``'s published configs (``published_configs``), made directly on
    ``device`` (the meta device: shapes only), the VAE in float32 as ``load_pipeline`` loads Wan's."""
    import diffusers
    import transformers

    from vidinvert.models.published import PUBLISHED, WAN_TEXT_LEN
    from vidinvert.models.registry import FAMILY_VAE_DTYPE
    from vidinvert.tiny import make_tokenizer

    record = PUBLISHED[hub_id]
    configs = published_configs(hub_id, tiny)
    vae_dtype = FAMILY_VAE_DTYPE.get("wan", dtype)
    parts = {}
    previous = torch.get_default_dtype()
    torch.manual_seed(seed)
    try:
        for component in record.models:
            library, class_name = record.model_index[component]
            torch.set_default_dtype(vae_dtype if component == "vae" else dtype)
            with torch.device(device):
                if library == "diffusers":
                    parts[component] = getattr(diffusers, class_name).from_config(configs[component])
                else:
                    cls = getattr(transformers, class_name)
                    parts[component] = cls(cls.config_class.from_dict(configs[component]))
    finally:
        torch.set_default_dtype(previous)
    scheduler = getattr(diffusers, record.model_index["scheduler"][1]).from_config(configs["scheduler"])
    flags = {k: record.model_index[k] for k in ("boundary_ratio", "expand_timesteps") if k in record.model_index}
    pipe = getattr(diffusers, record.pipeline)(tokenizer=make_tokenizer(WAN_TEXT_LEN), scheduler=scheduler,
                                               **parts, **flags)
    if device.type != "meta":
        for key, module in parts.items():
            module.to(device=device, dtype=vae_dtype if key == "vae" else dtype)
            module.eval().requires_grad_(False)
    return pipe


def plan_command(folder: Path, device: str, dtype: str, frames: int, height: int, width: int, steps: int,
                 vae_tiling: bool, method: str = "inversion") -> list[str]:
    """``vidinvert plan`` arguments of the edit a mode measures (one prompt, ``--frames`` instead of a video)."""
    args = ["plan", "--model", str(folder), "--device", device, "--dtype", dtype, "--frames", str(frames),
            "--height", str(height), "--width", str(width), "--steps", str(steps), "--prompt", bc.EDIT_PROMPT,
            "--json"]
    if method == "flowedit":
        args += ["--method", "flowedit"]
    return args + (["--vae-tiling"] if vae_tiling else [])


class Plans:
    """``vidinvert plan --json`` for each measured edit, run one after another in a background process while the
    GPU works (planning is CPU work); ``results()`` waits for them. None where ``vidinvert plan`` does not exist."""

    def __init__(self, jobs: dict[str, tuple[str, list[str]]], enabled: bool = True):
        self.jobs, self.proc, self.out = jobs, None, None
        if not enabled or not jobs:
            return
        script = Path(sys.executable).with_name("vidinvert")
        cli = [str(script)] if script.is_file() else [sys.executable, "-m", "vidinvert"]
        self.folder = Path(tempfile.mkdtemp(prefix="gpu-scale-plans-"))
        self.out = self.folder / "plans.jsonl"
        lines = ["import json, subprocess, sys", f"cli = {cli!r}", f"out = open({str(self.out)!r}, 'w')"]
        for key, (hub_id, args) in jobs.items():
            folder = self.folder / hub_id.replace("/", "--")
            lines += [
                "from vidinvert.models.published import PUBLISHED, write_folder",
                f"write_folder(PUBLISHED[{hub_id!r}], {str(folder)!r}, text_layers={TEXT_LAYERS}, weights='none')",
                f"p = subprocess.run(cli + {[a if a != '@FOLDER' else str(folder) for a in args]!r}, "
                "capture_output=True, text=True)",
                "js = [l for l in p.stdout.splitlines() if l.startswith('{')]",
                f"out.write(json.dumps({{'key': {key!r}, 'rc': p.returncode, 'plan': json.loads(js[-1]) if js "
                "else None, 'error': (p.stderr.strip().splitlines() or [''])[-1][:300]}) + '\\n'); out.flush()",
            ]
        self.proc = subprocess.Popen([sys.executable, "-c", "\n".join(lines)], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def results(self, timeout: float = 600) -> dict:
        if self.proc is None:
            return {key: None for key in self.jobs}
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        done = {}
        if self.out.is_file():
            for line in self.out.read_text().splitlines():
                row = json.loads(line)
                plan = row["plan"] or {}
                done[row["key"]] = {
                    "peak_bytes": plan.get("peak_bytes"), "peak_phase": plan.get("peak_phase"),
                    "device_weights_bytes": plan.get("device_weights_bytes"), "seconds": plan.get("seconds"),
                    "phases_peak_bytes": {k: v.get("peak_bytes") for k, v in (plan.get("phases") or {}).items()},
                    **({"error": f"plan exited {row['rc']}: {row['error']}"} if row["rc"] or not row["plan"] else {}),
                }
        return {key: done.get(key, {"error": "plan did not finish"}) for key in self.jobs}


def has_plan() -> bool:
    script = Path(sys.executable).with_name("vidinvert")
    cli = [str(script)] if script.is_file() else [sys.executable, "-m", "vidinvert"]
    return subprocess.run([*cli, "plan", "--help"], capture_output=True).returncode == 0


def measure_wan(name: str, device: torch.device, dtype: torch.dtype, steps: int, vae_tiling: bool,
                tiny: bool) -> dict:
    """One Wan model: build, encode, then each of ``WAN_MODES`` (one prompt; decode of the result), timed, with the
    peak GPU memory of each phase (weights included)."""
    import speed_wan
    from vidinvert.counting import CallCounter
    from vidinvert.editing import edit
    from vidinvert.flowedit import flowedit
    from vidinvert.inversion import invert
    from vidinvert.models import wrap
    from vidinvert.settings import EditConfig

    hub_id, frames, height, width = WAN_MODELS[name]
    if tiny:
        frames, height, width = 9, 64, 64
    is_cuda = device.type == "cuda"
    pipe = build_wan(hub_id, device, dtype, tiny=tiny)
    if vae_tiling:
        pipe.vae.enable_tiling()
    model = wrap(pipe, name=f"{name}-random")
    params = sum(p.numel() for p in model.transformer.parameters())
    weights_mib = round(torch.cuda.memory_allocated(device) / 2**20, 1) if is_cuda else None
    timer = bc.Timer(cuda_memory=is_cuda)
    with torch.no_grad():
        with timer.phase("encode"):
            latents = model.encode(bc.synthetic_clip(frames, height, width))
        model.encode_text([""])
        text = model.encode_text(["", bc.EDIT_PROMPT])
        model.predict(latents, 999, text[:1])  # warm-up (kernels, allocator pools)
    out = {"hub_id": hub_id, "frames": frames, "height": height, "width": width, "steps": steps,
           "transformer_params": params, "weights_gpu_mib": weights_mib, "latent_shape": list(latents.shape),
           "encode_s": round(timer.seconds["encode"], 3), "encode_peak_gpu_mib": timer.peak_gpu_mib.get("encode"),
           "vae_tiling": vae_tiling, "modes": {}}
    for mode in WAN_MODES:
        if is_cuda:
            torch.cuda.empty_cache()
        t, counter = bc.Timer(cuda_memory=is_cuda), CallCounter(model.transformer)
        try:
            with torch.no_grad():
                if mode == "inversion":
                    with t.phase("invert"), counter.phase("invert"):
                        inversion = invert(model, latents, steps=steps, prompt=speed_wan.SOURCE_PROMPT)
                    with t.phase("edit"), counter.phase("edit"):
                        edited = edit(model, inversion, [bc.EDIT_PROMPT], EditConfig())
                    del inversion
                else:
                    with t.phase("edit"), counter.phase("edit"):
                        edited = flowedit(model, latents, speed_wan.SOURCE_PROMPT, [bc.EDIT_PROMPT],
                                          EditConfig(method="flowedit"), steps=steps)
                with t.phase("decode"), counter.phase("decode"):
                    model.decode(edited[:1])
            info = {"available": True, "num_prompts": 1, "finite": bool(torch.isfinite(edited).all())}
            del edited
        except torch.OutOfMemoryError as err:
            info = {"available": False, "reason": f"out of GPU memory: {str(err).splitlines()[0][:200]}"}
        finally:
            counter.close()
        p = {k: round(v, 3) for k, v in t.seconds.items()}
        edit_s = round(p.get("invert", 0.0) + p.get("edit", 0.0), 3)
        out["modes"][mode] = {
            **info, "phases_s": p, "per_edit_s": edit_s if info.get("available", True) else None,
            "edit_s_per_step": round(p["edit"] / steps, 4) if "edit" in p else None,
            "transformer_calls": counter.summary(),
            "peak_gpu_mib": t.peak_gpu_mib or None,
            "peak_gpu_mib_max": max([*t.peak_gpu_mib.values(), out["encode_peak_gpu_mib"] or 0.0])
            if t.peak_gpu_mib else None,
        }
        print(f"{name} {mode}: {json.dumps(bc.json_safe(out['modes'][mode]))[:300]}", file=sys.stderr)
    del model, pipe
    if is_cuda:
        torch.cuda.empty_cache()
    return out


def plan_cells(plan: dict | None, measured_mib: float | None) -> list:
    """(plan peak MiB, plan / measured) of a table row."""
    if not plan or not plan.get("peak_bytes"):
        return [(plan or {}).get("error", "-") if plan else "-", "-"]
    mib = round(plan["peak_bytes"] / 2**20)
    return [mib, round(mib / measured_mib, 3) if measured_mib else "-"]


def wan_markdown(data: dict) -> str:
    wan = data.get("wan") or {}
    if not wan:
        return ""
    headers = ["model", "frames x HxW", "steps", "method", "invert s", "edit s", "s per edit (inv+edit)",
               "decode s", "peak GPU MiB (encode..decode)", "weights GPU MiB", "plan peak MiB", "plan / measured"]
    rows = []
    for name, r in wan.items():
        for mode, m in r["modes"].items():
            size = f"{r['frames']} x {r['height']}x{r['width']}"
            if not m.get("available", True):
                rows.append([name, size, r["steps"], mode, m.get("reason")] + ["-"] * 7)
                continue
            p = m["phases_s"]
            rows.append([name, size, r["steps"], mode, p.get("invert", "-"), p.get("edit"), m["per_edit_s"],
                         p.get("decode"), m["peak_gpu_mib_max"], r["weights_gpu_mib"],
                         *plan_cells(m.get("plan"), m["peak_gpu_mib_max"])])
    return "\n".join(["", "## Wan at published sizes", "",
                      "Random weights built on the device from `vidinvert.models.published.PUBLISHED` (UMT5 at 2 "
                      "layers of the published width and vocabulary; VAE in float32); one prompt; inversion = plain "
                      "Euler inversion with a source prompt, then the edit with key/value injection (3 rows per step); "
                      "flowedit = FlowEdit (4 rows per editing step); decode of one video. Peak GPU = "
                      "torch.cuda.max_memory_allocated over encode and the mode's phases, weights included. Plan = "
                      "`vidinvert plan --json` `peak_bytes` for the same edit (`--frames`, `--steps`, `--vae-tiling` "
                      "as measured) on a configs-only folder.", "",
                      bc.markdown_table(headers, rows)])


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
    default = data.get("default") or {}
    plan_line = ""
    if default.get("plan"):
        cells = plan_cells(default["plan"], default.get("peak_gpu_mib_job"))
        plan_line = (f"\n\n`default` mode as one job (encode, invert, edit, decode): peak GPU "
                     f"{default.get('peak_gpu_mib_job')} MiB measured; `vidinvert plan --json` predicts {cells[0]} MiB "
                     f"(plan / measured {cells[1]}; planned with the published 2-layer T5 stand-in, measured with the "
                     "1-layer T5 stub above).")
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
        f"{full['per_step_gib']} GiB per step, {full['gib_at_50_steps']} GiB at 50 steps." + plan_line,
        wan_markdown(data),
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
    parser.add_argument("--wan", default=",".join(WAN_MODELS),
                        help="Wan models measured after CogVideoX-5b: a comma-separated subset of "
                             + ", ".join(WAN_MODELS) + ", or 'none'")
    parser.add_argument("--wan-steps", type=int, default=None, help="Wan steps (default 4; --tiny: 2)")
    parser.add_argument("--no-plan", action="store_true", help="skip the vidinvert plan predictions")
    args = parser.parse_args(argv)
    wan_names = [] if args.wan.strip() in ("", "none") else [m.strip() for m in args.wan.split(",") if m.strip()]
    if [m for m in wan_names if m not in WAN_MODELS]:
        parser.error(f"unknown Wan models in {args.wan!r}; use {', '.join(WAN_MODELS)} or none")
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
    wan_steps = args.wan_steps or (2 if tiny else 4)
    dtype_flag = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]
    # plans are made for the published configs, so not for --tiny's shrunk ones (nor for --layers)
    plan_wanted = not (args.no_plan or tiny or args.layers) and has_plan()
    jobs = {}
    if plan_wanted and "default" in modes:
        jobs["cogvideox-5b/default"] = ("THUDM/CogVideoX-5b", plan_command(
            Path("@FOLDER"), device.type, dtype_flag, frames, height, width, steps, vae_tiling))
    for name in wan_names if plan_wanted else []:
        hub_id, f, h, w = WAN_MODELS[name]
        for mode in WAN_MODES:
            jobs[f"{name}/{mode}"] = (hub_id, plan_command(Path("@FOLDER"), device.type, dtype_flag, f, h, w,
                                                           wan_steps, vae_tiling, mode))
    plans = Plans(jobs, enabled=plan_wanted)

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
    latents_shape = tuple(latents.shape)
    ref = results.get("reference_compatible")
    if ref and ref.get("available", True):
        for mode, r in results.items():
            if mode != "reference_compatible" and r.get("available", True):
                r["speedup_vs_reference"] = round(ref["total_s"] / (r["per_edit_s"] if mode == "prompts_4"
                                                                    else r["total_s"]), 3)

    del model, pipe, latents  # free CogVideoX-5b before the Wan models
    if device.type == "cuda":
        torch.cuda.empty_cache()
    wan = {}
    for name in wan_names:
        wan[name] = measure_wan(name, device, dtype, wan_steps, vae_tiling, tiny)
    planned = plans.results()
    for key, plan in planned.items():
        name, mode = key.split("/")
        if name in wan:
            wan[name]["modes"][mode]["plan"] = plan
    cog_plan = planned.get("cogvideox-5b/default")
    if "default" in results and results["default"].get("available", True):
        results["default"]["peak_gpu_mib_job"] = max(
            [v for v in [results["default"]["peak_gpu_mib_max"], timer.peak_gpu_mib.get("encode")] if v is not None],
            default=None)
        results["default"]["plan"] = cog_plan

    _, latent_frames, _, lat_h, lat_w = latents_shape
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
            "steps": steps, "modes": modes, "latent_shape": list(latents_shape), "vae_tiling": vae_tiling,
            "wan_models": wan_names, "wan_steps": wan_steps, "plan": bool(plan_wanted),
            "kv_method": args.kv_method, "kv_budget_gb": args.kv_budget_gb,
        },
        "machine": machine,
        "wan": wan,
    }
    markdown = to_markdown(data)
    print(markdown)
    print(json.dumps(bc.json_safe(data)))
    for path in bc.write_results("gpu_scale", data, markdown, args.out):
        print(f"wrote {path}", file=sys.stderr)
    return data


if __name__ == "__main__":
    main()
