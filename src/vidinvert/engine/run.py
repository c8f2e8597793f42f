"""Whole jobs: open the model, invert the video (or load a saved inversion) or FlowEdit it, edit, decode, write.

- ``run_invert``: video -> saved ``.inv`` (+ settings JSON);
- ``run_edit``: video or ``.inv`` -> one edited video per prompt, comparisons, settings JSON; with
  ``reconstruct=True`` the "edit" uses the source prompt and the summary gains fidelity metrics; with
  ``OutputSettings.metrics`` (always for a reconstruction) it gains temporal metrics of each output;
- ``edit_prepared`` / ``flowedit_source``: the edit of an opened source, for front ends that cache inversions and
  opened videos (the page)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import torch

from ..atomic import outputs_together
from ..editing import EditStats, edit
from ..errors import VidinvertError
from ..export import side_by_side, write_video
from ..flowedit import flow_schedule, flowedit, rows_per_step
from ..models import model_note, open_model
from ..models.base import VideoFamily
from ..regions import paste_source, source_alpha
from ..outputs import partial_path, plan_outputs, settings_path
from ..settings import (
    DEFAULT_OVERLAP,
    EditConfig,
    InvertSettings,
    ModelSettings,
    OutputSettings,
    ReadSettings,
    with_model_edit_defaults,
)
from ..windows import resolve as resolve_windows, windowed
from .budget import preflight
from .first_frame import check_first_frame_request, paired_prompts, read_first_frames, refuse_text_to_video
from .memory import guard_memory, peak_memory
from .plan import (
    check_edit_request,
    check_model_fits,
    check_saved_windows,
    check_solver_options,
    family_defaults,
    is_saved_inversion,
    plan_edit_outputs,
)
from .region import check_region_request, region_of_prepared, region_of_source, save_mask_video
from .record import (
    JobResult,
    fidelity_summary,
    inversion_summary,
    measure_temporal,
    videos_summary,
    write_records,
)
from .source import Prepared, Source, load_saved, open_source, prepare, saved_invert_settings
from .warnings import collect_warnings


def load_model(settings: ModelSettings = ModelSettings(), notes: list[str] | None = None) -> VideoFamily:
    """Open the model ``settings`` names; what a user should know about it goes to ``notes``."""
    with guard_memory("loading the model"):  # e.g. moving the weights to a GPU without room for them
        model = open_model(settings)
    note = model_note(model.name)
    if note and notes is not None:
        notes.append(note)
    return model


def decode(model: VideoFamily, latents: torch.Tensor) -> torch.Tensor:
    """Latents ``[K, T, C, h, w]`` -> frames ``[K, F, C, H, W]`` in [-1, 1], one video at a time."""
    with guard_memory("decoding"):
        return torch.cat([model.decode(latents[k : k + 1]) for k in range(latents.shape[0])])


def _write_videos(videos: torch.Tensor, reference: torch.Tensor, fps: float, videos_out: list[Path],
                  comparisons_out: list[Path], output: OutputSettings) -> None:
    """Write each result ``videos[k]`` and, if planned, its ``reference|result`` comparison."""
    with outputs_together():  # a job's videos appear together or not at all (with its JSON, if the caller's block)
        for k, path in enumerate(videos_out):
            write_video(videos[k], path, fps=fps, force=output.force)
            if comparisons_out:
                write_video(side_by_side(reference, videos[k]), comparisons_out[k], fps=fps, force=output.force)


def with_source_pasted(model: VideoFamily, videos: torch.Tensor, frames: torch.Tensor, region, config: EditConfig):
    """Decoded results ``[K, F, C, H, W]`` with the source ``frames`` put back outside ``region`` (feathered over one
    latent cell) when the region asks for it (``region_summary`` records it)."""
    if region is None or not config.region.paste_source:
        return videos
    alpha = source_alpha(region, model.spatial_factor, model.temporal_factor, model.spatial_factor)  # [F, 1, H, W]
    return paste_source(videos, frames, alpha)


def region_summary(region, config: EditConfig, pasted: bool) -> dict:
    """The summary's ``region``: the region's record and whether the source's pixels were put back (``{}``: none)."""
    if region is None:
        return {}
    return {"region": {**region.record, "source_pasted": pasted and config.region.paste_source}}


