"""Exact inversion: how closely does sampling return to the video after each inversion strategy?

For each model x step count x inversion strategy, on random and trained weights side by side (tiny random CogVideoX
pipelines: 2b style = sincos positions + snr_shift 3.0, 5b style = RoPE + shift 1.0; the shipped demo model, trained,
in fp32 and bf16, on the bundled sample clip and a held-out clip of its world): invert the clip's VAE latents with
guidance 1 and an empty prompt, sample back from the inverted noise with plain DDIM (same empty prompt, guidance 1),
and report

- the relative latent error ``||x0_back - x0|| / ||x0||``,
- the PSNR of the decoded result against the VAE round trip (decode of the clean latents), so the VAE's own loss
  is left out,
- evaluations per step (mean and max of ``Inversion.meta.iterations``) and the clean-end step's final residual,
- seconds of the inversion and of the sampling back (fastest of ``--repeats`` runs).

    python bench/fidelity.py                   # tiny at steps 10,25,50 + demo at 25,50; writes bench/results/
    python bench/fidelity.py --models demo --demo-dtypes fp32
    python bench/fidelity.py --quick           # steps 4, tiny 5b style only, one run (for tests; writes nothing)
    python bench/fidelity.py --models demo-wan --name fidelity_wan   # the Wan demo model (Euler steps)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's training/ (world, judges)


sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is a folder of scripts, not a package
import common as bc  # noqa: E402


HELDOUT_SEED = 123  # training.world.sample_specs(1, HELDOUT_SEED, "heldout"): the held-out clip


def strategies(tol: float, max_iter: int, clean_max_iter: int) -> dict:
    """Name -> ``invert`` keyword arguments."""
    return {
        "ddim": dict(method="ddim"),
        "fixed-point": dict(method="fixed-point", tol=tol, max_iter=max_iter),
        "fixed-point+anderson2": dict(method="fixed-point", tol=tol, max_iter=max_iter, anderson=2),
        "fixed-point-whole-last": dict(method="fixed-point", tol=tol, max_iter=max_iter, split_clean_end=False),
        f"fixed-point-whole-last+clean{clean_max_iter}": dict(method="fixed-point", tol=tol, max_iter=max_iter,
                                                              clean_max_iter=clean_max_iter, split_clean_end=False),
    }


def demo_clips(model) -> dict:
    """Clip name -> (latents ``[1, T, C, h, w]``, description) for the demo model: bundled sample and a held-out one."""
    from training import world
    from vidinvert.demo import SAMPLE_CLIP
    from vidinvert.engine import open_source

    spec = world.sample_specs(1, seed=HELDOUT_SEED, split="heldout")[0]
    frames, _ = world.render(spec)
    return {
        "sample": (open_source(model, str(SAMPLE_CLIP)).latents, "src/vidinvert/demo/sample.mp4"),
        "heldout": (model.encode(frames), f"world.sample_specs(1, {HELDOUT_SEED}, 'heldout'): {spec.caption}"),
    }


def measure_one(model, latents, reference_frames, steps: int, options: dict, repeats: int) -> dict:
    """Invert, sample back and compare; the fastest of ``repeats`` runs gives the seconds (results are identical)."""
    from vidinvert.exact import NotConvergedWarning
    from vidinvert.inversion import invert, text_model_fn
    from vidinvert.metrics import psnr, relative_error
    from vidinvert.sampling import sample_ddim

    invert_times, sample_times = [], []
    for _ in range(repeats):
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always", NotConvergedWarning)
            start = time.perf_counter()
            inversion = invert(model, latents, steps=steps, **options)
            invert_times.append(time.perf_counter() - start)
        unconverged = len(inversion.report.unconverged) if inversion.report is not None else 0
        start = time.perf_counter()
        back = sample_ddim(text_model_fn(model, "", "", 1.0), inversion.noise, inversion.schedule(model))
        sample_times.append(time.perf_counter() - start)
    decoded = model.decode(back)[0]  # [F, C, H, W]
    iterations = inversion.meta.iterations
    residuals = inversion.meta.residuals
    return {
        "clean_end_residual": residuals[-1] if residuals else None,
        "rel_latent_error": relative_error(back, inversion.clean),
        "psnr_db": psnr(decoded, reference_frames),
        "evals_per_step": round(sum(iterations) / len(iterations), 3),
        "max_evals_step": max(iterations),
        "unconverged_steps": unconverged,
        "invert_s": round(min(invert_times), 4),
        "sample_back_s": round(min(sample_times), 4),
        "invert_s_runs": [round(t, 4) for t in invert_times],
    }


def to_markdown(data: dict) -> str:
    cfg = data["config"]
    headers = ["model", "weights", "dtype", "clip", "steps", "inversion", "rel. latent error",
               "PSNR vs VAE round trip (dB)", "evals/step", "max evals", "clean-end residual", "unconverged steps",
               "invert s", "sample-back s"]
    rows = [[r["style"], r["weights"], r["dtype"], r["clip"], r["steps"], r["method"], r["rel_latent_error"],
             r["psnr_db"], r["evals_per_step"], r["max_evals_step"], r["clean_end_residual"], r["unconverged_steps"],
             r["invert_s"], r["sample_back_s"]] for r in data["rows"]]
    return "\n".join([
        "# Inversion fidelity (invert -> sample back)",
        "",
        data["note"],
        "",
        f"Models: tiny random CogVideoX pipelines ({cfg['model']}), 2b style = sincos positions + snr_shift 3.0, "
        f"5b style = RoPE + snr_shift 1.0, clip: {data['clip']}; the trained demo model (src/vidinvert/demo/model), "
        f"clips: {data['demo_clips']}. Inversion and sampling back use the empty prompt at "
        f"guidance 1; fixed-point uses tol {cfg['tol']:g}, max_iter {cfg['max_iter']} on the tiny models and {cfg['demo_max_iter']} on the demo model; 'fixed-point' cuts the "
        "schedule's last step in two (one more step, sampled back the same way), '-whole-last' keeps it whole, "
        "'+cleanK' lets that whole step take K evaluations; 'evals/step' divides by the steps run. PSNR compares the decoded "
        "result with the decoded clean latents (the VAE round trip), so the VAE's own loss is excluded; "
        "'clean-end residual' is the last sampling step's final residual (the round trip's error floor); "
        "'unconverged steps' counts steps that stopped at max_iter above their target and the rounding floor.",
        "",
        bc.markdown_table(headers, rows),
    ])


def report(row: dict) -> None:
    """One progress line on stderr."""
    print(f"{row['style']} {row['dtype']} {row['clip']} steps={row['steps']:>3} {row['method']:<22} "
          f"rel_err={row['rel_latent_error']:.3e} psnr={row['psnr_db']:.2f} evals/step={row['evals_per_step']} "
          f"max={row['max_evals_step']} invert={row['invert_s']}s", file=sys.stderr)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default=None, help="comma-separated step counts (default 10,25,50; --quick: 4)")
    parser.add_argument("--styles", default=None, help="comma-separated model styles (default 2b,5b; --quick: 5b)")
    parser.add_argument("--methods", default=None,
                        help="strategies (default ddim,fixed-point,fixed-point+anderson2; the demo model: ddim, fixed-point, "
                             "fixed-point-whole-last and fixed-point-whole-last+clean16)")
    parser.add_argument("--models", default=None, help="tiny, demo and/or demo-wan (default tiny,demo; --quick: tiny)")
    parser.add_argument("--name", default="fidelity", help="results file name in --out (default fidelity)")
    parser.add_argument("--demo-steps", default="25,50", help="step counts for the demo model (default 25,50)")
    parser.add_argument("--demo-dtypes", default="fp32,bf16", help="dtypes for the demo model (default fp32,bf16)")
    parser.add_argument("--tol", type=float, default=1e-6, help="fixed-point tolerance (default 1e-6)")
    parser.add_argument("--max-iter", type=int, default=20,
                        help="fixed-point evaluations per step, tiny models (default 20, as before)")
    parser.add_argument("--demo-max-iter", type=int, default=8,
                        help="fixed-point evaluations per step, demo model (default 8)")
    parser.add_argument("--clean-max-iter", type=int, default=16,
                        help="the +cleanK strategy's cap for the clean-end step (default 16)")
    parser.add_argument("--frames", type=int, default=9, help="clip frames, 4k+1 (default 9)")
    parser.add_argument("--size", type=int, default=64, help="clip height and width (default 64)")
    parser.add_argument("--clip", choices=("sample", "synthetic"), default="sample",
                        help="bundled sample.mp4 (default) or the tests' synthetic moving square")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per configuration (default 2; quick 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="steps 4, one style, one run (for tests)")
    parser.add_argument("--out", default=None, help="folder for fidelity.{json,md} (default bench/results; quick: none)")
    args = parser.parse_args(argv)
    load_at_start = bc.load_average()
    bc.setup(args.threads)
    from vidinvert.models import VideoModel
    from vidinvert.tiny import TinyConfig, build_tiny_pipeline

    steps_list = [int(s) for s in (args.steps or ("4" if args.quick else "10,25,50")).split(",")]
    styles = [s.strip() for s in (args.styles or ("5b" if args.quick else "2b,5b")).split(",")]
    table = strategies(args.tol, args.max_iter, args.clean_max_iter)
    demo_table = strategies(args.tol, args.demo_max_iter, args.clean_max_iter)
    clean = f"fixed-point-whole-last+clean{args.clean_max_iter}"
    methods = [m.strip() for m in (args.methods or "ddim,fixed-point,fixed-point+anderson2").split(",")]
    demo_methods = [m.strip() for m in (args.methods or f"ddim,fixed-point,fixed-point-whole-last,{clean}").split(",")]
    unknown = [m for m in methods + demo_methods if m not in table]
    if unknown:
        parser.error(f"unknown methods {unknown}; use {', '.join(table)}")
    models = [m.strip() for m in (args.models or ("tiny" if args.quick else "tiny,demo")).split(",")]
    repeats = args.repeats or (1 if args.quick else 2)
    frames, clip = bc.load_clip(args.frames, args.size, args.clip)
    rows = []
    for style in styles if "tiny" in models else []:
        model = VideoModel(build_tiny_pipeline(TinyConfig(style=style, sample_frames=args.frames,
                                                          sample_size=args.size)), name=f"tiny-{style}")
        latents = model.encode(frames)
        reference_frames = model.decode(latents)[0]  # the VAE round trip
        for steps in steps_list:
            for method in methods:
                result = measure_one(model, latents, reference_frames, steps, table[method], repeats)
                rows.append({"style": f"tiny-{style}", "weights": "random", "dtype": "fp32", "clip": "sample",
                             "steps": steps, "method": method, **result})
                report(rows[-1])
    demo_described = {}
    demos = [(name, dtype.strip()) for name in ("demo", "demo-wan") if name in models
             for dtype in args.demo_dtypes.split(",")]
    for demo_name, dtype in demos:
        from vidinvert.models import load_pipeline, wrap

        model = wrap(load_pipeline(demo_name, dtype=dtype, device="cpu"), name=demo_name)
        for clip_name, (latents, described) in demo_clips(model).items():
            demo_described[clip_name] = described
            reference_frames = model.decode(latents)[0]
            for steps in [int(s) for s in args.demo_steps.split(",")]:
                for method in demo_methods:
                    result = measure_one(model, latents, reference_frames, steps, demo_table[method], repeats)
                    rows.append({"style": demo_name, "weights": "trained", "dtype": dtype, "clip": clip_name,
                                 "steps": steps, "method": method, **result})
                    report(rows[-1])
    machine = bc.machine_info("cpu", load_at_start)
    data = {
        "bench": "fidelity",
        "note": bc.cpu_note(machine, repeats),
        "clip": clip,
        "demo_clips": "; ".join(f"{k} = {v}" for k, v in demo_described.items()) or "-",
        "config": {"steps": steps_list, "styles": styles, "methods": methods, "demo_methods": demo_methods,
                   "models": models, "demo_steps": args.demo_steps, "demo_dtypes": args.demo_dtypes, "tol": args.tol,
                   "max_iter": args.max_iter, "demo_max_iter": args.demo_max_iter, "clean_max_iter": args.clean_max_iter, "repeats": repeats, "model": "TinyConfig defaults: 2 layers, 2 heads x 16",
                   "guidance": 1.0, "prompt": ""},
        "rows": rows,
        "machine": machine,
    }
    markdown = to_markdown(data)
    print(markdown)
    print(json.dumps(bc.json_safe(data)))
    out = args.out if args.out is not None else (None if args.quick else str(bc.RESULTS_DIR))
    for path in bc.write_results(args.name, data, markdown, out):
        print(f"wrote {path}", file=sys.stderr)
    return data


if __name__ == "__main__":
    main()
