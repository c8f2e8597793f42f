"""The README's main command, timed and judged: ``vidinvert edit --prompt "a green disc moving right in a dark sky"``
on the bundled sample clip and the bundled demo model, as a user runs it (a fresh process each time, defaults only).

    python bench/main_command.py               # 3 runs; writes bench/results/main_command.{json,md} and
                                               # docs/main_command.png (source row above the edit's row)

Reported: wall seconds per run (process start to exit, so imports and model loading count), and the demo judges on
the result against the source: colour per frame, motion, centroid distance, median shape IoU of the object masks,
background PSNR.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's training/ (world, judges)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PROMPT = "a green disc moving right in a dark sky"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def command(out: Path) -> list[str]:
    exe = shutil.which("vidinvert", path=str(Path(sys.executable).parent)) or shutil.which("vidinvert")
    prefix = [exe] if exe else [sys.executable, "-c", "import sys; from vidinvert.cli import main; sys.exit(main())"]
    return prefix + ["edit", "--prompt", PROMPT, "--quiet", "-o", str(out), "--force"]


def judge(edit, source) -> dict:
    import numpy as np

    from training import judges

    colours = [judges.object_colour(edit[i : i + 1]) for i in range(edit.shape[0])]
    ious = [judges.shape_iou(edit[i : i + 1], source[i : i + 1]) for i in range(edit.shape[0])]
    return dict(colour=judges.object_colour(edit), frames_green=sum(c == "green" for c in colours) / len(colours),
                motion=judges.motion(edit), source_motion=judges.motion(source),
                centroid_px=judges.centroid_distance(edit, source), shape_iou_median=float(np.nanmedian(ious)),
                background_psnr=judges.background_psnr(edit, source))


def strip(source, edit, scale: int = 4):
    """Source row above the edit's row (``quality.film_row``), a 4-pixel white band between."""
    import numpy as np

    film_row = _load("quality").film_row
    top, bottom = film_row(source, scale), film_row(edit, scale)
    return np.concatenate([top, np.full((4, top.shape[1], 3), 255, np.uint8), bottom], axis=0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--png", default=str(ROOT / "docs" / "main_command.png"))
    parser.add_argument("--out-dir", default=None, help="results folder (default bench/results)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    common = _load("common")
    common.setup(threads=None)
    from vidinvert.models import sample_video
    from vidinvert.video import read_video

    load = common.load_average()
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "edit.mp4"
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(command(out), check=True)
            seconds.append(time.perf_counter() - start)
        edit = read_video(out).frames
        settings = json.loads(out.with_suffix(".json").read_text())
    source = read_video(sample_video()).frames
    result = dict(command=f'vidinvert edit --prompt "{PROMPT}"', seconds=seconds, judged=judge(edit, source),
                  model=settings["model"], machine=common.machine_info(load_at_start=load))
    j = result["judged"]
    markdown = "\n".join([
        f"# README main command: `{result['command']}`", "",
        f"Wall time per run (fresh process, {args.repeats} runs): " + ", ".join(f"{s:.1f} s" for s in seconds), "",
        "| judged on the result vs the source | value |", "|---|---:|",
        f"| object colour (whole clip) | {j['colour']} |",
        f"| frames judged green | {j['frames_green']:.0%} |",
        f"| motion (source: {j['source_motion']}) | {j['motion']} |",
        f"| centroid distance | {j['centroid_px']:.2f} px |",
        f"| shape IoU, median over frames | {j['shape_iou_median']:.2f} |",
        f"| background PSNR | {j['background_psnr']:.1f} dB |", "",
        f"Machine: {result['machine']['cpu_count']} CPUs; load average (1/5/15 min) {result['machine']['load_at_start']} "
        f"at the start, {result['machine']['load_at_end']} at the end. Model: `{result['model']['name']}`.",
    ])
    print(markdown)
    if not args.no_write:
        common.write_results("main_command", result, markdown, args.out_dir or common.RESULTS_DIR)
        _load("quality").write_png(Path(args.png), strip(source, edit))
    return result


if __name__ == "__main__":
    main()
