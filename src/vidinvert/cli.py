"""``vidinvert`` command line: invert, edit, reconstruct, info.

Every option maps onto a field of ``ReadSettings``, ``InvertSettings``, ``EditConfig`` or ``InjectionConfig``; the
resolved settings are written as JSON next to each output. Errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

from .errors import VidinvertError
from .web import SAMPLE_VIDEO, add_serve_parser, cmd_serve

DEFAULT_STEPS = 50
EPILOG = """Without --model the bundled demo model runs (a 2.5M-parameter CogVideoX trained on a synthetic world of
coloured shapes, no download; see vidinvert.demo); --model tiny runs a tiny random-weight model built in code. Use
--model THUDM/CogVideoX-5b (or a local folder) for real videos."""


# ---- option groups --------------------------------------------------------------------------------------------
def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", "--model-path", dest="model", default=None,
                       help="pipeline folder or hub id (THUDM/CogVideoX-5b); default: 'demo', the bundled demo model "
                            "('tiny' = tiny random 5b-style model, 'tiny-2b' = 2b-style)")
    group.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                       help="model dtype; auto = bf16 on CUDA, fp32 on CPU (latents stay fp32 in the sampler)")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    group.add_argument("--cpu-offload", default="none", choices=["none", "model", "sequential"],
                       help="keep models on the CPU until used: model (small slowdown) or sequential (least memory)")
    group.add_argument("--vae-tiling", action="store_true", help="encode/decode in tiles (less memory for large frames)")
    group.add_argument("--vae-slicing", action="store_true", help="decode one video of a batch at a time")


def _add_read_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("frames")
    group.add_argument("--skip-frames-start", type=int, default=0, help="frames dropped from the start")
    group.add_argument("--skip-frames-end", type=int, default=0, help="frames dropped from the end")
    group.add_argument("--frame-sample-step", type=int, default=None,
                       help="take every n-th frame (default: only when the clip is longer than --max-num-frames)")
    group.add_argument("--max-num-frames", type=int, default=49, help="most frames used, then trimmed to 4k+1 (49)")
    group.add_argument("--height", type=int, default=None, help="frame height, a multiple of 16 (default: the model's)")
    group.add_argument("--width", type=int, default=None, help="frame width, a multiple of 16 (default: the model's)")
    group.add_argument("--resize", default="stretch", choices=["stretch", "crop"],
                       help="stretch straight to size (as the reference) or cover and centre-crop (keeps aspect)")


def _add_invert_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inversion")
    group.add_argument("--steps", "--num-inference-steps", dest="steps", type=int, default=None,
                       help="DDIM steps (50; a saved inversion brings its own, and a different value is refused)")
    group.add_argument("--inversion", default="ddim", choices=["ddim", "fixed-point"],
                       help="ddim: 1 evaluation/step, approximate; fixed-point: exact round trip, ~3 evaluations/step")
    group.add_argument("--source-prompt", default="", help="text the video is inverted with (default: empty)")
    group.add_argument("--inversion-guidance", type=float, default=1.0,
                       help="guidance while inverting (1 = none; only matters with a --source-prompt)")
    group.add_argument("--strength", type=float, default=None,
                       help="fraction of the schedule inverted (and re-sampled by an edit) from the clean end (1 = "
                            "down to pure noise; default 1, with --krnr 0.95: then the inversion still runs in full)")
    group.add_argument("--tol", type=float, default=1e-6, help="fixed-point: per-step relative residual")
    group.add_argument("--max-iter", type=int, default=10, help="fixed-point: evaluations allowed per step")
    group.add_argument("--anderson", type=int, default=0, help="fixed-point: Anderson acceleration history (0 = off)")
    group.add_argument("--trajectory-device", default=None,
                       help="where the stored trajectory lives, e.g. cpu to spare GPU memory (default: the model's)")
    group.add_argument("--checkpoint-every", type=int, default=0,
                       help="save the inverted steps every N steps to <output>.partial; rerunning the same command "
                            "after an interruption resumes from it (0 = off)")


def _add_edit_options(parser: argparse.ArgumentParser, guidance: float, start: str) -> None:
    group = parser.add_argument_group("editing")
    group.add_argument("--guidance", "--guidance-scale", dest="guidance", type=float, default=guidance,
                       help=f"classifier-free guidance scale ({guidance})")
    group.add_argument("--negative-prompt", default="", help="text of the unconditional branch")
    group.add_argument("--start", default=start, choices=["inverted", "random"],
                       help="start from the inverted noise, or from fresh noise drawn from --seed (the reference)")
    group.add_argument("--seed", type=int, default=42, help="seed of the random start")
    group.add_argument("--dynamic-guidance", action="store_true", help="CogVideoX's dynamic guidance schedule")
    group.add_argument("--injection", default="on", choices=["on", "off"],
                       help="let the edit attend to the source's keys/values (keeps structure and motion)")
    group.add_argument("--injection-steps", type=float, default=1.0,
                       help="fraction of steps, from the noisiest, that inject (1 = all)")
    group.add_argument("--injection-blocks", default=None,
                       help="comma-separated block indices that inject, e.g. 0-9,20 (default: all)")
    group.add_argument("--reference-text", default="inversion", choices=["inversion", "edit"],
                       help="what the reference branch reads: the inversion prompt (default, one shared row) or "
                            "the edit prompt (the public script's layout, one row per guidance branch)")
    group.add_argument("--reference-weight", type=float, default=1.0,
                       help="how much more the edit attends to the source's tokens than to its own (1 = plain; e.g. "
                            "8 keeps the layout closer and changes less)")
    group.add_argument("--reference-weight-steps", type=float, default=1.0,
                       help="fraction of steps, from the noisiest, that use --reference-weight (e.g. 0.6)")
    group.add_argument("--reference-compatible", action="store_true",
                       help="reproduce the public CogVideo script's edit: --reference-text edit and --start random")
    group.add_argument("--reuse-kv", action="store_true",
                       help="record the reference keys/values while inverting and reuse them instead of evaluating "
                            "the reference branch (exact with --inversion fixed-point; approximate with ddim)")
    group.add_argument("--krnr", type=int, default=None, metavar="K",
                       help="start from the K-order recursive noise representation of the clean latent and the "
                            "inverted noise at the --strength step (K-RNR, Yesiltepe & Yanardag 2025; e.g. 2)")
    group.add_argument("--krnr-adaptive", action="store_true",
                       help="the authors' adaptive K-RNR (moment-matched to order 2, which it equals)")
    group.add_argument("--kv-budget-gb", type=float, default=4.0,
                       help="memory allowed for recorded keys/values; over it, nothing is recorded (4)")
    group.add_argument("--rows-per-call", default="auto", type=_rows_per_call,
                       help="main rows per transformer call after the shared reference row: a number, 'all' (one "
                            "call of every row) or 'auto' (default: 2 on the CPU for large rows, where small calls "
                            "are faster; all for small rows and on GPUs)")
    group.add_argument("--blend", action="store_true",
                       help="local blend: edit only where the edit prompt and a description of the source disagree "
                            "(DiffEdit-style mask); everywhere else the latents are put back to the source's")
    group.add_argument("--blend-source", default="",
                       help="what the video shows, for --blend's mask (default: the --source-prompt it was inverted with)")
    group.add_argument("--blend-threshold", type=float, default=0.5,
                       help="fraction of a frame's largest disagreement above which it is edited (0.5)")
    group.add_argument("--blend-grow", type=int, default=0, help="latent pixels the blend mask is dilated by (0)")
    group.add_argument("--blend-steps", type=float, default=1.0,
                       help="fraction of steps, from the noisiest, that blend (1 = all)")


def _rows_per_call(text: str):
    if text in ("auto", "all"):
        return None if text == "all" else text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a count >= 1, 'all' or 'auto', got {text!r}")
    return value


def _add_saved_inversion_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--save-inversion", default=None, help="also save the inversion made from the video (.inv)")
    parser.add_argument("--use-inversion", default=None,
                        help="start from this saved inversion (.inv) instead of inverting VIDEO again; refused if it "
                             "was made from other frames, another model or another step count")


def _add_output_options(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("-o", "--output", default=None, help=f"{what} path (default: <output-dir>/<video>_<kind>.mp4)")
    group.add_argument("--output-dir", "--output-path", dest="output_dir", default="outputs",
                       help="folder for outputs when -o is not given (outputs)")
    group.add_argument("--fps", type=float, default=None, help="frame rate of written videos (default: the source's)")
    group.add_argument("--no-comparison", action="store_true", help="skip the side-by-side source|result video")
    group.add_argument("--force", action="store_true", help="overwrite existing outputs")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidinvert",
        description="Edit real videos with CogVideoX: DDIM inversion + key/value injection.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("invert", help="invert a video and save the trajectory (.inv) for later edits", epilog=EPILOG)
    p.add_argument("video", nargs="?", default=str(SAMPLE_VIDEO), help="input video (default: the bundled sample)")
    _add_model_options(p), _add_read_options(p), _add_invert_options(p)
    _add_output_options(p, "inversion (.inv)")

    p = sub.add_parser("edit", help="edit a video (or a saved .inv) with one or more prompts", epilog=EPILOG)
    p.add_argument("video", nargs="?", default=str(SAMPLE_VIDEO),
                   help="input video or saved inversion (.inv) (default: the bundled sample)")
    p.add_argument("--prompt", action="append", required=True,
                   help="edit prompt; repeat for several edits from one inversion, run in one batch")
    _add_saved_inversion_options(p)
    _add_model_options(p), _add_read_options(p), _add_invert_options(p)
    _add_edit_options(p, guidance=6.0, start="inverted")
    _add_output_options(p, "edited video")

    p = sub.add_parser("reconstruct", help="invert and regenerate with the source prompt; print PSNR/SSIM",
                       epilog=EPILOG)
    p.add_argument("video", nargs="?", default=str(SAMPLE_VIDEO),
                   help="input video or saved inversion (.inv) (default: the bundled sample)")
    _add_saved_inversion_options(p)
    p.add_argument("--prompt", default=None, help="prompt to regenerate with (default: the --source-prompt)")
    _add_model_options(p), _add_read_options(p), _add_invert_options(p)
    _add_edit_options(p, guidance=1.0, start="inverted")
    _add_output_options(p, "reconstructed video")

    p = sub.add_parser("info", help="versions, devices and (with --model) the model's configuration")
    _add_model_options(p)
    add_serve_parser(sub)
    return parser


# ---- helpers --------------------------------------------------------------------------------------------------
def _parse_blocks(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    blocks = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                low, high = part.split("-")
                blocks.extend(range(int(low), int(high) + 1))
            elif part:
                blocks.append(int(part))
    except ValueError:
        raise VidinvertError(f"cannot read --injection-blocks {text!r}", "use indices and ranges like 0-9,20") from None
    return tuple(blocks)


def _open_model(args):
    from .model import DEMO_MODEL, VideoModel, default_model, load_pipeline, resolve_device

    device = resolve_device(args.device)
    dtype = args.dtype if args.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    args.model = args.model or default_model()  # recorded as resolved in the settings JSON
    pipe = load_pipeline(args.model, dtype=dtype, device=device, cpu_offload=args.cpu_offload,
                         vae_tiling=args.vae_tiling, vae_slicing=args.vae_slicing)
    model = VideoModel(pipe, name=args.model)
    if args.model == DEMO_MODEL:
        print("note: using the bundled demo model, a 2.5M-parameter CogVideoX trained on a synthetic world: it knows "
              "captions like 'a red disc moving right on a black background'; pass --model THUDM/CogVideoX-5b for "
              "real videos", file=sys.stderr)
    elif args.model.startswith("tiny"):
        print("note: using the embedded tiny model (random weights, built in code): results are noise-like; "
              "pass --model THUDM/CogVideoX-5b for real edits", file=sys.stderr)
    return model


def _settings(args):
    from .jobs import InvertSettings, ReadSettings

    read = ReadSettings(height=args.height, width=args.width, skip_start=args.skip_frames_start,
                        skip_end=args.skip_frames_end, stride=args.frame_sample_step,
                        max_frames=args.max_num_frames, resize=args.resize)
    inv = InvertSettings(steps=DEFAULT_STEPS if args.steps is None else args.steps, prompt=args.source_prompt, guidance=args.inversion_guidance,
                         method=args.inversion, strength=_inversion_strength(args), tol=args.tol, max_iter=args.max_iter,
                         anderson=args.anderson, record_kv=getattr(args, "reuse_kv", False),
                         kv_budget_gb=getattr(args, "kv_budget_gb", 4.0), checkpoint_every=args.checkpoint_every,
                         trajectory_device=args.trajectory_device)
    return read, inv


def _inversion_strength(args) -> float:
    """K-RNR needs the fully inverted noise, so with --krnr the inversion runs in full and --strength is the edit's."""
    if getattr(args, "krnr", None) is not None or args.strength is None:
        return 1.0
    return args.strength


