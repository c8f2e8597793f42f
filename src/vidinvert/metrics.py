"""Reconstruction metrics for clips: PSNR, SSIM and relative error, in pure torch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vidinvert.errors import VidinvertError

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
