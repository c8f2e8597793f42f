"""Device and dtype names -> torch objects, with one-line errors for what this machine cannot do."""

from __future__ import annotations

import torch

from ..errors import VidinvertError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"fp32" | "bf16" | "fp16"`` (or a torch dtype) -> torch dtype, with a one-line error otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise VidinvertError(f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when present else CPU; a device this machine lacks is refused in one line."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise VidinvertError(f"unknown device {device!r}", "use cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise VidinvertError(f"unsupported device {str(device)!r}", "use cpu, cuda, cuda:N or auto")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VidinvertError("CUDA was asked for but no CUDA device is available", "use --device cpu (slow) or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VidinvertError(f"there is no {device} (this machine has {torch.cuda.device_count()} CUDA devices)",
                                 "use cuda:0 or auto")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise VidinvertError("MPS was asked for but this machine has no usable MPS device", "use --device cpu or auto")
    return device


def auto_dtype(dtype: str, device: torch.device) -> str:
    """``"auto"`` -> bf16 on CUDA, fp32 elsewhere; any other name unchanged."""
    if dtype != "auto":
        return dtype
    return "bf16" if device.type == "cuda" else "fp32"


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device`` now (CUDA: free GPU memory; CPU: the kernel's MemAvailable), or
    ``None`` when it cannot be told (then nothing is refused on memory grounds)."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        if device.type == "cpu":
            with open("/proc/meminfo") as handle:
                for line in handle:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
    except (OSError, RuntimeError, ValueError):
        return None
    return None


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is torch's or Python's way of saying an allocation failed (CUDA or CPU)."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
