"""Are a long clip's windows hard for the model itself? Each window's latent slice of the whole clip's encoding is
inverted and colour-edited alone (no windows, no blending) and put back into the clip's latents for decoding; beside
it, a piece of the source starting at the slice's first pixel frame and as long as a 3-latent clip (9 frames),
encoded by the VAE as a clip of its own and edited. Judged per piece: the object's
colour (``training.judges``) against the edit's target.

    python bench/window_slices.py --model demo-wan      # writes bench/results/window_slices_wan.md
    python bench/window_slices.py --model demo          # writes bench/results/window_slices.md

Slices of 3 latent frames at a stride of 2 (the windows of ``--window auto --overlap 0.25`` on the demo models).
"""

from __future__ import annotations

import argparse
import importlib.util
import warnings
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's training/ (world, judges)


BENCH = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo-wan")
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    common, long = _load("common"), _load("long")
    common.setup(args.threads)
    from vidinvert import EditConfig, edit, invert
    from training import judges
    from training.world import caption, render
    from vidinvert.exact import NotConvergedWarning
    from vidinvert.models import open_model
    from vidinvert.settings import ModelSettings

    model = open_model(ModelSettings(name=args.model))
    size, stride, temporal = 3, 2, model.temporal_factor

    def edited(latents, source_caption, prompt):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotConvergedWarning)
            inversion = invert(model, latents, steps=args.steps, prompt=source_caption, method="fixed-point",
                               tol=1e-5, max_iter=10, anderson=2)
        return edit(model, inversion, prompt, EditConfig())

    rows = []
    for spec in long.source_specs(args.clips, args.frames, 0):
        source = render(spec)[0]  # [F, 3, H, W]
        z = model.encode(source)  # [1, T, C, h, w]
        target = long.EDIT_TARGET[spec.colour]
        prompt = caption(target, spec.shape, spec.motion, spec.background)
        slices, pieces = [], []
        for start in range(0, z.shape[1] - size + 1, stride):
            a, b = long.pixel_span(start, start + size, temporal)
            whole = z.clone()
            whole[:, start:start + size] = edited(z[:, start:start + size], spec.caption, prompt).to(whole.dtype)
            slices.append(judges.object_colour(model.decode(whole)[0][a:b]))
            piece = source[a:a + 1 + temporal * (size - 1)]  # a clip of its own, starting at the slice's first frame
            pieces.append(judges.object_colour(model.decode(edited(model.encode(piece), spec.caption, prompt))[0]))
        rows.append(dict(caption=spec.caption, target=target, slices=slices, pieces=pieces))
        print(rows[-1], flush=True)

    def share(key, first):
        values = [c == r["target"] for r in rows for c in (r[key][:1] if first else r[key][1:])]
        return f"{sum(values)}/{len(values)}"

    lines = [f"# Window slices edited alone (`python bench/window_slices.py --model {args.model}`)", "",
             f"{args.clips} held-out clips of {args.frames} frames, {args.steps} steps, fixed-point inversion, default "
             f"colour edits; slices of {size} latent frames at stride {stride}.", "",
             "| source caption | target | latent slices, judged colour | re-encoded pieces, judged colour |",
             "|---|---|---|---|"]
    lines += [f"| {r['caption']} | {r['target']} | {', '.join(map(str, r['slices']))} | "
              f"{', '.join(map(str, r['pieces']))} |" for r in rows]
    lines += ["", f"Target colour: latent slices, first {share('slices', True)}, later {share('slices', False)}; "
              f"re-encoded pieces, first {share('pieces', True)}, later {share('pieces', False)}."]
    print("\n".join(lines))
    if not args.no_write:
        suffix = "_wan" if args.model == "demo-wan" else ""
        common.write_results(f"window_slices{suffix}", dict(model=args.model, rows=rows), "\n".join(lines),
                             common.RESULTS_DIR)
    return rows


if __name__ == "__main__":
    main()