def _edit_strength(args) -> float | None:
    """--strength, or 0.95 with --krnr (the authors' value); unset: every step the inversion stored."""
    if args.strength is None and args.krnr is not None:
        return 0.95
    return args.strength


def _saved_inversion(args) -> str | None:
    """The saved inversion a command starts from: VIDEO itself when it is a ``.inv``, else ``--use-inversion``."""
    return args.video if Path(args.video).suffix == ".inv" else getattr(args, "use_inversion", None)


def _edit_config(args):
    from .attention import InjectionConfig
    from .blend import BlendConfig
    from .editing import EditConfig

    if args.reference_compatible:
        args.reference_text, args.start = "edit", "random"
    try:
        injection = InjectionConfig(enabled=args.injection == "on", steps=args.injection_steps,
                                    blocks=_parse_blocks(args.injection_blocks), reference_text=args.reference_text,
                                    reuse_kv=args.reuse_kv, reference_weight=args.reference_weight,
                                    reference_weight_steps=args.reference_weight_steps)
    except ValueError as err:
        raise VidinvertError(str(err), "see vidinvert edit --help") from None
    if args.blend and not (args.blend_source or args.source_prompt or _saved_inversion(args)):
        raise VidinvertError("--blend needs a description of what the video shows now",
                             'pass --blend-source "..." (or invert with --source-prompt "...")')
    blend = BlendConfig(enabled=args.blend, source_prompt=args.blend_source, threshold=args.blend_threshold,
                        grow=args.blend_grow, steps=args.blend_steps)
    return EditConfig(guidance=args.guidance, negative_prompt=args.negative_prompt, start=args.start,
                      seed=args.seed, dynamic_guidance=args.dynamic_guidance, injection=injection,
                      strength=_edit_strength(args), krnr=args.krnr, krnr_adaptive=args.krnr_adaptive, blend=blend,
                      rows_per_call=args.rows_per_call)


