"""The page's back end (no Gradio here): one model, loaded lazily, and a cache of inversions over ``engine``.

Cache key: (video content hash, frame settings, inversion settings, model fingerprint, whether the inversion is
conditioned on the clip's own first frame), so "Invert" then "Edit", or several edits of one clip, invert once.
FlowEdit (``EditConfig.method == "flowedit"``) makes no inversion: its edits cache the opened video (frames and
latents) under (video hash, frame settings, model fingerprint). Every step is an ``engine`` function; the settings
JSON is the one ``engine`` writes for the CLI (paths reduced to file names: the page never writes server paths into a
download). With an image-to-video model an edit may follow an edited first frame (``engine.first_frame``), as
``vidinvert edit --first-frame`` does. An edit may be kept to a region (``EditConfig.region``: a mask file, as
``vidinvert edit --mask``): regions are cached too, under the mask's content (its SHA-256, never its path: a file
replaced at the same path is read again), the grow and the clip's frames, so that a changed mask is never served
from the cache of another.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import engine
from ..atomic import outputs_together
from ..engine.first_frame import check_first_frame_request, paired_prompts, read_first_frames, refuse_text_to_video
from ..engine.region import check_region_request, region_of_source
from ..errors import VidinvertError
from ..flowedit import flow_schedule, rows_per_step
from ..provenance import file_sha256
from ..regions import Region
from ..settings import EditConfig, InvertSettings, ModelSettings, OutputSettings, ReadSettings
from ..windows import resolve as resolve_windows, windowed

CACHE_SIZE = 4  # inversions kept in memory (least recently used dropped first)
INVERT_ROWS = 2  # transformer batch rows of an inversion alone (Invert: no prompts yet)


def file_hash(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (the cache key of an uploaded video)."""
    return file_sha256(path)


def _name_only(path: str) -> str:
    return Path(path).name


def edit_rows(prompts: int, flowedit: bool) -> int:
    """The most transformer batch rows an edit with ``prompts`` prompts runs, as the CLI's job counts them
    (``engine.run_edit``): each prompt guided plus the reference, or FlowEdit's rows of one step."""
    return rows_per_step(prompts, 2, 2, 1, False) if flowedit else 2 * prompts + 2


def conditioned(model, first_frame: bool) -> bool:
    """Whether ``model`` inverts a clip conditioned on its own first frame: an image-to-video model that needs a
    frame always, one that may take one (Wan 2.2 TI2V) when the job follows an edited first frame
    (``engine.source.source_condition``)."""
    return bool(model.needs_image or (first_frame and model.takes_image))


