"""The source of an edit: a video opened for a model (frames read, VAE latents) and inverted, or a saved inversion
loaded and checked against the model and its video."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import VidinvertError
from ..inversion import Inversion, InversionMeta, invert
from ..models.base import VideoFamily
from ..provenance import SourceInfo
from ..settings import DEFAULT_OVERLAP, WINDOW_OFF, InvertSettings, ReadSettings
from ..video import Clip, frames_hash, read_video
from ..windows import resolve as resolve_windows, windowed
from .memory import check_memory, guard_memory
from .plan import family_defaults


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


def open_source(model: VideoFamily, path: str, read: ReadSettings = ReadSettings(), rows: int = 2,
                invert_settings: InvertSettings = InvertSettings()) -> Source:
    """Read frames sized for ``model`` and encode them; one-line errors for anything unusable, or for a size the
    device has no memory for (``rows``: the most transformer batch rows the job will use; ``invert_settings``: its
    temporal window, checked against the clip and bounding the transformer's memory)."""
    read, invert_settings, _ = family_defaults(model, read, invert_settings)
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


def source_condition(model: VideoFamily, source: Source, first_frame: bool = False):
    """``(condition, its hash)`` of the source's own first frame for an image-to-video model that needs one (or
    ``first_frame``: the job edits the first frame of a model that may take one); ``(None, "")`` otherwise."""
    if not (model.needs_image or (first_frame and model.takes_image)):
        return None, ""
    with torch.no_grad():
        image = model.encode_image(source.clip.frames[0], source.latents.shape[1])
    return image, frames_hash(source.clip.frames[:1])


def invert_source(model: VideoFamily, source: Source, settings: InvertSettings = InvertSettings(),
                  progress: bool = False, checkpoint: Path | None = None, first_frame: bool = False) -> Inversion:
    """Invert an opened video; the inversion records its source. ``checkpoint``: the file partial inversions go to
    when ``settings.checkpoint_every > 0``. An image-to-video model inverts conditioned on the clip's own first
    frame (``source_condition``)."""
    image, image_hash = source_condition(model, source, first_frame)
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
            image=image,
            image_hash=image_hash,
            **options,
        )


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
    windowing = InvertSettings(window=meta.window or WINDOW_OFF)  # a windowed job's frames are not capped by the model's
    if video is not None:
        source = open_source(model, video, read, invert_settings=windowing)
        inversion.check_matches(source_hash=source.hash)
        check_condition(inversion, source)
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


def check_condition(inversion: Inversion, source: Source) -> None:
    """Refuse an image-to-video inversion conditioned on another frame than ``source``'s first."""
    recorded = inversion.meta.condition_hash
    if recorded and recorded != "unrecorded" and recorded != frames_hash(source.clip.frames[:1]):
        raise VidinvertError("the saved inversion was conditioned on another first frame than this video's",
                             "invert this video again with this model")


def prepare(model: VideoFamily, video: str, read: ReadSettings, invert_settings: InvertSettings,
            progress: bool = False, checkpoint: Path | None = None, rows: int = 2,
            first_frame: bool = False) -> Prepared:
    """Open and invert a video (``rows``: the most transformer batch rows the job will use, for the memory check);
    what ``invert_settings`` left to the model is filled in first (``family_defaults``). ``first_frame``: the job
    edits the first frame (``source_condition``)."""
    read, invert_settings, _ = family_defaults(model, read, invert_settings)
    source = open_source(model, video, read, rows, invert_settings)
    return Prepared(source, invert_source(model, source, invert_settings, progress=progress, checkpoint=checkpoint,
                                          first_frame=first_frame))


def saved_invert_settings(meta: InversionMeta, overlap: float = DEFAULT_OVERLAP) -> InvertSettings:
    """The inversion settings a saved inversion's header records: what the settings JSON of an edit of it shows.
    Fields it does not record keep their defaults (how it ran: checkpoints, devices; the window ``overlap`` share,
    recorded as whole latent frames, is the one given)."""
    recorded = {f.name: getattr(meta, f.name) for f in dataclasses.fields(InvertSettings)
                if getattr(meta, f.name, None) is not None}
    recorded.update(steps=meta.num_steps, depth=meta.steps_stored / meta.num_steps, window=meta.window or None,
                    overlap=overlap)
    return InvertSettings(**recorded)
