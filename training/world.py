"""A deterministic synthetic video world: one plain-coloured shape moving over a plain or gradient background.

Every clip is drawn from a ``ClipSpec`` (shape, colour, motion, background, size, speed, start) with numpy only
(anti-aliased edges from signed distances, no randomness inside the drawing), so the same spec always gives the same
frames. ``sample_specs(n, seed, split)`` draws specs from a seeded ``numpy.random.Generator``: the same seed gives the
same clips, another seed other clips.

Captions use only words of the tokenizer vocabulary of ``vidinvert.tiny`` (``VOCABULARY``), e.g.
``"a red disc moving right on a black background"``. Some (colour, shape, motion) combinations, ``HELDOUT``, never
occur in the training split: the benchmark asks the trained model for them.

Coordinates: pixels, x to the right, y downwards, origin at the top-left pixel centre.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from vidinvert.tiny import VOCABULARY

FRAMES = 9  # 4k + 1 frames, as CogVideoX's VAE expects
SIZE = 64  # pixel height and width
MARGIN = 6  # the object never comes closer than this to the frame edges (the judges read the border as background)

# Object colours, RGB in [0, 1], chosen far apart from each other and from the backgrounds.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.95, 0.10, 0.10),
    "green": (0.10, 0.85, 0.15),
    "blue": (0.10, 0.35, 1.00),
    "yellow": (0.95, 0.90, 0.10),
    "purple": (0.70, 0.10, 0.90),
    "white": (0.95, 0.95, 0.95),
}
SHAPES = ("disc", "square", "triangle")

# Motion name -> (caption phrase, unit direction (dx, dy) in pixels, y down). "bouncing" falls then rises back up.
MOTIONS: dict[str, tuple[str, tuple[float, float]]] = {
    "left": ("moving left", (-1.0, 0.0)),
    "right": ("moving right", (1.0, 0.0)),
    "up": ("moving up", (0.0, -1.0)),
    "down": ("moving down", (0.0, 1.0)),
    "up right": ("moving up right", (1.0, -1.0)),
    "down left": ("moving down left", (-1.0, 1.0)),
    "bouncing": ("bouncing", (0.0, 1.0)),
    "still": ("still", (0.0, 0.0)),
}

# Background name -> (caption phrase, RGB at the top, RGB at the bottom); a vertical linear gradient in between.
BACKGROUNDS: dict[str, tuple[str, tuple[float, float, float], tuple[float, float, float]]] = {
    "black": ("on a black background", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    "gray": ("on a gray background", (0.45, 0.45, 0.45), (0.45, 0.45, 0.45)),
    "sky": ("in a dark sky", (0.02, 0.04, 0.22), (0.12, 0.20, 0.42)),
}

# (colour, shape, motion) combinations never drawn for training: every colour twice, every shape four times and every
# motion at least once, so each word is known from other combinations.
HELDOUT: tuple[tuple[str, str, str], ...] = (
    ("red", "disc", "right"),
    ("red", "triangle", "up"),
    ("green", "square", "down left"),
    ("green", "disc", "left"),
    ("blue", "triangle", "down"),
    ("blue", "square", "bouncing"),
    ("yellow", "disc", "up right"),
    ("yellow", "triangle", "still"),
    ("purple", "square", "right"),
    ("purple", "disc", "down"),
    ("white", "triangle", "left"),
    ("white", "square", "up right"),
)

SPLITS = ("train", "heldout", "all")


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides one clip.

    Args:
        colour: a key of ``COLOURS``.
        shape: one of ``SHAPES``.
        motion: a key of ``MOTIONS``.
        background: a key of ``BACKGROUNDS``.
        radius: object size in pixels (disc radius; square half-side and triangle size are scaled to similar area).
        speed: pixels per frame along each moving axis.
        x0: centre x of the first frame.
        y0: centre y of the first frame.
        frames: number of frames.
        size: frame height and width in pixels.
    """

    colour: str
    shape: str
    motion: str
    background: str
    radius: float = 8.0
    speed: float = 3.0
    x0: float = 32.0
    y0: float = 32.0
    frames: int = FRAMES
    size: int = SIZE

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.motion, self.background)

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.motion)

    def track(self) -> np.ndarray:
        """Centre ``(x, y)`` of the object in each frame, float64 ``[frames, 2]``."""
        _, (dx, dy) = MOTIONS[self.motion]
        f = np.arange(self.frames, dtype=np.float64)
        if self.motion == "bouncing":  # falls for the first half, rises back for the second
            half = (self.frames - 1) / 2
            f = half - np.abs(f - half)
        return np.stack([self.x0 + dx * self.speed * f, self.y0 + dy * self.speed * f], axis=1)