def _default_output(args, stem: str, kind: str, suffix: str = ".mp4") -> Path:
    return Path(args.output) if args.output else Path(args.output_dir) / f"{stem}_{kind}{suffix}"


def _numbered(path: Path, count: int) -> list[Path]:
    """One path per prompt: ``out.mp4`` for one, ``out_1.mp4``, ``out_2.mp4`` ... for several."""
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{k + 1}{path.suffix}") for k in range(count)]


def _record(args, extra: dict) -> dict:
    from . import __version__

    options = {k: v for k, v in vars(args).items() if k != "func"}
    return {"vidinvert": __version__, "command": args.command, "options": options, **extra}


# ---- commands -------------------------------------------------------------------------------------------------
def cmd_invert(args) -> int:
    from .jobs import invert_source, open_source, peak_memory
    from .outputs import plan_outputs, settings_path, write_json

    read, inv_settings = _settings(args)
    stem = Path(args.video).stem
    out = _default_output(args, stem, "inversion", ".inv")
    if out.suffix != ".inv":
        raise VidinvertError(f"inversion output must end in .inv, got {out.name}", "e.g. -o clip.inv")
    plan_outputs([out, settings_path(out)], args.force)
    model = _open_model(args)
    started = time.perf_counter()
    source = open_source(model, args.video, read)
    inversion = invert_source(model, source, inv_settings, progress=not args.quiet, checkpoint=_partial(out))
    inversion.save(out, force=args.force)
    seconds = time.perf_counter() - started
    summary = {"output": str(out), "frames": source.clip.frames.shape[0], "size": list(source.clip.frames.shape[2:]),
               "steps": len(inversion.meta.timesteps), "evaluations": sum(inversion.meta.iterations),
               "seconds": round(seconds, 2), **peak_memory()}
    write_json(settings_path(out), _record(args, {"result": summary, "read": dataclasses.asdict(read),
                                                  "inversion": dataclasses.asdict(inv_settings)}), force=args.force)
    print(json.dumps(summary))
    return 0


