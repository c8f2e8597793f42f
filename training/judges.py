"""Programmatic judges of synthetic-world clips (no learned metric): object colour, centroid track, motion, shape
(mask IoU), background.

Every function takes frames ``[F, C, H, W]`` in [-1, 1] (a generated, reconstructed or edited clip). The background
is read from the left and right borders of the frames (the world keeps the object away from them, see
``world.MARGIN``): per row, the median over all frames of the border pixels, which fits plain and vertical-gradient
backgrounds. Object pixels are the pixels far from that background.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .world import COLOURS

BORDER = 4  # columns on each side read as background
THRESHOLD = 0.25  # RGB distance in [0, 1] units above which a pixel belongs to the object
STILL_PX = 4.0  # a track that never leaves a circle of this radius around its start is "still"
BOUNCE_PX = 4.0  # overshoot (px) beyond the span of the endpoints that makes a track "bouncing"

# The eight compass directions, y down: index k covers the angle atan2(dy, dx) in [45k - 22.5, 45k + 22.5) degrees.
DIRECTIONS = ("right", "down right", "down", "down left", "left", "up left", "up", "up right")


def _to_unit(frames: torch.Tensor) -> torch.Tensor:
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [F, 3, H, W], got {tuple(frames.shape)}")
    return (frames.detach().cpu().float().clamp(-1, 1) + 1) / 2  # [F, 3, H, W] in [0, 1]


def estimate_background(frames: torch.Tensor, border: int = BORDER) -> torch.Tensor:
    """Background RGB in [0, 1], ``[3, H, W]``: per row, the median of the border columns over all frames."""
    unit = _to_unit(frames)
    edges = torch.cat([unit[..., :border], unit[..., -border:]], dim=-1)  # [F, 3, H, 2b]
    rows = edges.permute(1, 2, 0, 3).reshape(3, unit.shape[2], -1).median(dim=-1).values  # [3, H]
    return rows[:, :, None].expand(-1, -1, unit.shape[3]).contiguous()  # [3, H, W]


def distance_to_background(frames: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
    """RGB distance (in [0, 1] units) of every pixel to the background, ``[F, H, W]``."""
    unit = _to_unit(frames)
    background = estimate_background(frames) if background is None else background
    return (unit - background[None]).norm(dim=1)  # [F, H, W]


def object_masks(frames: torch.Tensor, background: torch.Tensor | None = None, threshold: float = THRESHOLD) -> torch.Tensor:
    """Boolean object masks ``[F, H, W]``: pixels further than ``threshold`` from the background."""
    return distance_to_background(frames, background) > threshold


def object_rgb(frames: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor | None:
    """Mean RGB in [0, 1] ``[3]`` of the object's core pixels over the clip; ``None`` when there is no object.

    The core is the object mask eroded by one pixel where possible, so anti-aliased or blurred edges (half object,
    half background) do not pull the colour towards the background.
    """
    unit = _to_unit(frames)
    masks = object_masks(frames, background)  # [F, H, W]
    if not masks.any():
        return None
    core = -F.max_pool2d(-masks.float()[:, None], 3, stride=1, padding=1)[:, 0] > 0.5  # eroded [F, H, W]
    use = core if core.sum() >= 8 else masks
    pixels = unit.permute(0, 2, 3, 1)[use]  # [N, 3]
    return pixels.mean(dim=0)


def object_colour(frames: torch.Tensor, palette: dict[str, tuple[float, float, float]] = COLOURS) -> str | None:
    """Name of the palette colour nearest to the object's mean colour; ``None`` when no object is found."""
    rgb = object_rgb(frames)
    if rgb is None:
        return None
    names = list(palette)
    table = torch.tensor([palette[n] for n in names], dtype=torch.float32)  # [K, 3]
    return names[int((table - rgb[None]).norm(dim=1).argmin())]


