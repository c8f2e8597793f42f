"""Clips on Ray workers: Ray Data ``map_batches`` with one ``ClipWorker`` actor per worker, each holding a model.

One block per clip, ``batch_size=1``: a clip is the unit of scheduling and of retry. An actor that dies (killed,
out of host memory, node lost) is restarted by Ray and its unfinished clips sent again (Ray Data's actor pools
restart actors and retry their tasks by default); ``clip.run_clip`` counts the attempts in the clip's folder and
records the clip as failed once it has been tried ``retries + 1`` times, so a clip that kills every worker it
meets cannot stall the batch. Each actor reserves ``num_gpus`` (one GPU per
actor on GPU machines) and ``num_cpus``; outputs go straight from the workers to the output folder, which must
therefore be a path every node can write (a shared filesystem). Only this module imports Ray.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import pickle
import socket
import uuid
from pathlib import Path
from typing import Iterator

import ray

from ..errors import VidinvertError
from .clip import ModelCache, run_clip, torch_threads
from .jobfile import ClipJob
from .table import failed_rows


class ClipWorker:
    """A Ray Data callable class: the model is loaded once per worker (on its first clip) and kept."""

    def __init__(self, out: str, threads: int, attempts: int):
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()  # loading bars from every worker would interleave on the driver
        transformers_logging.disable_progress_bar()
        self.out, self.threads, self.attempts = out, threads, attempts  # output folder, torch threads, tries/clip
        self.models = ModelCache()

    def __call__(self, batch: dict) -> dict:
        rows = []
        with torch_threads(self.threads):
            for text in batch["job"]:
                job = pickle.loads(base64.b64decode(text))
                clip_rows = run_clip(job, Path(self.out), self.models, max_attempts=self.attempts)
                for row in clip_rows:
                    row["notes"] = list(self.models.notes)
                rows.append(json.dumps(clip_rows))
        return {"rows": rows}


CONNECT_SECONDS = 5.0  # how long a cluster address may take to answer before the batch says it does not


RAY_AUTH_LOG = "ray._private.authentication.authentication_token_setup"  # says how the cluster authenticates


class _Notes(logging.Handler):
    """Log records -> the batch's notes, which every front end shows in its own way."""

    def __init__(self, notes: list[str]):
        super().__init__(logging.INFO)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        line = f"Ray: {' '.join(record.getMessage().split())}"
        if line not in self.notes:
            self.notes.append(line)


def join(address: str | None, notes: list[str]) -> None:
    """Start a local Ray instance (``address`` None) or join a cluster, with one-line errors; what Ray says about
    the cluster's authentication goes to ``notes``."""
    if address is not None and address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise VidinvertError(f"--address {address} uses Ray Client, which needs Ray's client extra",
                             "pip install 'ray[client]' (or run on the cluster's head node with --address auto)")
    host, sep, port = (address or "").rpartition(":")
    if sep and host and port.isdigit() and "://" not in address:  # GCS address: Ray would retry it for minutes
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
        except (OSError, ValueError) as err:
            raise VidinvertError(f"nothing answers at --address {address} ({getattr(err, 'strerror', None) or err})",
                                 "start the cluster (ray start --head) or give the address it printed") from None
    log = logging.getLogger(RAY_AUTH_LOG)
    hold = _Notes(notes)
    log.addHandler(hold)
    propagate, log.propagate = log.propagate, False  # Ray's own handler would print it as a stray stderr line
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    except Exception as err:  # noqa: BLE001 - Ray raises many types for a bad or unreachable address
        text = " ".join(str(err).split())[:200]
        raise VidinvertError(f"cannot join the Ray cluster at --address {address} ({type(err).__name__}: {text})",
                             "give auto, ray://HOST:10001 of a running cluster, or leave --address out") from None
    finally:
        log.removeHandler(hold)
        log.propagate = propagate


def _encode(job: ClipJob) -> str:
    return base64.b64encode(pickle.dumps(job)).decode("ascii")


def run_on_ray(jobs: list[ClipJob], out: Path, *, workers: int, address: str | None, gpus_per_worker: float | None,
               cpus_per_worker: int, retries: int, notes: list[str]) -> Iterator[list[dict]]:
    """Yield each clip's rows as its worker finishes it (in completion order)."""
    started_here = not ray.is_initialized()
    if started_here:
        join(address, notes)
    context = ray.data.DataContext.get_current()
    saved = context.max_errored_blocks, context.enable_progress_bars
    context.max_errored_blocks = -1  # a clip Ray itself gives up on is recorded as failed, the others go on
    context.enable_progress_bars = False  # the batch has its own bar over clips x prompts
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.ERROR)  # not its execution plan, nor that its progress bars are off
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus_per_worker is None:
            gpus_per_worker = 1 if gpus >= 1 else 0
        elif gpus_per_worker > gpus:  # Ray would wait for a GPU that never comes
            raise VidinvertError(f"--gpus-per-worker {gpus_per_worker:g} but the Ray cluster has {gpus:g} GPUs",
                                 "use --gpus-per-worker 0 for CPU workers, or a cluster with GPUs (--address)")
        items = [{"job": _encode(job)} for job in jobs]
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ClipWorker,
            fn_constructor_kwargs={"out": str(out), "threads": cpus_per_worker, "attempts": retries + 1},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(items))),
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker,
        )
        seen = set()
        for row in dataset.iter_rows():
            rows = json.loads(row["rows"])
            seen.add(rows[0]["clip"])
            for line in rows[0].get("notes", []):
                if line not in notes:
                    notes.append(line)
            for r in rows:
                r.pop("notes", None)
            yield rows
        for job in jobs:
            if job.id not in seen:
                yield failed_rows(job, "Ray gave up on it (its worker died)", uuid.uuid4().hex)
    finally:
        context.max_errored_blocks, context.enable_progress_bars = saved
        data_log.setLevel(level)
        if started_here:
            ray.shutdown()
