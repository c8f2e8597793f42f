"""What a job did: the ``JobResult``, its summary (what the CLI prints: the videos written, how the inversion was
solved, fidelity and temporal metrics) and the settings JSON written next to each output (the same keys whichever
front end ran the job)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .. import __version__
from ..inversion import Inversion
from ..metrics import TemporalMetrics, temporal_metrics
from ..models.base import VideoFamily
from ..outputs import settings_path, write_json
from ..settings import EditConfig, InvertSettings, ModelSettings, OutputSettings, ReadSettings
from .source import Prepared


@dataclass
class JobResult:
    """What a job did: files, summary, the settings record written as JSON, warnings."""

    outputs: list[Path] = field(default_factory=list)  # main outputs (videos, or the .inv)
    comparisons: list[Path] = field(default_factory=list)  # source|result videos
    settings_files: list[Path] = field(default_factory=list)  # one JSON per output
    summary: dict = field(default_factory=dict)  # what the CLI prints
    record: dict = field(default_factory=dict)  # what each settings JSON holds
    warnings: list[str] = field(default_factory=list)  # from the library, in order, without repeats
    notes: list[str] = field(default_factory=list)  # informational lines (which model, fallbacks taken)
    prepared: Prepared | None = None  # the source and inversion used
    latents: torch.Tensor | None = None  # edited latents [K, T, C, h, w]
    videos: torch.Tensor | None = None  # decoded results [K, F, C, H, W]
    metrics: list[TemporalMetrics] = field(default_factory=list)  # per output, when measured


def videos_summary(videos_out: list[Path], comparisons_out: list[Path], prompts: list[str], videos: torch.Tensor,
                    fps: float) -> dict:
    """The part of an edit's summary about the videos written (``videos``: ``[K, F, C, H, W]``)."""
    return {"outputs": [str(p) for p in videos_out], "comparisons": [str(p) for p in comparisons_out],
            "prompts": list(prompts), "frames": videos.shape[1], "size": list(videos.shape[3:]), "fps": fps}


def inversion_summary(inversion: Inversion, flow: bool = False) -> dict:
    """How the trajectory was solved: evaluations, and for fixed-point the residuals it reached. ``flow``: the model
    is flow-matching, whose one-evaluation step (``--inversion ddim``) is the Euler step, and is named so."""
    meta = inversion.meta
    method = "euler" if flow and meta.method == "ddim" else meta.method
    out = {"method": method, "steps": len(meta.timesteps), "evaluations": sum(meta.iterations)}
    if inversion.report is not None:
        from ..exact import describe

        out.update(inversion.report.summary(), solved=describe(inversion.report))
    elif meta.residuals:
        out["clean_end_residual"] = meta.residuals[-1]
        out["max_residual"] = max(meta.residuals)
    return out


def fidelity_summary(prepared: Prepared, latents: torch.Tensor, result: torch.Tensor,
                     round_trip: torch.Tensor) -> dict:
    """Reconstruction metrics of ``result`` ``[F, C, H, W]`` against the VAE round trip ``round_trip`` (the VAE's
    own reconstruction of the input, ``[F, C, H, W]``) and the input frames."""
    from ..metrics import psnr, relative_error, ssim

    inversion = prepared.inversion
    fidelity = {
        "latent_relative_error": relative_error(latents[0:1], inversion.clean),
        "psnr_vs_vae_round_trip": psnr(result, round_trip),
        "ssim_vs_vae_round_trip": ssim(result, round_trip),
    }
    if prepared.source is not None:
        frames = prepared.source.clip.frames
        fidelity.update(psnr_vs_input=psnr(result, frames), ssim_vs_input=ssim(result, frames))
    return {k: (float(f"{v:.6g}") if abs(v) != float("inf") else "inf") for k, v in fidelity.items()}


