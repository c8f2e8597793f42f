"""Adversarial rerun (issue 17): hostile inputs and options through the real CLI, each in its own folder.

Every case must end in either exit 0 with valid outputs, or exit 2 with one line on stderr ("vidinvert: error: ...")
and no traceback; in both cases no temp file (``.vidinvert-*``) or checkpoint is left and the inputs are unchanged.
Batch cases (``batch ...``) may also exit 1 (some rows failed): then every row of the job file is recorded exactly
once, and every file that was in the case's folder before the run is still there, unchanged.

    PYTHONPATH=src python bench/adversarial.py [--only SUBSTRING]

Runs on the tiny model on CPU (a few minutes); prints one line per case and exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import struct
from fractions import Fraction
import numpy as np


def _clip(path: Path, frames: int = 9, height: int = 64, width: int = 64, codec: str = "libx264",
          pix_fmt: str = "yuv420p", fmt: str | None = None, pts: list[int] | None = None) -> Path:
    """A small clip; ``pts`` (milliseconds) gives each frame its own timestamp (variable or huge timestamps)."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if pts is not None:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for i in range(frames):
            image = np.full((height, width, 3), (i * 25) % 255, np.uint8)
            image[: height // 2, : width // 3] = 200  # not symmetric: a rotation shows
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def _rotated(source: Path, path: Path) -> Path:
    """``source`` (an mp4) with a 90-degree display matrix written into its track header."""
    data = bytearray(source.read_bytes())
    at = data.find(b"tkhd")
    version = data[at + 4]
    matrix = at + 4 + 4 + (32 if version == 1 else 20) + 16  # after times, ids, duration, layer...volume
    struct.pack_into(">9i", data, matrix, 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    with av.open(str(path)) as container:
        if round(next(container.decode(video=0)).rotation) % 360 == 0:
            raise RuntimeError("the display matrix was not read back")
    return path


# encodings this machine's FFmpeg may or may not write: name -> (file, codec, pix_fmt, extra _clip arguments)
ENCODINGS = {"h264 10-bit": ("h264_10.mp4", "libx264", "yuv420p10le", {}),
             "hevc": ("hevc.mp4", "libx265", "yuv420p", {}),
             "hevc 10-bit": ("hevc10.mp4", "libx265", "yuv420p10le", {}),
             "hevc 12-bit": ("hevc12.mkv", "libx265", "yuv420p12le", {}),
             "ffv1 16-bit": ("ffv1_16.mkv", "ffv1", "yuv420p16le", {}),
             "png 16-bit rgb": ("png48.mov", "png", "rgb48be", {}),
             "vp9 alpha": ("vp9a.webm", "libvpx-vp9", "yuva420p", {}),
             "vp8": ("vp8.webm", "libvpx", "yuv420p", {}),
             "av1": ("av1.mkv", "libsvtav1", "yuv420p", {}),
             "prores 422 10-bit": ("prores.mov", "prores_ks", "yuv422p10le", {}),
             "prores 4444 alpha": ("prores4444.mov", "prores_ks", "yuva444p10le", {}),
             "3x3 ffv1": ("3x3.mkv", "ffv1", "yuv444p", {"height": 3, "width": 3}),
             "4000x16": ("4000x16.mp4", "libx264", "yuv420p", {"height": 16, "width": 4000}),
             "16x4000": ("16x4000.mkv", "ffv1", "yuv420p", {"height": 4000, "width": 16}),
             "1 frame": ("one.mp4", "libx264", "yuv420p", {"frames": 1}),
             "3 frames": ("three.mp4", "libx264", "yuv420p", {"frames": 3}),
             "4 frames": ("four.mp4", "libx264", "yuv420p", {"frames": 4}),
             "VFR": ("vfr.mkv", "libx264", "yuv420p", {"pts": [0, 10, 20, 500, 510, 1500, 1510, 1520, 3000]}),
             "huge timestamps": ("hugets.mkv", "libx264", "yuv420p", {"pts": [2**40 + 125 * k for k in range(9)]}),
             "huffyuv": ("huffyuv.avi", "huffyuv", "yuv422p", {}),
             "qtrle": ("qtrle.mov", "qtrle", "rgb24", {}),
             "utvideo": ("utvideo.avi", "utvideo", "yuv420p", {})}
SKIPPED: list[str] = []  # inputs this machine could not write, with why


def _png(path: Path, height: int, width: int, value: int = 100, fmt: str = "png") -> Path:
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("mjpeg" if fmt == "jpg" else "png", rate=1)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if fmt == "jpg" else "rgb24"
        frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), value % 256, np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return path


def _folders(root: Path, made: dict[str, Path]) -> None:
    """Image folders: png, jpg, mixed sizes, natural order, one image, mixed with other files, empty, broken."""
    def folder(name: str, files: dict[str, tuple]) -> None:
        (root / name).mkdir()
        for file, args in files.items():
            if args == "text":
                (root / name / file).write_text("not an image")
            else:
                _png(root / name / file, *args)
        made[f"folder {name}"] = root / name

    folder("png", {f"{k:03d}.png": (64, 64, 20 * k) for k in range(9)})
    folder("jpg", {f"f{k}.jpg": (64, 64, 20 * k, "jpg") for k in range(5)})
    folder("mixed_sizes", {f"{k}.png": ((64, 64) if k % 2 else (48, 80)) + (20 * k,) for k in range(5)})
    folder("natural", {f"frame{k}.png": (64, 64, 20 * k) for k in (1, 2, 10, 11, 100)})
    folder("one_image", {"only.png": (64, 64)})
    folder("png_and_jpg", {"1.png": (64, 64), "2.jpg": (64, 64, 50, "jpg"), "3.png": (64, 64)})
    folder("with_other_files", {"1.png": (64, 64), "2.png": (64, 64), "readme.txt": "text"})
    folder("empty", {})
    folder("broken_png", {"1.png": (64, 64), "2.png": (64, 64)})
    (root / "broken_png" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken" * 10)


def _huge_png(path: Path, width: int, height: int) -> Path:
    """An all-black greyscale PNG declaring ``width`` x ``height`` (16000x16000 is ~250 KB on disk, 256 MB decoded)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compress = zlib.compressobj(9)
    data = b"".join(compress.compress(bytes(width + 1)) for _ in range(height)) + compress.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def _huge_jpeg(path: Path, width: int, height: int) -> Path:
    """A 16x16 JPEG whose frame header declares ``width`` x ``height`` (known only by decoding)."""
    av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24").save(str(path))
    data = bytearray(path.read_bytes())
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return path


def _model_folders(root: Path) -> dict[str, Path]:
    """The tiny pipeline saved with ``save_pretrained``, then one copy per hostile change to its files."""
    import pickle
    import shutil

    from vidinvert.tiny import TinyConfig, build_tiny_pipeline

    good = root / "models" / "good"
    build_tiny_pipeline(TinyConfig(style="5b")).save_pretrained(good)
    changes = {"num_layers 100000": ("transformer/config.json", {"num_layers": 100000}),
               "num_layers -3": ("transformer/config.json", {"num_layers": -3}),
               "attention_head_dim 4096 x 64 heads": ("transformer/config.json",
                                                      {"attention_head_dim": 4096, "num_attention_heads": 64}),
               "num_train_timesteps 1e10": ("scheduler/scheduler_config.json", {"num_train_timesteps": 10**10}),
               "num_train_timesteps 0": ("scheduler/scheduler_config.json", {"num_train_timesteps": 0}),
               "num_train_timesteps -5": ("scheduler/scheduler_config.json", {"num_train_timesteps": -5})}
    made = {}
    for k, (name, (file, change)) in enumerate(changes.items()):
        folder = Path(shutil.copytree(good, root / "models" / f"m{k}"))
        config = json.loads((folder / file).read_text())
        (folder / file).write_text(json.dumps({**config, **change}))
        made[f"model {name}"] = folder
    folder = Path(shutil.copytree(good, root / "models" / "pickle"))
    (folder / "text_encoder" / "model.safetensors").unlink()
    (folder / "text_encoder" / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": os.system}, protocol=2))
    made["model pickled text encoder"] = folder
    folder = Path(shutil.copytree(good, root / "models" / "fifo"))
    (folder / "transformer" / "config.json").unlink()
    os.mkfifo(folder / "transformer" / "config.json")
    made["model FIFO config"] = folder
    return made


def _inputs(root: Path) -> dict[str, Path]:
    """Odd and hostile inputs, made once."""
    made = {"clip": _clip(root / "clip.mp4"), "tiny3x3": _clip(root / "small.mp4", height=16, width=16),
            "five": _clip(root / "five.mp4", frames=5), "two": _clip(root / "two.mp4", frames=2),
            "mjpeg": _clip(root / "m.avi", codec="mjpeg", pix_fmt="yuvj420p"),
            "ts": _clip(root / "secret.ts", codec="mpeg4", fmt="mpegts"),
            "wide": _clip(root / "wide.mp4", height=16, width=512)}
    hls = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{}\n#EXT-X-ENDLIST\n"
    for name, text in {"hls.m3u8": hls.format("secret.ts"), "hls_abs.m3u8": hls.format(root / "secret.ts"),
                       "hls.mp4": hls.format("secret.ts"), "concat.ffconcat": "ffconcat version 1.0\nfile 'clip.mp4'\n",
                       "concat.txt": "ffconcat version 1.0\nfile 'clip.mp4'\n", "notes.txt": "hello\n" * 40,
                       "empty.mp4": "", "garbage.mp4": "\x00\x01garbage" * 100}.items():
        (root / name).write_text(text)
        made[name] = root / name
    (root / "trunc.mp4").write_bytes(made["clip"].read_bytes()[:600])
    made["trunc"] = root / "trunc.mp4"
    (root / "folder.inv").mkdir()
    made["folder.inv"] = root / "folder.inv"
    (root / "junk.inv").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b"x" * 50)
    made["junk.inv"] = root / "junk.inv"
    os.mkfifo(root / "fifo.mp4")
    made["fifo"] = root / "fifo.mp4"
    os.mkfifo(root / "fifo.inv")
    made["fifo.inv"] = root / "fifo.inv"
    made["huge png"] = _huge_png(root / "huge.png", 16000, 16000)
    made["huge jpeg"] = _huge_jpeg(root / "huge.jpg", 16000, 16000)
    (root / "huge_frames").mkdir()
    for k in range(3):
        _png(root / "huge_frames" / f"{k}.png", 64, 64)
    _huge_png(root / "huge_frames" / "3.png", 16000, 16000)
    made["folder with a huge frame"] = root / "huge_frames"
    made["/dev/zero"] = Path("/dev/zero")
    (root / "loop.mp4").symlink_to(root / "loop.mp4")
    made["loop"] = root / "loop.mp4"
    (root / "loop_a.mp4").symlink_to(root / "loop_b.mp4")
    (root / "loop_b.mp4").symlink_to(root / "loop_a.mp4")
    made["loop of two"] = root / "loop_a.mp4"
    (root / "dangling.mp4").symlink_to(root / "nowhere.mp4")
    made["dangling symlink"] = root / "dangling.mp4"
    (root / "link.mp4").symlink_to(made["clip"])
    made["symlink to a clip"] = root / "link.mp4"
    os.mkfifo(root / "fifo_folder")
    made["fifo without suffix"] = root / "fifo_folder"
    for name, (file, codec, pix_fmt, extra) in ENCODINGS.items():
        if codec not in av.codecs_available:
            SKIPPED.append(f"{name}: no {codec} encoder in this FFmpeg")
            continue
        try:
            made[name] = _clip(root / file, codec=codec, pix_fmt=pix_fmt, **extra)
        except Exception as err:  # noqa: BLE001 - an encoder that refuses these settings here
            SKIPPED.append(f"{name}: {codec} could not write it here ({type(err).__name__}: {err})")
            (root / file).unlink(missing_ok=True)
    for name, size in {"rotation 90": (64, 96), "rotation 90 odd size": (48, 80)}.items():
        try:
            made[name] = _rotated(_clip(root / f"upright_{size[1]}.mp4", height=size[0], width=size[1]),
                                  root / f"rot_{size[1]}.mp4")
        except Exception as err:  # noqa: BLE001
            SKIPPED.append(f"{name}: could not write the display matrix ({err})")
    _folders(root, made)
    return made


# ---- broken .inv files, made from one real inversion ------------------------------------------------------------
def _st_parts(data: bytes) -> tuple[dict, bytes]:
    """A safetensors file's JSON header and its tensor bytes."""
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + size]), data[8 + size:]


