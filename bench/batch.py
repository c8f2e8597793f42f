"""Batch throughput: clips per minute in this process (no Ray) and on Ray with 1 and 2 workers, demo model, CPU.

Every configuration edits the same job file (``--clips`` copies of the bundled sample, 2 prompts each, ``--steps``
steps) into a fresh output folder through ``vidinvert.batch.run_batch``, one torch thread per worker. The time of a
run is ``run_batch``'s whole wall time, as a user sees it: worker start-up and model loading included; Ray's own
start (``ray.init``) is timed apart; each configuration runs ``--repeats`` times and the fastest is kept. Reported:
clips per minute, seconds per clip, the speed-up of 2 workers over 1, and Ray's overhead against the in-process
path for one worker (seconds per clip).

The machine's own ceiling is measured beside it, with no Ray at all: two OS processes each run the in-process path
on half of the clips at the same time (``two-processes``); their combined clips per minute over one process's is
what two workers could reach on this machine at best (shared caches, memory bandwidth, the operating system).

    python bench/batch.py                     # -> bench/results/batch.{json,md}
    python bench/batch.py --clips 4 --steps 4 --no-write
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


def load_common():
    spec = importlib.util.spec_from_file_location("vidinvert_bench_common", Path(__file__).with_name("common.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PROMPTS = ["a red disc moving right on a black background", "a blue square moving right on a black background"]


def run(label: str, jobs: Path, root: Path, defaults, repeats: int, **options) -> dict:
    """The fastest of ``repeats`` runs, each into a fresh folder (so every clip is edited)."""
    return min((run_once(f"{label}", root / f"{label}-{k}", jobs, defaults, **options) for k in range(repeats)),
               key=lambda row: row["seconds"])


def run_once(label: str, out: Path, jobs: Path, defaults, **options) -> dict:
    from vidinvert.batch import run_batch

    summary = run_batch(jobs, out, defaults, progress=False, **options)
    assert summary.failed == 0 and summary.done == summary.edits, summary.errors
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    per_clip = sorted({(r["clip"], r["seconds"]) for r in rows})
    return {"label": label, "engine": summary.engine, "workers": summary.workers, "clips": summary.clips,
            "seconds": summary.seconds, "clips_per_minute": round(summary.clips / summary.seconds * 60, 2),
            "seconds_per_clip": round(summary.seconds / summary.clips, 3),
            "clip_seconds_median": sorted(s for _, s in per_clip)[len(per_clip) // 2],
            "peak_rss_mib": max(r.get("peak_rss_mib", 0) for r in rows)}


def run_half(jobs: str, out: str, steps: int) -> None:
    """One of the ``two-processes`` halves: the in-process path, one torch thread (run in a child process). Imports
    first, then says ``ready`` and waits for a line on stdin, so that interpreter start and imports stay out of the
    time, as they do for the in-process row."""
    import torch

    from vidinvert.batch import run_batch
    from vidinvert.batch.jobfile import clip_defaults

    torch.set_num_threads(1)
    print("ready", flush=True)
    sys.stdin.readline()
    summary = run_batch(Path(jobs), Path(out), clip_defaults(steps=steps), progress=False, workers=1)
    assert summary.failed == 0 and summary.done == summary.edits, summary.errors


def two_processes(jobs: Path, root: Path, steps: int, repeats: int) -> dict:
    """The fastest of ``repeats`` runs of two concurrent processes, each editing half of the clips (no Ray)."""
    lines = jobs.read_text().splitlines(keepends=True)
    halves = [root / "half-a.jsonl", root / "half-b.jsonl"]
    halves[0].write_text("".join(lines[0::2]))
    halves[1].write_text("".join(lines[1::2]))
    best = None
    for k in range(repeats):
        children = [subprocess.Popen([sys.executable, __file__, "--half", str(h), str(root / f"two-{k}-{i}"), str(steps)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                    for i, h in enumerate(halves)]
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        if any(child.wait() != 0 for child in children):
            raise RuntimeError("a two-processes half failed")
        seconds = round(time.perf_counter() - started, 2)
        best = seconds if best is None else min(best, seconds)
    return {"label": "two-processes (no Ray)", "engine": "2 OS processes", "workers": 2, "clips": len(lines),
            "seconds": best, "clips_per_minute": round(len(lines) / best * 60, 2),
            "seconds_per_clip": round(best / len(lines), 3), "clip_seconds_median": None, "peak_rss_mib": None}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--half"]:
        run_half(argv[1], argv[2], int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration; the fastest is kept")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    common = load_common()
    load_at_start = common.load_average()
    threads = common.setup(1)
    import ray

    from vidinvert.batch.jobfile import clip_defaults
    from vidinvert.models import sample_video

    root = Path(tempfile.mkdtemp(prefix="vidinvert-bench-batch-"))
    try:
        jobs = root / "jobs.jsonl"
        jobs.write_text("".join(json.dumps({"id": f"clip{i}", "video": str(sample_video()), "prompts": PROMPTS}) + "\n"
                                for i in range(args.clips)))
        defaults = clip_defaults(steps=args.steps)  # the demo model (the default)
        rows = [run("in-process", jobs, root, defaults, args.repeats, workers=1)]
        rows.append(two_processes(jobs, root, args.steps, args.repeats))
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        ray_init = round(time.perf_counter() - started, 2)
        rows.append(run("ray-1-worker", jobs, root, defaults, args.repeats, workers=1, address="auto"))
        rows.append(run("ray-2-workers", jobs, root, defaults, args.repeats, workers=2, address="auto"))
        ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    by = {r["label"]: r for r in rows}
    speedup = round(by["ray-2-workers"]["clips_per_minute"] / by["ray-1-worker"]["clips_per_minute"], 2)
    overhead = round(by["ray-1-worker"]["seconds_per_clip"] - by["in-process"]["seconds_per_clip"], 3)
    ceiling = round(by["two-processes (no Ray)"]["clips_per_minute"] / by["in-process"]["clips_per_minute"], 2)
    machine = common.machine_info("cpu", load_at_start)
    machine["torch_threads_per_worker"] = threads
    result = {"clips": args.clips, "prompts_per_clip": len(PROMPTS), "steps": args.steps, "model": "demo",
              "ray": ray.__version__, "ray_init_seconds": ray_init, "rows": rows,
              "speedup_2_workers_over_1": speedup, "ceiling_2_processes_over_1": ceiling, "ray_overhead_seconds_per_clip_1_worker": overhead,
              "machine": machine, "note": common.cpu_note(machine, args.repeats)}
    lines = ["| run | engine | workers | seconds | clips/min | s/clip | median clip s | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['engine']} | {r['workers']} | {r['seconds']} | {r['clips_per_minute']} | "
              f"{r['seconds_per_clip']} | {r['clip_seconds_median'] or '-'} | {r['peak_rss_mib'] or '-'} |" for r in rows]
    lines += ["", f"{args.clips} clips x {len(PROMPTS)} prompts, {args.steps} steps, demo model. 2 workers / 1 worker: "
              f"{speedup}x; the machine's ceiling, two processes without Ray / one: {ceiling}x. Ray overhead, 1 worker vs in-process: {overhead:+} s/clip (ray.init {ray_init} s, not "
              f"counted). {result['note']}"]
    table = "\n".join(lines)
    print(table)
    print(json.dumps(result))
    if not args.no_write:
        results = Path(__file__).resolve().parent / "results"
        (results / "batch.json").write_text(json.dumps(result, indent=2) + "\n")
        (results / "batch.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
