"""Shared fixtures and helpers: tiny random CogVideoX pipelines (2b- and 5b-style), built once per session, small
clips, frame-numbered videos, and the one-line-error check every user-facing failure must pass.

Helpers are imported by test files as ``from conftest import assert_one_line_error`` (tests/ is on ``sys.path``).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))
warnings.filterwarnings("ignore", message="There are modules in .* that should be kept in float32")

from vidinvert import video  # noqa: E402
from vidinvert.errors import VidinvertError  # noqa: E402
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


def moving_square(height: int = 64, width: int = 64, count: int = 9) -> torch.Tensor:
    """A deterministic smooth clip ``[F, C, H, W]`` in [-1, 1] with a moving bright square."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    clip = []
    for f in range(count):
        background = torch.stack([0.6 * ys, 0.4 * xs, -0.3 + 0.2 * ys * xs])  # [3, H, W]
        square = ((xs - (-0.6 + 0.12 * f)).abs() < 0.25) & (ys.abs() < 0.25)
        clip.append(torch.where(square, torch.tensor([0.9, -0.8, -0.8]).view(3, 1, 1), background))
    return torch.stack(clip).float()  # [F, 3, H, W]


@pytest.fixture
def frames() -> torch.Tensor:
    """The 9-frame 64x64 moving-square clip."""
    return moving_square()


@pytest.fixture(scope="session")
def clip97(tmp_path_factory):
    """A 97-frame 32x32 mp4 at 8 fps (written with PyAV): longer than every tiny model's default frames (49 for
    CogVideoX, 81 for Wan) and trained window, so a windowed job is several windows."""
    from vidinvert.export import write_video

    return write_video(moving_square(32, 32, 97), tmp_path_factory.mktemp("clip97") / "clip97.mp4", fps=8.0)


@pytest.fixture
def no_model(monkeypatch):
    """Jobs may not open a model: ``engine.run.load_model`` fails the test (for refusals due before any model work)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the request was refused")

    monkeypatch.setattr("vidinvert.engine.run.load_model", refuse)


# ----------------------------------------------------------------------------- helpers


def assert_one_line(err: BaseException, *words: str) -> str:
    """``err`` is a ``VidinvertError`` whose message is one line with no surrounding whitespace, contains every
    word (case-insensitive) and carries no chained traceback. Returns the message."""
    assert isinstance(err, VidinvertError), repr(err)
    message = str(err)
    assert message and "\n" not in message and "\r" not in message and message.strip() == message, repr(message)
    for word in words:
        assert word.lower() in message.lower(), message
    assert err.__cause__ is None
    assert err.__context__ is None or err.__suppress_context__
    return message


def assert_one_line_error(call, *words: str) -> str:
    """Run ``call``; it must raise a ``VidinvertError`` that passes ``assert_one_line``. Returns the message."""
    with pytest.raises(VidinvertError) as info:
        call()
    return assert_one_line(info.value, *words)


def numbered(count: int, height: int = 32, width: int = 64, bits: int = 8) -> np.ndarray:
    """uint8 [F, H, W, 3]: frame i shows i in binary as ``bits`` black/white columns (lossy-codec safe)."""
    frames = np.zeros((count, height, width, 3), np.uint8)
    column = width // bits
    for i in range(count):
        for bit in range(bits):
            if i >> bit & 1:
                frames[i, :, bit * column:(bit + 1) * column] = 255
    return frames


def numbers_of(frames: torch.Tensor, bits: int = 8) -> list[int]:
    """Read back the numbers drawn by ``numbered`` from float [F, 3, H, W] frames."""
    count, _, _, width = frames.shape
    column = width // bits
    columns = frames[..., :bits * column].mean(dim=(1, 2)).reshape(count, bits, column).mean(-1)  # [F, bits]
    return ((columns > 0).long() * (2 ** torch.arange(bits))).sum(-1).tolist()


class DecodeCount:
    """How many frames read_video pulled from the decoder (a plain int: counting must not allocate)."""

    n = 0


@pytest.fixture()
def decode_counter(monkeypatch) -> DecodeCount:
    """Count frames pulled through the ``video._decode`` hook."""
    count = DecodeCount()
    original = video._decode

    def counting(container, stream):
        for frame in original(container, stream):
            count.n += 1
            yield frame

    monkeypatch.setattr(video, "_decode", counting)
    return count


@pytest.fixture(scope="session")
def pipes():
    """Tiny pipelines by name, built on first use (float32, CPU)."""
    from vidinvert.models import load_pipeline

    built = {}

    def get(name):
        if name not in built:
            built[name] = load_pipeline(name, device="cpu")
        return built[name]

    return get
