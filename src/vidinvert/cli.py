"""``vidinvert`` command line: invert, edit, reconstruct, batch, info, serve.

Flags map onto the settings dataclasses of ``settings.py`` (their defaults are read from there) and each command is
one ``jobs`` call; the resolved settings are written as JSON next to each output. Errors print one line and exit
with status 2; warnings print as ``vidinvert: warning: ...`` and are listed in the settings JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

from .errors import VidinvertError
from .settings import (
    DTYPE_CHOICES,
    EDIT_METHODS,
    METHODS,
    OFFLOAD_MODES,
    REFERENCE_TEXT_MODES,
    RESIZE_MODES,
    STARTS,
    BlendConfig,
    EditConfig,
    FlowEditConfig,
    InjectionConfig,
    InvertSettings,
    ModelSettings,
    OutputSettings,
    ReadSettings,
    parse_blocks,
    resolve_strength,
)

EPILOG = """Without --model the bundled demo model runs (a 2.5M-parameter CogVideoX trained on a synthetic world of
coloured shapes, no download; see vidinvert.demo); --model tiny runs a tiny random-weight model built in code. Use
--model THUDM/CogVideoX-5b (or a local folder) for real videos."""
EDIT_GUIDANCE, RECONSTRUCT_GUIDANCE = EditConfig.guidance, 1.0  # reconstruction checks fidelity, so no guidance

_R, _I, _E, _J, _B, _O, _M = ReadSettings, InvertSettings, EditConfig, InjectionConfig, BlendConfig, OutputSettings, ModelSettings
_F = FlowEditConfig
METRICS_HELP = ("measure each output against the source frames (optical flow): warp error along the source's motion "
                "(0-1 of full scale), motion error against the source's flow (px) and window-seam score; printed and "
                "saved in the settings JSON under result.metrics")


# ---- option groups --------------------------------------------------------------------------------------------
def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", "--model-path", dest="model", default=_M.name,
                       help="pipeline folder or hub id (THUDM/CogVideoX-5b, Wan-AI/Wan2.1-T2V-1.3B-Diffusers); default: "
                            "'demo', the bundled demo CogVideoX ('demo-wan' = the bundled demo Wan; 'tiny', 'tiny-2b', "
                            "'tiny-wan', 'tiny-wan22' = tiny random models)")
    group.add_argument("--dtype", default=_M.dtype, choices=DTYPE_CHOICES,
                       help="model dtype; auto = bf16 on CUDA, fp32 on CPU (latents stay fp32 in the sampler)")
    group.add_argument("--device", default=_M.device, help="cpu, cuda, cuda:N or auto (default)")
    group.add_argument("--cpu-offload", default=_M.cpu_offload, choices=OFFLOAD_MODES,
                       help="keep models on the CPU until used: model (small slowdown) or sequential (least memory)")
    group.add_argument("--vae-tiling", action="store_true", help="encode/decode in tiles (less memory for large frames)")
    group.add_argument("--vae-slicing", action="store_true", help="decode one video of a batch at a time")


def _add_read_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("frames")
    group.add_argument("--skip-frames-start", type=int, default=_R.skip_start, help="frames dropped from the start")
    group.add_argument("--skip-frames-end", type=int, default=_R.skip_end, help="frames dropped from the end")
    group.add_argument("--frame-sample-step", type=int, default=_R.stride,
                       help="take every n-th frame (default: only when the clip is longer than --max-num-frames)")
    group.add_argument("--max-num-frames", type=int, default=None,
                       help="most frames used, then trimmed to the model's rule (4k+1) (default: the model's: 49 "
                            "for CogVideoX, 81 for Wan; with --window: every frame)")
    group.add_argument("--height", type=int, default=_R.height, help="frame height, a multiple of 16 (default: the model's)")
    group.add_argument("--width", type=int, default=_R.width, help="frame width, a multiple of 16 (default: the model's)")
    group.add_argument("--resize", default=_R.resize, choices=RESIZE_MODES,
                       help="stretch straight to size (as the reference) or cover and centre-crop (keeps aspect)")


def _add_invert_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inversion")
    group.add_argument("--steps", "--num-inference-steps", dest="steps", type=int, default=None,
                       help=f"sampling steps ({_I.steps}; a saved inversion brings its own, and another value is refused)")
    group.add_argument("--inversion", default=_I.method, choices=METHODS,
                       help="ddim: 1 evaluation/step, approximate; fixed-point: each step solved (2.4-4.4 evaluations/step)")
    group.add_argument("--source-prompt", default=_I.prompt, help="text the video is inverted with (default: empty)")
    group.add_argument("--inversion-guidance", type=float, default=_I.guidance,
                       help="guidance while inverting (1 = none; only matters with a --source-prompt)")
    group.add_argument("--strength", type=float, default=None,
                       help="fraction of the schedule inverted (and re-sampled by an edit) from the clean end (1 = "
                            "down to pure noise; default 1, with --krnr 0.95: then the inversion still runs in full)")
    group.add_argument("--tol", type=float, default=_I.tol, help="fixed-point: per-step relative residual (%(default)s)")
    group.add_argument("--max-iter", type=int, default=_I.max_iter,
                       help="fixed-point: evaluations allowed per step (%(default)s)")
    group.add_argument("--clean-max-iter", type=int, default=_I.clean_max_iter,
                       help="fixed-point: evaluations allowed for the clean-end step, the one that bounds the round "
                            "trip on trained weights (default: --max-iter; e.g. 16)")
    group.add_argument("--split-clean-end", default="auto", choices=["auto", "on", "off"],
                       help="cut the schedule's last step in two (one more step; edits follow): auto = for "
                            "fixed-point, whose round trip on trained weights is bounded by that step")
    group.add_argument("--anderson", type=int, default=_I.anderson,
                       help="fixed-point: Anderson acceleration history (0 = off)")
    group.add_argument("--trajectory-device", default=_I.trajectory_device,
                       help="where the stored trajectory lives, e.g. cpu to spare GPU memory (default: the model's)")
    group.add_argument("--checkpoint-every", type=int, default=_I.checkpoint_every,
                       help="save the inverted steps every N steps to <output>.partial; rerunning the same command "
                            "after an interruption resumes from it (0 = off)")
    group.add_argument("--window", default=_I.window,
                       help="edit a long clip in temporal windows of this many latent frames, blended where they "
                            "overlap: auto = the model's trained length (13 for CogVideoX, 21 for Wan); reads every "
                            "frame unless --max-num-frames is given (default: the clip in one window)")
    group.add_argument("--overlap", type=float, default=_I.overlap,
                       help="share of a window its neighbours overlap, below 1 (rounded down to whole latent "
                            "frames, at least one) (%(default)s)")


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


def _add_edit_options(parser: argparse.ArgumentParser, guidance: float) -> None:
    group = parser.add_argument_group("editing")
    group.add_argument("--guidance", "--guidance-scale", dest="guidance", type=float, default=guidance,
                       help="classifier-free guidance scale (%(default)s)")
    group.add_argument("--guidance-2", dest="guidance_2", type=float, default=None,
                       help="Wan 2.2 A14B: guidance of the low-noise expert (default: --guidance)")
    group.add_argument("--negative-prompt", default=_E.negative_prompt,
                       help="text of the unconditional branch (default: the model's: none for CogVideoX and small "
                            "models, Wan's published negative prompt for Wan weights with Wan's tokenizer; '' for none)")
    group.add_argument("--start", default=_E.start, choices=STARTS,
                       help="start from the inverted noise, or from fresh noise drawn from --seed (the reference)")
    group.add_argument("--seed", type=int, default=_E.seed, help="seed of the random start (%(default)s)")
    group.add_argument("--dynamic-guidance", action="store_true", help="CogVideoX's dynamic guidance schedule")
    group.add_argument("--injection", default="on", choices=["on", "off"],
                       help="let the edit attend to the source's keys/values (keeps structure and motion)")
    group.add_argument("--injection-steps", type=float, default=_J.step_fraction,
                       help="fraction of steps, from the noisiest, that inject (1 = all)")
    group.add_argument("--injection-blocks", default=None,
                       help="comma-separated block indices that inject, e.g. 0-9,20 (default: all)")
    group.add_argument("--reference-text", default=_J.reference_text, choices=REFERENCE_TEXT_MODES,
                       help="what the reference branch reads: the inversion prompt (default, one shared row) or "
                            "the edit prompt (the public script's layout, one row per guidance branch)")
    group.add_argument("--reference-weight", type=float, default=_J.reference_weight,
                       help="how much more the edit attends to the source's tokens than to its own (default: the "
                            "model's recommendation, else 1 = plain; e.g. 8 keeps the layout closer and changes less, "
                            "0.3 lets the colour change more)")
    group.add_argument("--reference-weight-steps", type=float, default=_J.reference_weight_fraction,
                       help="fraction of steps, from the noisiest, that use --reference-weight (e.g. 0.6)")
    group.add_argument("--reference-compatible", action="store_true",
                       help="reproduce the public CogVideo script's edit: --reference-text edit and --start random")
    group.add_argument("--reuse-kv", action="store_true",
                       help="record the reference keys/values while inverting and reuse them instead of evaluating "
                            "the reference branch (exact with --inversion fixed-point; approximate with ddim)")
    group.add_argument("--krnr", type=int, default=_E.krnr, metavar="K",
                       help="start from the K-order recursive noise representation of the clean latent and the "
                            "inverted noise at the --strength step (K-RNR, Yesiltepe & Yanardag 2025; e.g. 2)")
    group.add_argument("--krnr-adaptive", action="store_true",
                       help="the authors' adaptive K-RNR (moment-matched to order 2, which it equals)")
    group.add_argument("--kv-budget-gb", type=float, default=_I.kv_budget_gb,
                       help="memory allowed for recorded keys/values; over it, nothing is recorded (%(default)s)")
    group.add_argument("--rows-per-call", default=_E.rows_per_call, type=_rows_per_call,
                       help="main rows per transformer call after the shared reference row: a number, 'all' (one "
                            "call of every row) or 'auto' (default: 2 on the CPU for large rows, where small calls "
                            "are faster; all for small rows and on GPUs)")
    group.add_argument("--method", default=_E.method, choices=EDIT_METHODS,
                       help="inversion: invert, then re-sample with key/value injection (default); flowedit: FlowEdit "
                            "(Kulikov et al. 2024), no inversion, flow-matching models (Wan) only; it edits from "
                            "--source-prompt towards each --prompt with --guidance as the target scale")
    group.add_argument("--n-max", dest="n_max", type=int, default=_F.n_max,
                       help="FlowEdit: steps, from the clean end, that edit (default: 33/50 of --steps)")
    group.add_argument("--n-min", dest="n_min", type=int, default=_F.n_min,
                       help="FlowEdit: last steps run as plain sampling of the target (%(default)s)")
    group.add_argument("--source-guidance", type=float, default=_F.source_guidance,
                       help="FlowEdit: guidance of the source prompt's velocity (%(default)s)")
    group.add_argument("--n-avg", dest="n_avg", type=int, default=_F.n_avg,
                       help="FlowEdit: noise draws averaged per step (%(default)s)")
    group.add_argument("--blend", action=argparse.BooleanOptionalAction, default=_B.enabled,
                       help="local blend: edit only where the edit prompt and a description of the source disagree "
                            "(DiffEdit-style mask); everywhere else the latents are put back to the source's "
                            "(default: the model's recommendation, else off)")
    group.add_argument("--blend-source", default=_B.source_prompt,
                       help="what the video shows, for --blend's mask (default: the --source-prompt it was inverted "
                            "with, else the empty text)")
    group.add_argument("--blend-threshold", type=float, default=_B.threshold,
                       help="fraction of a frame's largest disagreement above which it is edited (%(default)s)")
    group.add_argument("--blend-grow", type=int, default=_B.grow, help="latent pixels the blend mask is dilated by (0)")
    group.add_argument("--blend-steps", type=float, default=_B.step_fraction,
                       help="fraction of steps, from the noisiest, that blend (1 = all)")


def _add_saved_inversion_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--save-inversion", default=None, help="also save the inversion made from the video (.inv)")
    parser.add_argument("--use-inversion", default=None,
                        help="start from this saved inversion (.inv) instead of inverting VIDEO again; refused if it "
                             "was made from other frames, another model or another step count")


def _add_output_options(parser: argparse.ArgumentParser, what: str, metrics: str | None = None) -> None:
    """Output flags; ``metrics``: the help of ``--metrics`` (None: the command has no such flag)."""
    group = parser.add_argument_group("output")
    group.add_argument("-o", "--output", default=_O.output, help=f"{what} path (default: <output-dir>/<video>_<kind>)")
    group.add_argument("--output-dir", "--output-path", dest="output_dir", default=_O.output_dir,
                       help="folder for outputs when -o is not given (%(default)s)")
    group.add_argument("--fps", type=float, default=_O.fps, help="frame rate of written videos (default: the source's)")
    group.add_argument("--no-comparison", action="store_true", help="skip the side-by-side source|result video")
    group.add_argument("--force", action="store_true", help="overwrite existing outputs")
    group.add_argument("--quiet", action="store_true",
                       help="no progress bars or notes: only warnings and errors on stderr (the summary JSON still "
                            "goes to stdout)")
    if metrics is not None:
        group.add_argument("--metrics", action="store_true", help=metrics)


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it, no login)")
    parser.add_argument("--port", type=int, default=7860, help="port (%(default)s)")
    parser.add_argument("--max-upload-mb", type=float, default=2048.0,
                        help="largest upload accepted, in MiB (%(default)s)")
    parser.add_argument("--model", "--model-path", dest="model", default=_M.name,
                        help="pipeline folder or hub id (THUDM/CogVideoX-5b); default: 'demo', the bundled demo model")
    parser.add_argument("--device", default=_M.device, help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--dtype", default=_M.dtype, choices=DTYPE_CHOICES,
                        help="model dtype; auto = bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--cpu-offload", default=_M.cpu_offload, choices=OFFLOAD_MODES,
                        help="keep models on the CPU until used (CUDA only)")
    parser.add_argument("--vae-tiling", action="store_true", help="encode/decode in tiles")
    parser.add_argument("--vae-slicing", action="store_true", help="decode one video of a batch at a time")


def add_clip_options(parser: argparse.ArgumentParser) -> None:
    """The options one clip of a batch may set (its defaults on ``vidinvert batch``, or a job-file column): every
    model, frame, inversion and edit option of ``vidinvert edit``, plus --fps, --no-comparison and --metrics."""
    _add_model_options(parser), _add_read_options(parser), _add_invert_options(parser)
    _add_edit_options(parser, guidance=EDIT_GUIDANCE)
    group = parser.add_argument_group("clip output")
    group.add_argument("--fps", type=float, default=_O.fps, help="frame rate of written videos (default: the source's)")
    group.add_argument("--no-comparison", action="store_true", help="skip the side-by-side source|result video")
    group.add_argument("--metrics", action="store_true", help=METRICS_HELP)


def _add_batch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("jobs", help="job file: .jsonl (one JSON object per line) or .csv; each row a 'video', its "
                                     "'prompts' (a list, or one 'prompt'; in CSV split on '|'), an optional 'id' "
                                     "(its output folder) and any per-clip option below, named as its flag")
    group = parser.add_argument_group("batch")
    group.add_argument("--output-dir", required=True,
                       help="folder for every clip's outputs (<output-dir>/<id>/), results.jsonl and the lock; on "
                            "a cluster, a path every worker can write (a shared filesystem)")
    group.add_argument("--workers", type=int, default=1,
                       help="workers, each holding a loaded model (1 = in this process, no Ray; more needs "
                            "pip install 'vidinvert[cluster]') (%(default)s)")
    group.add_argument("--address", default=None,
                       help="join a running Ray cluster: auto, or ray://host:10001 (default: start one here)")
    group.add_argument("--gpus-per-worker", type=float, default=None,
                       help="GPUs each worker holds (default: 1 when the cluster has GPUs, else 0: CPU workers)")
    group.add_argument("--cpus-per-worker", type=int, default=1,
                       help="CPU cores (and torch threads) each worker holds (%(default)s)")
    group.add_argument("--retries", type=int, default=2,
                       help="times a clip is retried on another worker when its worker dies (%(default)s)")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from .models import sample_video

    sample = str(sample_video())
    parser = argparse.ArgumentParser(
        prog="vidinvert",
        description="Edit real videos with text-to-video diffusion transformers: inversion + key/value injection.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("invert", help="invert a video and save the trajectory (.inv) for later edits", epilog=EPILOG)
    p.add_argument("video", nargs="?", default=sample, help="input video (default: the bundled sample)")
    _add_model_options(p), _add_read_options(p), _add_invert_options(p)
    _add_output_options(p, "inversion (.inv)")

    p = sub.add_parser("edit", help="edit a video (or a saved .inv) with one or more prompts", epilog=EPILOG)
    p.add_argument("video", nargs="?", default=sample,
                   help="input video or saved inversion (.inv) (default: the bundled sample)")
    p.add_argument("--prompt", action="append", required=True,
                   help="edit prompt; repeat for several edits from one inversion, run in one batch")
    _add_saved_inversion_options(p)
    _add_model_options(p), _add_read_options(p), _add_invert_options(p)
    _add_edit_options(p, guidance=EDIT_GUIDANCE)
    _add_output_options(p, "edited video", metrics=METRICS_HELP)

    p = sub.add_parser("reconstruct", help="invert and regenerate with the source prompt; print PSNR/SSIM",
                       epilog=EPILOG)
    p.add_argument("video", nargs="?", default=sample,
                   help="input video or saved inversion (.inv) (default: the bundled sample)")
    _add_saved_inversion_options(p)
    p.add_argument("--prompt", default=None, help="prompt to regenerate with (default: the --source-prompt)")
    _add_model_options(p), _add_read_options(p), _add_invert_options(p)
    _add_edit_options(p, guidance=RECONSTRUCT_GUIDANCE)
    _add_output_options(p, "reconstructed video", metrics=METRICS_HELP + " (reconstruct always measures them)")

    p = sub.add_parser("batch", help="edit many clips, each with its prompts, from a job file (in this process "
                                     "or on Ray workers); reruns skip what is done", epilog=EPILOG)
    _add_batch_options(p)
    add_clip_options(p)

    p = sub.add_parser("info", help="versions, devices and (with --model) the model's configuration")
    _add_model_options(p)

    p = sub.add_parser("serve", help="open the web page (Gradio) to invert and edit videos in a browser",
                       description="Serve a local web page to invert a video once and edit it with several prompts. "
                                   "Needs the web extra: pip install 'vidinvert[web]'.")
    _add_serve_options(p)
    return parser


# ---- flags -> settings ----------------------------------------------------------------------------------------
def model_settings(args) -> ModelSettings:
    return ModelSettings(name=args.model, dtype=args.dtype, device=args.device, cpu_offload=args.cpu_offload,
                         vae_tiling=args.vae_tiling, vae_slicing=args.vae_slicing)


def read_settings(args) -> ReadSettings:
    return ReadSettings(height=args.height, width=args.width, skip_start=args.skip_frames_start,
                        skip_end=args.skip_frames_end, stride=args.frame_sample_step,
                        max_frames=args.max_num_frames,
                        resize=args.resize)


def invert_settings(args) -> InvertSettings:
    depth, _ = resolve_strength(args.strength, getattr(args, "krnr", None))
    return InvertSettings(steps=_I.steps if args.steps is None else args.steps, prompt=args.source_prompt,
                          guidance=args.inversion_guidance, method=args.inversion, depth=depth, tol=args.tol,
                          max_iter=args.max_iter, clean_max_iter=args.clean_max_iter, anderson=args.anderson,
                          split_clean_end={"auto": None, "on": True, "off": False}[args.split_clean_end],
                          record_kv=getattr(args, "reuse_kv", False),
                          kv_budget_gb=getattr(args, "kv_budget_gb", _I.kv_budget_gb),
                          checkpoint_every=args.checkpoint_every, trajectory_device=args.trajectory_device,
                          window=args.window, overlap=args.overlap)


def edit_config(args) -> EditConfig:
    reference_text, start = args.reference_text, args.start
    if args.reference_compatible:
        reference_text, start = "edit", "random"
    injection = InjectionConfig(enabled=args.injection == "on", step_fraction=args.injection_steps,
                                blocks=parse_blocks(args.injection_blocks) if args.injection == "on" else None,
                                reference_text=reference_text, reuse_kv=args.reuse_kv,
                                reference_weight=args.reference_weight,
                                reference_weight_fraction=args.reference_weight_steps)
    blend = BlendConfig(enabled=args.blend, source_prompt=args.blend_source, threshold=args.blend_threshold,
                        grow=args.blend_grow, step_fraction=args.blend_steps)
    _, strength = resolve_strength(args.strength, args.krnr)
    return EditConfig(guidance=args.guidance, negative_prompt=args.negative_prompt, start=start, seed=args.seed,
                      dynamic_guidance=args.dynamic_guidance, injection=injection, strength=strength, krnr=args.krnr,
                      krnr_adaptive=args.krnr_adaptive, blend=blend, rows_per_call=args.rows_per_call,
                      guidance_2=args.guidance_2, method=getattr(args, "method", _E.method),
                      flowedit=FlowEditConfig(source_prompt=args.source_prompt, n_max=getattr(args, "n_max", _F.n_max),
                                              n_min=getattr(args, "n_min", _F.n_min),
                                              source_guidance=getattr(args, "source_guidance", _F.source_guidance),
                                              n_avg=getattr(args, "n_avg", _F.n_avg)))


def output_settings(args) -> OutputSettings:
    return OutputSettings(output=args.output, output_dir=args.output_dir, fps=args.fps,
                          comparison=not args.no_comparison, force=args.force, progress=not args.quiet,
                          metrics=getattr(args, "metrics", _O.metrics))


def _report(result, quiet: bool = False) -> None:
    """Notes (not with ``--quiet``) and warnings on stderr; the summary, as JSON, on stdout."""
    for line in [] if quiet else result.notes:
        print(f"vidinvert: note: {line}", file=sys.stderr)
    for line in result.warnings:
        print(f"vidinvert: warning: {line}", file=sys.stderr)
    for path, metrics in [] if quiet else zip(result.outputs, result.metrics):
        print(f"vidinvert: metrics: {path.name}: {metrics.describe()}", file=sys.stderr)
    print(json.dumps(result.summary))


def _quiet_libraries() -> None:
    """No loading bars from diffusers/transformers (``--quiet``)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