def _partial(output: Path) -> Path:
    """Where an inversion for ``output`` keeps its checkpoint."""
    return output.with_name(output.name + ".partial")


def _source_and_inversion(args, model, read, inv_settings, checkpoint: Path):
    """Open and invert the video, or load a saved inversion (validated against model, steps and video).

    Given only a ``.inv``, its source video is re-read with the saved frame settings when it is still there (for the
    comparison video); if it changed, the comparison falls back to the VAE round trip of the stored latents.
    """
    from .inversion import Inversion
    from .jobs import ReadSettings, invert_source, open_source

    saved = _saved_inversion(args)
    if saved is None:
        source = open_source(model, args.video, read)
        return source, invert_source(model, source, inv_settings, progress=not args.quiet, checkpoint=checkpoint)
    inversion = Inversion.load(saved)
    inversion.check_matches(model, num_steps=args.steps)
    if saved != args.video:  # a video and its saved inversion: they must belong together
        source = open_source(model, args.video, read)
        inversion.check_matches(source_hash=source.hash)
        return source, inversion
    original, stored = inversion.meta.source, inversion.meta.extra.get("read")
    if not (original and stored and Path(original).is_file()):
        return None, inversion
    source = open_source(model, original, ReadSettings(**stored))
    if source.hash != inversion.meta.source_hash:
        print(f"note: {original} changed since it was inverted; comparing with the VAE round trip", file=sys.stderr)
        return None, inversion
    return source, inversion


