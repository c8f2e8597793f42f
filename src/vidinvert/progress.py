"""Progress bars for long loops, as a step callback (the samplers stay free of terminal output)."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def progress_callback(total: int, label: str, enabled: bool, inner=None):
    """Yield ``callback(i, t, x)`` that advances a tqdm bar of ``total`` steps (and calls ``inner`` if given).

    Args:
        total: number of steps.
        label: bar label, e.g. ``"invert"``.
        enabled: ``False`` gives a callback that only calls ``inner``.
        inner: another ``callback(i, t, x)`` to chain, or ``None``.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=label, unit="step", disable=not enabled, leave=False, dynamic_ncols=True)

    def callback(i, t, x):
        bar.update(1)
        bar.set_postfix(t=int(t), refresh=False)
        if inner is not None:
            inner(i, t, x)

    try:
        yield callback
    finally:
        bar.close()
