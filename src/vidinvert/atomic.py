"""One way to write a file: into a hidden temp file beside it, then renamed over the target in one step.

Every writer (videos, settings JSON, saved inversions, checkpoints) goes through ``atomic_write``, so a crash, a
full disk or Ctrl-C never leaves a half-written file under the final name, and nothing is overwritten without
``force``.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import VidinvertError

TEMP_PREFIX = ".vidinvert-"  # temp files start with this (hidden; recognisable as ours)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def refuse_existing(path: Path, force: bool) -> None:
    """One-line errors for a target that is a folder, or that exists without ``force``."""
    if path.is_dir():
        raise VidinvertError(f"output {path} is a folder", "give a file name, e.g. out.mp4")
    if path.exists() and not force:
        raise VidinvertError(f"{path} already exists", "use --force to overwrite or choose another name")


@contextmanager
def atomic_write(path: str | os.PathLike, force: bool = False) -> Iterator[str]:
    """Yield a temp file path beside ``path``; when the block ends without error it becomes ``path``.

    The temp file gets the mode a new file would get (mkstemp makes 0600). On any exception, Ctrl-C included, the
    temp file is removed and ``path`` is left as it was.

    Args:
        path: the final file; missing folders are created.
        force: allow replacing an existing file.
    """
    path = Path(path)
    refuse_existing(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.stem}.", suffix=path.suffix or ".tmp",
                                       dir=path.parent)
        os.close(handle)
        os.chmod(tmp, 0o666 & ~_umask())
    except OSError as err:
        raise VidinvertError(f"cannot write to {path.parent} ({err.strerror or err})",
                             "check the folder exists and is writable") from None
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