def _st_bytes(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def _wrong_type(value):
    """A JSON value of another type than ``value``."""
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, (int, float)):
        return "12"
    if isinstance(value, str):
        return 12345
    if isinstance(value, list):
        return {"0": value[:1]}
    if isinstance(value, dict):
        return [1, 2]
    return [None]


def _broken_invs(root: Path, good: Path) -> dict[str, Path]:
    """A family of damaged or foreign .inv files: truncated, bit-flipped, lying lengths, other formats, bad fields."""
    import pickle

    import torch
    from safetensors.torch import save_file

    folder = root / "inv"
    folder.mkdir()
    data = good.read_bytes()
    header, body = _st_parts(data)
    end = 8 + struct.unpack("<Q", data[:8])[0]  # where the tensor bytes start
    meta = json.loads(header["__metadata__"]["vidinvert"])
    made: dict[str, bytes | Path] = {"the real one": data}
    for at in sorted({1, 7, 8, 9, 20, end // 2, end - 1, end, end + 1, end + len(body) // 2, len(data) - 4,
                      len(data) - 1}):
        made[f"truncated at {at}"] = data[:at]
    for length in (2**62, 2**64 - 1, 0, end - 9, end - 7, len(data), 2**31):
        made[f"header length {length}"] = struct.pack("<Q", length) + data[8:]
    flips = [(0, 0), (3, 7), (7, 6)] + [(8 + k * (end - 8) // 12, k % 8) for k in range(12)] \
        + [(end + k * len(body) // 6, (k * 3) % 8) for k in range(6)] + [(len(data) - 1, 7)]
    for at, bit in flips:
        flipped = bytearray(data)
        flipped[at] ^= 1 << bit
        made[f"bit {bit} flipped at {at}"] = bytes(flipped)
    trajectory, clean = [torch.frombuffer(bytearray(body[slice(*header[k]["data_offsets"])]), dtype=torch.float32)
                         .reshape(header[k]["shape"]) for k in ("trajectory", "clean")]
    pickle_path = folder / "pickle.inv"
    pickle_path.write_bytes(pickle.dumps({"trajectory": trajectory.tolist(), "meta": meta}))
    made["a pickle"] = pickle_path
    torch.save({"trajectory": trajectory, "clean": clean, "meta": meta}, folder / "torch_save.inv")
    made["a torch.save file"] = folder / "torch_save.inv"
    torch.save(trajectory, folder / "torch_tensor.inv")
    made["a torch.save tensor"] = folder / "torch_tensor.inv"
    np.save(folder / "numpy.npy", trajectory.numpy())
    made["a numpy file"] = folder / "numpy.npy"
    plain = {"trajectory": trajectory, "clean": clean}
    header_text = json.dumps(meta)

    def saved(name: str, tensors: dict, metadata: dict | None) -> None:
        save_file({k: v.contiguous() for k, v in tensors.items()}, folder / f"{len(made)}.inv", metadata=metadata)
        made[name] = folder / f"{len(made)}.inv"

    saved("safetensors without our header", plain, None)
    saved("safetensors with another tool's header", plain, {"format": "pt"})
    saved("no clean tensor", {"trajectory": trajectory}, {"vidinvert": header_text})
    saved("float16 trajectory", {"trajectory": trajectory.half(), "clean": clean}, {"vidinvert": header_text})
    saved("trajectory of another shape", {"trajectory": trajectory[:, :, :1], "clean": clean},
          {"vidinvert": header_text})
    saved("empty trajectory", {"trajectory": trajectory[:0], "clean": clean}, {"vidinvert": header_text})
    saved("NaN in the trajectory", {"trajectory": trajectory * float("nan"), "clean": clean},
          {"vidinvert": header_text})
    saved("inf in the clean latents", {"trajectory": trajectory, "clean": clean / 0}, {"vidinvert": header_text})
    for name, text in {"header not JSON": "{not json", "header a list": "[]", "header null": "null",
                       "header a number": "1e999", "header deeply nested": "[" * 100000 + "]" * 100000}.items():
        saved(name, plain, {"vidinvert": text})
    changes = {f"field {key} of the wrong type": {key: _wrong_type(value)} for key, value in meta.items()}
    changes.update({f"field {key} missing": {key: None} for key in ("model_fingerprint", "num_steps", "timesteps")})
    changes.update({"num_steps 10**30": {"num_steps": 10**30}, "latent_shape 2**40": {"latent_shape": [2**40] * 5},
                    "format_version 999": {"format_version": 999}, "an unknown field": {"extra": 1},
                    "negative timesteps": {"timesteps": [-1] * len(meta["timesteps"])},
                    "fps NaN": {"fps": float("nan")}, "guidance Infinity": {"guidance": float("inf")}})
    for name, change in changes.items():
        changed = {k: v for k, v in {**meta, **change}.items() if v is not None}
        saved(name, plain, {"vidinvert": json.dumps(changed)})
    out = {}
    for name, content in made.items():
        if isinstance(content, bytes):
            path = folder / f"{len(out)}-raw.inv"
            path.write_bytes(content)
            content = path
        out[f"inv {name}"] = content
    return out


def _cases(i: dict[str, Path]) -> list[tuple[str, list[str]]]:
    clip = str(i["clip"])
    base = ["--steps", "2", "--quiet"]
    cases = [("edit clip", ["edit", clip, "--prompt", "x", *base]),
             ("invert clip", ["invert", clip, *base]),
             ("edit 5 frames", ["edit", str(i["five"]), "--prompt", "x", *base]),
             ("edit 2 frames", ["edit", str(i["two"]), "--prompt", "x", *base]),
             ("edit 16x16", ["edit", str(i["tiny3x3"]), "--prompt", "x", *base]),
             ("edit 16x512", ["edit", str(i["wide"]), "--prompt", "x", *base]),
             ("edit mjpeg", ["edit", str(i["mjpeg"]), "--prompt", "x", *base]),
             ("vae tiling", ["edit", clip, "--prompt", "x", "--vae-tiling", "--height", "64", "--width", "96", *base]),
             ("reuse kv tiny budget", ["edit", clip, "--prompt", "x", "--reuse-kv", "--kv-budget-gb", "1e-9", *base]),
             ("checkpointed invert", ["invert", clip, "--checkpoint-every", "1", *base]),
             ("4K on tiny", ["edit", clip, "--prompt", "x", "--height", "2160", "--width", "3840", *base]),
             ("two prompts", ["edit", clip, "--prompt", "x", "--prompt", "y", *base])]
    for name in ("hls.m3u8", "hls_abs.m3u8", "hls.mp4", "concat.ffconcat", "concat.txt", "notes.txt", "empty.mp4",
                 "garbage.mp4", "trunc", "fifo", "loop", "loop of two", "dangling symlink", "symlink to a clip",
                 "fifo without suffix", *[k for k in (*ENCODINGS, "rotation 90", "rotation 90 odd size") if k in i],
                 *[k for k in i if k.startswith("folder ")]):
        cases.append((f"input {name}", ["edit", str(i[name]), "--prompt", "x", *base]))
    for name in ("huge png", "huge jpeg", "/dev/zero"):  # the huge frame's folder is among the folders
        cases.append((f"input {name}", ["edit", str(i[name]), "--prompt", "x", *base]))
    cases.append(("saved fifo.inv", ["edit", str(i["fifo.inv"]), "--prompt", "x", "--quiet"]))
    cases.append(("saved fifo.inv as --use-inversion", ["edit", clip, "--use-inversion", str(i["fifo.inv"]),
                                                        "--prompt", "x", *base]))
    for name in [k for k in i if k.startswith("model ")]:
        cases.append((name, ["invert", clip, *base, "--model", str(i[name])]))
    for name in ("folder.inv", "junk.inv", *[k for k in i if k.startswith("inv ")]):
        cases.append((f"saved {name}", ["edit", str(i[name]), "--prompt", "x", "--quiet"]))
    for option in (["--steps", "1001"], ["--fps", "inf"], ["--fps", "0"], ["--seed", str(2**80)],
                   ["--injection-blocks", "99"], ["--injection-blocks", "0-1000000000"], ["--injection-blocks", "5-1"],
                   ["--injection-blocks", ""], ["--max-iter", "0"], ["--kv-budget-gb", "nan"], ["--tol", "nan"],
                   ["--tol", "-1"], ["--anderson", "-1"], ["--height", "65"], ["--width", "-16"],
                   ["--max-num-frames", "0"], ["--device", "mps"], ["--device", "tpu"], ["--dtype", "int8"],
                   ["--frame-sample-step", "0"]):
        cases.append((f"option {' '.join(option) or repr(option)}", ["edit", clip, "--prompt", "x", *base, *option]))
    cases += [("output is the input", ["edit", clip, "--prompt", "x", "-o", clip, "--force", *base]),
              ("output is a folder", ["edit", clip, "--prompt", "x", "-o", str(i["folder.inv"]), *base]),
              ("output under a file", ["edit", clip, "--prompt", "x", "-o", clip + "/out.mp4", *base]),
              ("output .txt", ["edit", clip, "--prompt", "x", "-o", "out.txt", *base]),
              ("no prompt", ["edit", clip, *base])]
    return cases


def _digest(paths) -> dict[str, str]:
    out = {}
    for path in paths:
        try:
            if path.is_file() and not path.is_fifo():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            pass
    return out


def _valid_video(path: Path) -> bool:
    try:
        with av.open(str(path)) as container:
            return next(container.decode(video=0), None) is not None
    except Exception:  # noqa: BLE001 - anything unreadable is invalid
        return False


def run_case(name: str, args: list[str], inputs: dict[str, Path], root: Path, env: dict) -> str | None:
    """None if the case held, else what went wrong."""
    work = Path(tempfile.mkdtemp(prefix="case-", dir=root))
    before = _digest(inputs.values())
    try:
        proc = subprocess.run([sys.executable, "-m", "vidinvert.cli", *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "timed out"
    err = proc.stderr.strip().splitlines()
    left = [p for p in list(work.rglob("*")) + list(root.glob(".vidinvert-*")) if p.name.startswith(".vidinvert-")
            or p.name.endswith(".partial")]
    if left:
        return f"left behind: {[p.name for p in left]}"
    if _digest(inputs.values()) != before:
        return "an input changed"
    if proc.returncode == 0:
        bad = [p.name for p in work.rglob("*.mp4") if not _valid_video(p)]
        return f"invalid outputs {bad}" if bad else None
    if proc.returncode != 2:
        return f"exit {proc.returncode}: {' | '.join(err[-3:])}"
    usage = err and err[0].startswith("usage: ")  # argparse: usage lines, then "vidinvert ...: error: ..."
    if "Traceback" in proc.stderr or not err or not (err[-1].startswith("vidinvert: error: ") or usage
                                                     and ": error: " in err[-1]):
        return f"not a one-line error: {' | '.join(err[-3:])}"
    if not usage and any(not line.startswith("vidinvert: ") for line in err):
        return f"stray stderr lines: {' | '.join(err[:3])}"
    if any(p.is_file() for p in work.rglob("*")):
        return f"a failed run left files: {[p.name for p in work.rglob('*')]}"
    return None


# ---- signals and concurrent runs -------------------------------------------------------------------------------
def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "vidinvert.cli", *args, "--model", "tiny"]


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _interrupted_then_resumed(sig: int, inputs: dict[str, Path], root: Path, env: dict) -> str | None:
    """A checkpointed inversion stopped by ``sig`` after a few saved steps; the same command then resumes and
    gives the tensors of an uninterrupted run, bit for bit, and leaves no temp or checkpoint."""
    import signal
    import time

    import torch

    work = Path(tempfile.mkdtemp(prefix="case-", dir=root))
    steps = ["--steps", "40", "--quiet"]
    reference = work / "reference.inv"
    done = subprocess.run(_cli(["invert", str(inputs["clip"]), *steps, "-o", str(reference)]), env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return f"the uninterrupted run failed: {done.stderr.strip()}"
    out = work / "out.inv"
    command = _cli(["invert", str(inputs["clip"]), *steps, "--checkpoint-every", "1", "-o", str(out)])
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    partial = work / "out.inv.partial"
    deadline = time.monotonic() + 300
    while len(list(partial.glob("steps-*.safetensors"))) < 3:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            return f"the run ended (exit {proc.returncode}) before saving 3 steps; use more --steps"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        lines = err.strip().splitlines()
        if proc.returncode != 130 or len(lines) != 1 or "Traceback" in err or out.exists():
            return f"Ctrl-C: exit {proc.returncode}, stderr {lines[-3:]}, output exists: {out.exists()}"
        if [p.name for p in work.iterdir() if p.name.startswith(".vidinvert-")]:
            return "Ctrl-C left temps"
    elif proc.returncode != -signal.SIGKILL:
        return f"kill -9 gave exit {proc.returncode}"
    saved = len(list(partial.glob("steps-*.safetensors")))
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if again.returncode != 0:
        return f"the rerun failed: {again.stderr.strip()}"
    resumed = json.loads(again.stdout).get("resumed_steps") if again.stdout.strip().startswith("{") else None
    left = [p.name for p in work.iterdir() if p.name.startswith(".vidinvert-") or p.name.endswith(".partial")]
    if left:
        return f"left behind after the resume: {left}"
    a, b = _tensors(reference), _tensors(out)
    if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
        return "the resumed inversion differs from the uninterrupted one"
    if resumed is not None and not resumed >= 3:
        return f"the rerun did not resume ({resumed} steps resumed, {saved} were saved)"
    return None


def _concurrent(inputs: dict[str, Path], root: Path, env: dict, command: str) -> str | None:
    """Two runs started together on the same output, without --force: exactly one wins, the other says why."""
    work = Path(tempfile.mkdtemp(prefix="case-", dir=root))
    out = work / ("out.inv" if command == "invert" else "out.mp4")
    args = [command, str(inputs["clip"]), "--steps", "2", "--quiet", "-o", str(out)]
    if command == "edit":
        args += ["--prompt", "x", "--no-comparison"]
    procs = [subprocess.Popen(_cli(args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read().strip().splitlines()) for p in procs]
    codes = sorted(code for code, _ in results)
    loser = [lines for code, lines in results if code != 0]
    if codes != [0, 2] or len(loser[0]) != 1 or not loser[0][0].startswith("vidinvert: error: "):
        return f"exits {codes}, loser said {loser}"
    left = [p.name for p in work.iterdir() if p.name.startswith(".vidinvert-") or p.name.endswith(".partial")]
    if left:
        return f"left behind: {left}"
    if command == "edit" and not _valid_video(out):
        return "the winner's output is not a valid video"
    return None


def _process_cases(inputs, root, env) -> list[tuple[str, object]]:
    import signal

    return [("process SIGINT mid-inversion then resume", lambda: _interrupted_then_resumed(signal.SIGINT, inputs,
                                                                                          root, env)),
            ("process SIGKILL mid-inversion then resume", lambda: _interrupted_then_resumed(signal.SIGKILL, inputs,
                                                                                           root, env)),
            ("process two concurrent inverts, same output", lambda: _concurrent(inputs, root, env, "invert")),
            ("process two concurrent edits, same output", lambda: _concurrent(inputs, root, env, "edit"))]


# ---- batch: job files and folders a hostile (or careless) user gives -----------------------------------------------
def _rows(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path.name


def _batch_cases(clip: Path) -> list[tuple[str, object]]:
    """``(name, setup)``: ``setup(work)`` lays out files in ``work`` and returns the batch's arguments."""
    def copy(work: Path, *names: str) -> None:
        for name in names:
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_bytes(clip.read_bytes())

    def default_id_is_the_inputs_folder(w):
        copy(w, "car/car.mp4")
        (w / "car" / "notes.txt").write_text("mine\n")
        return [_rows(w / "jobs.jsonl", [{"video": "car/car.mp4", "prompt": "a"}]), "--output-dir", "."]

    def explicit_id_is_a_folder_of_inputs(w):
        copy(w, "clips/a.mp4", "clips/b.mp4")
        return [_rows(w / "jobs.jsonl", [{"id": "clips", "video": "clips/a.mp4", "prompt": "a"}]),
                "--output-dir", "."]

    def generated_id_meets_an_explicit_one(w):
        copy(w, "clip.mp4", "d/clip.mp4")
        return [_rows(w / "jobs.jsonl", [{"video": "clip.mp4", "prompt": "a"},
                                         {"id": "clip-3", "video": "clip.mp4", "prompt": "b"},
                                         {"video": "d/clip.mp4", "prompt": "c"}]), "--output-dir", "out"]

    def bad_row_after_an_id_like_its_fallback(w):
        copy(w, "clip.mp4")
        return [_rows(w / "jobs.jsonl", [{"id": "row-2", "video": "clip.mp4", "prompt": "a"}, {"prompt": "b"}]),
                "--output-dir", "out"]

    def id_names_the_results_table(w):
        copy(w, "clip.mp4")
        return [_rows(w / "jobs.jsonl", [{"id": "results.jsonl", "video": "clip.mp4", "prompt": "a"},
                                         {"video": "clip.mp4", "prompt": "a"}]), "--output-dir", "out"]

    def torn_results_line(w):
        copy(w, "clip.mp4")
        (w / "out").mkdir()
        (w / "out" / "results.jsonl").write_text('{"clip": "old", "record": "r", "status": "failed", "line": 9, '
                                                 '"outputs": [], "job_hash": null}\n{"clip": "x", "rec')
        return [_rows(w / "jobs.jsonl", [{"video": "clip.mp4", "prompt": "a"}]), "--output-dir", "out"]

    def users_results_file(w):
        copy(w, "clip.mp4")
        (w / "results.jsonl").write_text("my own notes\n")
        return [_rows(w / "jobs.jsonl", [{"video": "clip.mp4", "prompt": "a"}]), "--output-dir", "."]

    def rows(*rows, name="jobs.jsonl"):
        def setup(w):
            copy(w, "clip.mp4")
            return [_rows(w / name, list(rows)), "--output-dir", "out"]
        return setup

    def raw(data: bytes, name: str = "jobs.jsonl"):
        def setup(w):
            copy(w, "clip.mp4")
            (w / name).write_bytes(data)
            return [name, "--output-dir", "out"]
        return setup

    def fifo_job_file(w):
        os.mkfifo(w / "jobs.jsonl")
        return ["jobs.jsonl", "--output-dir", "out"]

    def with_flags(*flags):
        def setup(w):
            return rows({"video": "clip.mp4", "prompt": "a"})(w) + list(flags)
        return setup

    good = '{"video": "clip.mp4", "prompt": "a"}\n'.encode()
    return [("batch default id is the inputs' folder", default_id_is_the_inputs_folder),
            ("batch explicit id is a folder of inputs", explicit_id_is_a_folder_of_inputs),
            ("batch generated id meets an explicit one", generated_id_meets_an_explicit_one),
            ("batch bad row after an id like its fallback", bad_row_after_an_id_like_its_fallback),
            ("batch id results.jsonl", id_names_the_results_table),
            ("batch torn last results line", torn_results_line),
            ("batch output folder holds the user's results.jsonl", users_results_file),
            ("batch prompt 5", rows({"video": "clip.mp4", "prompt": 5})),
            ("batch prompt true", rows({"video": "clip.mp4", "prompt": True})),
            ("batch id 5", rows({"video": "clip.mp4", "prompt": "a", "id": 5})),
            ("batch negative-prompt -blurry", rows({"video": "clip.mp4", "prompt": "a", "negative-prompt": "-blurry"})),
            ("batch binary job file", raw(bytes(range(256)) * 8)),
            ("batch Latin-1 byte in a row", raw(b'{"video": "clip.mp4", "prompt": "caf\xe9"}\n' + good)),
            ("batch UTF-8 BOM", raw(b"\xef\xbb\xbf" + good)),
            ("batch BOM csv", raw(b"\xef\xbb\xbfvideo,prompt\nclip.mp4,a\n", "jobs.csv")),
            ("batch FIFO job file", fifo_job_file),
            ("batch --gpus-per-worker -1", with_flags("--gpus-per-worker", "-1")),
            ("batch --address bogus", with_flags("--address", "bogus")),
            ("batch --address ray://127.0.0.1:1", with_flags("--address", "ray://127.0.0.1:1")),
            ("batch --address 127.0.0.1:1", with_flags("--address", "127.0.0.1:1")),
            ("batch 2 GPU workers, no GPU", with_flags("--workers", "2", "--gpus-per-worker", "1"))]


def _files(work: Path) -> dict[str, str]:
    return {str(p.relative_to(work)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in work.rglob("*") if p.is_file() and not p.is_fifo() and not p.is_symlink()}


def run_batch_case(setup, root: Path, env: dict, ours: tuple[str, ...] = ()) -> str | None:
    """A batch must end in exit 0 (all done), 1 (some rows failed, each recorded once with a one-line error) or 2
    (one ``vidinvert: error:`` line); never a traceback or a hang; every file that was there is there unchanged, but
    ``ours`` (vidinvert's own results table, which it rewrites)."""
    work = Path(tempfile.mkdtemp(prefix="case-", dir=root))
    args = setup(work)
    before = _files(work)
    try:
        proc = subprocess.run([sys.executable, "-m", "vidinvert.cli", "batch", *args, "--model", "tiny", "--steps",
                               "2", "--quiet"], cwd=work, env=env, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "timed out"
    after = _files(work)
    changed = [k for k, v in before.items() if after.get(k) != v and k not in ours]
    if changed:
        return f"the user's files changed or went: {changed}"
    if "Traceback" in proc.stderr:
        return f"traceback: {proc.stderr.strip().splitlines()[-1]}"
    left = [p.name for p in work.rglob(".vidinvert-*")]
    if left:
        return f"left behind: {left}"
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("vidinvert: ")]
    if lines:
        return f"stray stderr lines: {lines[:3]}"
    if proc.returncode == 2:
        return None if proc.stderr.strip().splitlines()[-1].startswith("vidinvert: error: ") else "exit 2, no error"
    if proc.returncode not in (0, 1):
        return f"exit {proc.returncode}"
    jobs = work / args[0]
    out = work / args[args.index("--output-dir") + 1]
    table = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    rows = len([line for line in jobs.read_bytes().splitlines() if line.strip()]) - (jobs.suffix == ".csv")
    mine = [r for r in table if r["clip"] != "old"]  # "old": the torn table's earlier record, which must stay
    if ours and len(table) - len(mine) != 1:
        return "the earlier record of the table was lost"
    if sorted(r["line"] for r in mine) != list(range(1, rows + 1)):
        return f"rows recorded {sorted(r['line'] for r in mine)}, expected each of 1..{rows} once"
    if any(r["status"] == "failed" and "\n" in r["error"] for r in mine):
        return "a multi-line error"
    if (proc.returncode == 1) != any(r["status"] == "failed" for r in mine):
        return f"exit {proc.returncode} does not match the recorded statuses"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    args = parser.parse_args()
    env = {**os.environ, "VIDINVERT_MODEL": "tiny", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="vidinvert-adversarial-") as folder:
        root = Path(folder)
        inputs = _inputs(root)
        if not args.only or args.only.startswith("model"):
            inputs.update(_model_folders(root))
        good = root / "good.inv"
        wants_inv = not args.only.startswith(("input", "option", "process", "output", "batch"))  # the .inv cases may run
        made = subprocess.run([sys.executable, "-m", "vidinvert.cli", "invert", str(inputs["clip"]), "--steps", "2",
                               "--quiet", "--model", "tiny", "-o", str(good)], env=env, capture_output=True,
                              text=True) if wants_inv else None
        if wants_inv and made.returncode != 0:
            print(f"FAIL could not make the inversion the .inv cases start from: {made.stderr.strip()}")
            return 1
        if wants_inv:
            inputs.update(_broken_invs(root, good))
        for why in SKIPPED:
            print(f"skip {why}", flush=True)
        for name, case in _cases(inputs):
            if args.only not in name:
                continue
            problem = run_case(name, case + ([] if "--model" in case else ["--model", "tiny"]), inputs, root, env)
            failed += problem is not None
            print(f"{'FAIL' if problem else 'ok  '} {name}{': ' + problem if problem else ''}", flush=True)
        for name, setup in _batch_cases(inputs["clip"]):
            if args.only not in name:
                continue
            problem = run_batch_case(setup, root, env, ("out/results.jsonl",) if "torn" in name else ())
            failed += problem is not None
            print(f"{'FAIL' if problem else 'ok  '} {name}{': ' + problem if problem else ''}", flush=True)
        for name, case in _process_cases(inputs, root, env):
            if args.only not in name:
                continue
            before = _digest(inputs.values())
            problem = case() or ("an input changed" if _digest(inputs.values()) != before else None)
            failed += problem is not None
            print(f"{'FAIL' if problem else 'ok  '} {name}{': ' + problem if problem else ''}", flush=True)
    print(f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
