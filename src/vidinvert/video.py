"""Video input: read a clip into [-1, 1] frames for CogVideoX (writing is in ``export.py``).

Decoding uses PyAV. Reading picks frames the way the public CogVideo
DDIM-inversion script does (skip, stride, cap, then keep 4k + 1 frames) and stops
decoding after the last frame it needs, so memory does not grow with the video's length.

Every unusable input (missing, empty, truncated or corrupt file, a named pipe or device, audio only,
too few frames, too large a size) raises a one-line :class:`VidinvertError`, never a PyAV error.
Output sizes are capped at ``MAX_SIDE`` pixels a side and ``MAX_PIXELS`` pixels a frame; source frames at
``MAX_SOURCE_PIXELS``, checked against the size the file declares before a frame is decoded.
"""

from __future__ import annotations

import contextlib
import hashlib
import numbers
import os
import re
import stat
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.stream import Disposition

from vidinvert.errors import VidinvertError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # files a folder of frames may hold
RESIZE_MODES = ("stretch", "crop")  # stretch: straight to size; crop: cover then centre-crop
DEFAULT_FPS = 8.0  # used when a file carries no frame rate at all
MAX_FPS = 1000.0  # a container rate above this is junk (e.g. a 1/90000 time base read as a rate)
# Output size limits: far above CogVideoX's 480x720 (1.0) and 768x1360 (1.5), yet 49 float frames
# at the limit are still only ~4.9 GB. Larger sizes are refused before anything is decoded.
MAX_SIDE = 4096  # largest output height or width
MAX_PIXELS = 3840 * 2160  # largest output height * width (4K UHD)
# Largest source frame decoded: 8K (7680x4320 UHD, 8192x4320 DCI) with margin. One such frame is ~113 MB as RGB
# and ~450 MB as float; a bigger declared size (e.g. a 16000x16000 PNG that compresses to a few hundred KB) is
# refused before decoding, and FFmpeg's decoders are told the same limit (max_pixels).
MAX_SOURCE_PIXELS = 8192 * 4608
EXAMPLE_SIZE = "--height 480 --width 720"  # CogVideoX's native size, suggested in errors

# What a broken or unreadable file raises inside PyAV (UnicodeDecodeError: mangled metadata text).
AV_ERRORS = (av.FFmpegError, OSError, UnicodeDecodeError)

# Demuxers FFmpeg may use to read an input (matched against FFmpeg's format names, e.g. "mov,mp4,..."): plain
# containers, elementary streams and single images. Left out on purpose: every demuxer that opens other files or
# URLs (hls, dash, concat, imf, sdp/rtp/rtsp, ...): a file named clip.mp4 that is really a playlist could otherwise
# make us decode any video on the machine (or fetch a URL) and show it back, e.g. on the web page.
SAFE_DEMUXERS = ("mov", "matroska", "webm", "avi", "gif", "mpegts", "flv", "asf", "mpeg", "ogg", "ivf", "h264",
                 "hevc", "mjpeg", "m4v", "yuv4mpegpipe", "nut", "mxf", "obu", "av1", "webp_pipe", "apng",
                 "png_pipe", "jpeg_pipe", "image2",
                 "tty", "wav", "mp3", "aac", "flac")  # read only to say "no video stream"
# Options for every read: FFmpeg refuses other demuxers before reading the header, nested opens inherit the
# whitelists (per FFmpeg libavformat/demux.c, ff_copy_whiteblacklists), only local files are opened, and image2
# reads the one file named, never a numbered sequence or glob around it. "mov" keeps external references off.
# max_pixels keeps FFmpeg from decoding a larger frame while it probes the file (it decodes one to learn an
# image's size); the decoder proper gets it in ``_limit_decoder``.
READ_OPTIONS = {"format_whitelist": ",".join(SAFE_DEMUXERS), "protocol_whitelist": "file",
                "pattern_type": "none", "enable_drefs": "0", "max_pixels": str(MAX_SOURCE_PIXELS)}