def _run_edit(args, prompts: list[str], kind: str):
    """Plan outputs, open the model, invert (or load), edit, decode and write the videos.

    Returns:
        ``(summary, record, model, source, inversion, latents, videos, outputs)``; the settings JSON is left to the
        caller, which may add to the record.
    """
    from .editing import EditStats, edit
    from .jobs import decode, guard_memory, peak_memory
    from .outputs import plan_outputs, settings_path
    from .export import side_by_side, write_video

    read, inv_settings = _settings(args)
    config = _edit_config(args)
    stem = Path(args.video).stem
    outputs = _numbered(_default_output(args, stem, kind), len(prompts))
    for out in outputs:
        if out.suffix.lower() not in (".mp4", ".mov", ".mkv", ".gif"):
            raise VidinvertError(f"cannot write {out.name}", "use an .mp4, .mov, .mkv or .gif output")
    comparisons = [] if args.no_comparison else [o.with_name(f"{o.stem}_comparison{o.suffix}") for o in outputs]
    save_inv = getattr(args, "save_inversion", None)
    planned = outputs + comparisons + [settings_path(o) for o in outputs]
    plan_outputs(planned + ([Path(save_inv)] if save_inv else []), args.force)

    model = _open_model(args)
    started = time.perf_counter()
    checkpoint = _partial(Path(save_inv) if save_inv else outputs[0].with_suffix(".inv"))
    source, inversion = _source_and_inversion(args, model, read, inv_settings, checkpoint)
    if save_inv:
        inversion.save(save_inv, force=args.force)
    stats = EditStats()
    with guard_memory("editing"):
        latents = edit(model, inversion, prompts, config, progress=not args.quiet, stats=stats)
    videos = decode(model, latents)  # [K, F, C, H, W]
    reference = source.clip.frames if source is not None else decode(model, inversion.clean)[0]
    fps = args.fps or (source.clip.fps if source is not None else inversion.meta.extra.get("fps", 8.0))
    for k, out in enumerate(outputs):
        write_video(videos[k], out, fps=fps, force=args.force)
        if comparisons:
            write_video(side_by_side(reference, videos[k]), comparisons[k], fps=fps, force=args.force)
    summary = {"outputs": [str(o) for o in outputs], "comparisons": [str(c) for c in comparisons],
               "prompts": prompts, "frames": videos.shape[1], "size": list(videos.shape[3:]), "fps": fps,
               "edit_steps": stats.steps, "transformer_calls": len(stats.batch_rows) + len(stats.mask_rows),
               "batch_rows": sorted(set(stats.batch_rows + stats.mask_rows)),
               **({"blend_coverage": [round(c, 4) for c in stats.blend_coverage]} if config.blend.enabled else {}),
               "seconds": round(time.perf_counter() - started, 2), **peak_memory()}
    record = _record(args, {"result": summary, "read": dataclasses.asdict(read),
                            "inversion": dataclasses.asdict(inversion.meta), "edit": dataclasses.asdict(config)})
    return summary, record, model, source, inversion, latents, videos, outputs


