"""Metrics for clips: reconstruction (PSNR, SSIM, relative error, in pure torch) and temporal (warp error, motion
fidelity, window-seam score, on pixels with OpenCV's DIS optical flow).

The temporal metrics judge a result against the source it was made from, using the source's motion as the
reference: the result should move the way the source moves (motion fidelity) and, carried along the source's
flow, each result frame should land on the next one (warp error). Window borders (where a long clip's temporal
windows meet) are passed in as frame indices, so this module knows nothing of how windows are made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vidinvert.errors import VidinvertError
from vidinvert.video import to_uint8

SSIM_WINDOW = 11  # Gaussian window size (shrunk for frames smaller than this)
SSIM_SIGMA = 1.5  # Gaussian window standard deviation in pixels
SSIM_K1, SSIM_K2 = 0.01, 0.03  # stabilising constants from Wang et al. (2004)


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check two clips match in shape and return them as float64 on the CPU."""
    if a.shape != b.shape:
        raise VidinvertError(f"cannot compare clips of shape {list(a.shape)} and {list(b.shape)}",
                             "compare clips of the same size and length")
    return a.detach().cpu().double(), b.detach().cpu().double()


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole clip; inf when identical.

    Args:
        a: float ``[F, C, H, W]`` in [-1, 1].
        b: float ``[F, C, H, W]`` in [-1, 1], same shape as ``a``.
        data_range: max minus min possible value (2 for [-1, 1]).
    """
    a, b = _pair(a, b)
    mse = torch.mean((a - b) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps, float64 ``[size]``."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> float:
    """Mean structural similarity over frames and channels (1.0 when identical).

    Computed per frame and channel with an 11x11 Gaussian window (sigma 1.5) over the
    valid region (no padding), then averaged.

    Args:
        a: float ``[F, C, H, W]`` in [-1, 1].
        b: float ``[F, C, H, W]`` in [-1, 1], same shape as ``a``.
        data_range: max minus min possible value (2 for [-1, 1]).
    """
    a, b = _pair(a, b)
    if a.ndim != 4:
        raise VidinvertError(f"ssim expects [F, C, H, W] clips, got shape {list(a.shape)}")
    channels = a.shape[1]
    size = min(SSIM_WINDOW, a.shape[2], a.shape[3])
    kernel = _gaussian_kernel(size, SSIM_SIGMA)
    # The 2-D Gaussian is separable: blur rows, then columns (one filter per channel).
    rows = kernel.reshape(1, 1, size, 1).expand(channels, 1, size, 1)  # [C, 1, size, 1]
    cols = kernel.reshape(1, 1, 1, size).expand(channels, 1, 1, size)  # [C, 1, 1, size]

    def blur(x: torch.Tensor) -> torch.Tensor:  # [1, C, H, W] -> [1, C, H-size+1, W-size+1]
        return F.conv2d(F.conv2d(x, rows, groups=channels), cols, groups=channels)

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    scores = []
    for x, y in zip(a.split(1), b.split(1)):  # one frame at a time keeps memory small
        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x**2
        var_y = blur(y * y) - mu_y**2
        cov = blur(x * y) - mu_x * mu_y
        score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        scores.append(score.mean())  # mean over channels and window positions
    return torch.stack(scores).mean().item()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` (Frobenius norms); 0 when equal, inf when b is zero and a is not.

    Args:
        a: float tensor of any shape, e.g. reconstructed latents ``[F, C, H, W]``.
        b: float tensor of the same shape: the reference.
    """
    a, b = _pair(a, b)
    diff, ref = torch.linalg.vector_norm(a - b).item(), torch.linalg.vector_norm(b).item()
    if ref == 0:
        return 0.0 if diff == 0 else float("inf")
    return diff / ref


# ---- temporal metrics -----------------------------------------------------------------------------------------
FLOW_PRESET = "fast"  # DIS preset (ultrafast, fast, medium); "fast" is the most accurate of the three on 64x64 frames
MIN_FLOW_SIDE = 16  # smallest frame side DIS works on (its patches are 8 px)
CONSISTENCY_ALPHA, CONSISTENCY_BETA = 0.01, 0.5  # forward-backward check of Sundaram et al. (2010), in px^2
SEAM_EPS = 1e-4  # added to both sides of the seam ratio, so two (near-)zero warp errors give 1, not 0/0


@dataclass(frozen=True)
class Flow:
    """Optical flow between consecutive frames of a clip, both ways, in pixels.

    ``forward[t]`` carries frame t onto t+1: the pixel at (x, y) of frame t is at
    ``(x + forward[t, y, x, 0], y + forward[t, y, x, 1])`` in frame t+1; ``backward[t]`` carries frame t+1 onto t.
    """

    forward: np.ndarray  # float32 [F-1, H, W, 2], (dx, dy)
    backward: np.ndarray  # float32 [F-1, H, W, 2], (dx, dy)

    @property
    def pairs(self) -> int:
        return self.forward.shape[0]