def measure_temporal(videos: torch.Tensor, reference: torch.Tensor, result: JobResult,
                     borders: tuple[int, ...] = ()) -> None:
    """Temporal metrics of each result ``videos[k]`` (``[K, F, C, H, W]``) against ``reference`` (``[F, C, H, W]``:
    the source frames as the model read them, or the VAE round trip when the source is gone), into
    ``result.metrics`` and ``result.summary["metrics"]`` (one dict per output, in the outputs' order).

    ``borders``: pixel frames where temporal windows meet (``Windows.pixel_borders``), for the seam score (none: the
    edit ran as one window, and the seam score is ``None``); those past the compared frames are dropped.
    """
    started = time.perf_counter()
    count = min(videos.shape[1], reference.shape[0])  # as the comparison videos do, should the decoder differ
    borders = tuple(b for b in borders if 0 < b < count)
    result.metrics = [temporal_metrics(videos[k, :count], reference[:count], borders) for k in range(videos.shape[0])]
    result.summary["metrics"] = [m.as_dict() for m in result.metrics]
    result.summary["metrics_seconds"] = round(time.perf_counter() - started, 2)


def model_record(model: VideoFamily, model_settings: ModelSettings, show: Callable[[str], str] = str) -> dict:
    """The settings JSON's ``model``: the settings as given, then what they resolved to (dtypes, device) and each
    LoRA's file name, SHA-256 and scale (``loras_resolved``, ``loras_2_resolved``)."""
    from ..models.placement import FLAGS, lora_record

    record = {**dataclasses.asdict(model_settings), "family": model.family,
              "name": show(model.name) if Path(model.name).is_absolute() else model.name,
              "dtype_resolved": str(model.dtype).replace("torch.", ""),
              "vae_dtype_resolved": str(model.vae.dtype).replace("torch.", ""), "device_resolved": str(model.device)}
    for key in ("lora", "lora_2"):
        record[key] = [{**item, "path": show(item["path"])} for item in record[key]]
        record[f"{key}_resolved"] = lora_record(getattr(model_settings, key), FLAGS[key])
    return record


def settings_record(command: str, model: VideoFamily, model_settings: ModelSettings, read: ReadSettings | None,
                    invert_settings: InvertSettings | None, config: EditConfig | None, output: OutputSettings,
                    inversion: Inversion | None, summary: dict, warnings_seen: list[str],
                    show: Callable[[str], str] = str) -> dict:
    """The settings JSON of a job: the same keys from every front end. ``show`` turns a path into what is written
    (the page writes names, not server paths)."""
    meta = None
    if inversion is not None:
        meta = dataclasses.asdict(inversion.meta)
        meta["source"] = show(meta["source"]) if meta["source"] else ""
    return {
        "vidinvert": __version__,
        "command": command,
        "model": model_record(model, model_settings, show),
        "read": dataclasses.asdict(read) if read is not None else None,
        "invert": dataclasses.asdict(invert_settings) if invert_settings is not None else None,
        "edit": dataclasses.asdict(config) if config is not None else None,
        "output": {**dataclasses.asdict(output), **({"output": show(output.output)} if output.output else {})},
        "inversion": meta,
        "result": summary,
        "warnings": list(warnings_seen),
    }


def write_records(result: JobResult, command: str, model: VideoFamily, model_settings: ModelSettings,
                  read: ReadSettings | None, invert_settings: InvertSettings | None, config: EditConfig | None,
                  output: OutputSettings, show: Callable[[str], str] = str) -> None:
    """Write one settings JSON per output (the same record), after the outputs themselves."""
    summary = dict(result.summary)
    for key in ("outputs", "comparisons"):
        if key in summary:
            summary[key] = [show(p) for p in summary[key]]
    if "output" in summary:
        summary["output"] = show(summary["output"])
    inversion = result.prepared.inversion if result.prepared is not None else None
    result.record = settings_record(command, model, model_settings, read, invert_settings, config, output,
                                    inversion, summary, result.warnings, show)
    result.settings_files = [settings_path(p) for p in result.outputs]
    for path in result.settings_files:
        write_json(path, result.record, force=output.force)
