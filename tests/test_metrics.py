"""Tests for vidinvert.metrics: PSNR, SSIM, relative error."""

from __future__ import annotations

import math

import pytest
import torch

from vidinvert.errors import VidinvertError
from vidinvert.metrics import psnr, relative_error, ssim


def clip(seed: int = 0, shape=(3, 3, 32, 40)) -> torch.Tensor:
    """A smooth-ish random clip [F, C, H, W] in [-0.8, 0.8]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(shape[0], shape[1], shape[2] // 4, shape[3] // 4, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=shape[2:], mode="bilinear", align_corners=False)
    return (smooth * 2 - 1) * 0.8  # [F, C, H, W]


def test_psnr_identical_is_inf():
    a = clip()
    assert psnr(a, a.clone()) == float("inf")


def test_psnr_known_offset():
    a = torch.zeros(2, 3, 8, 8)
    signs = torch.where(torch.arange(a.numel()) % 2 == 0, 1.0, -1.0).reshape(a.shape)
    b = a + 0.1 * signs  # mse exactly 0.01
    assert psnr(a, b) == pytest.approx(10 * math.log10(4 / 0.01), abs=1e-6)
    assert psnr(a, b, data_range=1.0) == pytest.approx(10 * math.log10(1 / 0.01), abs=1e-6)


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.1])
def test_psnr_gaussian_noise_matches_analytic(sigma):
    a = clip()
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(1)) * sigma
    expected = 10 * math.log10(2.0**2 / sigma**2)
    assert psnr(a, a + noise) == pytest.approx(expected, abs=0.1)


def test_ssim_identical_is_one():
    a = clip()
    assert ssim(a, a.clone()) == pytest.approx(1.0, abs=1e-9)


def test_ssim_decreases_with_noise():
    a = clip()
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(2))
    scores = [ssim(a, a + level * noise) for level in (0.0, 0.02, 0.1, 0.3)]
    assert all(x > y for x, y in zip(scores, scores[1:])), scores
    assert -1.0 <= scores[-1] < 0.9


def test_ssim_of_constant_frames_is_analytic():
    a, b = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), -0.3)
    c1 = (0.01 * 2) ** 2
    expected = (2 * 0.2 * -0.3 + c1) / (0.2**2 + 0.3**2 + c1)  # no variance: contrast term is 1
    assert ssim(a, b) == pytest.approx(expected, abs=1e-6)


def test_ssim_tiny_frames_use_smaller_window():
    a = clip(shape=(2, 3, 4, 6))
    value = ssim(a, a * 0.9)
    assert math.isfinite(value) and 0 < value < 1
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-9)


def test_relative_error():
    b = torch.ones(2, 3, 4, 4)
    assert relative_error(b, b) == 0.0
    assert relative_error(2 * b, b) == pytest.approx(1.0)
    assert relative_error(1.1 * b, b) == pytest.approx(0.1)
    assert relative_error(torch.zeros(3), torch.zeros(3)) == 0.0
    assert relative_error(torch.ones(3), torch.zeros(3)) == float("inf")


def test_shape_mismatch_is_a_one_line_error():
    for metric in (psnr, ssim, relative_error):
        with pytest.raises(VidinvertError) as info:
            metric(torch.zeros(2, 3, 8, 8), torch.zeros(3, 3, 8, 8))
        assert "\n" not in str(info.value) and "shape" in str(info.value)


def test_ssim_single_window_matches_direct_formula():
    generator = torch.Generator().manual_seed(3)
    a = torch.rand(1, 1, 11, 11, generator=generator, dtype=torch.float64) * 2 - 1
    b = (a + 0.3 * torch.randn(a.shape, generator=generator, dtype=torch.float64)).clamp(-1, 1)
    coords = torch.arange(11, dtype=torch.float64) - 5
    weights = torch.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * 1.5**2))
    weights = weights / weights.sum()  # [11, 11]
    mu_a, mu_b = (weights * a).sum(), (weights * b).sum()
    var_a = (weights * a * a).sum() - mu_a**2
    var_b = (weights * b * b).sum() - mu_b**2
    cov = (weights * a * b).sum() - mu_a * mu_b
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    expected = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    assert ssim(a, b) == pytest.approx(expected.item(), abs=1e-10)
