"""Speed and memory of inversion + editing, per mode, on the CPU at a size where compute dominates.

Modes (same model, clip and step count):
    reference_compatible  the public CogVideo ``inference/ddim_inversion.py`` cost: inversion at guidance 6 on two
                          identical empty-text branches (batch 2), edit in the script's layout (batch 4)
    default               vidinvert's defaults: inversion at batch 1, edit at 3 rows per step
    kv_reuse              inversion records the reference keys/values, the edit reuses them (2 rows per step)
    prompts_4             default inversion + one edit call with 4 prompts (9 rows per step); compared per edit

At this size the CPU default (``EditConfig.rows_per_call="auto"``) evaluates the shared reference row alone and the
main rows in calls of 2 (batch sizes 1 and 2); the rows per step are the same as in one call.

Each mode runs in a fresh subprocess (peak RSS is a process-lifetime number), modes are interleaved across repeats,
and the fastest repeat of each mode is reported. ``total_s`` = inversion + edit (prompts_4: + its 4-prompt edit;
``per_edit_s`` = total_s / 4); encode and decode are reported apart (identical work in every mode).

    python bench/speed.py                 # 10 steps, 2 repeats, writes bench/results/speed.{json,md}
    python bench/speed.py --steps 25        # writes bench/results/speed_steps25.{json,md}
    python bench/speed.py --quick         # tiny sizes, 2 steps, in seconds (for tests; writes nothing)
    python bench/speed.py --family wan    # Wan: inversion + injection vs FlowEdit per prompt (bench/speed_wan.py)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is a folder of scripts, not a package
import common as bc  # noqa: E402

GOALS = {"default": 1.4, "kv_reuse": 1.8, "prompts_4": 2.2}  # speedup over reference_compatible (issue goals)
MEMORY_TOLERANCE_MIB = 1.0  # memory-run peaks are deterministic to ~0.1 MiB; allow rounding


def size_config(quick: bool) -> dict:
    """The tiny pipeline and clip of a run."""
    if quick:
        return dict(tiny=dict(style="5b"), frames=9, size=64)
    return dict(
        tiny=dict(style="5b", num_layers=8, num_heads=8, head_dim=64, text_dim=64, sample_frames=17, sample_size=128),
        frames=17,
        size=128,
    )


# ---- one mode, in this process ----------------------------------------------------------------------------------
def run_child(mode: str, steps: int, quick: bool, threads: int, kv_budget_gb: float, kv_method: str) -> dict:
    """Build the model, encode, invert, edit and decode once as ``mode`` does; returns the measurements."""
    threads = bc.setup(threads)
    from vidinvert.counting import CallCounter
    from vidinvert.models import VideoModel
    from vidinvert.tiny import TinyConfig, build_tiny_pipeline

    size = size_config(quick)
    model = VideoModel(build_tiny_pipeline(TinyConfig(**size["tiny"])), name="bench-speed")
    frames, clip = bc.load_clip(size["frames"], size["size"])
    model.encode_text([""])  # build the text cache's first entry outside the timed phases
    rss_setup = bc.vm_hwm_mib() or bc.peak_rss_mib()  # peak so far: imports, model build, clip
    timer, counter = bc.Timer(rss_phases=True), CallCounter(model.transformer)
    with timer.phase("encode"), counter.phase("encode"):
        latents = model.encode(frames)
    info = bc.run_mode(model, latents, mode, steps, timer, counter, kv_budget_gb=kv_budget_gb, kv_method=kv_method)
    counter.close()
    if not info.get("available", True):
        return {"mode": mode, **info}
    calls = counter.summary()
    result = {
        "mode": mode,
        **info,
        "steps": steps,
        "threads": threads,
        "clip": clip,
        "latent_shape": list(latents.shape),
        "phases_s": {k: round(v, 4) for k, v in timer.seconds.items()},
        "phases_cpu_s": {k: round(v, 4) for k, v in timer.cpu_seconds.items()},
        "transformer_calls": calls,
        "batch_check": bc.batch_check(mode, calls, info["rows_per_call"] is not None),
        "peak_rss_mib": max([rss_setup, *timer.rss_phase_peak.values()]) if timer.rss_phases else bc.peak_rss_mib(),
        "rss_after_setup_mib": rss_setup,
        "rss_phase_peak_mib": dict(timer.rss_phase_peak),  # each phase's own peak (kernel mark reset per phase)
        "peak_rss_invert_edit_mib": max(timer.rss_phase_peak.get(p, 0.0) for p in ("invert", "edit")) or None,
        "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
    }
    add_totals(result)
    result["peak_rss_above_setup_mib"] = round(result["peak_rss_mib"] - rss_setup, 1)
    return result


def add_totals(record: dict) -> None:
    """total = inversion + edit (wall and CPU seconds); per edit = total / number of prompts."""
    for suffix, phases in (("s", record["phases_s"]), ("cpu_s", record["phases_cpu_s"])):
        total = phases["invert"] + phases["edit"]
        record[f"total_{suffix}"] = round(total, 4)
        record[f"per_edit_{suffix}"] = round(total / record["num_prompts"], 4)
    record["end_to_end_s"] = round(sum(record["phases_s"].values()), 4)


# ---- the driver -------------------------------------------------------------------------------------------------
def measure(modes, steps, quick, threads, repeats, kv_budget_gb, kv_method, inprocess) -> dict:
    """Run every mode ``repeats`` times (interleaved) for time and, in subprocesses, once more for memory."""
    runs: dict[str, list[dict]] = {m: [] for m in modes}

    def child(mode, env_extra=None):
        if inprocess:
            return run_child(mode, steps, quick, threads, kv_budget_gb, kv_method)
        args = [str(Path(__file__).resolve()), "--child", mode, "--steps", str(steps), "--threads", str(threads),
                "--kv-budget-gb", str(kv_budget_gb), "--kv-method", kv_method] + (["--quick"] if quick else [])
        return bc.run_json_subprocess(args, env_extra=env_extra)

    for _ in range(repeats):
        for mode in modes:
            runs[mode].append(child(mode))
    best = {}
    for mode, records in runs.items():
        usable = [r for r in records if r.get("available", True)]
        if not usable:
            best[mode] = records[-1]
            continue
        fastest = dict(min(usable, key=lambda r: r["total_s"]))
        fastest["repeats"] = len(usable)
        fastest["total_s_runs"] = [r["total_s"] for r in usable]
        fastest["total_cpu_s_runs"] = [r["total_cpu_s"] for r in usable]
        fastest["peak_rss_mib_timing_runs"] = [r["peak_rss_mib"] for r in usable]
        # each phase's fastest run (the phases are independent work); totals are sums of those minima
        fastest["phases_s"] = {p: min(r["phases_s"][p] for r in usable) for p in fastest["phases_s"]}
        fastest["phases_cpu_s"] = {p: min(r["phases_cpu_s"][p] for r in usable) for p in fastest["phases_cpu_s"]}
        add_totals(fastest)
        if inprocess:
            fastest["peak_rss_mib"] = max(r["peak_rss_mib"] for r in usable)
            fastest["peak_rss_invert_edit_mib"] = max(r["peak_rss_invert_edit_mib"] or 0.0 for r in usable)
            fastest["memory_run"] = None
        else:  # memory: one more fresh process with mmap-backed large allocations (see common.MEMORY_ENV)
            memory = child(mode, bc.MEMORY_ENV)
            fastest["memory_run"] = {k: memory.get(k) for k in ("peak_rss_mib", "rss_after_setup_mib",
                                                                "rss_phase_peak_mib", "peak_rss_invert_edit_mib",
                                                                "malloc_mmap_threshold")}
            fastest["peak_rss_mib"] = memory["peak_rss_mib"]
            fastest["peak_rss_invert_edit_mib"] = memory["peak_rss_invert_edit_mib"]
        best[mode] = fastest
    return best


def compare(results: dict) -> dict:
    """Speedups of ``total_s`` (per edit for prompts_4) over reference_compatible, and the issue's goals."""
    ref = results.get("reference_compatible")
    if not ref or not ref.get("available", True):
        return {}
    out = {}
    for mode, record in results.items():
        if mode == "reference_compatible" or not record.get("available", True):
            continue
        per = "per_edit_" if mode == "prompts_4" else "total_"
        speedup = ref["total_s"] / record[per + "s"]
        speedup_cpu = ref["total_cpu_s"] / record[per + "cpu_s"]
        memory_ok = record["peak_rss_mib"] <= ref["peak_rss_mib"] + MEMORY_TOLERANCE_MIB
        phase_ok = record["peak_rss_invert_edit_mib"] <= ref["peak_rss_invert_edit_mib"] + MEMORY_TOLERANCE_MIB
        record["speedup_vs_reference"] = round(speedup, 3)
        record["speedup_vs_reference_cpu_time"] = round(speedup_cpu, 3)
        entry = {"speedup": round(speedup, 3), "speedup_cpu_time": round(speedup_cpu, 3),
                 "peak_rss_mib": record["peak_rss_mib"], "reference_peak_rss_mib": ref["peak_rss_mib"],
                 "memory_no_higher": memory_ok,
                 "peak_rss_invert_edit_mib": record["peak_rss_invert_edit_mib"],
                 "reference_peak_rss_invert_edit_mib": ref["peak_rss_invert_edit_mib"],
                 "invert_edit_memory_no_higher": phase_ok}
        if mode in GOALS:
            entry.update(goal=GOALS[mode], speed_met=speedup >= GOALS[mode], speed_met_cpu_time=speedup_cpu >= GOALS[mode])
        out[mode] = entry
    return out


