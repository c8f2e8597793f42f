"""The user's job, whole: open the model and the source, invert (or load a saved inversion), edit, decode, write.

Every front end (CLI, web page, benchmarks, batch) calls these functions and re-implements none of their steps:

- ``run_invert``: video -> saved ``.inv`` (+ settings JSON);
- ``run_edit``: video or ``.inv`` -> one edited video per prompt, comparisons, settings JSON; with
  ``reconstruct=True`` the "edit" uses the source prompt and the summary gains fidelity metrics; with
  ``OutputSettings.metrics`` (always for a reconstruction) it gains temporal metrics of each output;
- ``prepare`` / ``edit_prepared``: the two halves of ``run_edit``, for front ends that cache inversions (the page).

Each returns a ``JobResult``: the files written, a summary (what the CLI prints), the settings record (what the
JSON holds: the same keys whichever front end ran the job), timings, peak memory, warnings and notes. Warnings
raised by the library during a job are collected and returned, so every front end can show them. Outputs are
planned (names, overwrite and writability checks) before any model work.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import resource
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import __version__
from .editing import EditStats, edit, edit_offset
from .flowedit import flow_schedule, flowedit, rows_per_step
from .atomic import outputs_together
from .errors import SettingsError, VidinvertError
from .export import side_by_side, write_video
from .inversion import Inversion, InversionMeta, invert
from .krnr import refuse_on_flow
from .metrics import TemporalMetrics, temporal_metrics
from .models import model_note, open_model
from .models.base import VideoFamily, negative_prompt_for
from .outputs import comparison_path, numbered, partial_path, plan_outputs, settings_path, write_json
from .provenance import SourceInfo
from .settings import (
    DEFAULT_OVERLAP,
    MODEL_SETTINGS_FILE,
    VIDEO_SUFFIXES,
    EditConfig,
    InvertSettings,
    ModelSettings,
    OutputSettings,
    ReadSettings,
    field_defaults,
    with_model_edit_defaults,
)
from .video import Clip, frames_hash, read_video
from .windows import resolve as resolve_windows, spread, windowed

PACKAGE_DIR = str(Path(__file__).resolve().parent)


# ---- results --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """A video opened for a model: the frames read and their VAE latents."""

    clip: Clip
    latents: torch.Tensor  # float32 [1, T, C, h, w]
    hash: str  # frames_hash of clip.frames
    read: ReadSettings  # how the frames were taken (saved with an inversion, to re-read the same frames)

    def info(self) -> SourceInfo:
        frames = self.clip.frames  # [F, C, H, W]
        return SourceInfo(path=str(Path(self.clip.source).resolve()), hash=self.hash, frames=frames.shape[0],
                          height=frames.shape[2], width=frames.shape[3], fps=self.clip.fps,
                          indices=tuple(self.clip.indices), read=self.read)


@dataclass(frozen=True)
class Prepared:
    """A source and its inversion, ready for edits. ``source`` is ``None`` when only a saved inversion is known
    (comparisons then show the VAE round trip of its latents)."""

    source: Source | None
    inversion: Inversion
    reused: bool = False  # the inversion came from a file or a cache, not from a run now


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


# ---- memory and warnings --------------------------------------------------------------------------------------
def peak_memory() -> dict:
    """Peak resident memory of this process (MiB) and, on CUDA, peak allocated GPU memory (MiB)."""
    peak = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@contextmanager
def guard_memory(phase: str):
    """Turn an out-of-memory failure into a one-line error with what to try, after freeing what can be freed."""
    try:
        yield
    except (RuntimeError, MemoryError) as err:
        if not _is_oom(err):
            raise
        del err
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise VidinvertError(
            f"out of memory during {phase}",
            "try cpu offload, VAE tiling, bf16, fewer frames or a smaller size",
        ) from None


@contextmanager
def collect_warnings(into: list[str]):
    """Record the library's warnings raised inside the block into ``into`` (one line each, no repeats); other
    packages' warnings are shown as usual once the block ends."""
    others = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for item in caught:
                    if str(item.filename).startswith(PACKAGE_DIR) and issubclass(item.category, UserWarning):
                        line = " ".join(str(item.message).split())
                        if line not in into:
                            into.append(line)
                    else:
                        others.append(item)
    finally:  # outside catch_warnings: re-showing inside it would record them again, endlessly
        for item in others:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)


# ---- the steps ------------------------------------------------------------------------------------------------
def load_model(settings: ModelSettings = ModelSettings(), notes: list[str] | None = None) -> VideoFamily:
    """Open the model ``settings`` names; what a user should know about it goes to ``notes``."""
    with guard_memory("loading the model"):  # e.g. moving the weights to a GPU without room for them
        model = open_model(settings)
    note = model_note(model.name)
    if note and notes is not None:
        notes.append(note)
    if model.recommended_edit and notes is not None:
        given = ", ".join(f"{key.replace('_', ' ')} {_shown(value)}" for key, value in model.recommended_edit.items())
        notes.append(f"edits with this model use its recommended settings where none are given: {given} "
                     f"(from its {MODEL_SETTINGS_FILE}; any value you set wins)")
    return model