def flowedit_source(model: VideoFamily, source: Source, prompts: list[str], config: EditConfig, steps: int,
                    videos_out: list[Path], comparisons_out: list[Path], output: OutputSettings,
                    result: JobResult | None = None, *, window: int | str | None = None,
                    overlap: float = DEFAULT_OVERLAP, region=None) -> JobResult:
    """FlowEdit an opened video with ``prompts`` in one batch (no inversion), decode, write videos and comparisons
    as ``edit_prepared`` does. ``result.summary`` is filled; the settings JSON is the caller's.

    ``window``/``overlap``: temporal windows (``InvertSettings``'): every transformer evaluation runs per window and
    the predictions are blended (``windows.py``), as an inversion's edit does; open the source with the same
    settings, so that it holds every frame. ``region``: where the edit may change (``regions.Region``; ``None``:
    everywhere)."""
    result = result or JobResult()
    started = time.perf_counter()
    stats = EditStats()
    windows = resolve_windows(model, source.latents.shape[1], window, overlap)
    with guard_memory("editing"):
        latents = flowedit(windowed(model, windows), source.latents, config.flowedit.source_prompt, prompts, config,
                           steps=steps, progress=output.progress, stats=stats,
                           region=region.latent if region is not None else None)
    videos = with_source_pasted(model, decode(model, latents), source.clip.frames, region, config)  # [K, F, C, H, W]
    fps = output.fps or source.clip.fps or 8.0
    _write_videos(videos, source.clip.frames, fps, videos_out, comparisons_out, output)
    n_max, n_min = config.flowedit.editing_steps(steps)
    result.summary = {
        **videos_summary(videos_out, comparisons_out, prompts, videos, fps),
        "method": "flowedit",
        "edit_steps": stats.steps,
        "flowedit": {"steps": steps, "n_max": n_max, "n_min": n_min, "n_avg": config.flowedit.n_avg,
                     "window": windows.record()[0], "window_overlap": windows.record()[1]},  # as an inversion's
        "transformer_calls": len(stats.batch_rows),
        "transformer_rows": sum(stats.batch_rows),
        "batch_rows": sorted(set(stats.batch_rows)),
        **region_summary(region, config, pasted=True),
        "edit_seconds": round(time.perf_counter() - started, 2),
    }
    if region is not None:
        save_mask_video(region, model, output, fps)
    if output.metrics:
        measure_temporal(videos, source.clip.frames, result, windows.pixel_borders(model.temporal_factor))
    result.outputs, result.comparisons = list(videos_out), list(comparisons_out)
    result.latents, result.videos = latents, videos
    return result