def caption(colour: str, shape: str, motion: str, background: str) -> str:
    """``"a red disc moving right on a black background"``."""
    return f"a {colour} {shape} {MOTIONS[motion][0]} {BACKGROUNDS[background][0]}"


def parse_caption(text: str) -> tuple[str, str, str, str]:
    """Inverse of ``caption``: ``(colour, shape, motion, background)``; ValueError for text not of this world."""
    for colour in COLOURS:
        for shape in SHAPES:
            for motion in MOTIONS:
                for background in BACKGROUNDS:
                    if caption(colour, shape, motion, background) == text:
                        return colour, shape, motion, background
    raise ValueError(f"not a caption of the synthetic world: {text!r}")


def all_combos() -> list[tuple[str, str, str]]:
    """Every (colour, shape, motion) combination, in a fixed order."""
    return [(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS]


def combos(split: str) -> list[tuple[str, str, str]]:
    """(colour, shape, motion) combinations of ``"train"``, ``"heldout"`` or ``"all"``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    if split == "all":
        return all_combos()
    held = set(HELDOUT)
    return [c for c in all_combos() if (c in held) == (split == "heldout")]


def background_image(name: str, size: int = SIZE) -> np.ndarray:
    """The background as float64 RGB ``[size, size, 3]`` in [0, 1]."""
    _, top, bottom = BACKGROUNDS[name]
    w = np.linspace(0.0, 1.0, size)[:, None, None]  # [H, 1, 1]
    column = (1 - w) * np.asarray(top) + w * np.asarray(bottom)  # [H, 1, 3]
    return np.broadcast_to(column, (size, size, 3)).copy()


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Signed distance in pixels (negative inside) of offsets ``(dx, dy)`` from the centre to the shape's outline."""
    if shape == "disc":
        return np.hypot(dx, dy) - radius
    if shape == "square":
        half = radius * 0.886  # same area as the disc
        return np.maximum(np.abs(dx), np.abs(dy)) - half
    if shape == "triangle":  # equilateral, pointing up, centred on its centroid
        inner = radius * 1.10 / 2  # inradius = circumradius / 2; a bit smaller in area than the disc
        distance = None
        for angle in (90.0, 210.0, 330.0):  # outward normals (y down: 90 degrees points down)
            nx, ny = np.cos(np.radians(angle)), np.sin(np.radians(angle))
            edge = dx * nx + dy * ny - inner
            distance = edge if distance is None else np.maximum(distance, edge)
        return distance
    raise ValueError(f"unknown shape {shape!r}")


def render_batch(specs: list[ClipSpec]) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw clips of equal length and size at once (vectorised; each clip is identical to ``render``'s).

    Returns:
        ``(frames, masks)``: float32 ``[B, F, 3, H, W]`` in [-1, 1] and float32 object coverage ``[B, F, H, W]``.
    """
    if not specs:
        raise ValueError("no specs to render")
    if len({(s.frames, s.size) for s in specs}) != 1:
        raise ValueError("render_batch needs clips of one length and size")
    size = specs[0].size
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)  # [H, W]
    tracks = np.stack([s.track() for s in specs])  # [B, F, 2]
    dx = xs[None, None] - tracks[:, :, 0, None, None]  # [B, F, H, W]
    dy = ys[None, None] - tracks[:, :, 1, None, None]
    radius = np.array([s.radius for s in specs])[:, None, None, None]  # [B, 1, 1, 1]
    distance = np.empty_like(dx)
    for shape in SHAPES:
        rows = np.array([s.shape == shape for s in specs])
        if rows.any():
            distance[rows] = _signed_distance(shape, dx[rows], dy[rows], radius[rows])
    alpha = np.clip(0.5 - distance, 0.0, 1.0)[..., None]  # [B, F, H, W, 1]
    back = np.stack([background_image(s.background, size) for s in specs])[:, None]  # [B, 1, H, W, 3]
    colour = np.array([COLOURS[s.colour] for s in specs])[:, None, None, None]  # [B, 1, 1, 1, 3]
    rgb = (1 - alpha) * back + alpha * colour  # [B, F, H, W, 3] in [0, 1]
    frames = torch.from_numpy(rgb * 2 - 1).permute(0, 1, 4, 2, 3).float().contiguous()  # [B, F, 3, H, W]
    return frames, torch.from_numpy(alpha[..., 0]).float()


def render(spec: ClipSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a clip.

    Returns:
        ``(frames, masks)``: float32 ``[F, 3, H, W]`` in [-1, 1] and float32 object coverage ``[F, H, W]`` in [0, 1].
    """
    frames, masks = render_batch([spec])
    return frames[0], masks[0]


def random_spec(rng: np.random.Generator, combo: tuple[str, str, str], background: str | None = None,
                frames: int = FRAMES, size: int = SIZE) -> ClipSpec:
    """A spec for ``combo`` with size, speed and start drawn from ``rng`` so the object stays inside the margins."""
    colour, shape, motion = combo
    if background is None:
        background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    radius = float(rng.uniform(7.0, 9.5))
    speed = 0.0 if motion == "still" else float(rng.uniform(2.2, 3.2))
    spec = ClipSpec(colour, shape, motion, background, radius=radius, speed=speed, frames=frames, size=size)
    return _place(rng, spec)


def long_spec(rng: np.random.Generator, combo: tuple[str, str, str], frames: int, background: str | None = None,
              size: int = SIZE) -> ClipSpec:
    """A clip of the same world longer than the training clips (e.g. 33 or 65 frames): drawn as ``random_spec``
    draws a training clip, then slowed, where the whole track would not fit inside the margins, until it does."""
    spec = random_spec(rng, combo, background, frames=FRAMES, size=size)
    room = size - 1 - 2 * (MARGIN + spec.radius * 1.1)  # px the centre may travel along an axis
    extent = np.ptp(replace(spec, x0=0.0, y0=0.0, speed=1.0, frames=frames).track(), axis=0).max()
    speed = spec.speed if extent == 0 else min(spec.speed, room / extent)
    return _place(rng, replace(spec, speed=float(speed), frames=frames))


def _place(rng: np.random.Generator, spec: ClipSpec) -> ClipSpec:
    """``spec`` with a start drawn from ``rng`` that keeps the whole track inside the margins."""
    radius, size = spec.radius, spec.size
    track = replace(spec, x0=0.0, y0=0.0).track()  # offsets from the start
    low = MARGIN + radius * 1.1 - track.min(axis=0)  # [2]: keep the whole track inside the margins
    high = size - 1 - MARGIN - radius * 1.1 - track.max(axis=0)
    x0, y0 = (float(rng.uniform(lo, hi)) if hi > lo else float((lo + hi) / 2) for lo, hi in zip(low, high))
    return replace(spec, x0=x0, y0=y0)


def sample_specs(n: int, seed: int, split: str = "train", frames: int = FRAMES, size: int = SIZE) -> list[ClipSpec]:
    """``n`` specs drawn from ``seed``; combinations cycle through the split in a seeded shuffled order."""
    rng = np.random.default_rng(seed)
    pool = combos(split)
    specs = []
    order: list[int] = []
    for _ in range(n):
        if not order:
            order = list(rng.permutation(len(pool)))
        specs.append(random_spec(rng, pool[order.pop()], frames=frames, size=size))
    return specs


def make_batch(specs: list[ClipSpec]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Render specs: ``(frames [B, F, 3, H, W], masks [B, F, H, W], captions)``."""
    frames, masks = render_batch(specs)
    return frames, masks, [s.caption for s in specs]


def _check_vocabulary() -> None:
    words = set(VOCABULARY)
    for colour in COLOURS:
        for shape in SHAPES:
            for motion in MOTIONS:
                for background in BACKGROUNDS:
                    missing = set(caption(colour, shape, motion, background).split()) - words
                    if missing:
                        raise AssertionError(f"caption words missing from the vocabulary: {sorted(missing)}")


_check_vocabulary()