def _shown(value) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else f"{value:g}"


def check_memory(model: VideoFamily, frames: int, height: int, width: int, rows: int = 2) -> None:
    """Refuse, with the numbers, a size whose estimated peak memory exceeds what the device has free now (instead of
    the kernel killing the process hours later)."""
    from .models.device import available_memory

    free = available_memory(torch.device(model.device))
    if free is None:
        return
    need = model.memory_need(frames, height, width, rows)
    phase, peak = max(need.items(), key=lambda item: item[1])
    if peak > free:
        gib = 2**30
        raise VidinvertError(
            f"{frames} frames of {height}x{width} need about {peak / gib:.1f} GiB for the {phase} "
            f"(estimate: VAE {need['vae'] / gib:.1f} GiB, transformer {need['transformer'] / gib:.1f} GiB with "
            f"{rows} batch rows), but only {free / gib:.1f} GiB is free on {model.device}",
            "use a smaller --height/--width, fewer frames (--max-num-frames), --vae-tiling or fewer prompts per run")


def family_defaults(model: VideoFamily, read: ReadSettings | None = None,
                    invert_settings: InvertSettings | None = None, config: EditConfig | None = None) -> tuple:
    """``(read, invert_settings, config)`` with what was left to the model filled in from its family adapter: the
    frames read (``max_frames`` ``None`` -> ``model.default_frames``; a job in temporal windows reads every frame),
    the negative prompt (``None`` -> ``model.default_negative_prompt``) and the edit settings the model recommends
    (``settings.with_model_edit_defaults``). What a job runs with and records; ``None`` arguments stay ``None``."""
    windowed_job = invert_settings is not None and invert_settings.window is not None
    if read is not None and read.max_frames is None and not windowed_job:  # a windowed job reads every frame
        read = dataclasses.replace(read, max_frames=model.default_frames)
    if invert_settings is not None and invert_settings.negative_prompt is None:
        invert_settings = dataclasses.replace(invert_settings,
                                              negative_prompt=negative_prompt_for(model, None))
    if config is not None and config.negative_prompt is None:
        config = dataclasses.replace(config, negative_prompt=negative_prompt_for(model, None))
    if config is not None:
        config = with_model_edit_defaults(config, model.recommended_edit)
    return read, invert_settings, config


def open_source(model: VideoFamily, path: str, read: ReadSettings = ReadSettings(), rows: int = 2,
                invert_settings: InvertSettings = InvertSettings()) -> Source:
    """Read frames sized for ``model`` and encode them; one-line errors for anything unusable, or for a size the
    device has no memory for (``rows``: the most transformer batch rows the job will use; ``invert_settings``: its
    temporal window, checked against the clip and bounding the transformer's memory)."""
    read, _, _ = family_defaults(model, read, invert_settings)
    height, width = read.height, read.width
    if height is None and width is None:
        height, width = model.native_size()
    clip = read_video(
        path,
        height,
        width,
        skip_start=read.skip_start,
        skip_end=read.skip_end,
        stride=read.stride,
        max_frames=read.frame_cap,
        resize=read.resize,
        multiple=model.size_multiple,
        temporal_multiple=model.temporal_factor,
    )
    count, _, frame_height, frame_width = clip.frames.shape
    windows = resolve_windows(model, (count - 1) // model.temporal_factor + 1, invert_settings.window,
                              invert_settings.overlap)
    check_memory(windowed(model, windows), count, frame_height, frame_width, rows)
    with guard_memory("encoding the video"), warnings.catch_warnings():
        if windows.count > 1:  # the transformer sees one window at a time: within the trained length
            warnings.filterwarnings("ignore", message=".*positions were made for")
        latents = model.encode(clip.frames)
    if not torch.isfinite(latents).all():
        raise VidinvertError("the VAE produced NaN/inf latents", "run the model in fp32 or bf16 instead of fp16")
    return Source(clip, latents, frames_hash(clip.frames), read)


