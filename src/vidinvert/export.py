"""Video output: write frames as H.264 or GIF (atomically), and put two clips side by side.

Encoding uses PyAV. A file appears complete or not at all: frames go to a temporary file in the target folder,
renamed into place when the encoder has finished; an existing file is only replaced with ``force``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
import platform
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_write
from .errors import VidinvertError
from .video import AV_ERRORS, reason, to_uint8

H264_SUFFIXES = (".mp4", ".mov", ".mkv")  # containers written with libx264
# Encoder threads, fixed: x264's output depends on its thread count, and "auto" follows the machine's (and the
# process's CPU affinity), so the same frames would give other bytes elsewhere. Frame threads, as ffmpeg uses.
H264_THREADS = 4
X264_CPU_AVX512 = 1 << 16  # x264.h; only read on x86-64, where it means AVX-512


def write_video(
    frames: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    fps: float = 8.0,
    *,
    force: bool = False,
    crf: int = 18,
) -> Path:
    """Write frames as H.264 (.mp4/.mov/.mkv) or GIF (.gif), atomically.

    Args:
        frames: float ``[F, C, H, W]`` in [-1, 1] (C = 3 or 1), or uint8 ``[F, H, W, C]``.
        path: output file; its extension picks the format; missing folders are created.
        fps: frames per second.
        force: overwrite an existing file.
        crf: H.264 quality, 0 (lossless) to 51 (worst); 18 looks visually lossless.

    Returns:
        The written path.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in H264_SUFFIXES + (".gif",):
        raise VidinvertError(f"cannot write {path.name}: unsupported extension {suffix or '(none)'}",
                             f"use one of {', '.join(H264_SUFFIXES + ('.gif',))}")
    rgb = _as_uint8_hwc(frames)  # [F, H, W, 3]
    if not fps > 0:
        raise VidinvertError(f"fps must be > 0, got {fps!r}")
    encode = _encode_gif if suffix == ".gif" else _encode_h264
    with atomic_write(path, force) as tmp:
        try:
            encode(rgb, tmp, fps, crf)
        except AV_ERRORS as err:
            raise VidinvertError(f"could not write {path}: {reason(err)}",
                                 "check the disk has space and the folder is writable") from None
    return path


