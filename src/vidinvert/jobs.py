"""The user-level job, step by step: open a video as latents, invert it, edit it, decode. Used by the CLI (and any
front end); each step is a thin composition of the library functions, with settings as frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import gc
import resource
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .errors import VidinvertError
from .inversion import Inversion, invert
from .model import VideoModel
from .video import Clip, frames_hash, read_video


@dataclass(frozen=True)
class ReadSettings:
    """How frames are taken from the source video (the public script's options, plus resize mode)."""

    height: int | None = None  # pixel height; None = the model's native height (480 for CogVideoX-5b)
    width: int | None = None  # pixel width; None = the model's native width (720 for CogVideoX-5b)
    skip_start: int = 0  # frames dropped from the start
    skip_end: int = 0  # frames dropped from the end
    stride: int | None = None  # take every n-th frame; None = only when the range exceeds max_frames
    max_frames: int = 49  # most frames kept (then trimmed to 4k+1)
    resize: str = "stretch"  # "stretch" straight to size (as the reference) or "crop" (cover, centre-crop)


@dataclass(frozen=True)
class InvertSettings:
    """How the video is inverted."""

    steps: int = 50  # DDIM steps of the schedule (edits use the same)
    prompt: str = ""  # text the video is inverted with (the reference uses "")
    guidance: float = 1.0  # guidance while inverting (1 = one batch row per step)
    negative_prompt: str = ""  # uncond text when guidance > 1
    method: str = "ddim"  # "ddim" (1 evaluation/step) or "fixed-point" (exact, ~3 evaluations/step)
    strength: float = 1.0  # fraction of the schedule inverted, from the clean end
    tol: float = 1e-6  # fixed-point: per-step relative residual to reach
    max_iter: int = 10  # fixed-point: evaluations allowed per step
    anderson: int = 0  # fixed-point: Anderson history (0 = plain iteration)
    record_kv: bool = False  # keep reference keys/values in memory for reuse_kv edits
    kv_budget_gb: float = 4.0  # most memory the recorded keys/values may take
    checkpoint_every: int = 0  # save finished steps every N steps so an interrupted run resumes (0 = off)
    trajectory_device: str | None = None  # where the stored trajectory lives ("cpu" spares GPU memory)


@dataclass(frozen=True)
class Source:
    """A video opened for a model: the frames read and their VAE latents."""

    clip: Clip
    latents: torch.Tensor  # float32 [1, T, C, h, w]
    hash: str  # frames_hash of clip.frames
    read: ReadSettings  # how the frames were taken (saved with an inversion, to re-read the same frames)


def native_size(model: VideoModel) -> tuple[int, int]:
    """(height, width) in pixels the transformer was configured for."""
    return model.config.sample_height * model.spatial_factor, model.config.sample_width * model.spatial_factor


def open_source(model: VideoModel, path: str, read: ReadSettings = ReadSettings()) -> Source:
    """Read frames sized for ``model`` and encode them; one-line errors for anything unusable."""
    height, width = read.height, read.width
    if height is None and width is None:
        height, width = native_size(model)
    clip = read_video(
        path,
        height,
        width,
        skip_start=read.skip_start,
        skip_end=read.skip_end,
        stride=read.stride,
        max_frames=read.max_frames,
        resize=read.resize,
        multiple=model.size_multiple,
        temporal_multiple=model.temporal_factor,
    )
    with guard_memory("encoding the video"):
        latents = model.encode(clip.frames)
    if not torch.isfinite(latents).all():
        raise VidinvertError("the VAE produced NaN/inf latents", "use --dtype fp32 or bf16 instead of fp16")
    return Source(clip, latents, frames_hash(clip.frames), read)


def invert_source(
    model: VideoModel, source: Source, settings: InvertSettings, progress: bool = False, checkpoint=None
) -> Inversion:
    """Invert an opened video; the inversion records the source hash and the frame selection.

    ``checkpoint`` is the file partial inversions are saved to when ``settings.checkpoint_every > 0``.
    """
    options = {}
    if settings.method == "fixed-point":
        options = dict(tol=settings.tol, max_iter=settings.max_iter, anderson=settings.anderson)
    clip = source.clip
    with guard_memory("inversion"):
        return invert(
            model,
            source.latents,
            steps=settings.steps,
            prompt=settings.prompt,
            guidance=settings.guidance,
            negative_prompt=settings.negative_prompt,
            method=settings.method,
            strength=settings.strength,
            progress=progress,
            record_kv=settings.record_kv,
            kv_budget_gb=settings.kv_budget_gb,
            checkpoint=checkpoint if settings.checkpoint_every > 0 else None,
            checkpoint_every=max(1, settings.checkpoint_every),
            trajectory_device=settings.trajectory_device,
            meta=dict(
                source_hash=source.hash,
                source=clip.source,
                frames=clip.frames.shape[0],
                height=clip.frames.shape[2],
                width=clip.frames.shape[3],
                fps=clip.fps,
                indices=list(clip.indices),
                read=dataclasses.asdict(source.read),
            ),
            **options,
        )


def decode(model: VideoModel, latents: torch.Tensor) -> torch.Tensor:
    """Latents ``[K, T, C, h, w]`` -> frames ``[K, F, C, H, W]`` in [-1, 1], one video at a time."""
    with guard_memory("decoding"):
        return torch.cat([model.decode(latents[k : k + 1]) for k in range(latents.shape[0])])


def peak_memory() -> dict:
    """Peak resident memory of this process (MiB) and, on CUDA, peak allocated GPU memory (MiB)."""
    peak = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(err, MemoryError)
    )


@contextmanager
def guard_memory(phase: str):
    """Turn an out-of-memory failure into a one-line error with what to try, after freeing what can be freed."""
    try:
        yield
    except (RuntimeError, MemoryError) as err:
        if not _is_oom(err):
            raise
        del err
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise VidinvertError(
            f"out of memory during {phase}",
            "try --cpu-offload model, --vae-tiling, --dtype bf16, fewer frames (--max-num-frames) or a smaller size",
        ) from None
