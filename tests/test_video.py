"""Tests for vidinvert.video (reading, frame selection, resizing, helpers) and vidinvert.export (writing).

Unusable or unusual input files (missing, empty, truncated, not a video, too few frames, odd formats) are in
test_bad_videos.py; the one-line-error check and the frame-numbered clips are shared from conftest.py.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidinvert import video
from vidinvert.metrics import psnr
from vidinvert import export
from vidinvert.export import side_by_side, write_video
from vidinvert.video import Clip, frames_hash, read_video, to_uint8

from conftest import assert_one_line_error, numbered, numbers_of

BITS = 10  # frame numbers up to 1023 are drawn as 10 black/white columns (conftest.numbered)
ASSET = Path(video.__file__).parent / "assets" / "sample.mp4"


def smooth_frames(count: int, height: int, width: int) -> torch.Tensor:
    """float [F, 3, H, W] in [-1, 1]: slowly moving colour gradients (easy for H.264)."""
    ys = torch.linspace(-1, 1, height)[:, None]
    xs = torch.linspace(-1, 1, width)[None, :]
    frames = []
    for t in range(count):
        shift = 0.1 * t
        frames.append(torch.stack([
            0.8 * torch.sin(2 * xs + shift) * torch.ones_like(ys),
            0.8 * torch.cos(2 * ys - shift) * torch.ones_like(xs),
            0.5 * (xs * ys),
        ]))
    return torch.stack(frames)  # [F, 3, H, W]


@pytest.fixture(scope="module")
def coded30(tmp_path_factory) -> Path:
    return write_video(numbered(30, width=80, bits=BITS), tmp_path_factory.mktemp("v") / "coded30.mp4", fps=12.0)


@pytest.fixture(scope="module")
def coded600(tmp_path_factory) -> Path:
    return write_video(numbered(600, 16, 80, bits=BITS), tmp_path_factory.mktemp("v") / "coded600.mp4")


# ----------------------------------------------------------------------------- reading


def test_round_trip_keeps_count_size_fps_and_pixels(tmp_path):
    frames = smooth_frames(17, 64, 96)
    path = write_video(frames, tmp_path / "smooth.mp4", fps=12.0)
    clip = read_video(path)
    assert isinstance(clip, Clip)
    assert clip.frames.shape == (17, 3, 64, 96)
    assert clip.frames.dtype == torch.float32
    assert clip.fps == pytest.approx(12.0)
    assert clip.source == str(path)
    assert clip.source_size == (64, 96)
    assert clip.indices == tuple(range(17))
    assert -1.0 <= clip.frames.min() and clip.frames.max() <= 1.0
    assert psnr(clip.frames, frames) > 30


def test_bundled_sample_reads_as_documented():
    assert ASSET.stat().st_size < 200_000
    clip = read_video(ASSET)
    assert clip.frames.shape == (33, 3, 128, 128)
    assert clip.fps == pytest.approx(8.0)


@pytest.mark.parametrize(
    "options, expected",
    [
        ({}, range(0, 29)),  # 30 fit in 49 -> all, then 4k+1 -> 29
        ({"skip_start": 2, "skip_end": 3}, range(2, 27)),  # 25 left = 4*6 + 1: all
        ({"stride": 2}, range(0, 25, 2)),  # 15 -> 13
        ({"stride": 2, "max_frames": 5}, range(0, 10, 2)),
        ({"skip_start": 5, "stride": 3}, range(5, 30, 3)),  # 9 = 4*2 + 1
        ({"skip_end": 10, "stride": 4}, range(0, 20, 4)),  # 5
        ({"max_frames": 9}, range(0, 27, 3)),  # auto stride 30 // 9 = 3
        ({"max_frames": 7, "temporal_multiple": 1}, range(0, 28, 4)),  # auto stride 4, no 4k+1
        ({"max_frames": 13, "skip_start": 4}, range(4, 30, 2)),  # 26 left: auto stride 2 -> 13
    ],
)
def test_frame_selection(coded30, options, expected):
    clip = read_video(coded30, **options)
    assert clip.indices == tuple(expected)
    assert numbers_of(clip.frames, BITS) == list(expected)


def test_auto_stride_divides_fps(coded30):
    clip = read_video(coded30, max_frames=9)
    assert clip.fps == pytest.approx(12.0 / 3)
    assert read_video(coded30, stride=2).fps == pytest.approx(6.0)
    assert read_video(coded30).fps == pytest.approx(12.0)


def test_frame_count_by_demuxing_when_header_has_none(tmp_path):
    path = write_video(numbered(30, width=80, bits=BITS), tmp_path / "coded.mkv")
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # Matroska stores no count
    clip = read_video(path, skip_end=5, max_frames=9)  # 25 left, auto stride 2
    assert clip.indices == tuple(range(0, 18, 2))
    assert numbers_of(clip.frames, BITS) == list(range(0, 18, 2))


def test_decoding_stops_early_with_skip_and_auto_stride(coded600, decode_counter):
    clip = read_video(coded600, skip_start=100, max_frames=5, stride=1)
    assert clip.indices == tuple(range(100, 105))
    assert numbers_of(clip.frames, BITS) == list(range(100, 105))
    assert decode_counter.n == 105
    decode_counter.n = 0
    clip = read_video(coded600, max_frames=9)  # auto stride 600 // 9 = 66
    assert clip.indices == tuple(range(0, 529, 66))
    assert decode_counter.n == 529


def test_resize_stretch_and_aspect(tmp_path):
    path = write_video(smooth_frames(5, 72, 100), tmp_path / "s.mp4")
    assert read_video(path).frames.shape[-2:] == (64, 96)  # rounded down to 16
    assert read_video(path).source_size == (72, 100)
    assert read_video(path, 32, 64).frames.shape[-2:] == (32, 64)
    assert read_video(path, height=32).frames.shape[-2:] == (32, 48)  # 100 * 32 / 72 = 44 -> 48
    assert read_video(path, width=48).frames.shape[-2:] == (32, 48)
    assert read_video(path, 48, 48, resize="crop").frames.shape[-2:] == (48, 48)
    assert read_video(path, 96, 32, resize="crop").frames.shape[-2:] == (96, 32)
    assert read_video(path, multiple=1).frames.shape[-2:] == (72, 100)


def test_crop_keeps_the_centre(tmp_path):
    frames = np.zeros((5, 64, 128, 3), np.uint8)
    frames[:, 24:40, 56:72] = (255, 0, 0)  # red marker in the centre
    frames[:, :, :16] = (0, 255, 0)  # green bars at the sides
    frames[:, :, -16:] = (0, 255, 0)
    path = write_video(frames, tmp_path / "marker.mp4")
    cropped = to_uint8(read_video(path, 64, 64, resize="crop").frames)  # [F, 64, 64, 3]
    assert cropped[:, 28:36, 28:36, 0].min() > 200  # red still in the middle
    assert cropped[:, :, :, 1].max() < 60  # no green left
    stretched = to_uint8(read_video(path, 64, 64).frames)
    assert stretched[:, 32, 2, 1].min() > 200  # stretching keeps the bars


def test_gif_write_and_read(tmp_path):
    frames = smooth_frames(9, 48, 64)
    path = write_video(frames, tmp_path / "anim.gif", fps=10.0)
    with av.open(str(path)) as container:
        assert container.format.name == "gif"
    clip = read_video(path)
    assert clip.frames.shape == (9, 3, 48, 64)
    assert clip.fps == pytest.approx(10.0)
    assert psnr(clip.frames, frames) > 25


def test_image_folder(tmp_path):
    frames = numbered(10, width=80, bits=BITS)
    for i, image in enumerate(frames):
        av.VideoFrame.from_ndarray(image, format="rgb24").save(str(tmp_path / f"frame_{i + 1}.png"))
    (tmp_path / "notes.txt").write_text("not an image")
    clip = read_video(tmp_path)
    assert clip.indices == tuple(range(9))  # 10 images -> 9 (4k + 1)
    assert numbers_of(clip.frames, BITS) == list(range(9))  # frame_10 sorts after frame_9
    assert clip.fps == pytest.approx(8.0)
    assert clip.source_size == (32, 80)
    assert read_video(tmp_path, folder_fps=24.0, stride=2).fps == pytest.approx(12.0)


def test_jpeg_folder(tmp_path):
    for i in range(5):
        av.VideoFrame.from_ndarray(numbered(5, width=80, bits=BITS)[i], format="rgb24").save(str(tmp_path / f"{i:03d}.jpg"))
    clip = read_video(tmp_path)
    assert numbers_of(clip.frames, BITS) == list(range(5))


# ----------------------------------------------------------------------------- option errors


def test_bad_options(coded30):
    assert_one_line_error(lambda: read_video(coded30, 100, 64), "height 100", "96 or 112")
    assert_one_line_error(lambda: read_video(coded30, width=8), "width 8", "16")
    assert_one_line_error(lambda: read_video(coded30, resize="zoom"), "resize", "crop")
    assert_one_line_error(lambda: read_video(coded30, stride=0), "stride")
    assert_one_line_error(lambda: read_video(coded30, max_frames=0), "max_frames")


# ----------------------------------------------------------------------------- writing


def test_write_refuses_existing_file_without_force(tmp_path):
    path = write_video(smooth_frames(3, 16, 16), tmp_path / "out.mp4")
    before = path.read_bytes()
    assert_one_line_error(lambda: write_video(smooth_frames(3, 16, 16), path), "exists", "--force")
    assert path.read_bytes() == before
    write_video(smooth_frames(5, 16, 16), path, force=True)
    assert read_video(path, min_frames=1).frames.shape[0] == 5


def test_write_rejects_bad_extension_and_shape_leaving_nothing(tmp_path):
    assert_one_line_error(lambda: write_video(smooth_frames(3, 16, 16), tmp_path / "out.avi"), ".avi", ".mp4")
    assert_one_line_error(lambda: write_video(torch.zeros(3, 16, 16), tmp_path / "out.mp4"), "shape")
    assert_one_line_error(lambda: write_video(torch.zeros(3, 4, 16, 16), tmp_path / "out.mp4"), "shape")
    assert_one_line_error(lambda: write_video(torch.zeros(3, 16, 16, 3, dtype=torch.int32), tmp_path / "o.mp4"),
                   "int32")
    assert list(tmp_path.iterdir()) == []


def test_failed_encode_removes_temp_and_keeps_old_file(tmp_path, monkeypatch):
    path = write_video(smooth_frames(3, 16, 16), tmp_path / "out.mp4")
    before = path.read_bytes()

    def broken(rgb, tmp, fps, crf):
        Path(tmp).write_bytes(b"half a video")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(export, "_encode_h264", broken)
    with pytest.raises(RuntimeError):
        write_video(smooth_frames(3, 16, 16), path, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    assert path.read_bytes() == before


def test_write_creates_folders_and_pads_odd_sizes(tmp_path):
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 33, 47, 3), dtype=np.uint8))
    path = write_video(frames, tmp_path / "a" / "b" / "odd.mp4")
    assert path == tmp_path / "a" / "b" / "odd.mp4"
    assert [p.name for p in path.parent.iterdir()] == ["odd.mp4"]
    clip = read_video(path, multiple=1, min_frames=1, temporal_multiple=1)
    assert clip.source_size == (34, 48)


@pytest.mark.parametrize("suffix", [".mov", ".mkv", ".MP4"])
def test_write_other_containers_from_uint8(tmp_path, suffix):
    frames = to_uint8(smooth_frames(5, 32, 32))  # [F, H, W, 3] uint8
    path = write_video(frames, tmp_path / f"clip{suffix}", fps=24.0)
    clip = read_video(path)
    assert clip.frames.shape == (5, 3, 32, 32)
    assert clip.fps == pytest.approx(24.0)


def test_write_fractional_fps(tmp_path):
    path = write_video(smooth_frames(5, 16, 16), tmp_path / "ntsc.mp4", fps=30000 / 1001)
    assert read_video(path).fps == pytest.approx(29.97, abs=0.01)


# A fresh process that writes the frames of argv[1] to argv[2], on the CPUs listed in argv[3] (if it can).
_WRITE_IN_CHILD = """
import os, sys
import numpy as np
if sys.argv[3] and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {int(cpu) for cpu in sys.argv[3].split(",")})
from vidinvert.export import write_video
write_video(np.load(sys.argv[1]), sys.argv[2])
"""


def test_write_same_frames_same_bytes_across_processes(tmp_path):
    """The same frames give the same mp4 bytes in fresh processes, whatever the heap holds and however many CPUs
    the process may use. Before: x264's AVX-512 macroblock-tree code read an uninitialised buffer whenever the width
    was not a multiple of 128 pixels (e.g. 64: the demo's size; 720), and x264 chose its thread count from the CPUs.
    MALLOC_PERTURB_ (glibc) fills fresh heap memory with a byte, as a long run leaves it dirty."""
    source = tmp_path / "frames.npy"
    # [F, H, W, 3]: 96 px wide = 6 macroblocks (not a multiple of 8); 128 high, so that x264 would use 2 threads
    np.save(source, to_uint8(smooth_frames(9, 128, 96)))
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    src = str(Path(export.__file__).parents[1])
    runs = [("a.mp4", None, ""), ("b.mp4", "165", str(cpus[0]) if len(cpus) > 1 else "")]
    children = []
    for name, perturb, only in runs:
        env = {key: value for key, value in os.environ.items() if key != "MALLOC_PERTURB_"}
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        if perturb:
            env["MALLOC_PERTURB_"] = perturb
        children.append(subprocess.Popen([sys.executable, "-c", _WRITE_IN_CHILD, str(source), str(tmp_path / name),
                                          only], env=env, stderr=subprocess.PIPE, text=True))
    for child in children:
        assert child.wait(timeout=120) == 0, child.stderr.read()
    first, second = ((tmp_path / name).read_bytes() for name, _, _ in runs)
    assert first == second
    with av.open(str(tmp_path / "a.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.format.name) == ("h264", "yuv420p")


# ----------------------------------------------------------------------------- helpers


def test_to_uint8():
    frames = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 1, 4).expand(1, 3, 1, 4)
    out = to_uint8(frames)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 4, 3)
    assert out[0, 0, :, 0].tolist() == [0, 128, 255, 255]


def test_frames_hash_is_stable_and_shape_aware(coded30):
    first, second = read_video(coded30), read_video(coded30)
    assert frames_hash(first.frames) == frames_hash(second.frames)
    assert len(frames_hash(first.frames)) == 64
    assert frames_hash(first.frames) != frames_hash(first.frames[:-4])
    zeros = torch.zeros(2, 3, 4, 4)
    assert frames_hash(zeros) != frames_hash(zeros.reshape(4, 3, 2, 4))
    assert frames_hash(zeros) == frames_hash(zeros + 1e-4)  # same after quantising


def test_side_by_side():
    left = -torch.ones(5, 3, 32, 48)
    right = torch.zeros(3, 3, 16, 16)
    both = side_by_side(left, right, gap=4)
    assert both.shape == (3, 3, 32, 48 + 4 + 32)  # right scaled to height 32 -> width 32
    assert torch.all(both[..., 48:52] == 1.0)  # white gap
    assert torch.all(both[..., :48] == -1.0)
    assert torch.allclose(both[..., 52:], torch.zeros(1))
    assert_one_line_error(lambda: side_by_side(left, torch.zeros(5, 1, 32, 48)), "beside")


def test_psnr_helper_sanity():
    assert math.isinf(psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)))
