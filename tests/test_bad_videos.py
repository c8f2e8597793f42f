"""Bad video input: every unusable file gives a one-line VidinvertError naming the problem and the fix.

Also odd but valid input (variable frame rate, rotation, odd sizes, 10-bit, alpha, GIF, image folders)
and a 10-minute video, of which only the needed frames are decoded, in memory that does not grow.
"""

from __future__ import annotations

import struct
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidinvert import video
from vidinvert.errors import VidinvertError
from vidinvert.export import write_video
from vidinvert.video import MAX_PIXELS, MAX_SIDE, read_video, to_uint8

from conftest import assert_one_line, assert_one_line_error, numbered, numbers_of

COLOUR = (200, 100, 50)  # a flat test colour; chroma subsampling keeps flat colours exact


# ----------------------------------------------------------------------------- helpers


def encode(path: Path, images: np.ndarray, codec: str = "libx264", pix_fmt: str = "yuv420p", *,
           rate: int = 8, fmt: str = "rgb24", options: dict | None = None, rotation: float | None = None,
           pts: list[int] | None = None, time_base: Fraction | None = None) -> Path:
    """Encode uint8 [F, H, W, C] ``images`` (``fmt`` rgb24 or rgba) with PyAV; optional display rotation / pts."""
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - the codec is missing from this FFmpeg build
        pytest.skip(f"this FFmpeg build cannot encode {codec}")
    height, width = images.shape[1:3]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if time_base is not None:
            stream.time_base = stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def save_png(path: Path, array: np.ndarray, fmt: str, pix_fmt: str) -> Path:
    """One PNG stored in ``pix_fmt`` (``VideoFrame.save`` would convert it to rgb24)."""
    context = av.CodecContext.create("png", "w")
    context.width, context.height, context.pix_fmt, context.time_base = array.shape[1], array.shape[0], pix_fmt, 1
    packets = context.encode(av.VideoFrame.from_ndarray(array, format=fmt)) + context.encode(None)
    path.write_bytes(b"".join(bytes(p) for p in packets))
    return path


def mean_rgb(frames: torch.Tensor) -> np.ndarray:
    """Mean uint8 colour of float [F, 3, H, W] frames."""
    return to_uint8(frames).reshape(-1, 3).mean(0)


@pytest.fixture(scope="module")
def noise40(tmp_path_factory) -> bytes:
    """A 40-frame 64x64 H.264 mp4 of noise (big packets, so any cut loses frames), moov first."""
    frames = np.random.default_rng(0).integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    return write_video(frames, tmp_path_factory.mktemp("noise") / "noise.mp4").read_bytes()


@pytest.fixture(scope="module")
def noise40_moov_last(tmp_path_factory) -> bytes:
    """The same as ``noise40`` but muxed without faststart: the index (moov) is at the end, as cameras write."""
    frames = np.random.default_rng(0).integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    return encode(tmp_path_factory.mktemp("noise") / "noise.mp4", frames).read_bytes()


# ----------------------------------------------------------------------------- paths and empty input


def test_missing_file_and_folder(tmp_path):
    assert_one_line_error(lambda: read_video(tmp_path / "nope.mp4"), "not found", "nope.mp4", "check the path")
    assert_one_line_error(lambda: read_video(tmp_path / "no" / "such" / "dir"), "not found")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    assert_one_line_error(lambda: read_video(tmp_path / "dangling.mp4"), "not found")


def test_folder_without_images(tmp_path):
    assert_one_line_error(lambda: read_video(tmp_path), "no images", "folder")  # empty
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.png").write_bytes(b"x")  # hidden files are ignored
    (tmp_path / "sub.png").mkdir()  # a folder named like an image is not one
    assert_one_line_error(lambda: read_video(tmp_path), "no images", "pass a folder of frames or a video file")


