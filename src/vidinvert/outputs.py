"""Output safety: plan every output path before compute starts, write small files atomically.

Nothing is overwritten without ``force``, the output folder is created if missing, and a folder that cannot be
written is refused before any model runs (so hours of GPU time are not lost at the last step).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import VidinvertError


def plan_outputs(paths: list[Path], force: bool) -> list[Path]:
    """Check that each path may be written: not existing (unless ``force``), folder creatable and writable.

    Returns:
        The paths, unchanged, so calls can be chained.
    """
    seen = set()
    for path in paths:
        if path in seen:
            raise VidinvertError(f"two outputs would be written to {path}", "give distinct output names")
        seen.add(path)
        if path.is_dir():
            raise VidinvertError(f"output {path} is a folder", "give a file name, e.g. out.mp4")
        if path.exists() and not force:
            raise VidinvertError(f"{path} already exists", "use --force to overwrite or choose another name")
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise VidinvertError(f"cannot create output folder {folder} ({err.strerror})", "choose another folder") from None
        try:
            probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".vidinvert-probe-", delete=True)
            probe.close()
        except OSError:
            raise VidinvertError(f"output folder {folder} is not writable", "choose a writable folder with -o") from None
    return paths


def publish(tmp: str, path: Path) -> None:
    """Give a finished temp file the permissions a new file would get, then rename it onto ``path`` atomically."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_json(path: Path, data: dict, force: bool = False) -> Path:
    """Write ``data`` as indented JSON, atomically (temp file + rename)."""
    path = Path(path)
    if path.exists() and not force:
        raise VidinvertError(f"{path} already exists", "use --force to overwrite or choose another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def settings_path(output: Path) -> Path:
    """Where the resolved settings of ``output`` go: same name, ``.json``."""
    return output.with_suffix(".json")
