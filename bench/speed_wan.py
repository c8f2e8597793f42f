"""Cost per prompt of Wan's two edit methods, on a tiny random-weight Wan (timing only: its pictures are noise).

Modes (same model, clip, step count and guidance; ``EditConfig`` defaults otherwise):
    inversion_1   plain Euler inversion (1 row per step), then one edit with key/value injection (3 rows per step:
                  uncond, cond and the shared reference row)
    inversion_4   the same inversion, then one edit of 4 prompts sharing it (1 + 4 x 2 = 9 rows per step)
    flowedit_1    FlowEdit of one prompt: source and target velocities, each guided (4 rows per editing step; it edits
                  the cleanest ``n_max`` = 33/50 of the steps and skips the rest)
    flowedit_4    FlowEdit of 4 prompts in one batch sharing the source rows (2 + 4 x 2 = 10 rows per editing step)

Times are the transformer work only (``invert`` and ``edit`` phases; the VAE encode and decode are the same work
in every mode and left out); ``per_edit_s`` divides by the prompts. Modes are interleaved across repeats in one
process, and each phase's fastest repeat is kept.

    python bench/speed.py --family wan            # 10 steps, 2 repeats -> bench/results/speed_wan.{json,md}
    python bench/speed.py --family wan --quick    # the 2-layer tiny Wan, 2 steps, writes nothing (for tests)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is a folder of scripts, not a package
import common as bc  # noqa: E402

MODES = ("inversion_1", "inversion_4", "flowedit_1", "flowedit_4")
SOURCE_PROMPT = "a red ball moving right"


def size_config(quick: bool) -> dict:
    """The tiny Wan and clip of a run (``TinyWanConfig`` fields)."""
    if quick:
        return dict(tiny=dict(style="2.1"), frames=9, size=64)
    return dict(tiny=dict(style="2.1", num_layers=8, num_heads=8, head_dim=64, text_dim=64), frames=17, size=128)


def run_mode(model, latents, mode: str, steps: int, timer, counter) -> dict:
    """One run of ``mode``: its edited latents' shape and the prompts it edited."""
    from vidinvert.editing import edit
    from vidinvert.flowedit import flowedit
    from vidinvert.inversion import invert
    from vidinvert.settings import EditConfig

    prompts = [bc.EDIT_PROMPT] if mode.endswith("_1") else list(bc.FOUR_PROMPTS)
    if mode.startswith("inversion"):
        with timer.phase("invert"), counter.phase("invert"):
            inversion = invert(model, latents, steps=steps, prompt=SOURCE_PROMPT)
        with timer.phase("edit"), counter.phase("edit"):
            edited = edit(model, inversion, prompts, EditConfig())
    else:
        with timer.phase("edit"), counter.phase("edit"):
            edited = flowedit(model, latents, SOURCE_PROMPT, prompts, EditConfig(method="flowedit"), steps=steps)
    return {"num_prompts": len(prompts), "edited_shape": list(edited.shape)}


def measure(steps: int, quick: bool, repeats: int, modes=MODES) -> dict:
    """Every mode ``repeats`` times, interleaved, in this process; the fastest phases of each."""
    import torch

    from vidinvert.counting import CallCounter
    from vidinvert.models import wrap
    from vidinvert.settings import FlowEditConfig
    from vidinvert.tiny_wan import TinyWanConfig, build_tiny_wan_pipeline

    size = size_config(quick)
    model = wrap(build_tiny_wan_pipeline(TinyWanConfig(**size["tiny"])), name="bench-speed-wan")
    frames, clip = bc.load_clip(size["frames"], size["size"])
    with torch.no_grad():
        latents = model.encode(frames)
    model.encode_text([""])  # the text cache's first entry, outside the timed phases
    n_max, _ = FlowEditConfig().editing_steps(steps)
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(repeats):
        for mode in modes:
            timer, counter = bc.Timer(), CallCounter(model.transformer)
            info = run_mode(model, latents, mode, steps, timer, counter)
            counter.close()
            runs[mode].append({**info, "phases_s": dict(timer.seconds), "calls": counter.summary()})
    out = {}
    for mode, records in runs.items():
        phases = {p: round(min(r["phases_s"][p] for r in records), 4) for p in records[0]["phases_s"]}
        calls = records[0]["calls"]
        prompts = records[0]["num_prompts"]
        invert_rows = calls.get("invert", {}).get("rows", 0)
        edit_rows = calls["edit"]["rows"]
        edit_steps = n_max if mode.startswith("flowedit") else steps
        total = round(sum(phases.values()), 4)  # per edit divides this rounded figure, as the table shows it
        out[mode] = {
            "mode": mode, "num_prompts": prompts, "steps": steps, "edit_steps": edit_steps,
            "invert_rows_per_step": round(invert_rows / steps, 3) if invert_rows else 0,
            "edit_rows_per_step": round(edit_rows / edit_steps, 3),
            "rows": invert_rows + edit_rows, "rows_per_prompt": round((invert_rows + edit_rows) / prompts, 2),
            "transformer_calls": calls, "phases_s": phases, "phases_s_runs": [r["phases_s"] for r in records],
            "total_s": total, "per_edit_s": round(total / prompts, 4), "repeats": len(records),
            "edited_shape": records[0]["edited_shape"],
        }
    return {"modes": out, "clip": clip, "latent_shape": list(latents.shape), "model": size["tiny"], "n_max": n_max}