@pytest.mark.parametrize("name", ["empty.mp4", "empty.gif", "empty.png", "empty"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).touch()
    assert_one_line_error(lambda: read_video(tmp_path / name), "empty", name)


def test_name_that_looks_like_a_protocol(tmp_path, monkeypatch):
    """FFmpeg would parse ``take:2.mp4`` as protocol ``take``; a local file name must just work."""
    write_video(numbered(5), tmp_path / "take:2.mp4")
    monkeypatch.chdir(tmp_path)
    assert numbers_of(read_video("take:2.mp4").frames) == list(range(5))


# ----------------------------------------------------------------------------- broken files


@pytest.mark.parametrize("cut", [8, 100, 0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.97])
@pytest.mark.parametrize("stride", [None, 1])  # None counts frames first; 1 reads open-ended
def test_truncated_mp4(tmp_path, noise40, cut, stride):
    size = cut if isinstance(cut, int) else int(len(noise40) * cut)
    path = tmp_path / "cut.mp4"
    path.write_bytes(noise40[:size])
    message = assert_one_line_error(lambda: read_video(path, stride=stride), "cut.mp4")
    if isinstance(cut, float) and cut >= 0.1:  # frames decode, then stop: the message says it is cut short
        assert "truncated" in message and "of 40 frames decode" in message, message
    else:  # cut inside the header: nothing to decode at all
        assert any(word in message for word in ("truncated", "corrupt", "cannot read", "no video stream")), message


@pytest.mark.parametrize("cut", [100, 0.3, 0.9, 0.995])
def test_truncated_mp4_index_at_end(tmp_path, noise40_moov_last, cut):
    size = cut if isinstance(cut, int) else int(len(noise40_moov_last) * cut)
    path = tmp_path / "cut.mp4"
    path.write_bytes(noise40_moov_last[:size])
    assert_one_line_error(lambda: read_video(path), "cannot read", "cut.mp4", "truncated")


def test_small_loss_at_the_end_is_tolerated(tmp_path, noise40):
    """Losing the last frame or two (an edit list can hide as many) still reads, in order."""
    path = tmp_path / "cut.mp4"
    path.write_bytes(noise40[:len(noise40) - 300])
    assert len(read_video(path).frames) == 37


@pytest.mark.parametrize("where", [0.3, 0.5, 0.8])
def test_flipped_bytes_in_the_middle(tmp_path, noise40, where):
    """Damaged packets: the decoder conceals them or the read fails cleanly, never a PyAV error."""
    data = bytearray(noise40)
    start = int(len(data) * where)
    data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])
    path = tmp_path / "flipped.mp4"
    path.write_bytes(bytes(data))
    try:
        clip = read_video(path)
    except VidinvertError as err:
        assert_one_line(err, "flipped.mp4")
    else:
        assert clip.frames.shape == (37, 3, 64, 64) and torch.isfinite(clip.frames).all()


def test_damaged_index(tmp_path, noise40):
    data = bytearray(noise40)
    moov = data.find(b"moov")
    data[moov + 8:moov + 200] = bytes(192)  # zero the movie header and the start of the track
    path = tmp_path / "index.mp4"
    path.write_bytes(bytes(data))
    assert_one_line_error(lambda: read_video(path), "index.mp4")


def test_zeroed_media_data(tmp_path, noise40):
    data = bytearray(noise40)
    mdat = data.find(b"mdat")
    size = struct.unpack(">I", data[mdat - 4:mdat])[0]
    data[mdat + 4:mdat - 4 + size] = bytes(size - 8)  # index intact, every frame's bytes zero
    path = tmp_path / "zeros.mp4"
    path.write_bytes(bytes(data))
    assert_one_line_error(lambda: read_video(path), "zeros.mp4", "corrupt", "re-export")


def test_undecodable_metadata_text(tmp_path):
    """Invalid UTF-8 in a title tag (a common sign of a damaged header) must not stop the read."""
    path = tmp_path / "title.mp4"
    with av.open(str(path), "w") as out:
        out.metadata["title"] = "TITLETITLE"
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        for image in numbered(5):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    data = path.read_bytes()
    assert data.count(b"TITLETITLE") == 1
    path.write_bytes(data.replace(b"TITLETITLE", b"\xff\xfe\x80TITLE\xc3\x28"))
    assert numbers_of(read_video(path).frames) == list(range(5))


# ----------------------------------------------------------------------------- not a video


