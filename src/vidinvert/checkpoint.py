"""Inversion checkpoints: the finished part of a long inversion saved every N steps, so Ctrl-C loses little.

A checkpoint is a safetensors file holding the steps inverted so far (sampling order, least noisy last) and a key
describing exactly what is being inverted (model, latents, schedule, text, guidance, method). A run with the same
key resumes after the last saved step; any other key ignores the file (and overwrites it at its first save).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .atomic import atomic_write
from .errors import VidinvertError


def latents_hash(latents: torch.Tensor) -> str:
    """sha256 of float32 latents (shape included), to tie a checkpoint to its input."""
    data = latents.detach().float().cpu().contiguous()
    return hashlib.sha256(str(tuple(data.shape)).encode() + data.numpy().tobytes()).hexdigest()


class InversionCheckpoint:
    """Saves and restores a partial inversion.

    Args:
        path: the checkpoint file (e.g. ``clip.inv.partial``).
        every: save after every ``every`` finished steps (>= 1).
        key: JSON-serialisable description of the inversion; must match for a resume.
    """

    def __init__(self, path: str | os.PathLike, every: int, key: dict):
        if every < 1:
            raise ValueError(f"checkpoint interval must be >= 1, got {every}")
        self.path = Path(path)
        self.every = every
        self.key = json.dumps(key, sort_keys=True, default=str)
        self.done: list[torch.Tensor] = []  # finished latents, inversion order (least noisy first)

    def resume(self) -> torch.Tensor | None:
        """The saved steps as ``[k, B, T, C, h, w]`` in sampling order, or ``None`` if nothing matches."""
        from safetensors import safe_open

        if not self.path.is_file():
            return None
        try:
            with safe_open(str(self.path), framework="pt", device="cpu") as handle:
                if (handle.metadata() or {}).get("key") != self.key:
                    return None
                saved = handle.get_tensor("trajectory")
        except Exception:  # a damaged checkpoint is simply not used
            return None
        self.done = list(saved.flip(0))
        return saved

    def step(self, i: int, t: int, x: torch.Tensor) -> None:
        """Step callback: remember ``x`` and save every ``every`` steps."""
        self.done.append(x.detach().float().cpu())
        if len(self.done) % self.every == 0:
            self.save()

    def save(self) -> None:
        from safetensors.torch import save_file

        trajectory = torch.stack(self.done).flip(0).contiguous()  # sampling order
        with atomic_write(self.path, force=True) as tmp:
            try:
                save_file({"trajectory": trajectory}, tmp, metadata={"key": self.key})
            except Exception as err:  # safetensors raises its own error type for a full disk
                raise VidinvertError(f"could not save the checkpoint {self.path} ({type(err).__name__}: {err})",
                                     "check the disk has space, or turn checkpoints off") from None

    def finish(self) -> None:
        """The inversion completed: the checkpoint is no longer needed."""
        self.path.unlink(missing_ok=True)