def to_markdown(data: dict) -> str:
    cfg, results = data["config"], data["modes"]
    headers = ["mode", "prompts", "inversion rows/step", "edit rows/step (steps)", "rows per prompt", "invert s",
               "edit s", "total s", "s per edit"]
    rows = [[m, r["num_prompts"], r["invert_rows_per_step"] or "-", f"{r['edit_rows_per_step']:g} ({r['edit_steps']})",
             r["rows_per_prompt"], r["phases_s"].get("invert", "-"), r["phases_s"]["edit"], r["total_s"],
             r["per_edit_s"]] for m, r in results.items()]
    return "\n".join([
        f"# Wan: inversion + injection vs FlowEdit ({cfg['steps']} steps)",
        "",
        "**Random weights, timing only**: a tiny Wan 2.1 built in code (`vidinvert.tiny_wan`, "
        f"{cfg['model']}); its pictures are noise, so nothing here measures edit quality.",
        "",
        data["note"],
        "",
        f"Clip: {cfg['clip']}; latents {cfg['latent_shape']}; guidance 6 (FlowEdit: target 6, source 3.5), "
        f"plain Euler inversion with the source prompt at guidance 1; FlowEdit edits n_max = {cfg['n_max']} of the "
        f"{cfg['steps']} steps (the paper's 33/50). Times are the transformer phases only (VAE work is the same in "
        "every mode), each the fastest of the repeats.",
        "",
        bc.markdown_table(headers, rows),
        "",
        "Rows per prompt counts every transformer batch row the job evaluated (inversion included), divided by the "
        "prompts. Inversion + injection pays the inversion once, however many prompts share it (and a saved `.inv` "
        "skips it on later runs); FlowEdit pays its source rows per step for every run and its target rows per "
        "prompt.",
    ])


def main(argv: list[str] | None = None) -> dict:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="steps (default 10; --quick: 2)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per mode, fastest kept (default 2; --quick: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="the 2-layer tiny Wan, 2 steps (seconds; for tests)")
    parser.add_argument("--out", default=None, help="folder for speed_wan.{json,md} (default bench/results; --quick: none)")
    args = parser.parse_args(argv)
    steps = args.steps or (2 if args.quick else 10)
    repeats = args.repeats or (1 if args.quick else 2)
    load_at_start = bc.load_average()
    bc.setup(args.threads)
    measured = measure(steps, args.quick, repeats)
    machine = bc.machine_info("cpu", load_at_start)
    data = {
        **measured["modes"],  # top-level keys name the modes, as speed.json's do
        "modes": measured["modes"],
        "note": bc.cpu_note(machine, repeats) + " All modes ran in one process.",
        "config": {"steps": steps, "repeats": repeats, "modes": list(MODES), "model": measured["model"],
                   "clip": measured["clip"], "latent_shape": measured["latent_shape"], "n_max": measured["n_max"],
                   "quick": args.quick},
        "machine": machine,
    }
    markdown = to_markdown(data)
    print(markdown)
    out = args.out if args.out is not None else (None if args.quick else str(bc.RESULTS_DIR))
    name = "speed_wan" if steps == 10 else f"speed_wan_steps{steps}"
    for path in bc.write_results(name, {k: v for k, v in data.items() if k != "modes"}, markdown, out):
        print(f"wrote {path}", file=sys.stderr)
    print(json.dumps(bc.json_safe({k: v for k, v in data.items() if k not in ("modes", *MODES)})), file=sys.stderr)
    return data


if __name__ == "__main__":
    main()