def edit_prepared(model: VideoFamily, prepared: Prepared, prompts: list[str], config: EditConfig,
                  videos_out: list[Path], comparisons_out: list[Path], output: OutputSettings,
                  reconstruct: bool = False, result: JobResult | None = None, first_frames=None,
                  region=None) -> JobResult:
    """Edit a prepared inversion with ``prompts`` in one batch, decode, write the videos and comparisons.

    The settings JSON is not written here (the caller knows the whole record); ``result.summary`` is filled.
    ``config`` is run as given: callers fill what was left to the model with ``family_defaults`` first.
    ``first_frames``: an image-to-video model's conditions on the edited first frames (``ImageRows``, one per
    prompt, from ``first_frame.read_first_frames``); ``None``: the source's own. ``region``: where the edit may
    change (``regions.Region``, e.g. from ``region.region_of_prepared``); ``None``: everywhere.
    """
    result = result or JobResult()
    inversion = prepared.inversion
    check_model_fits(model, config)
    if config.injection.reuse_kv and inversion.kv_cache is None and not prepared.reused:
        # the inversion recorded nothing (over --kv-budget-gb; it warned): recompute, as the warning says
        config = dataclasses.replace(config, injection=dataclasses.replace(config.injection, reuse_kv=False))
    started = time.perf_counter()
    stats = EditStats()
    with guard_memory("editing"):
        latents = edit(model, inversion, prompts, config, progress=output.progress, stats=stats,
                       first_frames=first_frames, region=region.latent if region is not None else None)
    videos = decode(model, latents)  # [K, F, C, H, W]
    if prepared.source is not None:
        videos = with_source_pasted(model, videos, prepared.source.clip.frames, region, config)
    round_trip = decode(model, inversion.clean)[0] if reconstruct or prepared.source is None else None
    reference = prepared.source.clip.frames if prepared.source is not None else round_trip
    fps = output.fps or (prepared.source.clip.fps if prepared.source is not None else inversion.meta.fps) or 8.0
    _write_videos(videos, reference, fps, videos_out, comparisons_out, output)
    summary = {
        **videos_summary(videos_out, comparisons_out, prompts, videos, fps),
        "edit_steps": stats.steps,
        "transformer_calls": len(stats.batch_rows) + len(stats.mask_rows),
        "batch_rows": sorted(set(stats.batch_rows + stats.mask_rows)),
        "inversion_reused": prepared.reused,
        "inversion": inversion_summary(inversion, model.schedule(1).is_flow),
        **({"blend_coverage": [round(c, 4) for c in stats.blend_coverage]} if config.blend.enabled else {}),
        **region_summary(region, config, pasted=prepared.source is not None),
    }
    if region is not None:
        save_mask_video(region, model, output, fps)
    if reconstruct:
        summary["fidelity"] = fidelity_summary(prepared, latents, videos[0], round_trip)
    summary["edit_seconds"] = round(time.perf_counter() - started, 2)
    result.summary = summary
    if output.metrics or reconstruct:
        borders = inversion.windows().pixel_borders(model.temporal_factor)  # () for one window
        measure_temporal(videos, reference, result, borders)
    result.outputs, result.comparisons = list(videos_out), list(comparisons_out)
    result.prepared, result.latents, result.videos = prepared, latents, videos
    return result