def _as_rgb_uint8(frames: torch.Tensor | np.ndarray, name: str = "frames") -> np.ndarray:
    """Frames as uint8 ``[F, H, W, 3]``: float ``[F, 3, H, W]`` in [-1, 1] (torch), or uint8 ``[F, H, W, 3]``."""
    if isinstance(frames, torch.Tensor) and frames.is_floating_point():
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise VidinvertError(f"{name} must be float [F, 3, H, W] in [-1, 1], got shape {list(frames.shape)}")
        return to_uint8(frames)  # [F, H, W, 3]
    array = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[3] != 3:
        raise VidinvertError(f"{name} must be float [F, 3, H, W] in [-1, 1] or uint8 [F, H, W, 3], got "
                             f"{array.dtype} of shape {list(array.shape)}")
    return array


def _check_temporal(array: np.ndarray, name: str) -> None:
    count, height, width = array.shape[:3]
    if count < 2:
        raise VidinvertError(f"temporal metrics need at least 2 frames, {name} has {count}")
    if min(height, width) < MIN_FLOW_SIDE:
        raise VidinvertError(f"temporal metrics need frames of at least {MIN_FLOW_SIDE}x{MIN_FLOW_SIDE}, {name} is "
                             f"{height}x{width}")


def _same_shape(result: np.ndarray, source: np.ndarray) -> None:
    if result.shape != source.shape:
        raise VidinvertError(f"cannot compare a result of {result.shape[0]} frames of {result.shape[1]}x"
                             f"{result.shape[2]} with a source of {source.shape[0]} frames of {source.shape[1]}x"
                             f"{source.shape[2]}", "compare clips of the same size and length")


def optical_flow(frames: torch.Tensor | np.ndarray) -> Flow:
    """DIS optical flow (OpenCV, ``FLOW_PRESET``) between consecutive frames, forward and backward, on grey levels.

    Args:
        frames: float ``[F, 3, H, W]`` RGB in [-1, 1], or uint8 numpy ``[F, H, W, 3]`` RGB; F >= 2 and
            H, W >= ``MIN_FLOW_SIDE``.
    """
    import cv2

    rgb = _as_rgb_uint8(frames)
    _check_temporal(rgb, "the clip")
    grey = [cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) for frame in rgb]  # F x [H, W] uint8
    dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOpticalFlow_PRESET_{FLOW_PRESET.upper()}"))
    forward = np.stack([dis.calc(grey[t], grey[t + 1], None) for t in range(len(grey) - 1)])  # [F-1, H, W, 2]
    backward = np.stack([dis.calc(grey[t + 1], grey[t], None) for t in range(len(grey) - 1)])  # [F-1, H, W, 2]
    return Flow(forward.astype(np.float32), backward.astype(np.float32))


