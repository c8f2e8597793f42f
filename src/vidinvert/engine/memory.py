"""Memory: the peak a job used, a size refused before it is run, an out-of-memory failure turned into one line."""

from __future__ import annotations

import gc
import resource
from contextlib import contextmanager

import torch

from ..errors import VidinvertError
from ..models.base import VideoFamily
from ..models.device import is_out_of_memory


def peak_memory() -> dict:
    """Peak resident memory of this process (MiB) and, on CUDA, peak allocated GPU memory (MiB)."""
    peak = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


@contextmanager
def guard_memory(phase: str):
    """Turn an out-of-memory failure into a one-line error with what to try, after freeing what can be freed."""
    try:
        yield
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        del err
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise VidinvertError(
            f"out of memory during {phase}",
            "try cpu offload, VAE tiling, bf16, fewer frames or a smaller size",
        ) from None


def check_memory(model: VideoFamily, frames: int, height: int, width: int, rows: int = 2) -> None:
    """Refuse, with the numbers, a size whose estimated peak memory exceeds what the device has free now (instead of
    the kernel killing the process hours later)."""
    from ..models.device import available_memory

    free = available_memory(torch.device(model.device))
    if free is None:
        return
    need = model.memory_need(frames, height, width, rows)
    phase, peak = max(need.items(), key=lambda item: item[1])
    if peak > free:
        gib = 2**30
        raise VidinvertError(
            f"{frames} frames of {height}x{width} need about {peak / gib:.1f} GiB for the {phase} "
            f"(estimate: VAE {need['vae'] / gib:.1f} GiB, transformer {need['transformer'] / gib:.1f} GiB with "
            f"{rows} batch rows), but only {free / gib:.1f} GiB is free on {model.device}",
            "use a smaller --height/--width, fewer frames (--max-num-frames), --vae-tiling or fewer prompts per run")
