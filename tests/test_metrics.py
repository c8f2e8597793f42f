"""Tests for vidinvert.metrics: PSNR, SSIM, relative error; temporal metrics (warp error, motion fidelity, seams)."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest
import torch

from vidinvert.errors import VidinvertError
from vidinvert.metrics import (
    TemporalMetrics,
    consistency_mask,
    motion_fidelity,
    optical_flow,
    psnr,
    relative_error,
    seam_score,
    ssim,
    temporal_metrics,
    warp_error,
    warp_errors,
)


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


# ---- temporal metrics -----------------------------------------------------------------------------------------
def moving(shifts, size=(64, 64), seed=0) -> np.ndarray:
    """A textured clip whose frame t shows a fixed random texture moved by ``shifts[t] = (dx, dy)`` pixels
    (sub-pixel allowed, the texture extends past the frame): uint8 ``[F, H, W, 3]``."""
    height, width = size
    margin = 24
    texture = np.random.default_rng(seed).random((height + 2 * margin, width + 2 * margin, 3)).astype(np.float32)
    texture = cv2.GaussianBlur(texture, (0, 0), 1.5)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    frames = []
    for dx, dy in shifts:  # frame(x, y) = texture(x + margin - dx, y + margin - dy): content moved by (dx, dy)
        shift = np.float32([[1, 0, margin - dx], [0, 1, margin - dy]])
        frame = cv2.warpAffine(texture, shift, (width, height), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
        frames.append((np.clip(frame, 0, 1) * 255).round().astype(np.uint8))
    return np.stack(frames)  # [F, H, W, 3]


def steady(dx, dy, count=6, **kwargs) -> np.ndarray:
    return moving([(dx * t, dy * t) for t in range(count)], **kwargs)


def as_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float [F, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1


@pytest.mark.parametrize("dx, dy", [(1.5, -0.75), (0.0, 2.0), (-2.25, 0.5)])
def test_flow_of_a_known_shift_is_that_shift(dx, dy):
    flow = optical_flow(steady(dx, dy))
    assert flow.forward.shape == flow.backward.shape == (5, 64, 64, 2)
    assert np.median(flow.forward[..., 0]) == pytest.approx(dx, abs=0.25)
    assert np.median(flow.forward[..., 1]) == pytest.approx(dy, abs=0.25)
    assert np.median(flow.backward[..., 0]) == pytest.approx(-dx, abs=0.25)
    assert np.median(flow.backward[..., 1]) == pytest.approx(-dy, abs=0.25)


def test_float_and_uint8_frames_give_the_same_flow():
    frames = steady(1.0, 1.0, count=3)
    assert np.array_equal(optical_flow(frames).forward, optical_flow(as_tensor(frames)).forward)


def test_consistency_mask_keeps_a_steady_shift_and_drops_what_leaves_the_frame():
    flow = optical_flow(steady(3.0, 0.0, count=2))
    mask = consistency_mask(flow.forward[0], flow.backward[0])  # over frame 0
    assert mask[:, :40].mean() > 0.95  # well inside: kept
    assert not mask[:, -2:].any()  # moved past the right edge: dropped


def test_warp_error_of_the_source_against_itself_is_about_zero():
    source = steady(1.5, -0.75)
    errors = warp_errors(source, source)
    assert len(errors) == 5 and max(errors) < 0.01  # [0, 1] units: under 2.5 grey levels
    still = moving([(0.0, 0.0)] * 4)
    assert warp_error(still, still) == pytest.approx(0.0, abs=1e-6)


def test_warp_error_sees_flicker_the_source_does_not_have():
    source = steady(1.0, 0.5)
    flicker = source.astype(np.int16) + np.array([0, 20, 0, 20, 0, 20], dtype=np.int16)[:, None, None, None]
    flicker = np.clip(flicker, 0, 255).astype(np.uint8)  # every other frame 20 grey levels brighter
    assert warp_error(flicker, source) == pytest.approx(20 / 255, rel=0.15)


def test_motion_fidelity_is_the_difference_in_motion():
    source = steady(1.0, 0.0)
    assert motion_fidelity(source, source) == pytest.approx(0.0, abs=1e-9)
    assert motion_fidelity(as_tensor(source), source) == pytest.approx(0.0, abs=1e-9)
    other = steady(2.0, 0.0, seed=1)  # moves 1 px/frame faster
    assert motion_fidelity(other, source) == pytest.approx(1.0, abs=0.25)
    diagonal = steady(1.0, 1.5, seed=2)  # same dx, 1.5 px/frame more dy
    assert motion_fidelity(diagonal, source) == pytest.approx(1.5, abs=0.25)


def test_seam_score_is_one_when_smooth_and_above_one_at_a_jump():
    source = steady(1.0, 0.5, count=8)
    noise = np.random.default_rng(3).normal(0, 6, source.shape)  # the same flicker on every frame pair
    noisy = np.clip(source + noise, 0, 255).astype(np.uint8)
    assert seam_score(noisy, source, [4]) == pytest.approx(1.0, abs=0.2)
    assert seam_score(source, source, []) is None
    jumped = moving([(1.0 * t + (3.0 if t >= 4 else 0.0), 0.5 * t) for t in range(8)])  # frames 4.. jump 3 px
    assert seam_score(jumped, source, [4]) > 3
    assert seam_score(jumped, source, [2]) < 1  # the jump is not where the border is said to be
    with pytest.raises(VidinvertError, match="1..7"):
        seam_score(source, source, [8])


def test_temporal_metrics_together():
    source = steady(1.0, 0.5, count=5)
    metrics = temporal_metrics(source, as_tensor(source), borders=[2])
    assert isinstance(metrics, TemporalMetrics) and metrics.pairs == 4
    assert metrics.motion_fidelity == 0 and metrics.warp_error < 0.01 and metrics.consistent_fraction > 0.8
    assert metrics.as_dict().keys() == {"warp_error", "motion_fidelity_px", "seam_score", "consistent_fraction",
                                        "pairs"}
    line = metrics.describe()
    assert "\n" not in line and "warp error" in line and "px" in line
    assert "no window borders" in temporal_metrics(source, source).describe()
    with pytest.raises(dataclasses.FrozenInstanceError):
        metrics.pairs = 3


def test_one_frame_and_tiny_clips_are_not_measurable():
    one = steady(1.0, 0.0, count=1)
    metrics = temporal_metrics(one, one)
    assert metrics == TemporalMetrics(None, None, None, None, 0) and "n/a" in metrics.describe()
    assert temporal_metrics(one[:, :8, :8], one[:, :8, :8]).pairs == 0
    with pytest.raises(VidinvertError, match="at least 2 frames"):
        optical_flow(one)


@pytest.mark.parametrize("result, source, match", [
    (np.zeros((3, 32, 32, 3), np.uint8), np.zeros((4, 32, 32, 3), np.uint8), "cannot compare"),
    (np.zeros((3, 32, 32, 3), np.uint8), np.zeros((3, 32, 40, 3), np.uint8), "cannot compare"),
    (np.zeros((3, 32, 32, 3), np.float32), np.zeros((3, 32, 32, 3), np.uint8), "uint8"),
    (torch.zeros(3, 1, 32, 32), torch.zeros(3, 1, 32, 32), r"\[F, 3, H, W\]"),
])
def test_bad_inputs_are_one_line_errors(result, source, match):
    for metric in (warp_error, motion_fidelity, temporal_metrics):
        with pytest.raises(VidinvertError, match=match) as caught:
            metric(result, source)
        assert "\n" not in str(caught.value)