def cmd_edit(args) -> int:
    from .outputs import settings_path, write_json

    summary, record, *_, outputs = _run_edit(args, args.prompt, "edit")
    for out in outputs:
        write_json(settings_path(out), record, force=args.force)
    print(json.dumps(summary))
    return 0


def cmd_reconstruct(args) -> int:
    from .jobs import decode
    from .metrics import psnr, relative_error, ssim
    from .outputs import settings_path, write_json

    prompt = args.source_prompt if args.prompt is None else args.prompt
    summary, record, model, source, inversion, latents, videos, outputs = _run_edit(args, [prompt], "reconstruction")
    result = videos[0]  # [F, C, H, W]
    round_trip = decode(model, inversion.clean)[0]  # the VAE's own reconstruction of the input
    fidelity = {
        "latent_relative_error": relative_error(latents[0:1], inversion.clean),
        "psnr_vs_vae_round_trip": psnr(result, round_trip),
        "ssim_vs_vae_round_trip": ssim(result, round_trip),
    }
    if source is not None:
        fidelity.update(psnr_vs_input=psnr(result, source.clip.frames), ssim_vs_input=ssim(result, source.clip.frames))
    fidelity = {k: (float(f"{v:.6g}") if abs(v) != float("inf") else "inf") for k, v in fidelity.items()}
    record["result"]["fidelity"] = summary["fidelity"] = fidelity
    for out in outputs:
        write_json(settings_path(out), record, force=args.force)
    print(json.dumps(summary))
    return 0


def cmd_info(args) -> int:
    import diffusers
    import torch
    import transformers

    from . import __version__

    info = {"vidinvert": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "cuda": torch.cuda.is_available(),
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    try:
        import av

        info["av"] = av.__version__
    except ImportError:  # pragma: no cover - av is a dependency
        info["av"] = None
    if args.model is not None:
        model = _open_model(args)
        info["model"] = {"name": model.name, "fingerprint": model.fingerprint(),
                         "transformer": dict(model.config), "scheduler": dict(model.pipe.scheduler.config)}
    print(json.dumps(info, indent=2, default=str))
    return 0


COMMANDS = {"invert": cmd_invert, "edit": cmd_edit, "reconstruct": cmd_reconstruct, "info": cmd_info, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except VidinvertError as err:
        print(f"vidinvert: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidinvert: interrupted; no partial output was left (with --checkpoint-every, rerun the same command "
              "to resume the inversion)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
