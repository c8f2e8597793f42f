"""Counting transformer calls: how many forward passes ran, and how many batch rows each evaluated.

The cost of inverting and editing is transformer rows; the tests and benches read it off a forward pre-hook on the
transformer itself, so it does not depend on the library's own accounting (``EditStats``, ``model_fn.batch_rows``).

    with counting(model.transformer) as calls:
        with calls.phase("invert"):
            inversion = invert(model, latents, steps=10)
    calls.batches                # [1, 1, ...]: every call's batch size, in order
    calls.summary()["invert"]    # {"calls": 10, "rows": 10, "batch_sizes": {"1": 10}}
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class CallCounter:
    """Records the batch size of every forward call of ``transformer``, under the phase active at the time.

    Args:
        transformer: the module whose calls are counted (``VideoModel.transformer`` or a pipeline's
            ``transformer``); its first input (``hidden_states``) is ``[B, ...]``, B the rows of the call.
    """

    def __init__(self, transformer: torch.nn.Module):
        self.current = "other"  # phase of calls made outside any ``phase()``
        self.calls: list[tuple[str, int]] = []  # (phase, batch size) of each call, in order
        self.phases: list[str] = []  # phases entered, in order (a phase with no calls still appears)
        self.handle = transformer.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        self.calls.append((self.current, int(hidden.shape[0])))

    @property
    def batches(self) -> list[int]:
        """Batch size of every call so far, in order, whatever the phase."""
        return [size for _, size in self.calls]

    @contextmanager
    def phase(self, name: str):
        """Count the calls made inside the block under ``name`` (phases may be entered more than once)."""
        previous, self.current = self.current, name
        if name not in self.phases:
            self.phases.append(name)
        try:
            yield self
        finally:
            self.current = previous

    def summary(self) -> dict:
        """``{phase: {"calls": n, "rows": total rows, "batch_sizes": {"size": count}}}`` for every phase seen."""
        out = {name: {"calls": 0, "rows": 0, "batch_sizes": {}} for name in self.phases}
        for name, size in self.calls:
            entry = out.setdefault(name, {"calls": 0, "rows": 0, "batch_sizes": {}})
            entry["calls"] += 1
            entry["rows"] += size
            entry["batch_sizes"][str(size)] = entry["batch_sizes"].get(str(size), 0) + 1
        return out

    def close(self) -> None:
        """Remove the hook (idempotent)."""
        self.handle.remove()


@contextmanager
def counting(transformer: torch.nn.Module):
    """A ``CallCounter`` on ``transformer`` for the duration of the block; the hook is removed however it ends."""
    counter = CallCounter(transformer)
    try:
        yield counter
    finally:
        counter.close()