def invert_source(model: VideoFamily, source: Source, settings: InvertSettings = InvertSettings(),
                  progress: bool = False, checkpoint: Path | None = None) -> Inversion:
    """Invert an opened video; the inversion records its source. ``checkpoint``: the file partial inversions go to
    when ``settings.checkpoint_every > 0``."""
    options = {}
    if settings.method == "fixed-point":
        options = dict(tol=settings.tol, max_iter=settings.max_iter, anderson=settings.anderson,
                       clean_max_iter=settings.clean_max_iter)
    with guard_memory("inversion"):
        return invert(
            model,
            source.latents,
            steps=settings.steps,
            prompt=settings.prompt,
            guidance=settings.guidance,
            negative_prompt=settings.negative_prompt,
            method=settings.method,
            strength=settings.depth,
            progress=progress,
            record_kv=settings.record_kv,
            kv_budget_gb=settings.kv_budget_gb,
            checkpoint=checkpoint,
            checkpoint_every=settings.checkpoint_every,
            trajectory_device=settings.trajectory_device,
            split_clean_end=settings.split_clean_end,
            window=settings.window,
            overlap=settings.overlap,
            provenance=source.info(),
            **options,
        )


def decode(model: VideoFamily, latents: torch.Tensor) -> torch.Tensor:
    """Latents ``[K, T, C, h, w]`` -> frames ``[K, F, C, H, W]`` in [-1, 1], one video at a time."""
    with guard_memory("decoding"):
        return torch.cat([model.decode(latents[k : k + 1]) for k in range(latents.shape[0])])


def load_saved(model: VideoFamily, path: str | Inversion, steps: int | None = None, video: str | None = None,
               read: ReadSettings = ReadSettings(), notes: list[str] | None = None) -> Prepared:
    """A saved inversion (a path, or one ``check_edit_request`` loaded), checked against ``model`` and ``steps``;
    with ``video``, checked against its frames read with ``read``.

    Without ``video`` the inversion's own source is re-read with the saved frame settings, for the comparison; if
    it is gone, unreadable or changed, the comparison falls back to the VAE round trip of the stored latents (and
    a note says so). Either video is read as the inversion's was: in its windows, every frame unless capped.
    """
    inversion = path if isinstance(path, Inversion) else Inversion.load(path)
    inversion.check_matches(model, num_steps=steps)
    meta = inversion.meta
    windowing = InvertSettings(window=meta.window or None)  # a windowed job's frames are not capped by the model's
    if video is not None:
        source = open_source(model, video, read, invert_settings=windowing)
        inversion.check_matches(source_hash=source.hash)
        return Prepared(source, inversion, reused=True)
    if not (meta.source and meta.read and Path(meta.source).is_file()):
        return Prepared(None, inversion, reused=True)
    try:
        source = open_source(model, meta.source, meta.read, invert_settings=windowing)
    except VidinvertError:
        source = None
    if source is None or source.hash != meta.source_hash:
        if notes is not None:
            notes.append(f"{meta.source} changed since it was inverted; comparing with the VAE round trip")
        return Prepared(None, inversion, reused=True)
    return Prepared(source, inversion, reused=True)


def prepare(model: VideoFamily, video: str, read: ReadSettings, invert_settings: InvertSettings,
            progress: bool = False, checkpoint: Path | None = None, rows: int = 2) -> Prepared:
    """Open and invert a video (``rows``: the most transformer batch rows the job will use, for the memory check)."""
    source = open_source(model, video, read, rows, invert_settings)
    return Prepared(source, invert_source(model, source, invert_settings, progress=progress, checkpoint=checkpoint))


# ---- checks before any model work -----------------------------------------------------------------------------
def is_saved_inversion(path: str | None) -> bool:
    return path is not None and Path(path).suffix == ".inv"


def check_prompts(prompts: list[str]) -> None:
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise VidinvertError("no edit prompt given", "give one or more edit prompts")


# Errors of a request name the CLI's flags (the batch's keys and the page's fields are named after them): a settings
# field's flag is ``--`` and its name with dashes, except these.
FLAGS = {"skip_start": "--skip-frames-start", "skip_end": "--skip-frames-end", "stride": "--frame-sample-step",
         "max_frames": "--max-num-frames", "prompt": "--source-prompt", "guidance": "--inversion-guidance",
         "method": "--inversion", "depth": "--strength", "record_kv": "--reuse-kv",
         "negative_prompt": "the inversion's negative prompt"}
# InvertSettings fields that say how an inversion runs, not what it makes: nothing to apply, nor to contradict, in a
# job that runs none (a batch passes them to every clip, whether it reuses an inversion or not)
RUN_ONLY = ("kv_budget_gb", "checkpoint_every", "trajectory_device")
# InvertSettings fields a saved inversion is checked against on their own: its steps, its windows, the edit strength
# (``--strength`` is then the edit's alone) and key/value reuse (caches are never saved)
SAVED_OWN_CHECKS = ("steps", "depth", "window", "overlap", "record_kv")
# InvertSettings fields FlowEdit reads (its schedule, the source's description, the windows); the others shape an
# inversion, which FlowEdit does not make
FLOWEDIT_READS = ("steps", "prompt", "window", "overlap")
FLOW_FAMILIES = ("wan",)  # families whose models are flow-matching (FlowEdit needs one; K-RNR does not apply)
_UNRECORDED = object()


