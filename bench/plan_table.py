"""Planned peak memory and time of one edit for the published checkpoints, with each memory option set.

    python bench/plan_table.py            # writes bench/results/plan_table.json and .md (docs/planning.md quotes it)

Nothing is loaded or downloaded: each row is ``vidinvert plan`` (``engine.budget.plan_job``) on the checkpoint's
published configs, planned for a CUDA device in bf16 (the Wan VAE in float32), one prompt, 50 steps, at the
published size and frame count (and at 480p for the 720p models). Peaks are predictions, not measurements: no GPU
and no real weights were available (``bench/gpu_scale.py`` measures them where a GPU is lent).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vidinvert.engine.budget import GPU_FLOPS, GPU_UTILISATION, _device_weights, plan_job  # noqa: E402
from vidinvert.models.published import PUBLISHED  # noqa: E402
from vidinvert.settings import EditConfig, InvertSettings, ModelSettings, ReadSettings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CAPACITIES_GB = (24, 48, 80, 141)
OPTION_SETS = {"none": {}, "model offload": {"cpu_offload": "model"},
               "model offload + VAE tiling": {"cpu_offload": "model", "vae_tiling": True}}
TEXT_TO_VIDEO = ("CogVideoXPipeline", "WanPipeline")


def rows(models: list[str], done: list[dict] = (), save=lambda rows: None) -> list[dict]:
    """Plan each row not in ``done`` (a resumed run's rows), calling ``save`` after each."""
    out = list(done)
    key = lambda r: (r["model"], r["height"], r["width"], r["options"])  # noqa: E731
    seen = {key(r) for r in out}
    for hub_id in models:
        record = PUBLISHED[hub_id]
        sizes = [(record.height, record.width)]
        if record.height > 480:
            sizes.append((480, round(record.width * 480 / record.height / 32) * 32))  # 32: every layout's multiple
        for height, width in sizes:
            traced = {}
            for label, change in OPTION_SETS.items():
                if (hub_id, height, width, label) in seen:
                    continue
                started = time.perf_counter()
                # model offload changes only which weights sit on the GPU (budget._device_weights): the trace of
                # the same VAE settings is reused
                vae = change.get("vae_tiling", False)
                if vae in traced:
                    plan = dataclasses.replace(traced[vae], device_weights=_device_weights(
                        traced[vae].weights, change.get("cpu_offload", "none")))
                else:
                    plan = traced[vae] = plan_job(
                        None, ["a red car"], ModelSettings(name=hub_id, dtype="bf16", **change),
                        ReadSettings(height=height, width=width), InvertSettings(steps=50), EditConfig(),
                        frames=record.num_frames, device="cuda", device_memory=80 * 10**9)
                out.append({"model": hub_id, "height": height, "width": width, "frames": plan.frames,
                            "options": label, "peak_bytes": plan.peak_bytes, "peak_phase": plan.peak_phase.name,
                            "fits_gb": {str(c): plan.required_bytes <= c * 10**9 for c in CAPACITIES_GB},
                            "seconds": round(plan.seconds, 1), "flops": plan.flops,
                            "plan_seconds": round(time.perf_counter() - started, 1)})
                print(json.dumps(out[-1]), flush=True)
                save(out)
    return out


def table(results: list[dict]) -> str:
    lines = [f"Command: `python bench/plan_table.py` (CUDA plan, bf16, 1 prompt, 50 steps; time at "
             f"{GPU_UTILISATION:.0%} of {GPU_FLOPS / 1e12:.0f} TFLOP/s). Predictions from traced fake-tensor runs, "
             "not measurements.", "",
             "| model | size, frames | options | peak GiB | in | fits " + " / ".join(f"{c}" for c in CAPACITIES_GB)
             + " GB | s per edit |", "|---|---|---|---:|---|---|---:|"]
    for r in results:
        fits = " / ".join("yes" if r["fits_gb"][str(c)] else "no" for c in CAPACITIES_GB)
        lines.append(f"| {r['model']} | {r['height']}x{r['width']}, {r['frames']} | {r['options']} | "
                     f"{r['peak_bytes'] / 2**30:.1f} | {r['peak_phase']} | {fits} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=[h for h, r in PUBLISHED.items() if r.pipeline in TEXT_TO_VIDEO])
    parser.add_argument("--out", default=str(RESULTS / "plan_table"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.with_suffix(".json")
    done = json.loads(path.read_text())["rows"] if path.is_file() else []  # a run cut short resumes

    def save(results):
        path.write_text(json.dumps({"command": "python bench/plan_table.py", "rows": results}, indent=1) + "\n")

    results = rows(args.models, done, save)
    save(results)
    out.with_suffix(".md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
