"""What an inversion was made from, as typed records, and the strict reader of a saved ``.inv`` header.

``SourceInfo`` says where the latents came from (file, frames read, how they were read); ``InversionMeta`` adds the
model, the schedule and how the trajectory was solved. Both are saved as JSON in the ``.inv`` header and read back
by ``parse_meta``, which checks every field's type and range: a damaged or foreign header is a one-line error,
never a half-valid object. Format 1 files (an untyped ``extra`` dict) still load.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import SettingsError, VidinvertError
from .settings import MAX_STEPS, METHODS, ReadSettings


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (an uploaded video's cache key, a LoRA's identity)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAX_SIDE = 1 << 16  # pixel sizes and latent dimensions above this are damage, not video


@dataclass(frozen=True)
class SourceInfo:
    """The source of an inversion's latents."""

    path: str = ""  # absolute path of the video as read ("" if unknown)
    hash: str = ""  # video.frames_hash of the frames read ("" if unknown)
    frames: int = 0  # pixel frames read
    height: int = 0  # pixel height read
    width: int = 0  # pixel width read
    fps: float = 0.0  # frame rate of the source (0 = unknown)
    indices: tuple[int, ...] = ()  # source frame numbers read
    read: ReadSettings | None = None  # the read settings, to read the same frames again


@dataclass(frozen=True)
class InversionMeta:
    """What an inversion was made from; saved with it and checked before an edit uses it."""

    model: str  # model name or path
    model_fingerprint: str  # the model's fingerprint(): configs + a sample of the weights
    num_steps: int  # steps of the full schedule
    timesteps: tuple  # model timestep of each stored step, sampling order (a tail of the schedule); ints for DDIM,
    #                   floats (sigma x 1000) for flow-matching schedulers that hand the model float timesteps
    latent_shape: tuple[int, ...]  # [B, T, C, h, w]
    frames: int  # pixel frames of the source
    height: int  # pixel height
    width: int  # pixel width
    source_hash: str = ""  # frames_hash of the source frames ("" if unknown)
    source: str = ""  # absolute path of the source video ("" if unknown)
    prompt: str = ""  # text the trajectory was inverted with
    negative_prompt: str = ""  # uncond text when guidance > 1
    guidance: float = 1.0  # guidance scale used while inverting
    method: str = "ddim"  # "ddim" or "fixed-point"
    iterations: tuple[int, ...] = ()  # transformer evaluations per stored step (sampling order)
    residuals: tuple[float, ...] = ()  # fixed-point: final relative residual per stored step (sampling order)
    fps: float = 0.0  # frame rate of the source (0 = unknown)
    indices: tuple[int, ...] = ()  # source frame numbers read
    read: ReadSettings | None = None  # how the frames were read (to read them again for a comparison)
    resumed_steps: int = 0  # steps taken from a checkpoint (their evaluation counts are unknown: 0)
    split_clean_end: bool = False  # the last step was cut in two (timesteps has num_steps + 1 entries when full)
    window: int = 0  # latent frames per temporal window (0: one window, the whole clip; files before windows)
    window_overlap: int = 0  # least latent frames neighbouring windows share (0 for one window)
    # the fixed-point solver's settings (InvertSettings' fields); None: not used (DDIM), or a file saved before they
    # were recorded (clean_max_iter also when it was max_iter's)
    tol: float | None = None
    max_iter: int | None = None
    clean_max_iter: int | None = None
    anderson: int | None = None
    condition_hash: str = ""  # an image-to-video inversion: frames_hash of the frame it is conditioned on ("": none)
    format_version: int = FORMAT_VERSION

    @property
    def steps_stored(self) -> int:
        """Steps of the model's schedule the trajectory covers (the split clean-end step counts once)."""
        return len(self.timesteps) - int(self.split_clean_end)

    def source_info(self) -> SourceInfo:
        return SourceInfo(self.source, self.source_hash, self.frames, self.height, self.width, self.fps,
                          self.indices, self.read)

    def to_json(self) -> dict:
        return asdict(self)


# ---- reading a header -----------------------------------------------------------------------------------------
class _Damaged(Exception):
    pass