def flag(name: str) -> str:
    """The CLI flag of the settings field ``name``."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _flag_value(name: str, value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "unset"
    if isinstance(value, str):
        return repr(value) if name in ("prompt", "negative_prompt") else value
    return f"{value:g}" if isinstance(value, float) else str(value)


def changed_fields(settings, skip: tuple[str, ...] = ()) -> list[str]:
    """Fields of a settings dataclass that differ from the class's defaults (those in ``skip`` left out)."""
    defaults = field_defaults(type(settings))
    return [f.name for f in dataclasses.fields(settings)
            if f.name not in skip and getattr(settings, f.name) != defaults[f.name]]


def family_before_loading(settings: ModelSettings | None) -> str | None:
    """The family of the model ``settings`` names, where it is known without loading it: a bundled or tiny model by
    its name, a folder by its ``model_index.json``; ``None`` for a hub id (and for what loading will refuse)."""
    from .models.registry import DEMO_MODEL, DEMO_WAN, FAMILIES, TINY_COGVIDEOX, TINY_WAN, default_model

    if settings is None:
        return None
    name = settings.name or default_model()
    if name in TINY_WAN or name == DEMO_WAN:
        return "wan"
    if name in TINY_COGVIDEOX or name == DEMO_MODEL:
        return "cogvideox"
    try:
        return FAMILIES.get(json.loads((Path(name).expanduser() / "model_index.json").read_text()).get("_class_name"))
    except (OSError, ValueError, AttributeError):
        return None


def check_edit_request(video: str, prompts: list[str], read: ReadSettings, invert_settings: InvertSettings,
                       config: EditConfig, use_inversion: str | None = None, *, save_inversion: str | None = None,
                       reconstruct: bool = False, steps_given: bool = True,
                       model_settings: ModelSettings | None = None) -> Inversion | None:
    """One-line errors for an edit that cannot work or would ignore a setting, found before any model work: the
    request check of every front end's edit (``run_edit``, hence the CLI and the batch; the page), for both edit
    methods. Settings that need the model (injection blocks, a ``--window auto`` against a saved inversion) are
    checked once it is loaded, before the video is inverted (``check_model_fits``, ``check_saved_windows``).

    Args:
        use_inversion: a saved inversion of ``video`` to edit (as a ``video`` ending in ``.inv`` is one).
        steps_given: whether ``invert_settings.steps`` was asked for (a saved inversion brings its own otherwise).
        model_settings: the model the job will open, for what its family rules out (``None``: not checked here).

    Returns:
        The saved inversion the job edits, loaded and checked against the request (``None`` when the job inverts
        the video or runs FlowEdit); pass it on to ``load_saved``.
    """
    check_prompts(prompts)
    if invert_settings.window is None and invert_settings.overlap != DEFAULT_OVERLAP:
        raise SettingsError("--overlap applies to temporal windows, and no --window is given",
                            "give --window too, or drop --overlap")
    family = family_before_loading(model_settings)
    if config.method == "flowedit":
        check_flowedit_request(video, config, use_inversion, save_inversion, reconstruct)
        shaping = changed_fields(invert_settings, FLOWEDIT_READS + RUN_ONLY)
        if shaping:
            names = [flag(name) for name in shaping]
            raise SettingsError(f"{_listed(names)} {'does' if len(names) == 1 else 'do'} not apply to FlowEdit, which "
                                "makes no inversion", "drop them, or use --method inversion")
        config.flowedit.editing_steps(invert_settings.steps)  # n_max/n_min against the steps
        if family is not None and family not in FLOW_FAMILIES:
            raise VidinvertError("FlowEdit needs a flow-matching model (Wan)",
                                 "use --method inversion with this model, or a Wan model")
        return None
    if is_saved_inversion(video) and use_inversion is not None:
        raise VidinvertError("the video is itself a saved inversion (.inv) and --use-inversion names another",
                             "give the video with --use-inversion, or the .inv file alone")
    saved = video if is_saved_inversion(video) else use_inversion
    if config.injection.reuse_kv and saved:
        raise VidinvertError("--reuse-kv needs an inversion made in this run (recorded keys/values are not saved)",
                             "edit the video itself, or drop --reuse-kv")
    if config.krnr is not None and family is not None:
        refuse_on_flow(family in FLOW_FAMILIES)
    if saved is None:
        return None
    inversion = Inversion.load(saved)
    check_saved_request(inversion, read, invert_settings, config, steps_given)
    return inversion