# What a path that is not a regular file is, for the error (checked in this order; all after symlinks).
SPECIAL_FILES = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                 (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, eq=False)
class Clip:
    """Frames read from a video, with where they came from.

    Args:
        frames: float32 ``[F, C, H, W]``, RGB, values in [-1, 1].
        fps: frames per second of ``frames``: the source fps divided by the stride used.
        source: the path that was read.
        indices: source frame index of each frame in ``frames``.
        source_size: ``(height, width)`` of the source after rotation, before resizing.
    """

    frames: torch.Tensor
    fps: float
    source: str
    indices: tuple[int, ...]
    source_size: tuple[int, int]


class _Source(NamedTuple):
    """An open video or image folder: lazy frame loaders, frame count, frame rate."""

    loaders: Iterator[Callable[[], np.ndarray]]  # each returns uint8 [H, W, 3]
    total: int | None  # None when unknown and not worth counting
    fps: float


def read_video(
    path: str | os.PathLike,
    height: int | None = None,
    width: int | None = None,
    *,
    skip_start: int = 0,
    skip_end: int = 0,
    stride: int | None = None,
    max_frames: int = 49,
    resize: str = "stretch",
    multiple: int = 16,
    temporal_multiple: int = 4,
    min_frames: int = 5,
    folder_fps: float = 8.0,
) -> Clip:
    """Read a video file, GIF or folder of images into a :class:`Clip`.

    Args:
        path: a video file, a GIF, or a folder of .png/.jpg frames (sorted by name).
        height: output height; None keeps the source's (aspect-kept if only width is set).
        width: output width; None keeps the source's (aspect-kept if only height is set).
        skip_start: frames dropped from the start.
        skip_end: frames dropped from the end.
        stride: take every stride-th frame; None steps only when the range exceeds max_frames.
        max_frames: most frames to keep.
        resize: "stretch" resizes straight to size; "crop" scales to cover, then centre-crops.
        multiple: output height and width must be multiples of this (16 for CogVideoX).
        temporal_multiple: keep ``temporal_multiple * k + 1`` frames (4 for CogVideoX; 1 = any).
        min_frames: fewest frames accepted after trimming.
        folder_fps: frame rate given to a folder of images.

    Returns:
        A Clip whose ``frames`` are float32 ``[F, 3, H, W]`` in [-1, 1].

    Raises:
        VidinvertError: one line naming the problem and the fix, for a missing, empty, truncated or
            corrupt file, no video stream (audio only, cover art only), fewer than ``min_frames`` frames,
            or an output size over ``MAX_SIDE`` a side / ``MAX_PIXELS`` a frame (refused before decoding).
    """
    _check_read_args(skip_start, skip_end, stride, max_frames, resize, multiple,
                     temporal_multiple, min_frames, folder_fps)
    _check_size_limit(height, width)
    _check_multiple("height", height, multiple)
    _check_multiple("width", width, multiple)
    path = Path(path)
    need_total = skip_end > 0 or stride is None
    with _open_source(path, need_total, folder_fps) as src:
        wanted, step, picked = _plan(src.total, skip_start, skip_end, stride, max_frames,
                                     temporal_multiple)
        frames, indices, source_size, seen = _collect(
            src, wanted, path, lambda h, w: _target_size(h, w, height, width, multiple, path), resize)
    if seen == 0:
        promised = f" (its header promises {src.total})" if src.total else ""
        raise VidinvertError(f"no decodable video frames in {path}{promised}",
                             "the file looks corrupt or truncated; re-export it")
    keep = _trim(len(frames), temporal_multiple)  # the file may hold fewer frames than it said
    if keep < min_frames:
        total = src.total if src.total is not None else seen
        rule = f" (frame counts must be {temporal_multiple}k+1)" if temporal_multiple > 1 else ""
        count = sum(1 for index in picked if index < total)  # picked before trimming to 4k+1
        raise VidinvertError(
            f"only {keep} frames selected from {path} ({total} in the source, {count} picked "
            f"with --skip-frames-start {skip_start}, --skip-frames-end {skip_end}, --frame-sample-step {step}), need "
            f"at least {min_frames}{rule}",
            _too_few_fix(total, skip_start, skip_end, step, min_frames, temporal_multiple),
        )
    return Clip(
        frames=torch.stack(frames[:keep]),  # [F, 3, H, W]
        fps=src.fps / step,
        source=str(path),
        indices=tuple(indices[:keep]),
        source_size=(int(source_size[0]), int(source_size[1])),
    )