def run_edit(video: str, prompts: list[str] | None, model_settings: ModelSettings = ModelSettings(),
             read: ReadSettings = ReadSettings(), invert_settings: InvertSettings = InvertSettings(),
             config: EditConfig = EditConfig(), output: OutputSettings = OutputSettings(), *,
             use_inversion: str | None = None, save_inversion: str | None = None, steps_given: bool = True,
             reconstruct: bool = False, command: str = "edit", model: VideoFamily | None = None,
             show: Callable[[str], str] = str, first_frames: list[str] | None = None) -> JobResult:
    """The edit job (``vidinvert edit`` / ``reconstruct``): check, plan outputs, open the model, invert the video or
    load a saved inversion (``video`` ending in ``.inv``, or ``use_inversion``), edit, write.

    Args:
        prompts: the edit prompts; ``None`` with ``reconstruct``: the text the video is inverted with (a saved
            inversion's, the one it records).
        steps_given: whether ``invert_settings.steps`` was asked for (a saved inversion brings its own otherwise).
        model: an already opened model (its settings are then only recorded).
        first_frames: edited first frames (image files) for an image-to-video model, one for all prompts or one
            per prompt; the prompts may then be left out (each frame takes the source prompt).
    """
    result = JobResult()
    first_frames = list(first_frames or [])
    check_first_frame_request(first_frames, prompts, config, model_settings, reconstruct)
    source_text = (reconstruct and prompts is None) or (bool(first_frames) and not prompts)
    if source_text:
        prompts = paired_prompts(None, first_frames, invert_settings.prompt) if first_frames else [invert_settings.prompt]
    prompts = paired_prompts(prompts, first_frames, invert_settings.prompt)
    if reconstruct:  # a fidelity check regenerates the source as it is: a model's edit recommendations do not apply
        config = with_model_edit_defaults(config, {})
    if config.method == "flowedit":
        return _run_flowedit(video, prompts, model_settings, read, invert_settings, config, output,
                             use_inversion=use_inversion, save_inversion=save_inversion, reconstruct=reconstruct,
                             command=command, model=model, show=show)
    with outputs_together():  # every file of the job, or none
        with collect_warnings(result.warnings, result.notes):
            saved = check_edit_request(video, prompts, read, invert_settings, config, use_inversion,
                                       save_inversion=save_inversion, reconstruct=reconstruct, steps_given=steps_given,
                                       model_settings=model_settings)
            if saved is not None and source_text:
                prompts = [saved.meta.prompt] * len(prompts)
            inputs = [Path(p) for p in (video, use_inversion) if p]
            stem = Path(video).stem
            extra = [Path(save_inversion)] if save_inversion else []
            extra += check_region_request(config, output, reconstruct)
            videos_out, comparisons_out = plan_edit_outputs(stem, len(prompts), output,
                                                            "reconstruction" if reconstruct else "edit", inputs, extra)
            started = time.perf_counter()
            if model is None and saved is None:
                preflight(video, prompts, model_settings, read, invert_settings, config, result.notes)
            model = model or load_model(model_settings, result.notes)
            if first_frames:
                refuse_text_to_video(model)
            read, invert_settings, config = family_defaults(model, read, invert_settings, config, result.notes,
                                                            inverting=saved is None)
            check_model_fits(model, config)
            if saved is None:
                checkpoint = partial_path(Path(save_inversion) if save_inversion else videos_out[0].with_suffix(".inv"))
                prepared = prepare(model, video, read, invert_settings, progress=output.progress, checkpoint=checkpoint,
                                   rows=2 * len(prompts) + 2,  # each prompt guided, plus the reference
                                   first_frame=bool(first_frames))
            else:  # the video (with --use-inversion) is read as the inversion's was; the request matched it
                prepared = load_saved(model, saved, invert_settings.steps if steps_given else None,
                                      None if is_saved_inversion(video) else video, saved.meta.read or read,
                                      result.notes)
                check_saved_windows(model, saved, invert_settings)
                read = saved.meta.read
                invert_settings = saved_invert_settings(saved.meta, invert_settings.overlap)
            if config.blend.enabled and not config.blend.source_prompt:  # the inversion's text (blend.py), recorded
                blend = dataclasses.replace(config.blend, source_prompt=prepared.inversion.meta.prompt)
                config = dataclasses.replace(config, blend=blend)
            conditions, frame_records = None, []
            if first_frames:
                meta = prepared.inversion.meta
                height, width = meta.latent_shape[3] * model.spatial_factor, meta.latent_shape[4] * model.spatial_factor
                conditions, frame_records = read_first_frames(model, first_frames, height, width, read.resize,
                                                              meta.latent_shape[1], result.notes)
            elif model.needs_image:
                result.notes.append("no --first-frame given: the image-to-video model follows the source's own first "
                                    "frame")
            region = region_of_prepared(model, config, prepared, read, result.notes)
            if config.injection.step_fraction is None:  # recorded as the number the edit runs with
                injection = dataclasses.replace(config.injection,
                                                step_fraction=config.injection.fraction(bool(first_frames)))
                config = dataclasses.replace(config, injection=injection)
            if save_inversion:
                prepared.inversion.save(save_inversion, force=output.force)
            edit_prepared(model, prepared, prompts, config, videos_out, comparisons_out, output, reconstruct, result,
                          first_frames=conditions, region=region)
            if frame_records:
                result.summary["first_frames"] = frame_records
            result.summary["seconds"] = round(time.perf_counter() - started, 2)
            result.summary.update(peak_memory())
        write_records(result, command, model, model_settings, read, invert_settings, config, output, show)
    return result