def _recorded(meta: InversionMeta, group: str, name: str):
    """What a saved inversion's header records for the field ``name`` of ``ReadSettings`` (``group == "read"``) or
    ``InvertSettings``; ``_UNRECORDED`` where it records nothing."""
    if group == "read":
        if name in ("height", "width"):
            return getattr(meta, name)  # the size read, asked for or the model's
        return _UNRECORDED if meta.read is None else getattr(meta.read, name)
    value = getattr(meta, name, _UNRECORDED)
    return _UNRECORDED if value is None and meta.method != "ddim" else value  # None: DDIM's, or an older file's


def check_saved_request(inversion: Inversion, read: ReadSettings, invert_settings: InvertSettings,
                        config: EditConfig, steps_given: bool = True) -> None:
    """Refuse, in one line naming the flags, what a saved inversion's edit cannot apply: a frame or inversion setting
    (any ``ReadSettings``/``InvertSettings`` field but ``RUN_ONLY``) set to something other than its default and than
    what the inversion's header records; another step count, windows or an edit strength deeper than the inversion.
    Settings equal to the recorded ones are fine (a batch passes a reused inversion's own settings)."""
    meta = inversion.meta
    if steps_given:
        inversion.check_matches(num_steps=invert_settings.steps)
    asked_size = {name: getattr(meta.read, name) for name in ("height", "width")} if meta.read else {}
    conflicts = [("read", name) for name in changed_fields(read)  # a size: as asked, or as read (rounded)
                 if getattr(read, name) not in (_recorded(meta, "read", name), asked_size.get(name, _UNRECORDED))]
    conflicts += [("invert", name) for name in changed_fields(invert_settings, SAVED_OWN_CHECKS + RUN_ONLY)
                  if _recorded(meta, "invert", name) != getattr(invert_settings, name)]
    if conflicts:
        names = [flag(name) for _, name in conflicts]
        made, unknown = [], []
        for group, name in conflicts:
            value = _recorded(meta, group, name)
            if value is _UNRECORDED:
                unknown.append(flag(name))
            elif value is None:  # a fixed-point setting of a DDIM inversion
                made.append(f"--inversion {meta.method}")
            else:
                made.append(f"{flag(name)} {_flag_value(name, value)}")
        said = [f"it was made with {_listed(list(dict.fromkeys(made)))}"] if made else []
        said += [f"its header records no {_listed(unknown)}"] if unknown else []
        them = "it" if len(names) == 1 else "them"
        hint = (" (--blend-source sets the text --blend compares the edit with)"
                if config.blend.enabled and ("invert", "prompt") in conflicts else "")
        raise SettingsError(f"{_listed(names)} {'does' if len(names) == 1 else 'do'} not apply to a saved inversion "
                            f"({'; '.join(said)})", f"drop {them}, or invert the video again with {them}{hint}")
    window = invert_settings.window
    if window is not None and window != "auto" and spread(meta.latent_shape[1], window, invert_settings.overlap) \
            != inversion.windows():  # "auto" needs the model: check_saved_windows
        raise _windows_refusal(inversion, invert_settings)
    edit_offset(inversion, config.strength)  # an edit strength deeper than the inversion


def _windows_refusal(inversion: Inversion, settings: InvertSettings) -> VidinvertError:
    meta = inversion.meta
    asked = f"--window {settings.window}" + (f" --overlap {settings.overlap:g}" if settings.overlap != DEFAULT_OVERLAP
                                             else "")
    made = (f"windows of {meta.window} latent frames overlapping by {meta.window_overlap}" if meta.window
            else "one window, the whole clip")
    return SettingsError(f"{asked} does not match the saved inversion's windows ({made})",
                         "drop --window (edits use the inversion's), or invert the video again")


def check_saved_windows(model: VideoFamily, inversion: Inversion, settings: InvertSettings) -> None:
    """A window asked for with a saved inversion must be the one it was inverted in (its edits use that one)."""
    if settings.window is None:
        return
    wanted = resolve_windows(model, inversion.meta.latent_shape[1], settings.window, settings.overlap)
    if wanted != inversion.windows():
        raise _windows_refusal(inversion, settings)


def saved_invert_settings(meta: InversionMeta, overlap: float = DEFAULT_OVERLAP) -> InvertSettings:
    """The inversion settings a saved inversion's header records: what the settings JSON of an edit of it shows.
    Fields it does not record keep their defaults (how it ran: checkpoints, devices; the window ``overlap`` share,
    recorded as whole latent frames, is the one given)."""
    recorded = {f.name: getattr(meta, f.name) for f in dataclasses.fields(InvertSettings)
                if getattr(meta, f.name, None) is not None}
    recorded.update(steps=meta.num_steps, depth=meta.steps_stored / meta.num_steps, window=meta.window or None,
                    overlap=overlap)
    return InvertSettings(**recorded)