def _int(value, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise _Damaged
    return value


def _float(value, low: float = 0.0, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Damaged
    if value < low or (high is not None and value > high):
        raise _Damaged
    return float(value)


def _str(value) -> str:
    if not isinstance(value, str):
        raise _Damaged
    return value


def _ints(value, low: int = 0, high: int | None = None, length: int | None = None) -> tuple[int, ...]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise _Damaged
    return tuple(_int(v, low, high) for v in value)


def _optional(value, read, *limits):
    return None if value is None else read(value, *limits)


def _timesteps(value) -> tuple:
    """Timesteps as saved: all ints (DDIM, UniPC) or finite numbers (flow matching's ``sigma * 1000``)."""
    if not isinstance(value, list):
        raise _Damaged
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return _ints(value, 0, 100_000)
    return tuple(_float(v, 0.0, 100_000.0) for v in value)


def _read(value) -> ReadSettings | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Damaged
    try:
        return ReadSettings(**value)
    except (TypeError, SettingsError):
        raise _Damaged from None


def _upgrade(raw: dict) -> dict:
    """Format 1 -> format 2: the untyped ``extra`` dict becomes typed fields."""
    raw = dict(raw)
    extra = raw.pop("extra", {})
    if not isinstance(extra, dict):
        raise _Damaged
    for key in ("fps", "indices", "read", "resumed_steps"):
        if key in extra:
            raw[key] = extra[key]
    raw["format_version"] = FORMAT_VERSION
    return raw


def parse_meta(raw, path: str | Path) -> InversionMeta:
    """``InversionMeta`` from a file's JSON header, every field checked; anything else is a one-line error."""
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise VidinvertError(f"{path} has inversion format {version!r}, which this vidinvert cannot read",
                             "invert the video again")
    try:
        if version == 1:
            raw = _upgrade(raw)
        known = {f.name for f in fields(InversionMeta)}
        if set(raw) - known or not {"model", "model_fingerprint", "num_steps", "timesteps", "latent_shape",
                                    "frames", "height", "width"} <= set(raw):
            raise _Damaged
        num_steps = _int(raw["num_steps"], 1, MAX_STEPS)
        timesteps = _timesteps(raw["timesteps"])
        split = raw.get("split_clean_end", False)
        if not isinstance(split, bool):
            raise _Damaged
        if not 1 <= len(timesteps) <= num_steps + split:
            raise _Damaged
        iterations = _ints(raw.get("iterations", []), 0, 1_000_000)
        residuals = raw.get("residuals", [])
        if not isinstance(residuals, list):
            raise _Damaged
        residuals = tuple(_float(r) for r in residuals)
        if len(iterations) not in (0, len(timesteps)) or len(residuals) not in (0, len(timesteps)):
            raise _Damaged
        latent_shape = _ints(raw["latent_shape"], 1, MAX_SIDE, length=5)
        window, window_overlap = _int(raw.get("window", 0), 0, MAX_SIDE), _int(raw.get("window_overlap", 0), 0, MAX_SIDE)
        if (window == 0 and window_overlap) or (window and not 1 <= window_overlap < window < latent_shape[1]):
            raise _Damaged
        method = _str(raw.get("method", "ddim"))
        if method not in METHODS or not _str(raw["model_fingerprint"]):
            raise _Damaged
        return InversionMeta(
            model=_str(raw["model"]),
            model_fingerprint=raw["model_fingerprint"],
            num_steps=num_steps,
            timesteps=timesteps,
            latent_shape=latent_shape,
            frames=_int(raw["frames"], 1, MAX_SIDE),
            height=_int(raw["height"], 1, MAX_SIDE),
            width=_int(raw["width"], 1, MAX_SIDE),
            source_hash=_str(raw.get("source_hash", "")),
            source=_str(raw.get("source", "")),
            prompt=_str(raw.get("prompt", "")),
            negative_prompt=_str(raw.get("negative_prompt", "")),
            guidance=_float(raw.get("guidance", 1.0), 1.0),
            method=method,
            iterations=iterations,
            residuals=residuals,
            fps=_float(raw.get("fps", 0.0), 0.0, 1000.0),
            indices=_ints(raw.get("indices", []), 0),
            read=_read(raw.get("read")),
            resumed_steps=_int(raw.get("resumed_steps", 0), 0, MAX_STEPS),
            split_clean_end=split,
            window=window,
            window_overlap=window_overlap,
            tol=_optional(raw.get("tol"), _float, 0.0, 1.0),
            max_iter=_optional(raw.get("max_iter"), _int, 1, 1_000_000),
            clean_max_iter=_optional(raw.get("clean_max_iter"), _int, 1, 1_000_000),
            anderson=_optional(raw.get("anderson"), _int, 0, 1_000_000),
            condition_hash=_str(raw.get("condition_hash", "")),
        )
    except (_Damaged, KeyError):
        raise VidinvertError(f"{path} has damaged metadata", "invert the video again") from None