def centroids(frames: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
    """Object centroid ``(x, y)`` in pixels per frame, float32 ``[F, 2]``; NaN for a frame without object pixels."""
    masks = object_masks(frames, background).float()  # [F, H, W]
    _, height, width = masks.shape
    ys = torch.arange(height, dtype=torch.float32)[None, :, None]
    xs = torch.arange(width, dtype=torch.float32)[None, None, :]
    area = masks.sum(dim=(1, 2))  # [F]
    cx = (masks * xs).sum(dim=(1, 2)) / area
    cy = (masks * ys).sum(dim=(1, 2)) / area
    track = torch.stack([cx, cy], dim=1)  # [F, 2]
    track[area == 0] = float("nan")
    return track


def classify_track(track: torch.Tensor | np.ndarray, still_px: float = STILL_PX, bounce_px: float = BOUNCE_PX) -> str:
    """Motion of a centroid track ``[F, 2]``: ``"still"``, ``"bouncing"`` or one of ``DIRECTIONS``.

    Frames without an object (NaN) are skipped; with fewer than two valid frames the answer is ``"none"``.
    A track that goes further along an axis than both of its ends (and by more than ``bounce_px`` and 0.6 x its net
    displacement) turns back: ``"bouncing"``. Otherwise the direction of the net displacement, in eight sectors.
    """
    points = np.asarray(track, dtype=np.float64)
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) < 2:
        return "none"
    start, end = points[0], points[-1]
    if np.linalg.norm(points - start, axis=1).max() < still_px:
        return "still"
    net = end - start
    overshoot = np.maximum(points.max(axis=0) - np.maximum(start, end), np.minimum(start, end) - points.min(axis=0))
    if overshoot.max() > max(bounce_px, 0.6 * np.linalg.norm(net)):
        return "bouncing"
    angle = math.degrees(math.atan2(net[1], net[0])) % 360.0
    return DIRECTIONS[int(((angle + 22.5) % 360.0) // 45.0)]


def motion(frames: torch.Tensor) -> str:
    """Motion of the object in a clip (see ``classify_track``)."""
    return classify_track(centroids(frames))


def centroid_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over frames of the distance (px) between the two clips' object centroids; inf if no frame has both."""
    ta, tb = centroids(a), centroids(b)
    d = (ta - tb).norm(dim=1)
    d = d[torch.isfinite(d)]
    return float(d.mean()) if len(d) else float("inf")


def shape_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over frames of the IoU of the two clips' object masks (each against its own background, so the object's
    colour does not matter): 1 for the same shape in the same place. Frames where neither clip has an object are
    skipped; ``nan`` when no frame has one."""
    if a.shape != b.shape:
        raise ValueError(f"clips differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    ma, mb = object_masks(a), object_masks(b)  # [F, H, W] each
    union = (ma | mb).sum(dim=(1, 2)).double()
    inter = (ma & mb).sum(dim=(1, 2)).double()
    seen = union > 0
    return float((inter[seen] / union[seen]).mean()) if seen.any() else float("nan")


def background_psnr(a: torch.Tensor, b: torch.Tensor, dilate: int = 2) -> float:
    """PSNR (dB, data range of [-1, 1]) between two clips over the pixels outside both clips' object masks.

    The masks of ``a`` and ``b`` are united per frame and grown by ``dilate`` pixels (blurred edges are not
    background); ``inf`` when the remaining pixels are identical.
    """
    if a.shape != b.shape:
        raise ValueError(f"clips differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    masks = (object_masks(a) | object_masks(b)).float()[:, None]  # [F, 1, H, W]
    if dilate > 0:
        masks = F.max_pool2d(masks, 2 * dilate + 1, stride=1, padding=dilate)
    keep = masks[:, 0] < 0.5  # [F, H, W]
    if not keep.any():
        return float("nan")
    diff = (a.detach().cpu().double() - b.detach().cpu().double()).permute(0, 2, 3, 1)[keep]  # [N, 3]
    mse = float((diff**2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(4.0 / mse)