def check_model_fits(model: VideoFamily, config: EditConfig) -> None:
    """Settings that depend on the model, checked before inverting (what ``check_edit_request`` could not tell from
    the model's name)."""
    refuse_on_flow(config.krnr is not None and model.schedule(1).is_flow)
    blocks = config.injection.blocks
    if config.injection.enabled and blocks is not None and blocks[-1] >= model.num_blocks:
        raise VidinvertError(f"injection blocks must be in 0..{model.num_blocks - 1} for this model, got "
                             f"{blocks[-1]}", f"use blocks between 0 and {model.num_blocks - 1}")


def plan_edit_outputs(stem: str, count: int, output: OutputSettings, kind: str, inputs: list[Path],
                      extra: list[Path] = ()) -> tuple[list[Path], list[Path]]:
    """``(videos, comparisons)`` for ``count`` prompts, every path (and its settings JSON) checked."""
    main = Path(output.output) if output.output else Path(output.output_dir) / f"{stem}_{kind}.mp4"
    videos = numbered(main, count)
    for path in videos:
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise VidinvertError(f"cannot write {path.name}", f"use an output ending in {', '.join(VIDEO_SUFFIXES)}")
    comparisons = [comparison_path(v) for v in videos] if output.comparison else []
    plan_outputs(videos + comparisons + [settings_path(v) for v in videos] + list(extra), output.force, inputs)
    return videos, comparisons


# ---- the record ------------------------------------------------------------------------------------------------
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
        "model": {**dataclasses.asdict(model_settings), "family": model.family,
                  "name": show(model.name) if Path(model.name).is_absolute() else model.name,
                  "dtype_resolved": str(model.dtype).replace("torch.", ""), "device_resolved": str(model.device)},
        "read": dataclasses.asdict(read) if read is not None else None,
        "invert": dataclasses.asdict(invert_settings) if invert_settings is not None else None,
        "edit": dataclasses.asdict(config) if config is not None else None,
        "output": {**dataclasses.asdict(output), **({"output": show(output.output)} if output.output else {})},
        "inversion": meta,
        "result": summary,
        "warnings": list(warnings_seen),
    }


def _fidelity(prepared: Prepared, latents: torch.Tensor, result: torch.Tensor, round_trip: torch.Tensor) -> dict:
    """Reconstruction metrics of ``result`` ``[F, C, H, W]`` against the VAE round trip ``round_trip`` (the VAE's
    own reconstruction of the input, ``[F, C, H, W]``) and the input frames."""
    from .metrics import psnr, relative_error, ssim

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


def _inversion_summary(inversion: Inversion) -> dict:
    """How the trajectory was solved: evaluations, and for fixed-point the residuals it reached."""
    meta = inversion.meta
    out = {"method": meta.method, "steps": len(meta.timesteps), "evaluations": sum(meta.iterations)}
    if inversion.report is not None:
        from .exact import describe

        out.update(inversion.report.summary(), solved=describe(inversion.report))
    elif meta.residuals:
        out["clean_end_residual"] = meta.residuals[-1]
        out["max_residual"] = max(meta.residuals)
    return out


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


# ---- whole jobs -----------------------------------------------------------------------------------------------
def _videos_summary(videos_out: list[Path], comparisons_out: list[Path], prompts: list[str], videos: torch.Tensor,
                    fps: float) -> dict:
    """The part of an edit's summary about the videos written (``videos``: ``[K, F, C, H, W]``)."""
    return {"outputs": [str(p) for p in videos_out], "comparisons": [str(p) for p in comparisons_out],
            "prompts": list(prompts), "frames": videos.shape[1], "size": list(videos.shape[3:]), "fps": fps}


def _write_videos(videos: torch.Tensor, reference: torch.Tensor, fps: float, videos_out: list[Path],
                  comparisons_out: list[Path], output: OutputSettings) -> None:
    """Write each result ``videos[k]`` and, if planned, its ``reference|result`` comparison."""
    with outputs_together():  # a job's videos appear together or not at all (with its JSON, if the caller's block)
        for k, path in enumerate(videos_out):
            write_video(videos[k], path, fps=fps, force=output.force)
            if comparisons_out:
                write_video(side_by_side(reference, videos[k]), comparisons_out[k], fps=fps, force=output.force)


