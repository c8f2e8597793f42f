"""``vidinvert`` command line: invert, edit, reconstruct, batch, info, serve.

Flags map onto the settings dataclasses of ``settings.py`` (their defaults are read from there) and each command is
one ``engine`` call; the resolved settings are written as JSON next to each output. Errors print one line and exit
with status 2; warnings print as ``vidinvert: warning: ...`` and are listed in the settings JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from .errors import VidinvertError
from .options import EDIT_GUIDANCE, RECONSTRUCT_GUIDANCE, add_options, settings_from_values

EPILOG = """Without --model the bundled demo model runs (a 4.4M-parameter CogVideoX trained on a synthetic world of
coloured shapes, no download; see vidinvert.demo; --model demo-wan: its Wan twin); --model tiny runs a tiny
random-weight model built in code. Use --model THUDM/CogVideoX-5b or Wan-AI/Wan2.1-T2V-1.3B-Diffusers (or a local
folder) for real videos."""
__all__ = ["EDIT_GUIDANCE", "RECONSTRUCT_GUIDANCE", "build_parser", "main"]


HELPS = {"invert": "invert a video and save the trajectory (.inv) for later edits",
         "edit": "edit a video (or a saved .inv) with one or more prompts",
         "reconstruct": "invert and regenerate with the source prompt; print PSNR/SSIM",
         "batch": "edit many clips, each with its prompts, from a job file (in this process or on Ray workers); reruns "
                  "skip what is done",
         "info": "versions, devices and (with --model) the model's configuration",
         "serve": "open the web page (Gradio) to invert and edit videos in a browser",
         "plan": "predict an edit's peak memory per phase, FLOPs and time, and whether it fits, without loading "
                 "weights"}


def build_parser() -> argparse.ArgumentParser:
    from .models import sample_video

    parser = argparse.ArgumentParser(
        prog="vidinvert",
        description="Edit real videos with text-to-video diffusion transformers: inversion + key/value injection.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command, help_text in HELPS.items():
        extra = dict(description="Serve a local web page to invert a video once and edit it with several prompts. "
                                 "Needs the web extra: pip install 'vidinvert[web]'.") if command == "serve" else \
            dict(epilog=EPILOG)
        add_options(sub.add_parser(command, help=help_text, **extra), command, str(sample_video()))
    return parser


# ---- flags -> settings ----------------------------------------------------------------------------------------
def settings(args):
    """The parsed flags as ``options.Settings`` (the same mapping the batch rows and the library use)."""
    return settings_from_values(vars(args), args.command)


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
    from .engine import run_invert

    asked = settings(args)
    _report(run_invert(args.video, asked.model, asked.read, asked.invert, asked.output), args.quiet)
    return 0


def _run_edit(args, prompts: list[str] | None, reconstruct: bool) -> int:
    from .engine import run_edit

    asked = settings(args)
    result = run_edit(args.video, prompts, asked.model, asked.read, asked.invert, asked.edit, asked.output,
                      use_inversion=args.use_inversion,
                      save_inversion=args.save_inversion, steps_given=args.steps is not None,
                      reconstruct=reconstruct, command=args.command,
                      first_frames=getattr(args, "first_frame", None))
    _report(result, args.quiet)
    return 0


def cmd_edit(args) -> int:
    if not args.prompt and not args.first_frame:
        raise VidinvertError("no edit prompt given", 'pass --prompt "..." (several allowed), or --first-frame IMAGE')
    return _run_edit(args, args.prompt, reconstruct=False)


def cmd_reconstruct(args) -> int:  # without --prompt: the source prompt (a saved inversion's, the one it records)
    return _run_edit(args, None if args.prompt is None else [args.prompt], reconstruct=True)


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
        from .models.folder import folder_info
        from .models.registry import family_named

        folder = Path(args.model).expanduser()
        if (folder / "model_index.json").is_file():  # a folder: its configs say it all, no weights loaded
            info["model"] = {"name": args.model, "family": family_named(args.model), "weights_loaded": False,
                             **folder_info(folder, args.model)}
        else:  # a bundled or tiny model (small), or a hub id (its files are fetched by loading)
            model = open_model(settings(args).model)
            info["model"] = {"name": model.name, "family": model.family, "weights_loaded": True,
                             "fingerprint": model.fingerprint(), "transformer": dict(model.config),
                             "scheduler": dict(model.pipe.scheduler.config)}
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_plan(args) -> int:
    from .engine.budget import plan_job

    asked = settings(args)
    budget = plan_job(args.video, args.prompt, asked.model, asked.read, asked.invert, asked.edit, frames=args.frames,
                      device_memory=args.device_memory)
    print(json.dumps(budget.record()) if args.json else budget.describe())
    return 0


def cmd_batch(args) -> int:
    from .batch.command import batch_command

    return batch_command(args)


def cmd_serve(args) -> int:
    from .web.serve import serve

    return serve(args)


COMMANDS = {"invert": cmd_invert, "edit": cmd_edit, "reconstruct": cmd_reconstruct, "info": cmd_info, "serve": cmd_serve,
            "batch": cmd_batch, "plan": cmd_plan}


def main(argv: list[str] | None = None) -> int:
    # Everything inside the try, parsing too: building the parser imports torch (via .models), and Ctrl-C during that
    # or any later import must print one line, not a traceback (importing this module itself imports no torch).
    try:
        args = build_parser().parse_args(argv)
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