def _collect(src: _Source, wanted: range, path: Path, size_for: Callable, resize: str):
    """Decode up to the last wanted index, keeping and resizing the wanted frames.

    Args:
        src: the open source; its loaders give uint8 ``[H, W, 3]`` frames.
        wanted: source indices to keep, ascending.
        path: for error messages.
        size_for: maps the first frame's (height, width) to the output (height, width).
        resize: "stretch" or "crop".

    Returns:
        (list of float ``[3, H, W]`` frames, their indices, first frame's (h, w), frames decoded).
    """
    frames, indices, source_size, size, seen = [], [], None, None, 0
    try:
        for index, load in enumerate(src.loaders):
            seen = index + 1
            if index in wanted:
                rgb = load()  # [H, W, 3] uint8
                if source_size is None:
                    source_size = rgb.shape[:2]
                    size = size_for(*source_size)
                frames.append(_fit(_to_float(rgb), *size, resize))
                indices.append(index)
            if not wanted or index >= wanted[-1]:
                break  # everything needed is decoded: stop here
        else:
            _check_not_truncated(path, src.total, seen)
    except AV_ERRORS as err:
        raise VidinvertError(f"could not decode {path}: {reason(err)}",
                             "the file looks corrupt or truncated; re-export it") from None
    return frames, indices, source_size, seen


def _too_few_fix(total: int, skip_start: int, skip_end: int, step: int, min_frames: int,
                 temporal_multiple: int) -> str:
    """What to change when too few frames were selected: only the options that were actually in the way."""
    if total < min_frames:
        return f"use a video with at least {min_frames} frames"
    changes = []
    if skip_start or skip_end:
        changes.append("skip fewer frames")
    if step > 1:
        changes.append("use a smaller stride")
    # the frames that would be kept with stride 1 and no skips
    if not changes or _trim(total - skip_start - skip_end, temporal_multiple) < min_frames:
        changes.append(f"use a longer video (at least {min_frames} frames after skipping)")
    return ", or ".join(changes)