def flowedit_source(model: VideoFamily, source: Source, prompts: list[str], config: EditConfig, steps: int,
                    videos_out: list[Path], comparisons_out: list[Path], output: OutputSettings,
                    result: JobResult | None = None, *, window: int | str | None = None,
                    overlap: float = DEFAULT_OVERLAP) -> JobResult:
    """FlowEdit an opened video with ``prompts`` in one batch (no inversion), decode, write videos and comparisons
    as ``edit_prepared`` does. ``result.summary`` is filled; the settings JSON is the caller's.

    ``window``/``overlap``: temporal windows (``InvertSettings``'): every transformer evaluation runs per window and
    the predictions are blended (``windows.py``), as an inversion's edit does; open the source with the same
    settings, so that it holds every frame."""
    result = result or JobResult()
    started = time.perf_counter()
    stats = EditStats()
    windows = resolve_windows(model, source.latents.shape[1], window, overlap)
    with guard_memory("editing"):
        latents = flowedit(windowed(model, windows), source.latents, config.flowedit.source_prompt, prompts, config,
                           steps=steps, progress=output.progress, stats=stats)
    videos = decode(model, latents)  # [K, F, C, H, W]
    fps = output.fps or source.clip.fps or 8.0
    _write_videos(videos, source.clip.frames, fps, videos_out, comparisons_out, output)
    n_max, n_min = config.flowedit.editing_steps(steps)
    result.summary = {
        **_videos_summary(videos_out, comparisons_out, prompts, videos, fps),
        "method": "flowedit",
        "edit_steps": stats.steps,
        "flowedit": {"steps": steps, "n_max": n_max, "n_min": n_min, "n_avg": config.flowedit.n_avg,
                     "window": windows.record()[0], "window_overlap": windows.record()[1]},  # as an inversion's
        "transformer_calls": len(stats.batch_rows),
        "transformer_rows": sum(stats.batch_rows),
        "batch_rows": sorted(set(stats.batch_rows)),
        "edit_seconds": round(time.perf_counter() - started, 2),
    }
    if output.metrics:
        measure_temporal(videos, source.clip.frames, result, windows.pixel_borders(model.temporal_factor))
    result.outputs, result.comparisons = list(videos_out), list(comparisons_out)
    result.latents, result.videos = latents, videos
    return result


def check_flowedit_request(video: str, config: EditConfig, use_inversion: str | None, save_inversion: str | None,
                           reconstruct: bool) -> None:
    """One-line errors for a FlowEdit job that cannot work, found without loading anything (part of
    ``check_edit_request``, which also checks the settings)."""
    if reconstruct:
        raise VidinvertError("reconstruct checks an inversion; FlowEdit makes none", "use --method inversion")
    if is_saved_inversion(video) or use_inversion is not None or save_inversion is not None:
        raise VidinvertError("FlowEdit edits the video itself and neither reads nor writes a saved inversion (.inv)",
                             "give the video file and drop --use-inversion/--save-inversion, or use --method inversion")


