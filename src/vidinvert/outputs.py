"""Output safety: plan every output path before compute starts; settings JSON written atomically.

Nothing is overwritten without ``force``, an output is never one of the job's inputs (whatever ``force`` says), the
output folder is created if missing, and a folder that cannot be written is refused before any model runs (so hours
of GPU time are not lost at the last step).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .atomic import atomic_write, clean_stale_temps, refuse_existing, temp_prefix
from .errors import VidinvertError


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return False


def plan_outputs(paths: list[Path], force: bool, inputs: list[Path] = ()) -> list[Path]:
    """Check that each path may be written: distinct, not an input, not existing (unless ``force``), folder
    creatable and writable.

    Returns:
        The paths, unchanged, so calls can be chained.
    """
    seen = set()
    for path in paths:
        path = Path(path)
        if path in seen:
            raise VidinvertError(f"two outputs would be written to {path}", "give distinct output names")
        seen.add(path)
        for source in inputs:
            if _same_file(path, Path(source)):
                raise VidinvertError(f"output {path} is an input of this job", "choose another output name")
        refuse_existing(path, force)
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise VidinvertError(f"cannot create output folder {folder} ({err.strerror})", "choose another folder") from None
        try:
            probe = tempfile.NamedTemporaryFile(dir=folder, prefix=temp_prefix("probe"), delete=True)
            probe.close()
        except OSError as err:
            raise VidinvertError(f"output folder {folder} is not writable ({err.strerror or err})",
                                 "choose a writable folder") from None
    for folder in {Path(p).parent for p in paths}:
        clean_stale_temps(folder)  # what killed runs left there
    return paths


def write_json(path: Path, data: dict, force: bool = False) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_write(path, force) as tmp:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
    return Path(path)


def settings_path(output: Path) -> Path:
    """Where the resolved settings of ``output`` go: same name, ``.json``."""
    return Path(output).with_suffix(".json")


def numbered(path: Path, count: int) -> list[Path]:
    """One path per prompt: ``out.mp4`` for one, ``out_1.mp4``, ``out_2.mp4`` ... for several."""
    path = Path(path)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{k + 1}{path.suffix}") for k in range(count)]


def comparison_path(output: Path) -> Path:
    """The side-by-side video written beside ``output``."""
    output = Path(output)
    return output.with_name(f"{output.stem}_comparison{output.suffix}")


def partial_path(output: Path) -> Path:
    """Where an inversion for ``output`` keeps its checkpoint."""
    output = Path(output)
    return output.with_name(output.name + ".partial")