def _check_not_truncated(path: Path, total: int | None, decoded: int) -> None:
    """Raise when the file ran out well before the frame count its header promised.

    A few frames of slack allow for edit lists, which can hide frames the header counts.
    """
    if total is not None and 0 < decoded < total - max(2, total // 20):  # 0: read_video says so
        raise VidinvertError(f"{path} is truncated or corrupt: only {decoded} of {total} frames decode",
                             "re-export or re-download the video")


def _check_read_args(skip_start, skip_end, stride, max_frames, resize, multiple,
                     temporal_multiple, min_frames, folder_fps) -> None:
    """Reject option values that make no sense, one clear line each."""
    for name, value, low in [("skip_start", skip_start, 0), ("skip_end", skip_end, 0),
                             ("max_frames", max_frames, 1), ("multiple", multiple, 1),
                             ("temporal_multiple", temporal_multiple, 1),
                             ("min_frames", min_frames, 1)]:
        if not isinstance(value, numbers.Integral) or value < low:
            raise VidinvertError(f"{name} must be an integer >= {low}, got {value!r}")
    if stride is not None and (not isinstance(stride, numbers.Integral) or stride < 1):
        raise VidinvertError(f"stride must be an integer >= 1, got {stride!r}",
                             "or leave it unset to pick one automatically")
    if resize not in RESIZE_MODES:
        raise VidinvertError(f"unknown resize mode {resize!r}", f"use one of {', '.join(RESIZE_MODES)}")
    if not folder_fps > 0:
        raise VidinvertError(f"folder_fps must be > 0, got {folder_fps!r}")
    if _trim(max_frames, temporal_multiple) < min_frames:
        raise VidinvertError(
            f"--max-num-frames {max_frames} keeps at most {_trim(max_frames, temporal_multiple)} frames, "
            f"need at least {min_frames}",
            f"raise --max-num-frames to at least {min_frames}",
        )


def _check_size_limit(height: int | None, width: int | None) -> None:
    """Refuse an asked-for output size above MAX_SIDE / MAX_PIXELS before any decoding."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, numbers.Integral) and value > MAX_SIDE:
            raise VidinvertError(f"{name} {value} is too large (at most {MAX_SIDE})",
                                 f"use a smaller size, e.g. {EXAMPLE_SIZE}")
    if isinstance(height, numbers.Integral) and isinstance(width, numbers.Integral) \
            and height * width > MAX_PIXELS:
        raise VidinvertError(f"size {height}x{width} is too large (at most {MAX_PIXELS:,} pixels a frame)",
                             f"use a smaller size, e.g. {EXAMPLE_SIZE}")


def _check_multiple(name: str, value: int | None, multiple: int) -> None:
    """Raise unless ``value`` is None or a positive multiple of ``multiple``."""
    if value is None or (isinstance(value, numbers.Integral) and value >= multiple and value % multiple == 0):
        return
    if not isinstance(value, numbers.Integral) or value < 1:
        raise VidinvertError(f"{name} must be a positive integer, got {value!r}")
    lower = value // multiple * multiple
    options = [v for v in (lower, lower + multiple) if v >= multiple]
    raise VidinvertError(f"{name} {value} is not a multiple of {multiple}",
                         f"use {' or '.join(map(str, options))}")


def _plan(total: int | None, skip_start: int, skip_end: int, stride: int | None,
          max_frames: int, temporal_multiple: int) -> tuple[range, int, range]:
    """Pick source frame indices; ``total`` may be None only with an explicit stride and no skip_end.

    Returns:
        (indices to keep, trimmed to ``temporal_multiple * k + 1``; the stride; the indices before trimming).
    """
    if total is None:  # open-ended: stop once max_frames are reached or the file ends
        step = stride
        picked = range(skip_start, skip_start + step * max_frames, step)
    else:
        start, end = min(skip_start, total), max(0, total - skip_end)
        count = max(0, end - start)
        if stride is not None:
            step = stride  # an explicit stride always applies
        elif count <= max_frames:
            step = 1  # the whole range fits: take all of it
        else:
            step = max(1, count // max_frames)
        picked = range(start, end, step)[:max_frames]
    return picked[:_trim(len(picked), temporal_multiple)], step, picked


def _trim(count: int, temporal_multiple: int) -> int:
    """Largest ``temporal_multiple * k + 1`` that is <= count (0 when count is 0)."""
    return 0 if count < 1 else (count - 1) // temporal_multiple * temporal_multiple + 1


@contextlib.contextmanager
def _open_source(path: Path, need_total: bool, folder_fps: float) -> Iterator[_Source]:
    """Open a file or image folder for reading; map every failure to VidinvertError."""
    if not path.exists():
        if path.is_symlink():
            raise VidinvertError(f"video not found: {path} is a broken symlink or a symlink loop",
                                 "point it at the video file")
        raise VidinvertError(f"video not found: {path}", "check the path")
    if path.is_dir():
        images = _list_images(path)
        yield _Source((partial(_read_image, p) for p in images), len(images), folder_fps)
        return
    refuse_special_file(path, "pass the video file itself (mp4, mov, mkv, webm, gif) or a folder of images")
    if path.stat().st_size == 0:
        raise VidinvertError(f"video file is empty: {path}", "re-export or re-download it")
    container = _open_container(path)
    try:
        stream = _video_stream(container, path)
        # the header's count is free; demux to count only when the plan needs a count
        total = _count_frames(path, stream) if need_total else (stream.frames or None)
        loaders = (partial(_frame_rgb, frame, path) for frame in _decode(container, stream))
        yield _Source(loaders, total, _stream_fps(stream))
    finally:
        container.close()


def _av_open(path: Path) -> av.container.InputContainer:
    """``av.open`` for reading a local file, with only the demuxers of ``SAFE_DEMUXERS``.

    The absolute path keeps FFmpeg from taking a name such as ``take:2.mp4`` for a protocol;
    undecodable metadata text (often a damaged header) is replaced instead of raising. A file whose content
    FFmpeg detects as a playlist, a concat list or another format that opens further files is refused by its
    detected format, whatever its name says.
    """
    try:
        container = av.open(str(path.absolute()), metadata_errors="replace", options=dict(READ_OPTIONS))
    except av.error.ArgumentError:  # FFmpeg's answer to "format not on whitelist" (EINVAL)
        raise VidinvertError(
            f"refusing to read {path}: its content is not a plain video container (playlists such as HLS .m3u8, "
            "concat lists and other formats that open further files or URLs are not read)",
            "pass the video file itself (mp4, mov, mkv, webm, gif)") from None
    name = container.format.name
    if not any(part in SAFE_DEMUXERS for part in name.split(",")):  # a second check, should FFmpeg change
        container.close()
        raise VidinvertError(f"refusing to read {path}: FFmpeg reads it as {name!r}, a format vidinvert does not "
                             "read", "pass the video file itself (mp4, mov, mkv, webm, gif)")
    return container


def _open_container(path: Path) -> av.container.InputContainer:
    """``av.open`` with its errors turned into one readable line."""
    try:
        return _av_open(path)
    except AV_ERRORS as err:
        raise VidinvertError(
            f"cannot read {path} as a video: {reason(err)}",
            "check it is a video file (mp4, mov, mkv, webm, gif) and not truncated",
        ) from None


def _video_stream(container, path: Path) -> av.video.stream.VideoStream:
    """The first video stream that is not a cover image, set up for threaded decoding."""
    videos = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    # FFmpeg's "tty" demuxer renders .txt/.nfo files as ANSI-art video; that is never what users mean.
    if not videos or container.format.name == "tty":
        if container.streams.video and container.format.name != "tty":
            what = " (only a cover image)"
        elif container.streams.audio:
            what = " (audio only)"
        elif not container.streams:
            what = " (no streams at all: the file may be truncated or an empty recording)"
        else:
            what = ""
        raise VidinvertError(f"no video stream in {path}{what}", "pass a video file, a GIF or a folder of images")
    stream = videos[0]
    _limit_decoder(stream, path)
    stream.thread_type = "AUTO"  # decode with frame and slice threads
    return stream


def _limit_decoder(stream, path: Path) -> None:
    """Refuse a stream whose declared frame size is over ``MAX_SOURCE_PIXELS``, before any frame is decoded, and
    hold its decoder to that limit (a frame that turns out larger fails to decode instead of being allocated).

    The size is the stream's (from the container header), or for a PNG whose size FFmpeg would only learn by
    decoding, the one in its IHDR chunk.
    """
    if stream.codec_context is None:  # a stream FFmpeg has no decoder for: decoding fails later, in one line
        return
    height, width = stream.codec_context.height, stream.codec_context.width
    if not (height and width):
        height, width = _png_size(path)
    if height * width > MAX_SOURCE_PIXELS:
        raise VidinvertError(
            f"{path} has {height}x{width} frames ({height * width:,} pixels), more than vidinvert decodes "
            f"({MAX_SOURCE_PIXELS:,} pixels a frame, 8K with margin)",
            "scale it down first, e.g. ffmpeg -i IN -vf scale=1920:-2 OUT")
    stream.codec_context.options = {**stream.codec_context.options, "max_pixels": str(MAX_SOURCE_PIXELS)}


def _png_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from a PNG's IHDR chunk (per the PNG spec, the first chunk: bytes 16-24), or (0, 0)
    for a file that is not a PNG."""
    try:
        with open(path, "rb") as handle:  # a regular file: refuse_special_file ran before it was opened
            head = handle.read(24)
    except OSError:
        return 0, 0
    if len(head) < 24 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return 0, 0
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def refuse_special_file(path: str | os.PathLike, fix: str) -> None:
    """Refuse a named pipe, device or socket given as an input file, before anything opens it: opening a FIFO
    for reading blocks until something writes to it, and a device never ends. Missing paths and folders pass (the
    caller says what it wanted); symlinks are followed.

    Args:
        path: the path a user gave (a video, an image, a saved inversion, a file of a model folder).
        fix: what to pass instead, the second half of the error.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing, a loop, no permission, a NUL in the name: the caller's open reports it
        return
    for test, kind in SPECIAL_FILES:
        if test(mode):
            raise VidinvertError(f"{path} is {kind}, not a regular file", fix)


def _count_frames(path: Path, stream) -> int:
    """Frame count from the header, else by demuxing packets (no decoding)."""
    if stream.frames > 0:
        return stream.frames
    try:
        with _av_open(path) as container:  # a separate handle, so the decoding one stays at frame 0
            return sum(1 for packet in container.demux(container.streams[stream.index]) if packet.size)
    except AV_ERRORS as err:
        raise VidinvertError(f"could not read {path}: {reason(err)}",
                             "the file looks corrupt or truncated; re-export it") from None


def _decode(container, stream) -> Iterator[av.VideoFrame]:
    """Decoded frames in display order; callers stop iterating once they have enough."""
    yield from container.decode(stream)


def _stream_fps(stream) -> float:
    """The stream's frame rate in frames per second (the average one for variable-rate video)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) <= MAX_FPS:
            return float(rate)
    return DEFAULT_FPS


def _frame_rgb(frame: av.VideoFrame, path: Path) -> np.ndarray:
    """Any pixel format -> uint8 RGB ``[H, W, 3]`` (alpha dropped), turned upright by the display rotation."""
    try:
        rgb = frame.to_ndarray(format="rgb24")  # [H, W, 3]
    except ValueError as err:  # a pixel format swscale cannot convert
        raise VidinvertError(f"cannot convert the {frame.format.name} frames of {path} to RGB: {reason(err)}",
                             "re-export the video as 8-bit H.264 (yuv420p)") from None
    quarter_turns = round(frame.rotation / 90) % 4  # rotation is counter-clockwise degrees
    if quarter_turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, quarter_turns))  # [W, H, 3] for odd turns
    return rgb


