"""Resumable demo training: each stage's full state saved every few minutes, so an interrupted
``python -m training.train`` run continues where it stopped and ends with the weights an uninterrupted run
would have written (same step order, same random draws: model, optimizer, EMA and generator states are all saved).

A folder holds ``config.json`` (the training config the states belong to) and one ``<stage>.pt`` per stage
(``vae``, ``latents``, ``transformer``), each written to a temporary name and renamed, so a kill mid-write leaves
the previous state intact.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

STAGES = ("vae", "latents", "transformer")


class CheckpointMismatch(SystemExit):
    pass


class Checkpoints:
    """Saves and loads stage states under ``folder`` for one training ``config`` (a JSON-able dict)."""

    def __init__(self, folder: str | Path, config: dict, every_minutes: float = 5.0, fresh: bool = False):
        self.folder = Path(folder)
        self.every = 60.0 * every_minutes
        self.last = time.time()
        config = json.loads(json.dumps(config))  # tuples -> lists, as read back
        stored = self.folder / "config.json"
        if fresh and self.folder.exists():
            shutil.rmtree(self.folder)
        if stored.exists() and json.loads(stored.read_text()) != config:
            raise CheckpointMismatch(
                f"error: the checkpoints in {self.folder} belong to a different training config; pass --fresh to "
                f"start over, or --checkpoints with another folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        stored.write_text(json.dumps(config, indent=1) + "\n")

    def load(self, stage: str) -> dict | None:
        path = self.folder / f"{stage}.pt"
        if not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=False)

    def latest(self) -> dict | None:
        """The state of the furthest stage saved (for the log and the elapsed time), or None."""
        for stage in reversed(STAGES):
            state = self.load(stage)
            if state is not None:
                return state
        return None

    def due(self) -> bool:
        return time.time() - self.last >= self.every

    def save(self, stage: str, state: dict) -> None:
        path = self.folder / f"{stage}.pt"
        partial = path.with_suffix(".pt.partial")
        torch.save(state, partial)
        partial.replace(path)
        self.last = time.time()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state
