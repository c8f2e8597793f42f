"""Generate the bundled sample clip src/vidinvert/assets/sample.mp4 (deterministic, no randomness).

A vertical colour gradient, a red disc moving left to right with a slight bob, and a
small blue square moving diagonally: 33 frames (4k + 1), 128x128, 8 fps.

Run:  python scripts/make_sample.py
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from vidinvert.export import write_video

FRAMES = 33  # 4 * 8 + 1, the count CogVideoX's VAE wants
HEIGHT, WIDTH = 128, 128  # pixels
FPS = 8.0  # frames per second
DISC_RADIUS = 18.0  # red disc radius in pixels
SQUARE_SIDE = 14.0  # blue square side in pixels
OUT = Path(__file__).resolve().parents[1] / "src" / "vidinvert" / "assets" / "sample.mp4"


def coverage(signed_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance (negative inside), 1 px ramp."""
    return np.clip(0.5 - signed_distance, 0.0, 1.0)


def draw_frame(t: float, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """One frame at time t in [0, 1] as float32 RGB ``[H, W, 3]`` in [0, 1]."""
    # Background: teal at the top fading to warm sand at the bottom.
    top, bottom = np.array([0.10, 0.45, 0.55]), np.array([0.95, 0.80, 0.55])
    mix = (ys / (HEIGHT - 1))[..., None]  # [H, W, 1]
    image = (1 - mix) * top + mix * bottom  # [H, W, 3]

    # Red disc: left to right, bobbing up and down once per clip.
    cx = 24.0 + t * (WIDTH - 48.0)
    cy = HEIGHT / 2 + 6.0 * math.sin(2 * math.pi * t)
    disc = coverage(np.hypot(xs - cx, ys - cy) - DISC_RADIUS)[..., None]  # [H, W, 1]
    image = (1 - disc) * image + disc * np.array([0.85, 0.10, 0.10])

    # Blue square: top-left to bottom-right.
    sx, sy = 12.0 + t * (WIDTH - 24.0), 12.0 + t * (HEIGHT - 24.0)
    box = np.maximum(np.abs(xs - sx), np.abs(ys - sy)) - SQUARE_SIDE / 2
    square = coverage(box)[..., None]  # [H, W, 1]
    image = (1 - square) * image + square * np.array([0.10, 0.20, 0.85])
    return image.astype(np.float32)


def main() -> None:
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64) + 0.5  # pixel centres, [H, W] each
    clip = np.stack([draw_frame(i / (FRAMES - 1), ys, xs) for i in range(FRAMES)])  # [F, H, W, 3]
    frames = torch.from_numpy(clip).permute(0, 3, 1, 2) * 2 - 1  # [F, 3, H, W] in [-1, 1]
    path = write_video(frames, OUT, FPS, force=True)
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