# ---- commands -------------------------------------------------------------------------------------------------
def cmd_invert(args) -> int:
    from .jobs import run_invert

    _report(run_invert(args.video, model_settings(args), read_settings(args), invert_settings(args),
                       output_settings(args)), args.quiet)
    return 0


def _run_edit(args, prompts: list[str], reconstruct: bool) -> int:
    from .jobs import run_edit

    result = run_edit(args.video, prompts, model_settings(args), read_settings(args), invert_settings(args),
                      edit_config(args), output_settings(args), use_inversion=args.use_inversion,
                      save_inversion=args.save_inversion, steps_given=args.steps is not None,
                      reconstruct=reconstruct, command=args.command)
    _report(result, args.quiet)
    return 0


def cmd_edit(args) -> int:
    return _run_edit(args, args.prompt, reconstruct=False)


def cmd_reconstruct(args) -> int:
    return _run_edit(args, [args.source_prompt if args.prompt is None else args.prompt], reconstruct=True)


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
        from .models import open_model

        model = open_model(model_settings(args))
        info["model"] = {"name": model.name, "family": model.family, "fingerprint": model.fingerprint(),
                         "transformer": dict(model.config), "scheduler": dict(model.pipe.scheduler.config)}
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_batch(args) -> int:
    from .batch.command import batch_command

    return batch_command(args)


def cmd_serve(args) -> int:
    from .web.serve import serve

    return serve(args)


COMMANDS = {"invert": cmd_invert, "edit": cmd_edit, "reconstruct": cmd_reconstruct, "info": cmd_info, "serve": cmd_serve,
            "batch": cmd_batch}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "quiet", False):
            _quiet_libraries()
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
