"""One clip on one worker: its folder checked and cleared, its inversion reused or made, ``engine.run_edit``, one row
per prompt.

A clip writes in the folder ``<output-dir>/<id>/`` and touches there only what vidinvert wrote (``folders``): a
folder holding anything else is refused. Before it runs, what earlier runs wrote there is removed except a saved
inversion made with the same inversion settings (``<video>.<hash>.inv``): what a killed worker left (complete
videos of some prompts, its temp files) never mixes with a new run, and a rerun after a changed prompt reuses the
inversion. The edit itself is ``run_edit``, the job ``vidinvert edit`` runs, with the same settings. A FlowEdit
clip (``method`` ``flowedit``) makes no inversion, so none is saved or reused: its rows say ``"inversion": null``.
"""

from __future__ import annotations

import gc
import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import torch

from ..atomic import atomic_write
from ..errors import VidinvertError
from .folders import ATTEMPTS, ClipFolder, folder_problem
from ..engine import load_model, run_edit
from ..outputs import partial_path
from ..models.base import VideoFamily
from ..settings import ModelSettings
from .jobfile import ClipJob
from .table import failed_rows, now

MAX_ERROR = 300  # characters kept of an unexpected error's message


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def one_line(err: BaseException) -> str:
    """A failure as one line: a ``VidinvertError`` as it reads; anything else with its type."""
    if isinstance(err, VidinvertError):
        return str(err)
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:MAX_ERROR] if text else type(err).__name__


@contextmanager
def torch_threads(count: int | None):
    """Run the block with ``count`` torch threads (CPU results depend on it in the last bits)."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ModelCache:
    """The one model a worker holds: loaded on first use, replaced when a clip names another."""

    def __init__(self):
        self.settings: ModelSettings | None = None
        self.model: VideoFamily | None = None
        self.notes: list[str] = []
        self.loads = 0

    def get(self, settings: ModelSettings) -> VideoFamily:
        if self.model is None or settings != self.settings:
            self.model = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.model = load_model(settings, self.notes)
            self.settings = settings
            self.loads += 1
        return self.model


def inversion_path(folder: Path, job: ClipJob) -> Path:
    """Where a clip's inversion is saved: named by the settings it depends on, so another setting never reuses it."""
    return Path(folder) / f"{Path(job.video).stem}.{job.inversion_hash[:12]}.inv"


def count_attempt(folder: Path) -> int:
    """Count one more attempt at the clip in ``folder``; return how many there have been (this one included)."""
    path = Path(folder) / ATTEMPTS
    try:
        count = int(path.read_text().strip() or 0) + 1
    except (OSError, ValueError):
        count = 1
    with atomic_write(path, force=True) as tmp:
        Path(tmp).write_text(f"{count}\n")
    return count


def reset_attempts(folder: Path) -> None:
    (Path(folder) / ATTEMPTS).unlink(missing_ok=True)


def run_clip(job: ClipJob, out: Path, models: ModelCache, max_attempts: int | None = None) -> list[dict]:
    """Edit one clip with all its prompts; ``done`` rows, or ``failed`` rows with the one-line error.

    Args:
        max_attempts: with workers that may die, the tries a clip gets: each call counts one in the clip's folder
            (the batch resets the count when it plans the clip); past the limit the clip is recorded as failed
            without running.

    Ctrl-C (``KeyboardInterrupt``) is not caught: nothing is recorded and no half-written file stays (every
    writer is atomic; a job's videos appear together or not at all).
    """
    out = Path(out)
    record, started = uuid.uuid4().hex, time.perf_counter()
    folder = out / job.id
    problem = folder_problem(out, job.id)  # checked when planned; again here, where the files are touched
    if problem is not None:
        return failed_rows(job, problem, record, worker=worker_name())
    clip_folder = ClipFolder(folder)  # made here if it was not there
    attempt = 1
    if max_attempts is not None:
        attempt = count_attempt(folder)
        if attempt > max_attempts:
            return failed_rows(job, f"its worker died while editing it, {max_attempts} times", record,
                               worker=worker_name())
    flowedit = job.edit.method == "flowedit"  # no inversion to save or reuse
    inversion = None if flowedit else inversion_path(folder, job)
    reuse = (not flowedit and inversion.is_file() and inversion.name in clip_folder.written
             and not job.edit.injection.reuse_kv)  # keys/values are never saved
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    clip_folder.clear(keep={inversion.name} if reuse else set())
    clip_folder.begin(set() if inversion is None else {inversion.name, partial_path(inversion).name})
    try:
        model = models.get(job.model)
        result = run_edit(job.video, list(job.prompts), job.model, job.read, job.invert, job.edit,
                          job.output(folder), use_inversion=str(inversion) if reuse else None,
                          save_inversion=None if reuse or flowedit else str(inversion), model=model,
                          first_frames=list(job.first_frames))
    except Exception as err:  # a broken clip is recorded; the batch goes on
        if reuse:
            inversion.unlink(missing_ok=True)  # in case the saved inversion was the problem: the rerun makes it anew
        reset_attempts(folder)
        return failed_rows(job, one_line(err), record, worker=worker_name(), attempt=attempt,
                           seconds=round(time.perf_counter() - started, 2))
    finally:  # Ctrl-C included: what the run left here is vidinvert's, and recorded as such; no empty folder
        clip_folder.claim_new()
        clip_folder.remove_if_empty()
    reset_attempts(folder)
    summary = result.summary
    seconds = round(time.perf_counter() - started, 2)
    memory = {k: summary[k] for k in ("peak_rss_mib", "peak_gpu_mib") if k in summary}
    rows = []
    for k, prompt in enumerate(job.prompts):
        files = [result.outputs[k]] + ([result.comparisons[k]] if result.comparisons else [])
        files.append(result.settings_files[k])
        rows.append({"clip": job.id, "line": job.line, "prompt_index": k + 1, "prompt": prompt, "status": "done",
                     "outputs": [str(Path(f).relative_to(out)) for f in files], "error": None,
                     "job_hash": job.job_hash, "record": record, "finished": now(), "worker": worker_name(),
                     "attempt": attempt,
                     "seconds": seconds, "edit_seconds": summary.get("edit_seconds"),
                     "inversion": None if flowedit else str(inversion.relative_to(out)), "inversion_reused": reuse,
                     "warnings": list(result.warnings), **memory,
                     **({"metrics": summary["metrics"][k]} if "metrics" in summary else {})})
    return rows
