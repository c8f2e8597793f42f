"""What a batch may touch in its output folder: only what vidinvert's own records say it wrote.

The output folder holds ``results.jsonl``, the lock and one folder per clip, ``<output-dir>/<id>/``. A clip's
folder may hold the user's own files too (an id that names a folder of inputs, an output folder above or inside
the inputs), so nothing there is removed or replaced on trust: each clip folder keeps a manifest
(``.batch-files.json``) of the names vidinvert wrote in it, and a clip runs only where every entry of its folder is
in that manifest or in the results table's record of the clip. A folder holding anything else is the user's, and
the clip is refused in one line instead.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..atomic import TEMP_PATTERN, atomic_write, clean_stale_temps

RESULTS = "results.jsonl"  # the results table, in the output folder
LOCK = ".batch.lock"  # the output folder's lock
MANIFEST = ".batch-files.json"  # in a clip's folder: the names vidinvert wrote there
ATTEMPTS = ".batch-attempts"  # in a clip's folder: how many times a worker has started it in this batch
BOOKKEEPING = frozenset({MANIFEST, ATTEMPTS})
ANOTHER_ID = "give the row another 'id' or use another --output-dir"  # the fix when a clip may not use its folder
RESERVED_IDS = frozenset(name.lower() for name in (RESULTS, LOCK, MANIFEST, ATTEMPTS))  # never a clip's id


def read_manifest(folder: Path) -> set[str]:
    """The names vidinvert wrote in ``folder`` (empty when there is no readable manifest)."""
    try:
        names = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8")).get("written", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {n for n in names if isinstance(n, str) and n and "/" not in n and n not in (".", "..")}


def write_manifest(folder: Path, names: set[str]) -> None:
    with atomic_write(Path(folder) / MANIFEST, force=True) as tmp:
        Path(tmp).write_text(json.dumps({"written": sorted(names)}, indent=1) + "\n", encoding="utf-8")


def foreign_entries(folder: Path, recorded: set[str] = frozenset()) -> list[str]:
    """The entries of ``folder`` vidinvert did not write (sorted): not in its manifest, not in ``recorded`` (names
    the results table lists there), not bookkeeping and not a vidinvert temp (``atomic``'s names, of any writer).
    ``[]`` when there is no folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    owned = read_manifest(folder) | set(recorded) | BOOKKEEPING
    return sorted(p.name for p in folder.iterdir() if p.name not in owned and not TEMP_PATTERN.match(p.name))


def folder_problem(out: Path, clip_id: str, recorded: set[str] = frozenset()) -> str | None:
    """Why clip ``clip_id`` may not use its folder under ``out``, and the fix, in one line; ``None`` when it may."""
    folder = Path(out) / clip_id
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        return f"id {clip_id!r}: {folder} exists and is not a folder vidinvert made; {ANOTHER_ID}"
    foreign = foreign_entries(folder, recorded)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        return (f"id {clip_id!r}: its output folder {folder} holds files vidinvert did not write ({shown}), "
                f"which it will not delete; {ANOTHER_ID}")
    return None


class ClipFolder:
    """A clip's folder during a run: what it held before, what the run added (recorded in the manifest)."""

    def __init__(self, folder: Path):
        self.path = Path(folder)
        # ours to remove when emptied: made here, or holding vidinvert's manifest (an empty folder the user made stays)
        self.removable = not self.path.exists() or (self.path / MANIFEST).is_file()
        self.path.mkdir(parents=True, exist_ok=True)
        self.written = read_manifest(self.path) & self._entries()
        self.before: set[str] = set()  # what the folder held when the run began

    def _entries(self) -> set[str]:
        return {p.name for p in self.path.iterdir()}

    def clear(self, keep: set[str] = frozenset()) -> None:
        """Remove what vidinvert wrote here before (outputs of an earlier run, a dead run's temps), but ``keep``."""
        for name in sorted(self.written - set(keep) - BOOKKEEPING):
            path = self.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            self.written.discard(name)
        clean_stale_temps(self.path)
        self.save()

    def begin(self, expected: set[str]) -> None:
        """Before a run: note what the folder holds, and record ``expected`` (names the run will write) now, so what
        a killed worker leaves of them is known as vidinvert's."""
        self.before = self._entries()
        self.written |= set(expected)
        self.save()

    def claim_new(self) -> None:
        """After a run: record every entry that appeared since ``begin`` as written by vidinvert (the run's
        outputs) and forget names that are gone (those expected that the run did not make)."""
        entries = self._entries()
        self.written = (self.written | (entries - self.before - BOOKKEEPING)) & entries  # names now present
        self.save()

    def save(self) -> None:
        write_manifest(self.path, self.written)

    def remove_if_empty(self) -> None:
        """When the folder holds nothing but bookkeeping (a failed clip), remove the bookkeeping, and the folder too
        unless the user made it (an empty folder of theirs stays as it was)."""
        if self._entries() <= BOOKKEEPING:
            for name in BOOKKEEPING:
                (self.path / name).unlink(missing_ok=True)
            if self.removable:
                try:
                    os.rmdir(self.path)
                except OSError:
                    pass


def adopt_recorded(folder: Path, names: set[str]) -> None:
    """Add to ``folder``'s manifest the names the results table says vidinvert wrote there (folders written before
    manifests existed)."""
    folder = Path(folder)
    present = {n for n in names if (folder / n).exists()}
    if folder.is_dir() and not folder.is_symlink() and present - read_manifest(folder):
        write_manifest(folder, read_manifest(folder) | present)