def _as_uint8_hwc(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """Validate ``frames`` and return uint8 ``[F, H, W, 3]``."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if not isinstance(frames, torch.Tensor):
        raise VidinvertError(f"frames must be a torch tensor or numpy array, got {type(frames).__name__}")
    if frames.dtype == torch.uint8:
        if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
            raise VidinvertError(f"uint8 frames must be [F, H, W, 3], got shape {list(frames.shape)}")
        rgb = frames.cpu().numpy()
    elif frames.is_floating_point():
        if frames.ndim != 4 or frames.shape[1] not in (1, 3):
            raise VidinvertError(f"float frames must be [F, 3, H, W], got shape {list(frames.shape)}")
        rgb = to_uint8(frames)
    else:
        raise VidinvertError(f"frames must be float in [-1, 1] or uint8, got {frames.dtype}")
    if 0 in rgb.shape:
        raise VidinvertError(f"no frames to write (shape {list(rgb.shape)})")
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)  # grey [F, H, W, 1] -> [F, H, W, 3]
    return np.ascontiguousarray(rgb)


def _rate(fps: float) -> Fraction:
    """fps as an exact fraction (29.97 -> 30000/1001)."""
    return Fraction(fps).limit_denominator(1001)


def _encode_h264(rgb: np.ndarray, path: str, fps: float, crf: int) -> None:
    """Encode uint8 ``[F, H, W, 3]`` with libx264 / yuv420p, padding odd sizes to even."""
    pad_h, pad_w = rgb.shape[1] % 2, rgb.shape[2] % 2
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")  # [F, H', W', 3]
    options = {} if path.lower().endswith(".mkv") else {"movflags": "+faststart"}  # index up front
    with av.open(path, "w", options=options) as out:
        stream = out.add_stream("libx264", rate=_rate(fps), options=_x264_options(crf))
        stream.height, stream.width = rgb.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_type = "FRAME"
        stream.codec_context.thread_count = H264_THREADS
        for image in rgb:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())  # flush delayed frames


def _x264_options(crf: int) -> dict[str, str]:
    """libx264 options that make the bytes a function of the frames alone: CRF, and on a CPU with AVX-512,
    x264's AVX-512 code turned off (every other SIMD level it detected is kept).

    x264's AVX-512 ``mbtree_propagate_list`` (x264 core 165, common/x86/mc-a2.asm) handles 8 macroblocks a step
    with no tail mask: when the width in macroblocks is not a multiple of 8 (any width but a multiple of 128
    pixels: 64, 720, ...), it adds propagate costs from memory past the row (an uninitialised scratch buffer) into
    the macroblock tree. Rate control then varies with leftover heap contents: other bytes, and other pixels after
    decoding, for the same frames, from one process or one call to the next. The AVX2/SSSE3 versions stop at the
    row's end.
    """
    options = {"crf": str(crf)}
    flags = _x264_cpu_flags()
    if flags is not None and flags & X264_CPU_AVX512:
        options["x264-params"] = f"asm={flags & ~X264_CPU_AVX512}"  # a number: x264 uses it as the flag set
    return options


@functools.lru_cache(maxsize=1)
def _x264_cpu_flags() -> int | None:
    """The CPU flags x264 detects on this machine (``x264_cpu_detect``, from the libx264 PyAV uses), or None when
    not on x86-64 or the library cannot be found (the encoder then keeps its own detection)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    for candidate in _x264_library_paths():
        try:
            detect = ctypes.CDLL(candidate).x264_cpu_detect
        except (OSError, AttributeError):
            continue
        detect.restype, detect.argtypes = ctypes.c_uint32, []
        return int(detect())
    return None


def _x264_library_paths() -> list[str]:
    """Where the libx264 that libavcodec loaded may be: the process's mapped files (Linux), the libraries bundled
    in PyAV's wheel, then the system's."""
    paths = []
    try:
        with open("/proc/self/maps") as maps:  # lines end with the mapped file's path, if any
            mapped = {line.split(None, 5)[-1].strip() for line in maps}
        paths += sorted(name for name in mapped if os.path.basename(name).startswith("libx264"))
    except OSError:
        pass
    package = os.path.dirname(av.__file__)
    for folder in (os.path.join(package, os.pardir, "av.libs"), os.path.join(package, ".dylibs"), package):
        paths += sorted(glob.glob(os.path.join(folder, "libx264*")))
    system = ctypes.util.find_library("x264")
    return paths + ([system] if system else [])


def _encode_gif(rgb: np.ndarray, path: str, fps: float, crf: int) -> None:
    """Encode uint8 ``[F, H, W, 3]`` as a GIF with one palette built from the whole clip (crf unused)."""
    rate = _rate(fps)
    graph = av.filter.Graph()
    source = graph.add_buffer(width=rgb.shape[2], height=rgb.shape[1], format="rgb24", time_base=1 / rate)
    split, sink = graph.add("split"), graph.add("buffersink")
    palette, apply = graph.add("palettegen", "stats_mode=full"), graph.add("paletteuse")
    source.link_to(split)
    split.link_to(palette, 0, 0)
    split.link_to(apply, 1, 0)
    palette.link_to(apply, 0, 1)
    apply.link_to(sink)
    graph.configure()
    for pts, image in enumerate(rgb):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, 1 / rate
        graph.push(frame)
    graph.push(None)  # end of input: palettegen now emits the palette
    with av.open(path, "w") as out:
        stream = out.add_stream("gif", rate=rate)
        stream.height, stream.width = rgb.shape[1:3]
        stream.pix_fmt = "pal8"
        while True:
            try:
                frame = graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def side_by_side(left: torch.Tensor, right: torch.Tensor, gap: int = 2) -> torch.Tensor:
    """Put two clips next to each other with a white gap, e.g. source | edit.

    Args:
        left: float ``[F, C, H, W]`` in [-1, 1].
        right: float ``[F2, C, H2, W2]`` in [-1, 1]; resized to height H keeping its aspect.
        gap: width of the white bar in pixels.

    Returns:
        float ``[min(F, F2), C, H, W + gap + W2']``.
    """
    if left.ndim != 4 or right.ndim != 4 or left.shape[1] != right.shape[1]:
        raise VidinvertError(f"cannot place {list(left.shape)} beside {list(right.shape)}",
                             "pass two [F, C, H, W] clips with the same channels")
    count = min(left.shape[0], right.shape[0])
    left, right = left[:count].float(), right[:count].float().to(left.device)
    height = left.shape[2]
    if right.shape[2] != height:
        width = max(1, round(right.shape[3] * height / right.shape[2]))
        right = F.interpolate(right, size=(height, width), mode="bilinear", antialias=True,
                              align_corners=False).clamp(-1.0, 1.0)  # [F, C, H, W2']
    bar = torch.ones(count, left.shape[1], height, gap, device=left.device)  # [F, C, H, gap], white
    return torch.cat([left, bar, right], dim=-1)  # [F, C, H, W + gap + W2']
