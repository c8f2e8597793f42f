"""Hostile input files: each is refused with one line naming the problem and the fix, before it can hang, allocate
gigabytes or run code.

Named pipes and devices given as a video, image or saved inversion (opening a FIFO blocks until someone writes);
images declaring a huge frame in a few hundred KB; model folders whose configs declare absurd sizes; weight files
that are pickles; Ctrl-C during the start-up imports.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
import pytest

from vidinvert.cli import main
from vidinvert.export import write_video
from vidinvert.inversion import Inversion
from vidinvert.models import folder as model_folder
from vidinvert.models import load_pipeline
from vidinvert.video import MAX_SOURCE_PIXELS, read_video

from conftest import assert_one_line_error, numbered

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo") or not hasattr(signal, "SIGALRM"),
                                reason="named pipes and SIGALRM are POSIX features")

HANG_LIMIT_S = 60  # a call that blocks this long fails its test instead of hanging the run


@contextmanager
def no_hang(seconds: int = HANG_LIMIT_S):
    """Fail (TimeoutError) instead of blocking forever: SIGALRM interrupts a blocked open() in the main thread."""
    def expire(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def one_error_line(capsys) -> str:
    """stderr's one ``vidinvert: error:`` line (notes and warnings may precede it)."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("vidinvert: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert "Traceback" not in "\n".join(lines)
    return errors[0]