def _run_flowedit(video: str, prompts: list[str], model_settings: ModelSettings, read: ReadSettings,
                  invert_settings: InvertSettings, config: EditConfig, output: OutputSettings, *,
                  use_inversion: str | None, save_inversion: str | None, reconstruct: bool, command: str,
                  model: VideoFamily | None, show: Callable[[str], str]) -> JobResult:
    """``run_edit`` with ``config.method == "flowedit"``: open the video and FlowEdit it over
    ``invert_settings.steps``, in its windows; no inversion is made, read or written (the record's ``invert`` and
    ``inversion`` are ``null``; the windows are in its ``result.flowedit``)."""
    result = JobResult()
    with outputs_together():  # every file of the job, or none
        with collect_warnings(result.warnings, result.notes):
            check_edit_request(video, prompts, read, invert_settings, config, use_inversion,
                               save_inversion=save_inversion, reconstruct=reconstruct, model_settings=model_settings)
            videos_out, comparisons_out = plan_edit_outputs(Path(video).stem, len(prompts), output, "edit",
                                                            [Path(video)], check_region_request(config, output))
            started = time.perf_counter()
            if model is None:
                preflight(video, prompts, model_settings, read, invert_settings, config, result.notes)
            model = model or load_model(model_settings, result.notes)
            read, invert_settings, config = family_defaults(model, read, invert_settings, config, result.notes)
            steps = invert_settings.steps
            flow_schedule(model, steps)  # refuses a DDIM model before the video is read
            source = open_source(model, video, read, rows=rows_per_step(len(prompts), 2, 2, 1, False),
                                 invert_settings=invert_settings)
            region = region_of_source(model, config, source, result.notes)
            flowedit_source(model, source, prompts, config, steps, videos_out, comparisons_out, output, result,
                            window=invert_settings.window, overlap=invert_settings.overlap, region=region)
            result.summary["seconds"] = round(time.perf_counter() - started, 2)
            result.summary.update(peak_memory())
        write_records(result, command, model, model_settings, read, None, config, output, show)
    return result


def run_invert(video: str, model_settings: ModelSettings = ModelSettings(), read: ReadSettings = ReadSettings(),
               invert_settings: InvertSettings = InvertSettings(), output: OutputSettings = OutputSettings(), *,
               model: VideoFamily | None = None, show: Callable[[str], str] = str) -> JobResult:
    """The invert job (``vidinvert invert``): video -> ``.inv`` and its settings JSON."""
    result = JobResult()
    with outputs_together():  # the .inv and its JSON, or neither
        with collect_warnings(result.warnings, result.notes):
            out = (Path(output.output) if output.output
                   else Path(output.output_dir) / f"{Path(video).stem}_inversion.inv")
            if out.suffix != ".inv":
                raise VidinvertError(f"an inversion is saved as .inv, got {out.name}", "e.g. clip.inv")
            if is_saved_inversion(video):
                raise VidinvertError(f"{video} is already an inversion", "invert a video file")
            check_solver_options(invert_settings)
            plan_outputs([out, settings_path(out)], output.force, [Path(video)])
            started = time.perf_counter()
            if model is None:
                preflight(video, [invert_settings.prompt], model_settings, read, invert_settings, EditConfig(),
                          result.notes, invert_only=True)
            model = model or load_model(model_settings, result.notes)
            read, invert_settings, _ = family_defaults(model, read, invert_settings, notes=result.notes)
            prepared = prepare(model, video, read, invert_settings, progress=output.progress,
                               checkpoint=partial_path(out))
            prepared.inversion.save(out, force=output.force)
            clip = prepared.source.clip
            result.outputs, result.prepared = [out], prepared
            result.summary = {"output": str(out), "frames": clip.frames.shape[0], "size": list(clip.frames.shape[2:]),
                              **inversion_summary(prepared.inversion, model.schedule(1).is_flow),
                              "seconds": round(time.perf_counter() - started, 2), **peak_memory()}
        write_records(result, "invert", model, model_settings, read, invert_settings, None, output, show)
    return result
