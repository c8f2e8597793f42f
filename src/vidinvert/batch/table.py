"""The results table, the output folder's lock, and the plan: which clips are done, which run.

``results.jsonl`` holds one line per clip and prompt: status (``done`` / ``failed``), the files written (relative
to the output folder), seconds, peak memory, the one-line error of a failure, and the job's settings hash. During a
run, finished clips are appended (a crash loses nothing done); at the end the table is rewritten with only the
latest record of each clip, in job-file order. A clip is done when its latest record is ``done`` for every prompt,
with the job's current settings hash, and every file it lists exists.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path

from ..errors import VidinvertError
from ..atomic import atomic_write
from .folders import LOCK, RESULTS
from .jobfile import BadRow, ClipJob



def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


# ---- lock -------------------------------------------------------------------------------------------------------
class BatchLock:
    """An exclusive lock on an output folder (``flock`` on ``.batch.lock``; released when the process ends, so a
    killed run never leaves it stale). A second batch on the same folder is refused with who holds it."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        self.handle = None

    def __enter__(self) -> "BatchLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        except OSError as err:
            raise VidinvertError(f"cannot write to output folder {self.path.parent} ({err.strerror})",
                                 "choose a writable --output-dir") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise VidinvertError(f"another vidinvert batch is writing to {self.path.parent} ({holder})",
                                 "wait for it to finish, or use another --output-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {now()}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.truncate(0)
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


# ---- table ------------------------------------------------------------------------------------------------------
class ResultsTable:
    """``results.jsonl`` of an output folder: the latest record (its rows, one per prompt) of every clip."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / RESULTS
        self.latest: dict[str, list[dict]] = {}
        self.torn = False  # the file ends in a line cut short (a crash): the next record starts on a new line
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise VidinvertError(f"{self.path} is not a results table vidinvert wrote (not a regular file)",
                                 "use another --output-dir, or move it away")
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        self.torn = bool(data) and not data.endswith(b"\n")
        lines, records = data.splitlines(), 0
        for text in lines:
            try:
                row = json.loads(text)
                clip, record = row["clip"], row["record"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash: that clip is simply redone
            records += 1
            rows = self.latest.get(clip)
            if rows and rows[0]["record"] == record:
                rows.append(row)
            else:
                self.latest[clip] = [row]
        if lines and not records:  # rewriting it at the end would destroy someone else's file
            raise VidinvertError(f"{self.path} is not a results table vidinvert wrote (no line is a batch record)",
                                 "use another --output-dir, or move that file away")

    def recorded(self, clip: str) -> set[str]:
        """The names in the clip's folder that its latest record says vidinvert wrote (outputs, inversion)."""
        paths = [p for r in self.latest.get(clip, []) for p in [*r.get("outputs", []), r.get("inversion")]
                 if isinstance(p, str)]
        return {Path(p).name for p in paths if Path(p).parent == Path(clip)}

    def is_done(self, job: ClipJob) -> bool:
        rows = self.latest.get(job.id, [])
        return (len(rows) == len(job.prompts) and all(r["status"] == "done" and r["job_hash"] == job.job_hash
                                                      for r in rows)
                and all((self.folder / f).is_file() for r in rows for f in r["outputs"]))

    def add(self, rows: list[dict]) -> None:
        """Record one clip's rows (appended at once, flushed to disk)."""
        if not rows:
            return
        self.latest[rows[0]["clip"]] = rows
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write("\n" * self.torn + "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
            handle.flush()
            os.fsync(handle.fileno())
        self.torn = False

    def compact(self, order: list[str]) -> None:
        """Rewrite the table with the latest record of each clip: clips of the job file first, in its order."""
        clips = [c for c in order if c in self.latest] + [c for c in self.latest if c not in set(order)]
        with atomic_write(self.path, force=True) as tmp:
            with open(tmp, "w", encoding="utf-8") as handle:
                for clip in clips:
                    handle.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in self.latest[clip]))


def failed_rows(job: ClipJob | BadRow, error: str, record: str, **extra) -> list[dict]:
    """One ``failed`` row per prompt (one row if the prompts are unknown)."""
    prompts = list(job.prompts) or [None]
    job_hash = job.job_hash if isinstance(job, ClipJob) else None
    return [{"clip": job.id, "line": job.line, "prompt_index": k + 1, "prompt": p, "status": "failed",
             "outputs": [], "error": error, "job_hash": job_hash, "record": record, "finished": now(), **extra}
            for k, p in enumerate(prompts)]