def fidelity_section() -> str:
    """Reconstruction error vs steps with fixed-point inversion, from bench/fidelity.py's saved table."""
    path = bc.RESULTS_DIR / "fidelity.json"
    lines = ["## Reconstruction error vs steps (fixed-point inversion)", ""]
    if not path.is_file():
        return "\n".join(lines + ["Run `python bench/fidelity.py` (table over steps 10/25/50 x strategy x style)."])
    data = json.loads(path.read_text())
    rows = [[r["style"], r["steps"], r["method"], r["rel_latent_error"], r["psnr_db"], r["evals_per_step"]]
            for r in data.get("rows", [])]
    lines += [
        f"From `bench/results/fidelity.json` (`python bench/fidelity.py`; tiny 2-layer pipelines, {data.get('clip', '')}):",
        "",
        bc.markdown_table(["style", "steps", "inversion", "rel. latent error", "PSNR vs VAE round trip (dB)",
                           "evals/step"], rows),
    ]
    return "\n".join(lines)


def to_markdown(data: dict) -> str:
    results, goals = data["modes"], data["goals"]
    headers = ["mode", "invert batch", "edit batch", "transformer calls", "encode s", "invert s", "edit s", "decode s",
               "total s (inv+edit)", "per edit s", "speedup", "total CPU s", "speedup (CPU time)", "peak RSS MiB",
               "peak RSS invert+edit MiB"]
    rows = []

    def speed_cell(mode, value):
        if value:
            return f"{value:.2f}x"
        return "1.00x (base)" if mode == "reference_compatible" else "-"

    for mode in data["config"]["modes"]:
        r = results[mode]
        if not r.get("available", True):
            rows.append([mode] + ["-"] * 7 + [r.get("reason", "not available")] + ["-"] * 6)
            continue
        calls = r["transformer_calls"]
        batch = lambda phase: "/".join(calls.get(phase, {}).get("batch_sizes", {})) or "-"  # noqa: E731
        n_calls = sum(c["calls"] for c in calls.values())
        p = r["phases_s"]
        rows.append([mode, batch("invert"), batch("edit"), n_calls, p["encode"], p["invert"], p["edit"], p["decode"],
                     r["total_s"], r["per_edit_s"], speed_cell(mode, r.get("speedup_vs_reference")),
                     r["total_cpu_s"], speed_cell(mode, r.get("speedup_vs_reference_cpu_time")), r["peak_rss_mib"],
                     r.get("peak_rss_invert_edit_mib")])
    cfg = data["config"]
    lines = [
        f"# Speed and memory ({cfg['steps']} steps)",
        "",
        data["note"],
        "",
        f"Model: tiny random CogVideoX ({cfg['model']}); clip: {cfg['clip']}; latents {cfg['latent_shape']}. "
        f"Each phase time is the fastest of {cfg['repeats']} run(s) per mode"
        + (" (all modes in one process)" if cfg.get("inprocess") else " (each run in a fresh process, modes interleaved)")
        + "; totals are sums of those phase minima.",
        "",
        bc.markdown_table(headers, rows),
        "",
        "total s = inversion + one edit (prompts_4: inversion + one 4-prompt edit; per edit = total / 4); the speedup "
        "divides reference_compatible's total by the mode's total (prompts_4: by its per-edit time). CPU s is the "
        f"process CPU time of the same phases ({data['machine']['torch_threads']} torch thread(s)), which does not "
        "count time spent waiting for a core, so it is the steadier measure when other work shares the CPUs (see the "
        "load averages above). Peak RSS is the process-lifetime peak (model "
        "build included) of a separate run of each mode in which glibc serves allocations of 128 KiB or more with "
        "mmap (MALLOC_MMAP_THRESHOLD_=131072), so it follows live memory: without that, identical runs peaked up to "
        "~100 MiB apart (their peaks are kept in the JSON as peak_rss_mib_timing_runs). 'invert+edit' is the peak "
        "RSS while inverting and editing only (the kernel's peak mark, VmHWM, is reset at each phase start): at "
        "this size the whole-run peak is set by the VAE, the invert+edit peak by the transformer work and the "
        "stored inversion (and, for kv_reuse, its key/value cache).",
        "",
        "## Goals (CPU, this size)",
        "",
    ]
    goal_rows = []
    for mode, g in goals.items():
        has_goal = "goal" in g
        verdict = lambda ok: ("met" if ok else "NOT met") if has_goal else "-"  # noqa: E731
        goal_rows.append([mode, f">= {g['goal']}x" if has_goal else "-", f"{g['speedup']:.2f}x",
                          verdict(g.get("speed_met")), f"{g['speedup_cpu_time']:.2f}x", verdict(g.get("speed_met_cpu_time")),
                          f"{g['peak_rss_mib']} vs {g['reference_peak_rss_mib']}",
                          "met" if g["memory_no_higher"] else "NOT met",
                          f"{g['peak_rss_invert_edit_mib']} vs {g['reference_peak_rss_invert_edit_mib']}",
                          "met" if g["invert_edit_memory_no_higher"] else "NOT met"])
    lines.append(bc.markdown_table(["mode", "goal", "speedup (wall)", "wall goal", "speedup (CPU time)", "CPU-time goal",
                                    "peak RSS MiB (mode vs ref.)", "no higher", "invert+edit peak RSS MiB (mode vs ref.)",
                                    "no higher (invert+edit)"], goal_rows)
                 if goal_rows else "No comparison (reference missing).")
    lines += ["", f"Memory counts as no higher when a peak is within {MEMORY_TOLERANCE_MIB:g} MiB of the reference's."]
    for mode in data["config"]["modes"]:
        r = results[mode]
        extra = []
        if r.get("kv_cache"):
            extra.append(f"key/value cache: {r['kv_cache']} (inversion method {r.get('kv_method')})")
        if r.get("inversion_branches_identical") is not None:
            extra.append(f"inversion branches identical: {r['inversion_branches_identical']}")
        if r.get("warnings"):
            extra.append(f"warnings: {r['warnings']}")
        if r.get("batch_check") and not r["batch_check"]["ok"]:
            extra.append(f"UNEXPECTED batch sizes (expected {r['batch_check']['expected']})")
        if extra:
            lines += ["", f"- {mode}: " + "; ".join(extra)]
    lines += ["", "## Modes", ""] + [f"- `{m}`: {bc.MODE_NOTES[m]}" for m in data["config"]["modes"]]
    lines += ["", fidelity_section()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default 10; --quick: 2)")
    parser.add_argument("--modes", default=",".join(bc.MODES), help="comma-separated subset of " + ",".join(bc.MODES))
    parser.add_argument("--repeats", type=int, default=None, help="runs per mode, fastest kept (default 2; --quick: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see the note in the output)")
    parser.add_argument("--kv-budget-gb", type=float, default=4.0, help="memory budget of the recorded keys/values")
    parser.add_argument("--kv-method", choices=("ddim", "fixed-point"), default="ddim",
                        help="inversion method of kv_reuse (ddim: same cost as default, approximate reuse)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 steps (seconds; for tests)")
    parser.add_argument("--inprocess", action="store_true",
                        help="run the modes in this process (faster; peak RSS is then not per mode)")
    parser.add_argument("--out", default=None, help="folder for speed.{json,md} (speed_steps<N> when --steps is not 10; "
                        "default bench/results; --quick: none)")
    parser.add_argument("--render", metavar="JSON", help="only re-render the markdown of a saved speed.json")
    parser.add_argument("--family", choices=("cogvideox", "wan"), default="cogvideox",
                        help="wan: inversion + injection against FlowEdit on a tiny random Wan (bench/speed_wan.py; "
                             "takes --steps, --repeats, --threads, --quick and --out)")
    parser.add_argument("--child", choices=bc.MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.family == "wan":
        import speed_wan

        forwarded = [f"--threads={args.threads}"] + (["--quick"] if args.quick else [])
        forwarded += [f"--{k}={v}" for k, v in (("steps", args.steps), ("repeats", args.repeats), ("out", args.out))
                      if v is not None]
        return speed_wan.main(forwarded)
    if args.render:
        data = json.loads(Path(args.render).read_text())
        data["modes"] = {m: data[m] for m in data["config"]["modes"]}
        markdown = to_markdown(data)
        Path(args.render).with_suffix(".md").write_text(markdown.rstrip() + "\n")
        print(markdown)
        return data
    steps = args.steps or (2 if args.quick else 10)
    if not 1 <= steps <= 50:
        parser.error("--steps must be in 1..50")
    if args.child:
        record = run_child(args.child, steps, args.quick, args.threads, args.kv_budget_gb, args.kv_method)
        print(json.dumps(bc.json_safe(record)))
        return record
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in bc.MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; use {', '.join(bc.MODES)}")
    repeats = args.repeats or (1 if args.quick else 2)
    load_at_start = bc.load_average()
    threads = bc.setup(args.threads)
    results = measure(modes, steps, args.quick, threads, repeats, args.kv_budget_gb, args.kv_method, args.inprocess)
    goals = compare(results)
    size = size_config(args.quick)
    first = next((r for r in results.values() if r.get("available", True)), {})
    machine = bc.machine_info("cpu", load_at_start)
    data = {
        **results,  # top-level keys name the modes
        "modes": results,
        "goals": goals,
        "note": bc.cpu_note(machine, repeats) + (" Modes ran in one process (--inprocess): peak RSS is cumulative."
                                                 if args.inprocess else ""),
        "config": {
            "steps": steps, "repeats": repeats, "modes": modes, "model": size["tiny"], "clip": first.get("clip", ""),
            "latent_shape": first.get("latent_shape"), "kv_method": args.kv_method, "quick": args.quick,
            "inprocess": args.inprocess,
        },
        "machine": machine,
    }
    markdown = to_markdown(data)
    out = args.out if args.out is not None else (None if args.quick else str(bc.RESULTS_DIR))
    print(markdown)
    print(json.dumps(bc.json_safe({k: v for k, v in data.items() if k != "modes"})))
    name = "speed" if steps == 10 else f"speed_steps{steps}"  # the default size keeps the plain name
    for path in bc.write_results(name, {k: v for k, v in data.items() if k != "modes"}, markdown, out):
        print(f"wrote {path}", file=sys.stderr)
    return data


if __name__ == "__main__":
    main()
