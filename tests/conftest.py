"""Shared fixtures: tiny random CogVideoX pipelines (2b- and 5b-style), built once per session, and small clips."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))
warnings.filterwarnings("ignore", message="There are modules in .* that should be kept in float32")

from vidinvert.models import VideoModel  # noqa: E402
from vidinvert.tiny import TinyConfig, build_tiny_pipeline  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """GPU and real-weight tests are opt-in: run them with ``-m gpu`` / ``-m real_weights``."""
    selected = config.getoption("-m") or ""
    for item in items:
        for marker in ("gpu", "real_weights"):
            if marker in item.keywords and marker not in selected:
                item.add_marker(pytest.mark.skip(reason=f"{marker} tests run only with -m {marker}"))


@pytest.fixture(autouse=True)
def tiny_default_model(request, monkeypatch):
    """Commands run without --model use the tiny random model in tests (exact-maths checks need it), except in
    tests marked ``demo_default``, which check the shipped default itself."""
    if request.node.get_closest_marker("demo_default") is None:
        monkeypatch.setattr("vidinvert.models.registry.default_model", lambda: "tiny")


@pytest.fixture(scope="session")
def tiny_pipes():
    """``{"2b": pipe, "5b": pipe}``: tiny random pipelines in float32 on the CPU."""
    return {style: build_tiny_pipeline(TinyConfig(style=style)) for style in ("2b", "5b")}


@pytest.fixture(params=["2b", "5b"])
def tiny_model(request, tiny_pipes) -> VideoModel:
    """A ``VideoModel`` over each tiny style in turn."""
    return VideoModel(tiny_pipes[request.param], name=f"tiny-{request.param}")


@pytest.fixture
def frames() -> torch.Tensor:
    """A deterministic smooth 9-frame 64x64 clip ``[F, C, H, W]`` in [-1, 1] with a moving bright square."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    clip = []
    for f in range(9):
        background = torch.stack([0.6 * ys, 0.4 * xs, -0.3 + 0.2 * ys * xs])  # [3, 64, 64]
        square = ((xs - (-0.6 + 0.12 * f)).abs() < 0.25) & (ys.abs() < 0.25)
        frame = torch.where(square, torch.tensor([0.9, -0.8, -0.8]).view(3, 1, 1), background)
        clip.append(frame)
    return torch.stack(clip).float()  # [9, 3, 64, 64]
