"""Inversion checkpoints: the finished part of a long inversion saved every N steps, so Ctrl-C loses little.

A checkpoint is a folder (e.g. ``clip.inv.partial/``) holding ``key.json`` (exactly what is being inverted: model,
latents, schedule, text, guidance, method) and one safetensors file per save, ``steps-<first>.safetensors``, with
the steps finished since the previous save (inversion order, least noisy first). Saving appends a file, so the
cost of a save does not grow with the steps done. A run with the same key resumes after the last saved step (the
stored float32 latents are the ones computed, so a resumed inversion is bit-identical); any other key, or files
that do not fit the latents, are ignored (with a warning for the latter) and replaced at the first save.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path

import torch

from .atomic import TEMP_PATTERN, atomic_write, clean_stale_temps
from .errors import VidinvertError

KEY_FILE = "key.json"
CHUNK = re.compile(r"^steps-(\d{6})\.safetensors$")


def latents_hash(latents: torch.Tensor) -> str:
    """sha256 of float32 latents (shape included), to tie a checkpoint to its input."""
    data = latents.detach().float().cpu().contiguous()
    return hashlib.sha256(str(tuple(data.shape)).encode() + data.numpy().tobytes()).hexdigest()


class InversionCheckpoint:
    """Saves and restores a partial inversion.

    Args:
        path: the checkpoint folder (e.g. ``clip.inv.partial``).
        every: save after every ``every`` finished steps (>= 1).
        key: JSON-serialisable description of the inversion; must match for a resume.
        shape: the shape of one step's latents ``(B, T, C, h, w)``; saved steps of another shape are not used.
    """

    def __init__(self, path: str | os.PathLike, every: int, key: dict, shape: tuple[int, ...] | None = None):
        if every < 1:
            raise ValueError(f"checkpoint interval must be >= 1, got {every}")
        self.path = Path(path)
        self.every = every
        self.key = json.dumps(key, sort_keys=True, default=str)
        self.shape = tuple(shape) if shape is not None else None
        self.done: list[torch.Tensor] = []  # finished latents, inversion order (least noisy first)
        self.saved = 0  # how many of ``done`` are on disk
        self.fresh = True  # what is in ``path`` is not ours yet: clear it at the first save

    def _chunks(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if CHUNK.match(p.name) and p.is_file())  # no FIFO: it blocks

    def resume(self) -> torch.Tensor | None:
        """The saved steps as ``[k, B, T, C, h, w]`` in sampling order, or ``None`` if nothing matches."""
        from safetensors import safe_open

        if not self.path.is_dir() or not (self.path / KEY_FILE).is_file():  # is_file: a FIFO would block the read
            return None
        clean_stale_temps(self.path)
        try:
            if json.loads((self.path / KEY_FILE).read_text()).get("key") != self.key:
                return None
        except (OSError, ValueError, AttributeError):
            return None
        steps = []
        for chunk in self._chunks():
            try:
                with safe_open(str(chunk), framework="pt", device="cpu") as handle:
                    saved = handle.get_tensor("steps")  # [k, B, T, C, h, w], inversion order
            except Exception:  # a damaged file (e.g. the disk filled): keep what came before it
                break
            if int(CHUNK.match(chunk.name).group(1)) != len(steps) or saved.ndim < 2 or saved.dtype != torch.float32 \
                    or (self.shape is not None and tuple(saved.shape[1:]) != self.shape):
                warnings.warn(f"the checkpoint {self.path} does not fit this inversion (saved steps of shape "
                              f"{tuple(saved.shape[1:])}, expected {self.shape}); starting over", stacklevel=2)
                return None
            steps.extend(saved.unbind(0))
        if not steps:
            return None
        self.done, self.saved, self.fresh = steps, len(steps), False
        return torch.stack(steps).flip(0)  # sampling order

    def step(self, i: int, t: int, x: torch.Tensor) -> None:
        """Step callback: remember ``x`` and save every ``every`` steps."""
        self.done.append(x.detach().float().cpu())
        if len(self.done) % self.every == 0:
            self.save()

    def save(self) -> None:
        """Append the steps finished since the last save as one file."""
        from safetensors.torch import save_file

        try:
            if self.fresh:  # another inversion's checkpoint (or an old single-file one): replace it
                self.finish()
                self.path.mkdir(parents=True, exist_ok=True)
                with atomic_write(self.path / KEY_FILE, force=True, now=True) as tmp:
                    Path(tmp).write_text(json.dumps({"key": self.key}))
                self.fresh = False
            new = torch.stack(self.done[self.saved:]).contiguous()  # [k, B, T, C, h, w], inversion order
            with atomic_write(self.path / f"steps-{self.saved:06d}.safetensors", force=True, now=True) as tmp:
                save_file({"steps": new}, tmp)
        except BaseException as err:
            if self.saved == 0:  # nothing resumable was saved: leave no empty checkpoint behind
                self.finish()
                self.fresh = True
            if not isinstance(err, Exception):  # Ctrl-C
                raise
            why = err.problem if isinstance(err, VidinvertError) else f"{type(err).__name__}: {err}"
            # safetensors raises its own error type for a full disk
            raise VidinvertError(f"could not save the checkpoint {self.path} ({why})",
                                 "check the disk has space, or turn checkpoints off") from None
        self.saved = len(self.done)

    def finish(self) -> None:
        """The inversion completed: remove the checkpoint's files (only ours), and its folder once empty."""
        if self.path.is_symlink() or self.path.is_file():  # a format-1 checkpoint was one file
            self.path.unlink(missing_ok=True)
            return
        if not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            ours = entry.name == KEY_FILE or CHUNK.match(entry.name) or TEMP_PATTERN.match(entry.name)
            if ours and entry.is_file():
                entry.unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:  # something else is in there: leave it
            pass
