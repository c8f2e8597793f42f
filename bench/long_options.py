"""Window-blending options tried against the seam score (README "Long videos"), on the demo model: the windowed edit
of ``bench/long.py``'s quality part (no baselines) with the blend patched for the run.

    python bench/long_options.py first-weight 0.5   # a window's first latent frame (after window 0) weighted x0.5
    python bench/long_options.py first-weight 0     # ... weighted 0: context only, a hard hand-over
    python bench/long_options.py alternate          # two placements alternating between steps (second shifted by 1)
    python bench/long_options.py linear --overlap 0.67   # the library's blend, another overlap

Prints one JSON line of the windowed edit's summary (seam score at its borders and at the pieces' borders, motion
per window, centroid and displacement errors). The patches live here, not in the library: none of them was adopted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent


def first_weight(factor: float):
    """``Windows.weights`` with each window's first latent frame (windows after the first) scaled by ``factor``."""
    from vidinvert.windows import Windows

    linear = Windows.weights

    def weights(self):
        w = linear(self).double()  # [count, T]
        for k, start in enumerate(self.starts[1:], 1):
            w[k, start] *= factor
        return (w / w.sum(dim=0, keepdim=True)).float()

    Windows.weights = weights


def alternate():
    """``WindowedModel.predict`` using, on every other timestep (by ``t // 100``, which alternates over a 10-step
    schedule of the demo's 1000), windows shifted by one latent frame: starts ``0, 1, 1 + (size - 1), ..., T - size``.
    A function of ``t`` only, so inversion and edit see the same windows at every step."""
    from vidinvert.windows import Windows, WindowedModel

    library = WindowedModel.predict
    shifted: dict[int, tuple[Windows, torch.Tensor]] = {}

    def predict(self, latents, t, text):
        if int(float(t)) // 100 % 2 == 0:
            return library(self, latents, t, text)
        frames, size = self.windows.frames, self.windows.size
        if frames not in shifted:
            starts = tuple(sorted({0, frames - size, *range(1, frames - size, size - 1)}))
            windows = Windows(frames, size, 1, starts)
            shifted[frames] = (windows, windows.weights())
        windows, weights = shifted[frames]
        out = None
        for k, (a, b) in enumerate(windows.spans()):
            pred = self.model.predict(latents[:, a:b], t, text)  # [B, size, C', h, w]
            if out is None:
                out = torch.zeros(pred.shape[0], frames, *pred.shape[2:], dtype=torch.float32, device=pred.device)
            out[:, a:b] += weights[k, a:b].to(pred.device).view(1, -1, 1, 1, 1) * pred  # [B, T, C', h, w]
        return out

    WindowedModel.predict = predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("option", choices=("linear", "first-weight", "alternate"))
    parser.add_argument("factor", type=float, nargs="?", default=0.5, help="first-weight: the scale")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("bench_long", BENCH / "long.py")
    long = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(long)
    long.load_common().setup(1)
    if args.option == "first-weight":
        first_weight(args.factor)
    elif args.option == "alternate":
        alternate()

    from vidinvert.models import load_pipeline, wrap

    model = wrap(load_pipeline("demo", dtype="fp32", device="cpu"), name="demo")
    q = long.quality(model, args.frames, args.clips, args.steps, 100, args.overlap, baselines=False)
    keys = ("seam", "max_seam", "seam_at_pieces", "motion_kept", "centroid_px", "displacement_px", "colour")
    print(json.dumps({"option": args.option, "factor": args.factor if args.option == "first-weight" else None,
                      "overlap": args.overlap, "windows": q["windows"], "recon_psnr": q["recon_psnr"],
                      "round_trip_seam": q["round_trip_seam"], **{k: q["windowed"][k] for k in keys}}))


if __name__ == "__main__":
    main()