def test_text_and_random_bytes(tmp_path):
    rng = np.random.default_rng(1)
    for name, data, words in [
        ("notes.txt", b"not a video\n" * 50, ["no video stream", "pass a video file"]),  # FFmpeg reads it as ANSI art
        ("notes.mp4", b"not a video\n" * 50, ["cannot read", "as a video"]),
        ("noise.mp4", rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(), ["cannot read"]),
        ("noise.mov", rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes(), ["cannot read"]),
        ("noise", rng.integers(0, 256, 300, dtype=np.uint8).tobytes(), ["cannot read"]),
        ("page.html", b"<!doctype html><html><body>hi</body></html>", ["cannot read"]),
    ]:
        (tmp_path / name).write_bytes(data)
        assert_one_line_error(lambda path=tmp_path / name: read_video(path), name, *words)


@pytest.mark.parametrize("name, codec", [("photo.mp4", "png"), ("photo.mov", "mjpeg"), ("still.png", "png")])
def test_single_image_is_one_frame(tmp_path, name, codec):
    """A picture under a video name reads as one frame: too few, and the message says how many are needed."""
    frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 128, np.uint8), format="rgb24")
    pix_fmt = "rgb24" if codec == "png" else "yuvj420p"
    data = b"".join(bytes(p) for p in _encode_still(frame, codec, pix_fmt))
    (tmp_path / name).write_bytes(data)
    message = assert_one_line_error(lambda: read_video(tmp_path / name), "only 1 frames", "1 in the source",
                             "at least 5", "use a video with at least 5 frames")
    assert name in message


def _encode_still(frame, codec: str, pix_fmt: str) -> list:
    context = av.CodecContext.create(codec, "w")
    context.width, context.height, context.pix_fmt, context.time_base = frame.width, frame.height, pix_fmt, 1
    return context.encode(frame.reformat(format=pix_fmt)) + context.encode(None)


def _sine(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # [S]


@pytest.mark.parametrize("name, codec", [("tone.m4a", "aac"), ("tone.mp4", "aac"), ("tone.wav", "pcm_s16le"),
                                         ("tone.mkv", "pcm_s16le")])
def test_audio_only(tmp_path, name, codec):
    path = tmp_path / name
    rate = 16000
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        wave = _sine(0.5, rate)
        step = 1024
        for start in range(0, len(wave), step):
            chunk = wave[None, start:start + step]  # [1, S]
            if codec == "pcm_s16le":
                frame = av.AudioFrame.from_ndarray((chunk * 32767).astype(np.int16), format="s16", layout="mono")
            else:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
            frame.sample_rate = rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    assert_one_line_error(lambda: read_video(path), "no video stream", "audio only", name, "pass a video file")


@pytest.mark.parametrize("name, audio", [("song.mp3", "mp3"), ("song.mp4", "aac")])
def test_audio_with_cover_art(tmp_path, name, audio):
    """A cover picture is a one-frame 'video' stream marked attached_pic: not a video."""
    path = tmp_path / name
    with av.open(str(path), "w") as out:
        sound = out.add_stream(audio, rate=16000)
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 32, 32, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 90, np.uint8), format="rgb24")
        out.mux(cover.encode(picture) + cover.encode())
        frame = av.AudioFrame.from_ndarray(_sine(0.5, 16000)[None], format="fltp", layout="mono")
        frame.sample_rate = 16000
        out.mux(sound.encode(frame) + sound.encode())
    assert_one_line_error(lambda: read_video(path), "no video stream", "cover image", name)


# ----------------------------------------------------------------------------- too few frames


@pytest.mark.parametrize("ext", ["mp4", "mov", "mkv"])  # FFmpeg refuses to finish a GIF with no frames
def test_zero_frames(tmp_path, ext):
    """A file with a header but no frames (an empty recording)."""
    path = tmp_path / f"zero.{ext}"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        out.start_encoding()  # write the header although no frame follows
        out.mux(stream.encode())
    assert path.stat().st_size > 0
    message = assert_one_line_error(lambda: read_video(path), f"zero.{ext}")
    assert any(w in message for w in ("no video stream", "no decodable", "cannot read", "only 0 frames")), message


def test_zero_decodable_frames(tmp_path, monkeypatch):
    """The decoder yields nothing for a file whose header is fine."""
    path = write_video(numbered(30), tmp_path / "n30.mp4")
    monkeypatch.setattr(video, "_decode", lambda container, stream: iter(()))
    assert_one_line_error(lambda: read_video(path, stride=1), "no decodable", "n30.mp4")