def _list_images(folder: Path) -> list[Path]:
    """Image files in ``folder``, sorted by name with digits compared as numbers."""
    images = [p for p in folder.iterdir()
              if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    if not images:
        raise VidinvertError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {folder}",
                             "pass a folder of frames or a video file")

    def natural(p: Path) -> list:
        return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", p.name)]

    return sorted(images, key=natural)


def _read_image(path: Path) -> np.ndarray:
    """One image file -> uint8 RGB ``[H, W, 3]``."""
    try:
        with _av_open(path) as container:
            if not container.streams.video:
                raise VidinvertError(f"no image data in {path}", "re-export or remove that file")
            _limit_decoder(container.streams.video[0], path)
            frame = next(container.decode(video=0), None)
            if frame is None:
                raise VidinvertError(f"no image data in {path}", "re-export or remove that file")
            return _frame_rgb(frame, path)
    except AV_ERRORS as err:
        raise VidinvertError(f"cannot read image {path}: {reason(err)}",
                             "re-export or remove that file") from None


def _target_size(src_h: int, src_w: int, height: int | None, width: int | None,
                 multiple: int, path: Path) -> tuple[int, int]:
    """Output (height, width): given sizes, or the source's rounded to ``multiple``."""
    if height is None and width is None:
        height, width = src_h // multiple * multiple, src_w // multiple * multiple
    elif width is None:
        width = max(multiple, round(src_w * height / src_h / multiple) * multiple)
    elif height is None:
        height = max(multiple, round(src_h * width / src_w / multiple) * multiple)
    if height == 0 or width == 0:
        raise VidinvertError(f"{path} is only {src_h}x{src_w}, smaller than multiple={multiple}",
                             "pass --height and --width explicitly or use a larger video")
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise VidinvertError(
            f"{path} ({src_h}x{src_w}) would be read at {height}x{width}, more than the limit "
            f"({MAX_SIDE} a side, {MAX_PIXELS:,} pixels a frame)",
            f"pass a smaller size, e.g. {EXAMPLE_SIZE}")
    return height, width