def png(path: Path, width: int, height: int) -> Path:
    """An all-black 8-bit greyscale PNG of any declared size, compressed (16000x16000 is ~250 KB on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compress = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the pixels
    data = b"".join(compress.compress(row) for _ in range(height)) + compress.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def huge_jpeg(path: Path, width: int, height: int) -> Path:
    """A 16x16 JPEG whose frame header (SOF0) is patched to declare ``width`` x ``height``: FFmpeg learns the size
    only by decoding."""
    frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
    frame.save(str(path))
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    return png(tmp_path_factory.mktemp("huge") / "huge.png", 16000, 16000)


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory, tiny_pipes) -> Path:
    """The tiny 5b-style pipeline saved with save_pretrained (copy it before changing it)."""
    folder = tmp_path_factory.mktemp("saved") / "tiny"
    tiny_pipes["5b"].save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_folder(saved_tiny, tmp_path) -> Path:
    return Path(shutil.copytree(saved_tiny, tmp_path / "model"))


def edit_config(path: Path, **changes) -> None:
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


# ----------------------------------------------------------------------------- named pipes and devices


@needs_fifo
def test_named_pipe_as_saved_inversion_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "clip.inv"
    os.mkfifo(fifo)
    with no_hang():
        assert_one_line_error(lambda: Inversion.load(fifo), "clip.inv is a named pipe (FIFO), not a regular file",
                              "give the .inv file")


@needs_fifo
@pytest.mark.parametrize("target", ["video.mp4", "frame.png", "clip.inv"])
def test_named_pipe_and_device_as_video_are_refused_without_blocking(tmp_path, target):
    fifo = tmp_path / target
    os.mkfifo(fifo)
    with no_hang():
        assert_one_line_error(lambda: read_video(fifo), f"{target} is a named pipe (FIFO)", "pass the video file")
        assert_one_line_error(lambda: read_video("/dev/zero"), "/dev/zero is a character device",
                              "pass the video file")


@needs_fifo
@pytest.mark.parametrize("how", ["video", "use-inversion"])
def test_cli_refuses_a_named_pipe_inversion_in_one_line(tmp_path, capsys, how):
    fifo = tmp_path / "clip.inv"
    os.mkfifo(fifo)
    video = write_video(numbered(9), tmp_path / "clip.mp4")
    args = [str(fifo)] if how == "video" else [str(video), "--use-inversion", str(fifo)]
    with no_hang():
        code = main(["edit", *args, "--prompt", "a", "--model", "tiny", "-o", str(tmp_path / "out.mp4"), "--quiet"])
    assert code == 2
    assert "clip.inv is a named pipe (FIFO), not a regular file" in one_error_line(capsys)
    assert not (tmp_path / "out.mp4").exists()


@needs_fifo
@pytest.mark.parametrize("name", ["scheduler/scheduler_config.json", "transformer/config.json",
                                  "tokenizer/tokenizer.json", "text_encoder/model.safetensors"])
def test_named_pipe_in_a_model_folder_is_refused_without_blocking(tiny_folder, name):
    (tiny_folder / name).unlink()
    os.mkfifo(tiny_folder / name)
    with no_hang():
        assert_one_line_error(lambda: load_pipeline(str(tiny_folder), device="cpu"),
                              f"{name} is a named pipe (FIFO)", "replace it with the file itself")


@needs_fifo
def test_partial_checkpoint_with_a_named_pipe_is_ignored(tmp_path):
    from vidinvert.checkpoint import KEY_FILE, InversionCheckpoint

    (tmp_path / "c.partial").mkdir()
    os.mkfifo(tmp_path / "c.partial" / KEY_FILE)
    with no_hang():
        assert InversionCheckpoint(tmp_path / "c.partial", 1, {"k": 1}).resume() is None


# ----------------------------------------------------------------------------- huge declared frame sizes


def test_huge_png_is_refused_before_decoding(huge_png, tmp_path):
    words = ["huge.png has 16000x16000 frames", "256,000,000 pixels", f"{MAX_SOURCE_PIXELS:,} pixels a frame",
             "scale it down"]
    assert_one_line_error(lambda: read_video(huge_png), *words)  # a one-image video
    for i, image in enumerate(numbered(9)):  # one frame of a folder of images
        av.VideoFrame.from_ndarray(image, format="rgb24").save(str(tmp_path / f"frame_{i:03d}.png"))
    shutil.copy(huge_png, tmp_path / "frame_004.png")
    assert_one_line_error(lambda: read_video(tmp_path), "frame_004.png has 16000x16000 frames")


def test_huge_frames_are_never_allocated(huge_png, tmp_path):
    """In a fresh process, refusing a 16000x16000 PNG and a JPEG that only declares that size in its frame header
    (FFmpeg's decoder meets the limit) adds little to the peak memory (one such frame is 256 MB grey, 768 MB RGB)."""
    jpeg = huge_jpeg(tmp_path / "huge.jpg", 16000, 16000)
    script = textwrap.dedent(f"""
        import resource
        from vidinvert.errors import VidinvertError
        from vidinvert.video import read_video
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for path in ({str(huge_png)!r}, {str(jpeg)!r}):
            try:
                read_video(path)
            except VidinvertError as err:
                print(err)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    *errors, growth_mib = done.stdout.strip().splitlines()
    assert done.returncode == 0 and len(errors) == 2, done.stderr
    assert "16000x16000" in errors[0] and "huge.jpg" in errors[1]
    assert int(growth_mib) < 100, done.stdout


def test_declared_stream_size_is_checked_before_decoding(tmp_path, monkeypatch, decode_counter):
    """The limit applies to a container's declared size as well (here lowered, so a small clip is over it)."""
    path = write_video(numbered(9), tmp_path / "clip.mp4")  # 32x64
    monkeypatch.setattr("vidinvert.video.MAX_SOURCE_PIXELS", 32 * 64 - 1)
    assert_one_line_error(lambda: read_video(path), "clip.mp4 has 32x64 frames (2,048 pixels)", "scale it down")
    assert decode_counter.n == 0


def test_cli_refuses_a_huge_png_in_one_line(huge_png, tmp_path, capsys):
    code = main(["edit", str(huge_png), "--prompt", "a", "--model", "tiny", "-o", str(tmp_path / "o.mp4"), "--quiet"])
    assert code == 2
    assert "huge.png has 16000x16000 frames" in one_error_line(capsys)


# ----------------------------------------------------------------------------- model configs


@pytest.mark.parametrize(
    "file, changes, words",
    [
        ("transformer/config.json", {"num_layers": 100000}, ["num_layers 100000", "an integer from 1 to 1,000"]),
        ("transformer/config.json", {"num_layers": -3}, ["num_layers -3", "an integer from 1 to 1,000"]),
        ("transformer/config.json", {"num_attention_heads": 0}, ["num_attention_heads 0", "a positive integer"]),
        ("transformer/config.json", {"attention_head_dim": 2.5}, ["attention_head_dim 2.5", "a positive integer"]),
        ("text_encoder/config.json", {"num_layers": -1}, ["text_encoder/config.json has num_layers -1"]),
        ("scheduler/scheduler_config.json", {"num_train_timesteps": 10**10}, ["num_train_timesteps 10000000000"]),
        ("scheduler/scheduler_config.json", {"num_train_timesteps": 0}, ["num_train_timesteps 0"]),
        ("scheduler/scheduler_config.json", {"num_train_timesteps": -5}, ["num_train_timesteps -5"]),
        ("scheduler/scheduler_config.json", {"num_train_timesteps": 1e3}, ["num_train_timesteps 1000.0"]),
    ],
)
def test_absurd_config_values_are_refused_before_building(tiny_folder, file, changes, words):
    edit_config(tiny_folder / file, **changes)
    assert_one_line_error(lambda: load_pipeline(str(tiny_folder), device="cpu"), file, *words, "fix the")


def test_weights_larger_than_memory_are_refused_before_building(tiny_folder, saved_tiny, monkeypatch):
    """64 heads of 4096: ~6 TB of transformer weights, counted on the meta device, refused on any machine."""
    edit_config(tiny_folder / "transformer/config.json", attention_head_dim=4096, num_attention_heads=64)
    message = assert_one_line_error(lambda: load_pipeline(str(tiny_folder), device="cpu"),
                                    "GiB of weights in float32", "of memory is free", "attention_head_dim")
    declared = float(message.split("declares about ")[1].split(" GiB")[0])
    assert 5000 < declared < 7000, message
    # the unchanged folder needs ~0.7 MB: refused only when even that is not free
    monkeypatch.setattr(model_folder, "available_memory", lambda device: 1000)
    assert_one_line_error(lambda: load_pipeline(str(saved_tiny), device="cpu"), "of memory is free")


def test_layer_counts_are_extrapolated_exactly(saved_tiny):
    """The count at the declared layers (3, extrapolated from 1 and 2) equals building it."""
    import diffusers
    import torch

    config = json.loads((saved_tiny / "transformer/config.json").read_text())
    count = model_folder._count_parameters("diffusers", "CogVideoXTransformer3DModel", {**config, "num_layers": 3},
                                           saved_tiny / "transformer/config.json")
    with torch.device("meta"):
        built = diffusers.CogVideoXTransformer3DModel.from_config({**config, "num_layers": 3})
    assert count == sum(t.numel() for t in built.parameters()) + sum(t.numel() for t in built.buffers())


# ----------------------------------------------------------------------------- component loaders


class _RunsCode:
    """Unpickling this would create ``marker``; torch's ``weights_only`` load must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("component, weights, pickled", [
    ("text_encoder", "model.safetensors", "pytorch_model.bin"),
    ("transformer", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    ("vae", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
])
def test_pickled_weights_are_not_run_and_fail_in_one_line(tiny_folder, tmp_path, component, weights, pickled):
    marker = tmp_path / "ran"
    (tiny_folder / component / weights).unlink()
    with open(tiny_folder / component / pickled, "wb") as handle:
        pickle.dump({"weight": _RunsCode(marker)}, handle, protocol=2)  # torch.save's protocol
    assert_one_line_error(lambda: load_pipeline(str(tiny_folder), device="cpu"), "could not load")
    assert not marker.exists()


@pytest.mark.parametrize("file, text", [
    ("tokenizer/tokenizer.json", '{"version": "1.0", "model": {"type": "Nope"}}'),
    ("scheduler/scheduler_config.json", '{"_class_name": "CogVideoXDDIMScheduler", "beta_schedule": "nope"}'),
])
def test_broken_tokenizer_and_scheduler_fail_in_one_line(tiny_folder, file, text):
    (tiny_folder / file).write_text(text)
    assert_one_line_error(lambda: load_pipeline(str(tiny_folder), device="cpu"), "could not load")


# ----------------------------------------------------------------------------- Ctrl-C at start-up

# Ctrl-C arriving while torch is imported: a finder that raises KeyboardInterrupt when torch is first imported.
INTERRUPT_TORCH_IMPORT = """
import sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
from vidinvert.cli import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize("argv", [["info"], ["edit", "clip.mp4", "--prompt", "a"]])
def test_ctrl_c_during_startup_imports_exits_130_in_one_line(argv):
    done = subprocess.run([sys.executable, "-c", INTERRUPT_TORCH_IMPORT.format(argv=argv)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.startswith("vidinvert: interrupted") and done.stderr.count("\n") == 1, done.stderr