def _check_memory(model, source: engine.Source, inv: InvertSettings, rows: int) -> None:
    """``engine.open_source``'s memory check for an opened video taken from the cache, for the rows of this job."""
    count, _, height, width = source.clip.frames.shape  # [F, C, H, W]
    windows = resolve_windows(model, (count - 1) // model.temporal_factor + 1, inv.window, inv.overlap)
    engine.check_memory(windowed(model, windows), count, height, width, rows)


@dataclass
class EditResult:
    """Files written for one edit prompt."""

    prompt: str
    video: Path
    comparison: Path
    settings: Path


@dataclass
class Studio:
    """The model of one app (loaded on first use, once) and its cache of inversions; safe to share between sessions.

    Args:
        settings: which model, dtype, device and memory options (the CLI's ``ModelSettings``).
        cache_size: inversions kept in memory.
    """

    settings: ModelSettings = field(default_factory=ModelSettings)
    cache_size: int = CACHE_SIZE
    _model: object = field(default=None, init=False, repr=False)
    _cache: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)
    _regions: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)  # edit regions (``region``)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    notes: list = field(default_factory=list, init=False, repr=False)
    running: tuple[str, float] | None = field(default=None, init=False, repr=False)  # the job running now: what
    # ("Editing with 1 prompt") and since when (time.monotonic()), for a page reloaded while it runs

    @contextmanager
    def _job(self, what: str):
        """Within (holding the lock): ``running`` names the job (the outermost one, when jobs nest)."""
        with self._lock:
            outer = self.running is not None
            if not outer:
                self.running = (what, time.monotonic())
            try:
                yield
            finally:
                if not outer:
                    self.running = None

    @classmethod
    def from_model(cls, model, cache_size: int = CACHE_SIZE) -> "Studio":
        """A ``Studio`` over an already loaded model (for notebooks and tests)."""
        studio = cls(ModelSettings(name=model.name, device=str(model.device)), cache_size=cache_size)
        studio._model = model
        return studio

    @property
    def label(self) -> str:
        from ..models import default_model

        return self.settings.name or default_model()

    def model(self):
        """The app's model, loaded on first use (the CLI's device, dtype and memory rules)."""
        with self._lock:
            if self._model is None:
                self._model = engine.load_model(self.settings, self.notes)
            return self._model

    def prepared(self, video: str, read: ReadSettings, inv: InvertSettings,
                 say: Callable[[str], None] = lambda text: None, warnings: list[str] | None = None,
                 rows: int = INVERT_ROWS, first_frame: bool = False) -> engine.Prepared:
        """The inversion of a video file: from the cache (``reused``), or opened and inverted now.

        Args:
            warnings: gets the library's warnings of the inversion (one line each, no repeats), also when it is
                reused from the cache (they are kept with it).
            rows: the most transformer batch rows the job will use (``edit_rows``): the memory check counts
                them, also for an inversion from the cache.
            first_frame: the job follows an edited first frame (an image-to-video model that may also generate
                from text alone then inverts on the clip's own first frame, ``conditioned``).
        """
        self._check_video(video)
        with self._job("Inverting"):
            if self._model is None:
                say("loading the model")
            model = self.model()
            key = (file_hash(video), read, inv, model.name, model.fingerprint(), conditioned(model, first_frame))
            if key in self._cache:
                self._cache.move_to_end(key)
                cached, seen = self._cache[key]
                _check_memory(model, cached.source, inv, rows)
                prepared = engine.Prepared(cached.source, cached.inversion, reused=True)
            else:
                say("reading, encoding and inverting the video")
                seen = []
                with engine.collect_warnings(seen):
                    prepared = engine.prepare(model, video, read, inv, progress=True, rows=rows,
                                              first_frame=first_frame)
                self._cache[key] = (prepared, seen)
                while len(self._cache) > max(1, self.cache_size):
                    self._cache.popitem(last=False)
        if warnings is not None:
            warnings.extend(line for line in seen if line not in warnings)
        return prepared

    @staticmethod
    def _check_video(video: str) -> None:
        if not video:
            raise VidinvertError("no video chosen", "upload a clip or click 'Use the bundled sample'")
        if not Path(video).is_file():
            raise VidinvertError(f"video not found: {Path(video).name}", "upload the clip again")

    def source(self, video: str, read: ReadSettings, say: Callable[[str], None] = lambda text: None,
               rows: int = INVERT_ROWS, inv: InvertSettings = InvertSettings()) -> engine.Source:
        """A video opened (read and encoded) for the model, from the cache or now: what FlowEdit edits (``rows``:
        as for ``prepared``; ``inv``: the job's temporal windows, with what was left to the model filled in, as
        ``engine.open_source`` takes them: a windowed job reads every frame)."""
        self._check_video(video)
        with self._lock:
            if self._model is None:
                say("loading the model")
            model = self.model()
            key = (file_hash(video), read, "source", inv.window, inv.overlap, model.name, model.fingerprint())
            if key in self._cache:
                self._cache.move_to_end(key)
                _check_memory(model, self._cache[key], inv, rows)
                return self._cache[key]
            say("reading and encoding the video")
            source = engine.open_source(model, video, read, rows, inv)
            self._cache[key] = source
            while len(self._cache) > max(1, self.cache_size):
                self._cache.popitem(last=False)
            return source

    def region(self, model, config: EditConfig, source: engine.Source,
               notes: list[str] | None = None) -> Region | None:
        """The edit region ``config.region`` asks for on an opened video (``engine.region.region_of_source``;
        ``None`` when it asks for none), from the cache of regions when one was built from the same mask content
        (its file's SHA-256) or box, grow and clip frames (source frame indices, size, resize rule) for the model's
        latent grid; a mask folder (library callers) is read every time. Its record names the mask by file name, never
        a server path. ``notes`` gets its notes (e.g. that it covers the whole clip), also from the cache."""
        wanted = config.region
        if not wanted.enabled:
            return None
        mask = wanted.mask
        if mask is None:
            what = ("box", wanted.box)
        else:
            what = ("mask", file_hash(mask)) if Path(mask).is_file() else None  # missing: region_of_source says so
        clip = source.clip
        key = (what, wanted.grow, tuple(clip.indices), clip.source_size, tuple(clip.frames.shape[2:]),
               source.read.resize, model.spatial_factor, model.temporal_factor)
        with self._lock:
            if what is not None and key in self._regions:
                self._regions.move_to_end(key)
                region, seen = self._regions[key]
            else:
                seen = []
                region = region_of_source(model, config, source, seen)
                if what is not None:
                    self._regions[key] = (region, seen)
                    while len(self._regions) > max(1, self.cache_size):
                        self._regions.popitem(last=False)
        if notes is not None:
            notes.extend(seen)
        if mask is None:
            return region
        return dataclasses.replace(region, record={**region.record, "mask": _name_only(mask)})

    def edit(self, video: str, read: ReadSettings, inv: InvertSettings, prompts: list[str] | None,
             config: EditConfig, folder: Path, say: Callable[[str], None] = lambda text: None,
             metrics: bool = OutputSettings.metrics, first_frames: list[str] | None = None,
             notes: list[str] | None = None) -> tuple[list[EditResult], engine.JobResult]:
        """Invert (or reuse) and edit with ``prompts`` in one batch; write results, comparisons and settings JSON
        into ``folder`` (a fresh one per run); with ``metrics``, measure each result's temporal metrics too. With
        ``config.method == "flowedit"``: FlowEdit the video over ``inv.steps`` steps, no inversion (the record's
        ``invert`` and ``inversion`` are ``null``, as the CLI's).

        ``first_frames``: edited first frames (image files) an image-to-video model follows, one for every prompt or
        one per prompt, as ``engine.run_edit`` takes them; the prompts may then be left out (each frame takes the
        source prompt). The summary's ``first_frames`` records each by file name and SHA-256.

        ``config.region``: where the edit may change (a mask file or a box, ``region``); outside it the result's
        latents are the source's, as ``vidinvert edit --mask``'s. The summary's and the settings' ``region`` name the
        mask by file name and record its SHA-256. ``notes`` gets the notes of the region (e.g. that it covers the
        whole clip), which the page shows with the warnings; ``result.notes`` holds them too.

        Returns:
            One ``EditResult`` per prompt, and the job's result (summary, warnings, record).
        """
        first_frames = list(first_frames or [])
        if first_frames:  # as run_edit: checked before any model work, then paired with the prompts
            check_first_frame_request(first_frames, prompts, config, self.settings)
            prompts = paired_prompts(prompts or None, first_frames, inv.prompt)
        output = OutputSettings(output=str(Path(folder) / f"{Path(video).stem}_edit.mp4"), progress=True,
                                metrics=metrics)
        result = engine.JobResult()
        started = time.perf_counter()
        with outputs_together():  # the videos, comparisons and settings JSON of a run appear together or not at all
            with engine.collect_warnings(result.warnings):
                flowedit = config.method == "flowedit"
                # everything checkable before model work, for both methods (FlowEdit on a model of a DDIM family
                # too, by its name or by the model already loaded), as run_edit checks it
                engine.check_edit_request(video, prompts, read, inv, config, model_settings=self.settings)
                if flowedit and self._model is not None:
                    flow_schedule(self._model, inv.steps)  # a loaded DDIM model whose name did not tell its family
                extra = check_region_request(config, output)  # a mask that is no file: refused before model work
                videos, comparisons = engine.plan_edit_outputs(Path(video).stem, len(prompts), output, "edit",
                                                               [Path(video)], extra)
                with self._job(f"Editing with {len(prompts)} prompt{'s' if len(prompts) > 1 else ''}"):
                    if self._model is None:
                        say("loading the model")
                    model = self.model()
                    if flowedit:
                        flow_schedule(model, inv.steps)  # refuses a DDIM model before the video is read
                    # what was left to the model (FlowEdit's windows too), as run_edit fills it
                    taken: list[str] = []  # the model's recommendations this edit takes: a note on the page
                    _, job_inv, config = engine.family_defaults(model, None, inv, config, taken)
                    region_notes: list[str] = []
                    if flowedit:
                        source = self.source(video, read, say, edit_rows(len(prompts), True), job_inv)
                        region = self.region(model, config, source, region_notes)
                    else:
                        prepared = self.prepared(video, read, inv, say, result.warnings,
                                                 edit_rows(len(prompts), False), first_frame=bool(first_frames))
                        engine.check_model_fits(model, config)
                        conditions, frame_records = self._first_frames(model, prepared, first_frames, read,
                                                                       result.notes)
                        region = self.region(model, config, prepared.source, region_notes)
                    say(f"editing with {len(prompts)} prompt{'s' if len(prompts) > 1 else ''}")
                    if flowedit:
                        engine.flowedit_source(model, source, prompts, config, inv.steps, videos, comparisons, output,
                                               result, window=job_inv.window, overlap=job_inv.overlap, region=region)
                    else:
                        engine.edit_prepared(model, prepared, prompts, config, videos, comparisons, output,
                                             result=result, first_frames=conditions, region=region)
                        if frame_records:
                            result.summary["first_frames"] = frame_records
                result.summary["seconds"] = round(time.perf_counter() - started, 2)  # as run_edit: inversion included
                result.summary.update(engine.peak_memory())
            result.notes = [*self.notes, *result.notes, *region_notes] + taken
            if notes is not None:
                notes.extend(region_notes)
            read, inv, config = engine.family_defaults(model, read, inv, config)  # as run (a windowed read too)
            if config.region.mask is not None:  # the settings name the mask by file name, as the summary does
                config = dataclasses.replace(config, region=dataclasses.replace(
                    config.region, mask=_name_only(config.region.mask)))
            inv = None if flowedit else inv  # FlowEdit makes no inversion: its windows are in the result's record
            engine.write_records(result, "serve", model, self.settings, read, inv, config, output, show=_name_only)
        items = [EditResult(p, v, c, s) for p, v, c, s in zip(prompts, videos, comparisons, result.settings_files)]
        return items, result

    @staticmethod
    def _first_frames(model, prepared: engine.Prepared, paths: list[str], read: ReadSettings, notes: list[str]):
        """The conditions of the edited first frames ``paths`` (``None`` when there are none) and what the settings
        JSON records of them (file names, never server paths), each fitted to the inverted clip's size as
        ``engine.run_edit`` fits it."""
        if not paths:
            return None, []
        refuse_text_to_video(model)  # a model whose name did not tell
        meta = prepared.inversion.meta
        height, width = meta.latent_shape[3] * model.spatial_factor, meta.latent_shape[4] * model.spatial_factor
        conditions, records = read_first_frames(model, paths, height, width, read.resize, meta.latent_shape[1], notes)
        return conditions, [{**record, "path": _name_only(record["path"])} for record in records]