def edit_prepared(model: VideoFamily, prepared: Prepared, prompts: list[str], config: EditConfig,
                  videos_out: list[Path], comparisons_out: list[Path], output: OutputSettings,
                  reconstruct: bool = False, result: JobResult | None = None) -> JobResult:
    """Edit a prepared inversion with ``prompts`` in one batch, decode, write the videos and comparisons.

    The settings JSON is not written here (the caller knows the whole record); ``result.summary`` is filled.
    ``config`` is run as given: callers fill what was left to the model with ``family_defaults`` first.
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
        latents = edit(model, inversion, prompts, config, progress=output.progress, stats=stats)
    videos = decode(model, latents)  # [K, F, C, H, W]
    round_trip = decode(model, inversion.clean)[0] if reconstruct or prepared.source is None else None
    reference = prepared.source.clip.frames if prepared.source is not None else round_trip
    fps = output.fps or (prepared.source.clip.fps if prepared.source is not None else inversion.meta.fps) or 8.0
    _write_videos(videos, reference, fps, videos_out, comparisons_out, output)
    summary = {
        **_videos_summary(videos_out, comparisons_out, prompts, videos, fps),
        "edit_steps": stats.steps,
        "transformer_calls": len(stats.batch_rows) + len(stats.mask_rows),
        "batch_rows": sorted(set(stats.batch_rows + stats.mask_rows)),
        "inversion_reused": prepared.reused,
        "inversion": _inversion_summary(inversion),
        **({"blend_coverage": [round(c, 4) for c in stats.blend_coverage]} if config.blend.enabled else {}),
    }
    if reconstruct:
        summary["fidelity"] = _fidelity(prepared, latents, videos[0], round_trip)
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
             show: Callable[[str], str] = str) -> JobResult:
    """The edit job (``vidinvert edit`` / ``reconstruct``): check, plan outputs, open the model, invert the video or
    load a saved inversion (``video`` ending in ``.inv``, or ``use_inversion``), edit, write.

    Args:
        prompts: the edit prompts; ``None`` with ``reconstruct``: the text the video is inverted with (a saved
            inversion's, the one it records).
        steps_given: whether ``invert_settings.steps`` was asked for (a saved inversion brings its own otherwise).
        model: an already opened model (its settings are then only recorded).
    """
    result = JobResult()
    source_text = reconstruct and prompts is None
    if source_text:
        prompts = [invert_settings.prompt]
    if reconstruct:  # a fidelity check regenerates the source as it is: a model's edit recommendations do not apply
        config = with_model_edit_defaults(config, {})
    if config.method == "flowedit":
        return _run_flowedit(video, prompts, model_settings, read, invert_settings, config, output,
                             use_inversion=use_inversion, save_inversion=save_inversion, reconstruct=reconstruct,
                             command=command, model=model, show=show)
    with outputs_together():  # every file of the job, or none
        with collect_warnings(result.warnings):
            saved = check_edit_request(video, prompts, read, invert_settings, config, use_inversion,
                                       save_inversion=save_inversion, reconstruct=reconstruct, steps_given=steps_given,
                                       model_settings=model_settings)
            if saved is not None and source_text:
                prompts = [saved.meta.prompt]
            inputs = [Path(p) for p in (video, use_inversion) if p]
            stem = Path(video).stem
            extra = [Path(save_inversion)] if save_inversion else []
            videos_out, comparisons_out = plan_edit_outputs(stem, len(prompts), output,
                                                            "reconstruction" if reconstruct else "edit", inputs, extra)
            started = time.perf_counter()
            model = model or load_model(model_settings, result.notes)
            read, invert_settings, config = family_defaults(model, read, invert_settings, config)
            check_model_fits(model, config)
            if saved is None:
                checkpoint = partial_path(Path(save_inversion) if save_inversion else videos_out[0].with_suffix(".inv"))
                prepared = prepare(model, video, read, invert_settings, progress=output.progress, checkpoint=checkpoint,
                                   rows=2 * len(prompts) + 2)  # each prompt guided, plus the reference
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
            if save_inversion:
                prepared.inversion.save(save_inversion, force=output.force)
            edit_prepared(model, prepared, prompts, config, videos_out, comparisons_out, output, reconstruct, result)
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
        with collect_warnings(result.warnings):
            check_edit_request(video, prompts, read, invert_settings, config, use_inversion,
                               save_inversion=save_inversion, reconstruct=reconstruct, model_settings=model_settings)
            videos_out, comparisons_out = plan_edit_outputs(Path(video).stem, len(prompts), output, "edit",
                                                            [Path(video)])
            started = time.perf_counter()
            model = model or load_model(model_settings, result.notes)
            read, invert_settings, config = family_defaults(model, read, invert_settings, config)
            steps = invert_settings.steps
            flow_schedule(model, steps)  # refuses a DDIM model before the video is read
            source = open_source(model, video, read, rows=rows_per_step(len(prompts), 2, 2, 1, False),
                                 invert_settings=invert_settings)
            flowedit_source(model, source, prompts, config, steps, videos_out, comparisons_out, output, result,
                            window=invert_settings.window, overlap=invert_settings.overlap)
            result.summary["seconds"] = round(time.perf_counter() - started, 2)
            result.summary.update(peak_memory())
        write_records(result, command, model, model_settings, read, None, config, output, show)
    return result


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


def run_invert(video: str, model_settings: ModelSettings = ModelSettings(), read: ReadSettings = ReadSettings(),
               invert_settings: InvertSettings = InvertSettings(), output: OutputSettings = OutputSettings(), *,
               model: VideoFamily | None = None, show: Callable[[str], str] = str) -> JobResult:
    """The invert job (``vidinvert invert``): video -> ``.inv`` and its settings JSON."""
    result = JobResult()
    with outputs_together():  # the .inv and its JSON, or neither
        with collect_warnings(result.warnings):
            out = (Path(output.output) if output.output
                   else Path(output.output_dir) / f"{Path(video).stem}_inversion.inv")
            if out.suffix != ".inv":
                raise VidinvertError(f"an inversion is saved as .inv, got {out.name}", "e.g. clip.inv")
            if is_saved_inversion(video):
                raise VidinvertError(f"{video} is already an inversion", "invert a video file")
            plan_outputs([out, settings_path(out)], output.force, [Path(video)])
            started = time.perf_counter()
            model = model or load_model(model_settings, result.notes)
            read, invert_settings, _ = family_defaults(model, read, invert_settings)
            prepared = prepare(model, video, read, invert_settings, progress=output.progress,
                               checkpoint=partial_path(out))
            prepared.inversion.save(out, force=output.force)
            clip = prepared.source.clip
            result.outputs, result.prepared = [out], prepared
            result.summary = {"output": str(out), "frames": clip.frames.shape[0], "size": list(clip.frames.shape[2:]),
                              **_inversion_summary(prepared.inversion),
                              "seconds": round(time.perf_counter() - started, 2), **peak_memory()}
        write_records(result, "invert", model, model_settings, read, invert_settings, None, output, show)
    return result