def _to_float(rgb: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` in [-1, 1]."""
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1.0  # [3, H, W]


def _fit(frame: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """Resize one frame ``[C, H, W]`` to ``[C, height, width]`` by stretching or cover-and-crop."""
    src_h, src_w = frame.shape[-2:]
    if mode == "crop":
        scale = max(height / src_h, width / src_w)
        cover_h, cover_w = max(height, round(src_h * scale)), max(width, round(src_w * scale))
        frame = _resize(frame, cover_h, cover_w)
        top, left = (cover_h - height) // 2, (cover_w - width) // 2
        return frame[:, top:top + height, left:left + width]
    return _resize(frame, height, width)


fit_frame = _fit  # masks are fitted to the clip as its frames are (regions.py)


def _resize(frame: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Antialiased bilinear resize of ``[C, H, W]`` float to ``[C, height, width]``."""
    if tuple(frame.shape[-2:]) == (height, width):
        return frame
    batch = frame.unsqueeze(0)  # [1, C, H, W]
    out = F.interpolate(batch, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return out[0].clamp(-1.0, 1.0)  # [C, height, width]


def reason(err: BaseException) -> str:
    """A short one-line reason from a PyAV/OS error."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())


MIN_IMAGE_SIDE = 8  # an image smaller than this on a side (empty, 1-pixel) carries no frame to follow


def read_frame_image(path: str | os.PathLike, height: int, width: int, resize: str = "stretch",
                     what: str = "first frame") -> tuple[torch.Tensor, tuple[int, int]]:
    """One image file (PNG, JPEG) as a frame of a clip read at ``height`` x ``width``: resized by the clip's own
    rule (``resize``: "stretch" or "crop", as ``read_video``). Returns ``(frame [3, height, width] in [-1, 1],
    (its height, its width) as stored)``; one-line errors naming ``what`` for a path that is not a usable image."""
    path = Path(path)
    refuse_special_file(path, f"give the {what} as a PNG or JPEG file")
    if not path.exists():
        raise VidinvertError(f"{what} not found: {path}", "check the path")
    if path.is_dir():
        raise VidinvertError(f"the {what} {path} is a folder", "give one PNG or JPEG file")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise VidinvertError(f"the {what} {path.name} is not an image ({', '.join(IMAGE_SUFFIXES)})",
                             "save the edited frame as PNG or JPEG")
    try:
        rgb = _read_image(path)  # [H, W, 3]
    except VidinvertError as err:
        raise VidinvertError(f"the {what} {path.name} is not a readable image ({err.problem})",
                             "save the edited frame as PNG or JPEG") from None
    src_h, src_w = rgb.shape[:2]
    if min(src_h, src_w) < MIN_IMAGE_SIDE:
        raise VidinvertError(f"the {what} {path.name} is {src_h}x{src_w} pixels, too small to follow",
                             f"give an image of at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}, e.g. the clip's own size")
    return _fit(_to_float(rgb), height, width, resize), (src_h, src_w)


# ----------------------------------------------------------------------------- helpers


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float ``[F, C, H, W]`` in [-1, 1] -> uint8 numpy ``[F, H, W, C]``.

    Args:
        frames: float ``[F, C, H, W]`` in [-1, 1]; values outside are clipped.
    """
    scaled = ((frames.detach().float().cpu() + 1.0) * 127.5).nan_to_num(0.0)
    return scaled.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # [F, H, W, C]


def frames_hash(frames: torch.Tensor) -> str:
    """sha256 hex of the frames quantised to uint8, with their shape; stable across re-reads.

    Args:
        frames: float ``[F, C, H, W]`` in [-1, 1].
    """
    digest = hashlib.sha256(str(tuple(frames.shape)).encode())
    digest.update(np.ascontiguousarray(to_uint8(frames)).tobytes())
    return digest.hexdigest()