def test_zero_decodable_frames_on_real_file(tmp_path):
    """Every packet is garbage: nothing decodes; the message says what the header promised."""
    good = write_video(numbered(9), tmp_path / "good.mkv")
    bad = tmp_path / "bad.mkv"
    rng = np.random.default_rng(0)
    with av.open(str(good)) as source, av.open(str(bad), "w") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(video=0):
            if packet.size:
                garbage = av.Packet(bytes(packet.size) if packet.is_keyframe else
                                    rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                garbage.pts, garbage.dts, garbage.time_base = packet.pts, packet.dts, packet.time_base
                garbage.stream = stream
                out.mux(garbage)
    assert_one_line_error(lambda: read_video(bad), "bad.mkv", "re-export")


@pytest.mark.parametrize("count", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["mp4", "gif", "folder"])
def test_fewer_frames_than_cogvideox_needs(tmp_path, count, kind):
    frames = numbered(count)
    if kind == "folder":
        path = tmp_path / "frames"
        path.mkdir()
        for i, image in enumerate(frames):
            av.VideoFrame.from_ndarray(image, format="rgb24").save(str(path / f"{i:04d}.png"))
    else:
        path = write_video(frames, tmp_path / f"short.{kind}")
    message = assert_one_line_error(lambda: read_video(path), f"only 1 frames selected from {path}",
                             f"({count} in the source", "need at least 5", "4k+1",
                             "use a video with at least 5 frames")
    assert "stride" not in message.split(";")[1]  # no stride or skip was used: do not suggest changing them
    assert len(read_video(path, min_frames=1, temporal_multiple=1).frames) == count


def test_too_few_frames_fix_names_the_option_in_the_way(tmp_path):
    path = write_video(numbered(30), tmp_path / "n30.mp4")
    fix = assert_one_line_error(lambda: read_video(path, stride=10), "only 1 frames", "3 picked",
                                "--frame-sample-step 10").split("; ")[1]
    assert fix == "use a smaller stride"
    assert len(read_video(path, stride=10, min_frames=1).indices) == 1
    assert_one_line_error(lambda: read_video(path, skip_start=26), "only 1 frames", "30 in the source", "at least 5")
    assert_one_line_error(lambda: read_video(path, skip_start=40), "only 0 frames")
    fix = assert_one_line_error(lambda: read_video(path, skip_start=20, skip_end=7), "30 in the source",
                         "3 picked").split("; ")[1]
    assert fix.startswith("skip fewer frames") and "stride" not in fix
    assert_one_line_error(lambda: read_video(path, max_frames=4), "--max-num-frames 4 keeps at most 1 frames",
                   "at least 5", "raise --max-num-frames to at least 5")
    assert len(read_video(path, max_frames=5).frames) == 5


# ----------------------------------------------------------------------------- odd but valid input


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_variable_frame_rate(tmp_path, ext):
    """Irregular timestamps: frames come out in order, and the fps is the average, not a time-base tick."""
    gaps = [10, 33, 100, 250, 40, 17, 120, 33, 60] * 4  # milliseconds
    pts = np.concatenate([[0], np.cumsum(gaps)[:-1]]).tolist()  # 36 frames over ~2.3 s
    path = encode(tmp_path / f"vfr.{ext}", numbered(len(pts)), rate=30, pts=pts, time_base=Fraction(1, 1000))
    clip = read_video(path, max_frames=49)
    assert numbers_of(clip.frames) == list(range(33))
    assert 1.0 <= clip.fps <= 60.0
    if ext == "mp4":  # mp4 knows the real average: 36 frames over the span of their timestamps
        assert clip.fps == pytest.approx(36 / (sum(gaps) / 1000), rel=0.15)
    assert numbers_of(read_video(path, stride=3).frames) == list(range(0, 36, 3))[:9]


@pytest.mark.parametrize("ext", ["mp4", "mov", "mkv"])
@pytest.mark.parametrize("rotation, corner", [(90, "bottom-left"), (180, "bottom-right"), (-90, "top-right"),
                                              (270, "top-right"), (45, "top-left")])
def test_rotation_metadata(tmp_path, ext, rotation, corner):
    """A display matrix (what phones write) is applied; 45 degrees rounds to none.

    PyAV 18 writes it with ``stream.set_display_rotation``; the legacy ``rotate`` metadata tag is
    no longer turned into a display matrix by FFmpeg's muxers, so it is not tested separately.
    """
    image = np.zeros((1, 32, 64, 3), np.uint8)
    image[:, :16, :16] = 255  # a marker top-left as stored
    path = encode(tmp_path / f"rot.{ext}", np.repeat(image, 5, axis=0), rotation=rotation)
    clip = read_video(path)
    turned = rotation % 180 == 90
    assert clip.source_size == ((64, 32) if turned else (32, 64))
    upright = to_uint8(clip.frames)[0]  # [H, W, 3]
    corners = {"top-left": upright[:16, :16], "top-right": upright[:16, -16:],
               "bottom-left": upright[-16:, :16], "bottom-right": upright[-16:, -16:]}
    for name, patch in corners.items():
        assert (patch.mean() > 200) == (name == corner), (name, patch.mean())


@pytest.mark.parametrize("codec, pix_fmt, ext", [("libx264", "yuv444p", "mp4"), ("png", "rgb24", "mov"),
                                                 ("ffv1", "bgr0", "mkv")])
def test_odd_source_size(tmp_path, codec, pix_fmt, ext):
    """A 63x47 (WxH) source is resized to multiples of 16, or kept exact with multiple=1."""
    path = encode(tmp_path / f"odd.{ext}", np.full((5, 47, 63, 3), COLOUR, np.uint8), codec, pix_fmt)
    clip = read_video(path)
    assert clip.source_size == (47, 63)
    assert clip.frames.shape == (5, 3, 32, 48)  # rounded down to 16
    assert np.abs(mean_rgb(clip.frames) - COLOUR).max() < 4
    assert read_video(path, height=32).frames.shape[-2:] == (32, 48)  # 63 * 32 / 47 = 42.9 -> 48
    assert read_video(path, width=64).frames.shape[-2:] == (48, 64)
    assert read_video(path, 32, 32, resize="crop").frames.shape[-2:] == (32, 32)
    assert read_video(path, multiple=1).frames.shape[-2:] == (47, 63)


def test_source_smaller_than_multiple(tmp_path):
    path = encode(tmp_path / "tiny.mkv", np.full((5, 9, 15, 3), COLOUR, np.uint8), "ffv1", "yuv444p")
    assert_one_line_error(lambda: read_video(path), "only 9x15", "smaller than multiple=16", "--height and --width")
    assert read_video(path, 16, 16).frames.shape[-2:] == (16, 16)


@pytest.mark.parametrize(
    "size, words",
    [
        ({"height": 16384}, ["height 16384", "too large", f"at most {MAX_SIDE}", "--height 480"]),
        ({"width": 16384, "height": 480}, ["width 16384", "too large"]),
        ({"height": 16385}, ["height 16385", "too large"]),  # the limit is checked before the multiple
        ({"height": 4096, "width": 4096}, ["4096x4096", "too large", f"{MAX_PIXELS:,} pixels"]),
    ],
)
def test_huge_size_request_is_refused_before_decoding(tmp_path, decode_counter, size, words):
    path = write_video(numbered(5), tmp_path / "clip.mp4")
    assert_one_line_error(lambda: read_video(path, **size), *words, "smaller size")
    assert_one_line_error(lambda: read_video(tmp_path / "missing.mp4", **size), "too large")  # before opening
    assert decode_counter.n == 0


def test_huge_size_from_aspect_is_refused(tmp_path, decode_counter):
    """One side given, the other follows the aspect: 32x64 at width 4096 needs 2048x4096 > MAX_PIXELS."""
    path = write_video(numbered(5), tmp_path / "clip.mp4")
    assert_one_line_error(lambda: read_video(path, width=4096), "would be read at 2048x4096", "limit",
                   "--height 480 --width 720")
    assert decode_counter.n == 1  # only the first frame, to learn the source size
    assert read_video(path, width=2048).frames.shape[-2:] == (1024, 2048)


@pytest.mark.parametrize(
    "codec, pix_fmt, ext, options",
    [
        ("libx265", "yuv420p10le", "mp4", {"x265-params": "log-level=error"}),
        ("libx264", "yuv422p10le", "mkv", None),
        ("libx264", "yuv420p10le", "mkv", None),
        ("ffv1", "yuv420p10le", "mkv", None),
        ("prores_ks", "yuv422p10le", "mov", None),
        ("libvpx-vp9", "yuv420p", "webm", None),  # 8-bit, but another family
    ],
)
def test_high_bit_depth(tmp_path, codec, pix_fmt, ext, options):
    """10-bit sources come out as the right 8-bit colours, with a smooth gradient kept smooth."""
    ramp = np.linspace(0, 255, 64).astype(np.uint8)  # [W]
    images = np.empty((5, 32, 64, 3), np.uint8)
    images[:, :16] = COLOUR
    images[:, 16:] = ramp[None, None, :, None]
    path = encode(tmp_path / f"deep.{ext}", images, codec, pix_fmt, options=options)
    with av.open(str(path)) as container:
        assert container.streams.video[0].format.name.startswith(pix_fmt[:7])
    rgb = to_uint8(read_video(path).frames)  # [F, 32, 64, 3]
    assert np.abs(rgb[:, 2:14, 2:-2].reshape(-1, 3).mean(0) - COLOUR).max() < 4
    grey = rgb[:, 20:30, 4:-4].mean(axis=(0, 1, 3))  # [W - 8]
    assert np.abs(grey - ramp[4:-4]).max() < 8


@pytest.mark.parametrize("codec, pix_fmt, ext", [("libx264", "gray", "mkv"), ("png", "gray16be", "mov")])
def test_grey_video(tmp_path, codec, pix_fmt, ext):
    """A grey-only source comes out as RGB with three equal channels at the source's brightness."""
    path = encode(tmp_path / f"grey.{ext}", np.full((5, 32, 32, 3), COLOUR, np.uint8), codec, pix_fmt)
    rgb = mean_rgb(read_video(path).frames)
    assert np.ptp(rgb) < 2, rgb
    assert abs(rgb.mean() - (0.299 * COLOUR[0] + 0.587 * COLOUR[1] + 0.114 * COLOUR[2])) < 6, rgb  # BT.601 luma


@pytest.mark.parametrize(
    "codec, pix_fmt, ext",
    [("qtrle", "argb", "mov"), ("png", "rgba", "mov"), ("ffv1", "yuva420p", "mkv"), ("libvpx-vp9", "yuva420p", "webm")],
)
def test_alpha_video(tmp_path, codec, pix_fmt, ext):
    """Alpha is dropped, colour kept, whatever the transparency."""
    rgba = np.zeros((5, 32, 32, 4), np.uint8)
    rgba[..., :3] = COLOUR
    rgba[..., 3] = np.linspace(0, 255, 32).astype(np.uint8)[None, None, :]
    path = encode(tmp_path / f"alpha.{ext}", rgba, codec, pix_fmt, fmt="rgba")
    assert np.abs(mean_rgb(read_video(path).frames) - COLOUR).max() < 4


@pytest.mark.parametrize("fmt, pix_fmt", [("rgba", "rgba"), ("rgba64le", "rgba64be"), ("gray16le", "gray16be"),
                                          ("gray", "gray"), ("rgb24", "rgb48be")])
def test_image_folder_pixel_formats(tmp_path, fmt, pix_fmt):
    frames = numbered(5)  # [F, H, W, 3]
    for i, image in enumerate(frames):
        if fmt.startswith("rgba"):
            alpha = np.full(image.shape[:2] + (1,), 128, np.uint8)
            array = np.concatenate([image, alpha], axis=-1)  # [H, W, 4]
            array = array.astype(np.uint16) * 257 if fmt == "rgba64le" else array
        elif fmt.startswith("gray"):
            array = image[..., 0].astype(np.uint16) * 257 if fmt == "gray16le" else image[..., 0]
        else:
            array = image  # stored as 16-bit RGB
        save_png(tmp_path / f"f{i}.png", np.ascontiguousarray(array), fmt, pix_fmt)
    with av.open(str(tmp_path / "f1.png")) as container:
        assert container.streams.video[0].format.name == pix_fmt
    assert numbers_of(read_video(tmp_path).frames) == list(range(5))


def test_image_folder_faults(tmp_path):
    frames = numbered(9)
    for i, image in enumerate(frames):
        av.VideoFrame.from_ndarray(image, format="rgb24").save(str(tmp_path / f"frame_{i:03d}.png"))
    (tmp_path / "frame_004.png").write_bytes(b"this is not a png")
    assert_one_line_error(lambda: read_video(tmp_path), "cannot read image", "frame_004.png", "re-export or remove")
    (tmp_path / "frame_004.png").write_bytes(b"")
    assert_one_line_error(lambda: read_video(tmp_path), "frame_004.png")
    # the broken frame is past the frames needed: never opened
    assert numbers_of(read_video(tmp_path, max_frames=1, min_frames=1).frames) == [0]
    # a different-sized frame is resized to the first frame's size
    av.VideoFrame.from_ndarray(np.repeat(np.repeat(frames[4], 2, 0), 2, 1), format="rgb24").save(
        str(tmp_path / "frame_004.png"))
    clip = read_video(tmp_path)
    assert clip.frames.shape == (9, 3, 32, 64)
    assert numbers_of(clip.frames) == list(range(9))


def test_gif_with_variable_delays_and_one_frame_gif(tmp_path):
    delays = [10, 50, 10, 100, 20, 10, 30, 10, 40]  # hundredths of a second
    pts = np.concatenate([[0], np.cumsum(delays)[:-1]]).tolist()
    path = encode(tmp_path / "var.gif", numbered(9), "gif", "rgb8", pts=pts, time_base=Fraction(1, 100))
    clip = read_video(path)
    assert numbers_of(clip.frames) == list(range(9))
    assert 1.0 <= clip.fps <= 30.0
    one_frame = encode(tmp_path / "one.gif", numbered(1), "gif", "rgb8")
    assert_one_line_error(lambda: read_video(one_frame), "only 1 frames", "1 in the source", "at least 5")


# ----------------------------------------------------------------------------- long video

LONG_FRAMES = 10 * 60 * 30  # 10 minutes at 30 fps


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """A 10-minute 16x16 30-fps H.264 video (18000 frames, ~0.3 MB, ~2 s to make); frame i shows i % 16."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        cycle = [av.VideoFrame.from_ndarray(image, format="rgb24") for image in numbered(16, 16, 16, bits=4)]
        for i in range(LONG_FRAMES):
            out.mux(stream.encode(cycle[i % 16]))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def short_video(tmp_path_factory) -> Path:
    """The first 2 seconds of ``long_video``."""
    return write_video(np.tile(numbered(16, 16, 16, bits=4), (4, 1, 1, 1)), tmp_path_factory.mktemp("short") / "s.mp4",
                       fps=30.0)


def _read_traced(path: Path, **options) -> tuple[torch.Tensor, int]:
    """read_video under tracemalloc: (frames, peak bytes of Python-side allocations)."""
    tracemalloc.start()
    try:
        clip = read_video(path, multiple=1, **options)
        return clip, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_long_video_decodes_only_the_frames_needed(long_video, decode_counter):
    clip = read_video(long_video, stride=1, max_frames=9, multiple=1)
    assert clip.indices == tuple(range(9))
    assert numbers_of(clip.frames, bits=4) == list(range(9))
    assert clip.fps == pytest.approx(30.0)
    assert decode_counter.n == 9
    decode_counter.n = 0
    clip = read_video(long_video, skip_start=40, stride=2, max_frames=5, multiple=1)
    assert numbers_of(clip.frames, bits=4) == [(40 + 2 * k) % 16 for k in range(5)]
    assert decode_counter.n == 49
    decode_counter.n = 0
    clip = read_video(long_video, skip_end=LONG_FRAMES - 20, multiple=1)  # the count comes from the header
    assert clip.indices == tuple(range(17))
    assert decode_counter.n == 17


def test_long_video_memory_does_not_grow_with_length(long_video, short_video, decode_counter):
    """Striding through all 10 minutes keeps only the wanted frames: peak memory as for a 2-second clip."""
    short, short_peak = _read_traced(short_video, stride=1, max_frames=9)
    decoded_short, decode_counter.n = decode_counter.n, 0
    long, long_peak = _read_traced(long_video, max_frames=9)  # auto stride 2000: decodes 16001 frames
    assert long.indices == tuple(range(0, 16001, 2000))
    assert decode_counter.n == 16001 and decoded_short == 9
    assert long.frames.shape == short.frames.shape
    # keeping every decoded frame (or its RGB copy) would cost >= 16001 * ~100 bytes = 1.6 MB of Python objects
    assert long_peak < 2 * short_peak + 200_000, (short_peak, long_peak)