def _sample(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` read at ``(x, y) + flow(x, y)`` (bilinear), and where that point lies inside the frame.

    Args:
        image: float32 ``[H, W]`` or ``[H, W, C]``.
        flow: float32 ``[H, W, 2]``, (dx, dy) in pixels.

    Returns:
        ``(sampled, inside)``: float32 of ``image``'s layout, bool ``[H, W]``.
    """
    import cv2

    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]  # [H, W] each
    sampled = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return sampled, inside


def consistency_mask(flow: np.ndarray, reverse: np.ndarray) -> np.ndarray:
    """Where ``flow`` is trusted: its target lies in the frame and the ``reverse`` flow there leads back.

    The forward-backward check of Sundaram et al. (2010): a pixel p is kept when
    ``|w(p) + w'(p + w(p))|^2 < alpha (|w(p)|^2 + |w'(p + w(p))|^2) + beta``; occluded or badly matched pixels fail.

    Args:
        flow: float32 ``[H, W, 2]`` from frame a to frame b.
        reverse: float32 ``[H, W, 2]`` from frame b to frame a.

    Returns:
        bool ``[H, W]`` over frame a.
    """
    back, inside = _sample(reverse, flow)  # [H, W, 2]: the reverse flow where each pixel lands
    gap = np.sum((flow + back) ** 2, axis=-1)
    bound = CONSISTENCY_ALPHA * (np.sum(flow**2, axis=-1) + np.sum(back**2, axis=-1)) + CONSISTENCY_BETA
    return inside & (gap < bound)


def warp_errors(result: torch.Tensor | np.ndarray, source: torch.Tensor | np.ndarray,
                source_flow: Flow | None = None) -> list[float]:
    """Per frame pair, how far result frame t, carried along the SOURCE's flow, lands from result frame t+1.

    Each pixel q of frame t+1 is read from frame t at ``q + backward[t](q)``; the mean absolute difference over
    RGB and over the pixels where the source's flow is consistent (``consistency_mask``) is the pair's error, in
    [0, 1] units (1 = black against white). A result that follows the source's motion without flicker scores
    near 0; the source against itself scores its flow's own error (small on textured frames).

    Args:
        result: float ``[F, 3, H, W]`` in [-1, 1], or uint8 ``[F, H, W, 3]``.
        source: the clip ``result`` was made from, in either layout, the same frame count and size.
        source_flow: ``optical_flow(source)``, when already computed (several results of one source).

    Returns:
        F-1 floats; NaN for a pair where no pixel passes the consistency check.
    """
    result_rgb, source_rgb = _as_rgb_uint8(result, "the result"), _as_rgb_uint8(source, "the source")
    _same_shape(result_rgb, source_rgb)
    _check_temporal(result_rgb, "the result")
    flow = source_flow or optical_flow(source_rgb)
    if flow.forward.shape[:3] != (result_rgb.shape[0] - 1, *result_rgb.shape[1:3]):
        raise VidinvertError("source_flow does not belong to a clip of the result's size and length")
    frames = result_rgb.astype(np.float32) / 255.0  # [F, H, W, 3] in [0, 1]
    errors = []
    for t in range(flow.pairs):
        warped, _ = _sample(frames[t], flow.backward[t])  # frame t seen from frame t+1, [H, W, 3]
        mask = consistency_mask(flow.backward[t], flow.forward[t])  # [H, W] over frame t+1
        diff = np.abs(warped - frames[t + 1]).mean(axis=-1)  # [H, W]
        errors.append(float(diff[mask].mean()) if mask.any() else float("nan"))
    return errors


def warp_error(result: torch.Tensor | np.ndarray, source: torch.Tensor | np.ndarray,
               source_flow: Flow | None = None) -> float:
    """Mean of ``warp_errors`` over the frame pairs (NaN pairs skipped; NaN if all are), in [0, 1] units."""
    return _nanmean(warp_errors(result, source, source_flow))


def _nanmean(values: list[float]) -> float:
    """Mean of the non-NaN ``values``; NaN if there are none."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def motion_fidelity(result: torch.Tensor | np.ndarray, source: torch.Tensor | np.ndarray,
                    source_flow: Flow | None = None, result_flow: Flow | None = None) -> float:
    """Mean end-point error, in pixels, between the result's forward flow and the source's, over the pixels where
    the source's flow is consistent: 0 when the result moves exactly as the source does.

    Args:
        result: float ``[F, 3, H, W]`` in [-1, 1], or uint8 ``[F, H, W, 3]``.
        source: the clip ``result`` was made from, in either layout, the same frame count and size.
        source_flow, result_flow: ``optical_flow`` of each, when already computed.
    """
    result_rgb, source_rgb = _as_rgb_uint8(result, "the result"), _as_rgb_uint8(source, "the source")
    _same_shape(result_rgb, source_rgb)
    ours, theirs = result_flow or optical_flow(result_rgb), source_flow or optical_flow(source_rgb)
    if ours.forward.shape != theirs.forward.shape or ours.forward.shape[1:3] != result_rgb.shape[1:3]:
        raise VidinvertError("precomputed flows do not belong to clips of the result's size and length")
    total, count = 0.0, 0
    for t in range(theirs.pairs):
        mask = consistency_mask(theirs.forward[t], theirs.backward[t])  # [H, W] over frame t
        epe = np.linalg.norm(ours.forward[t] - theirs.forward[t], axis=-1)  # [H, W] in px
        total, count = total + float(epe[mask].sum()), count + int(mask.sum())
    return total / count if count else float("nan")


def _border_pairs(borders: list[int] | tuple[int, ...], count: int) -> list[int]:
    """Indices of the frame pairs (t, t+1) that straddle a border; a border b is between frames b-1 and b."""
    pairs = []
    for border in borders:
        if not isinstance(border, (int, np.integer)) or not 0 < border < count:
            raise VidinvertError(f"a window border must be a frame index in 1..{count - 1}, got {border!r}",
                                 "give the index of the first frame of each window after the first")
        pairs.append(int(border) - 1)
    return sorted(set(pairs))


def seam_score(result: torch.Tensor | np.ndarray, source: torch.Tensor | np.ndarray,
               borders: list[int] | tuple[int, ...] = (), source_flow: Flow | None = None,
               errors: list[float] | None = None) -> float | None:
    """Warp error of the frame pairs straddling a window border over the warp error of the other pairs.

    About 1 when the borders are as smooth as the rest of the clip; above 1 when the result jumps where windows
    meet. ``SEAM_EPS`` is added to both means (two zero errors give 1).

    Args:
        result, source: as for ``warp_errors``.
        borders: frame indices b where windows meet (frame b-1 is in one window, frame b in the next); each in
            1..F-1.
        source_flow: ``optical_flow(source)``, when already computed.
        errors: ``warp_errors(result, source)``, when already computed.

    Returns:
        The ratio, or ``None`` without borders or when every pair straddles one.
    """
    count = _as_rgb_uint8(result, "the result").shape[0]
    at = _border_pairs(borders, count)
    if not at:
        return None
    errors = np.array(errors if errors is not None else warp_errors(result, source, source_flow))
    if errors.shape[0] != count - 1:
        raise VidinvertError(f"{errors.shape[0]} warp errors given for a clip of {count} frames")
    others = np.array([t not in at for t in range(count - 1)])
    if not others.any():
        return None
    border_mean, other_mean = _nanmean(list(errors[~others])), _nanmean(list(errors[others]))
    if math.isnan(border_mean) or math.isnan(other_mean):
        return None
    return float((border_mean + SEAM_EPS) / (other_mean + SEAM_EPS))


@dataclass(frozen=True)
class TemporalMetrics:
    """The temporal metrics of one result against its source (``None``: not measurable, e.g. a 1-frame clip)."""

    warp_error: float | None  # mean masked |warped result t - result t+1| along the source's flow, in [0, 1] units
    motion_fidelity: float | None  # mean end-point error of the result's flow against the source's, in pixels
    seam_score: float | None  # warp error at window borders / elsewhere; None without borders
    consistent_fraction: float | None  # share of pixels where the source's flow passed the consistency check
    pairs: int  # frame pairs measured (F - 1, or 0 when not measurable)

    def as_dict(self) -> dict:
        def tidy(value):
            return None if value is None or math.isnan(value) else float(f"{value:.6g}")

        return {"warp_error": tidy(self.warp_error), "motion_fidelity_px": tidy(self.motion_fidelity),
                "seam_score": tidy(self.seam_score), "consistent_fraction": tidy(self.consistent_fraction),
                "pairs": self.pairs}

    def describe(self) -> str:
        """One line, e.g. ``warp error 0.0123, motion error 0.41 px, seam score n/a (no window borders)``."""
        if self.pairs == 0:
            return "temporal metrics n/a (needs 2 or more frames of at least 16x16)"
        values = self.as_dict()

        def show(value, unit=""):
            return "n/a" if value is None else f"{value:.4g}{unit}"

        seam = show(values["seam_score"]) if self.seam_score is not None else "n/a (no window borders)"
        return (f"warp error {show(values['warp_error'])}, motion error {show(values['motion_fidelity_px'], ' px')}, "
                f"seam score {seam}, consistent pixels {show(values['consistent_fraction'])}")


def temporal_metrics(result: torch.Tensor | np.ndarray, source: torch.Tensor | np.ndarray,
                     borders: list[int] | tuple[int, ...] = (), source_flow: Flow | None = None) -> TemporalMetrics:
    """Warp error, motion fidelity and seam score of ``result`` against ``source``, each flow computed once.

    A clip too short or too small for optical flow (fewer than 2 frames, a side under ``MIN_FLOW_SIDE``) gives
    metrics of ``None`` and ``pairs == 0`` rather than an error, so a job does not fail after its model work;
    mismatched clips and bad borders raise.

    Args:
        result: float ``[F, 3, H, W]`` in [-1, 1], or uint8 ``[F, H, W, 3]``.
        source: the clip ``result`` was made from, in either layout, the same frame count and size.
        borders: frame indices where temporal windows meet (see ``seam_score``); empty: seam score ``None``.
        source_flow: ``optical_flow(source)``, when already computed (several results of one source).
    """
    result_rgb, source_rgb = _as_rgb_uint8(result, "the result"), _as_rgb_uint8(source, "the source")
    _same_shape(result_rgb, source_rgb)
    count, height, width = result_rgb.shape[:3]
    if count < 2 or min(height, width) < MIN_FLOW_SIDE:
        return TemporalMetrics(None, None, None, None, 0)
    flow = source_flow or optical_flow(source_rgb)
    errors = warp_errors(result_rgb, source_rgb, flow)
    masks = [consistency_mask(flow.backward[t], flow.forward[t]) for t in range(flow.pairs)]  # over frames t+1
    return TemporalMetrics(
        warp_error=_nanmean(errors),
        motion_fidelity=motion_fidelity(result_rgb, source_rgb, flow),
        seam_score=seam_score(result_rgb, source_rgb, borders, flow, errors),
        consistent_fraction=float(np.mean(masks)),
        pairs=flow.pairs,
    )
