"""The batch: lock the output folder, read the job file, plan (skip what is done), run, record, summarise.

Clips run in this process (one worker, no Ray import) or on Ray workers (``ray_runner``); either way each clip is
``clip.run_clip`` and each finished clip's rows are appended to the results table as they arrive. A progress bar
counts clips x prompts; the summary counts edits done, failed and skipped (done before, same settings).
"""

from __future__ import annotations

import importlib.util
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..errors import VidinvertError
from .folders import adopt_recorded, folder_problem
from .clip import ModelCache, reset_attempts, run_clip, torch_threads
from .jobfile import BadRow, ClipJob, read_jobs
from .table import BatchLock, ResultsTable, failed_rows


@dataclass
class BatchSummary:
    """What a batch did. Counts are edits (clip x prompt)."""

    clips: int = 0  # rows of the job file
    edits: int = 0  # clip x prompt
    done: int = 0  # edits made in this run
    failed: int = 0  # edits whose clip failed (bad row, broken video, worker died too often)
    skipped: int = 0  # edits done by an earlier run with the same settings
    seconds: float = 0.0
    clips_per_minute: float | None = None  # clips that ran (done or failed) per minute of this run
    model_work: bool = False  # whether any clip ran
    engine: str = "none"  # "in-process", "ray" or "none" (nothing to do)
    workers: int = 0
    results: str = ""  # the results table
    errors: list[str] = field(default_factory=list)  # "<clip>: <one-line error>" per failed clip
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def run_in_process(jobs: list[ClipJob], out: Path, threads: int | None, notes: list[str]) -> Iterator[list[dict]]:
    """Each clip in turn in this process, with one loaded model."""
    models = ModelCache()
    with torch_threads(threads):
        for job in jobs:
            yield run_clip(job, out, models)
            notes.extend(n for n in models.notes if n not in notes)


def run_batch(jobs_file: str | Path, output_dir: str | Path, defaults=None, *, workers: int = 1,
              address: str | None = None, gpus_per_worker: float | None = None, cpus_per_worker: int = 1,
              retries: int = 2, progress: bool = True,
              on_result: Callable[[list[dict]], None] | None = None) -> BatchSummary:
    """Run every clip of ``jobs_file`` not already done into ``output_dir``.

    Args:
        defaults: per-clip options from the command line (``jobfile.clip_defaults(...)``; ``None``: the defaults).
        workers: 1 runs in this process (no Ray import, unless ``address`` is given); more runs that many Ray
            workers, each holding a loaded model (falls back to this process, with a note, when Ray is missing).
        address: a Ray cluster to join (``auto``, ``ray://host:10001``); ``None`` starts a local one when needed.
        gpus_per_worker: GPUs per Ray worker (``None``: 1 when the cluster has GPUs, else 0).
        cpus_per_worker: CPU cores per worker, and its torch threads.
        retries: times a clip is retried when its Ray worker dies.
        on_result: called with each finished clip's rows as they are recorded.
    """
    if workers < 1 or cpus_per_worker < 1 or retries < 0:
        raise VidinvertError("workers and cpus per worker must be >= 1 and retries >= 0",
                             "use e.g. --workers 2 --cpus-per-worker 1 --retries 2")
    if gpus_per_worker is not None and not (math.isfinite(gpus_per_worker) and gpus_per_worker >= 0):
        raise VidinvertError(f"--gpus-per-worker must be a number >= 0, got {gpus_per_worker}",
                             "use e.g. --gpus-per-worker 1 (or 0 for CPU workers), or leave it out")
    out = Path(output_dir).resolve()
    started = time.perf_counter()
    summary = BatchSummary(results=str(out / "results.jsonl"), workers=workers)
    with BatchLock(out):
        jobs = read_jobs(jobs_file, defaults, summary.notes)
        table = ResultsTable(out)
        pending: list[ClipJob] = []
        refused: list[ClipJob] = []  # clips whose folder holds files vidinvert did not write
        for job in jobs:
            if isinstance(job, BadRow):
                table.add(failed_rows(job, job.error, uuid.uuid4().hex))
                continue
            adopt_recorded(out / job.id, table.recorded(job.id))
            problem = folder_problem(out, job.id)
            if problem is not None:
                table.add(failed_rows(job, f"row {job.line}: {problem}", uuid.uuid4().hex))
                refused.append(job)
            elif table.is_done(job):
                summary.skipped += len(job.prompts)
            else:
                reset_attempts(out / job.id)
                pending.append(job)
        summary.clips = len(jobs)
        summary.edits = sum(max(1, len(job.prompts)) for job in jobs)
        from tqdm.auto import tqdm

        bar = tqdm(total=summary.edits, initial=summary.edits - sum(len(j.prompts) for j in pending),
                   desc="batch", unit="edit", disable=not progress, dynamic_ncols=True)
        try:
            if pending:
                summary.model_work = True
                use_ray = workers > 1 or address is not None
                if use_ray and not ray_available():
                    if address is not None:
                        raise VidinvertError("joining a Ray cluster needs Ray", "pip install 'vidinvert[cluster]'")
                    summary.notes.append(f"Ray is not installed: running in this process instead of {workers} "
                                         "workers (pip install 'vidinvert[cluster]')")
                    use_ray = False
                if use_ray:
                    from .ray_runner import run_on_ray

                    summary.engine = "ray"
                    stream = run_on_ray(pending, out, workers=workers, address=address,
                                        gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                                        retries=retries, notes=summary.notes)
                else:
                    summary.engine, summary.workers = "in-process", 1
                    stream = run_in_process(pending, out, cpus_per_worker, summary.notes)
                ran = 0
                for rows in stream:
                    table.add(rows)
                    ran += 1
                    bar.update(len(rows))
                    if on_result is not None:
                        on_result(rows)
                minutes = (time.perf_counter() - started) / 60
                summary.clips_per_minute = round(ran / minutes, 2) if minutes > 0 else None
        finally:
            bar.close()
            table.compact([job.id for job in jobs])
        ran_ids = {job.id for job in pending + refused}
        for job in jobs:
            if isinstance(job, ClipJob) and job.id not in ran_ids:
                continue
            clip = job.id
            rows = table.latest.get(clip, [])
            ok = [r for r in rows if r["status"] == "done"]
            summary.done += len(ok)
            summary.failed += len(rows) - len(ok)
            if len(ok) < len(rows):
                summary.errors.append(f"{clip}: {rows[0]['error']}")
    summary.seconds = round(time.perf_counter() - started, 2)
    if not summary.model_work:
        summary.notes.append(f"nothing to run: {summary.skipped} edits were already done with the same settings"
                             + (f" and {summary.failed} failed their checks" if summary.failed else "")
                             + " (no model was loaded)")
    return summary
