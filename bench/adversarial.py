"""Adversarial rerun (issue 17): hostile inputs and options through the real CLI, each in its own folder.

Every case must end in either exit 0 with valid outputs, or exit 2 with one line on stderr ("vidinvert: error: ...")
and no traceback; in both cases no temp file (``.vidinvert-*``) or checkpoint is left and the inputs are unchanged.

    PYTHONPATH=src python bench/adversarial.py [--only SUBSTRING]

Runs on the tiny model on CPU (a few minutes); prints one line per case and exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np


def _clip(path: Path, frames: int = 9, height: int = 64, width: int = 64, codec: str = "libx264",
          pix_fmt: str = "yuv420p", fmt: str | None = None) -> Path:
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i in range(frames):
            image = np.full((height, width, 3), (i * 25) % 255, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path


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
    (root / "loop.mp4").symlink_to(root / "loop.mp4")
    made["loop"] = root / "loop.mp4"
    return made


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
                 "garbage.mp4", "trunc", "fifo", "loop"):
        cases.append((f"input {name}", ["edit", str(i[name]), "--prompt", "x", *base]))
    for name in ("folder.inv", "junk.inv"):
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    args = parser.parse_args()
    env = {**os.environ, "VIDINVERT_MODEL": "tiny", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="vidinvert-adversarial-") as folder:
        root = Path(folder)
        inputs = _inputs(root)
        for name, case in _cases(inputs):
            if args.only not in name:
                continue
            problem = run_case(name, case + ["--model", "tiny"], inputs, root, env)
            failed += problem is not None
            print(f"{'FAIL' if problem else 'ok  '} {name}{': ' + problem if problem else ''}", flush=True)
    print(f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
