"""Edit regions in a job: the request checked before any model work, the region built on the clip the job opened,
its record in the summary, and ``--save-mask``."""

from __future__ import annotations

from pathlib import Path

from ..errors import VidinvertError
from ..export import write_video
from ..models.base import VideoFamily
from ..regions import Region, build_region, check_mask_path, mask_frames
from ..settings import EditConfig, OutputSettings, ReadSettings
from .source import Prepared, Source


def check_region_request(config: EditConfig, output: OutputSettings, reconstruct: bool = False) -> list[Path]:
    """One-line errors for a region the job cannot use; the extra output paths it writes (``--save-mask``)."""
    region = config.region
    if output.save_mask and not region.enabled:
        raise VidinvertError("--save-mask writes the edit region, and no --mask or --box is given",
                             "give --mask or --box, or drop --save-mask")
    if not region.enabled:
        return []
    if reconstruct:
        raise VidinvertError("a reconstruction regenerates the whole source", "drop --mask/--box, or use vidinvert edit")
    if region.mask is not None:
        check_mask_path(region.mask)
    return [Path(output.save_mask)] if output.save_mask else []


def region_of_source(model: VideoFamily, config: EditConfig, source: Source, notes: list[str]) -> Region | None:
    """The region on an opened video's frames (``None`` when the job asks for none)."""
    frames = source.clip.frames  # [F, C, H, W]
    return build_region(config.region, tuple(source.clip.indices), source.clip.source_size, frames.shape[2],
                        frames.shape[3], source.read.resize, model.spatial_factor, model.temporal_factor, notes)


def region_of_prepared(model: VideoFamily, config: EditConfig, prepared: Prepared, read: ReadSettings,
                       notes: list[str]) -> Region | None:
    """The region on a prepared inversion's frames: its video's when it was opened, else the frames the saved
    inversion records (their source indices and size; a box then needs the video)."""
    if not config.region.enabled:
        return None
    if prepared.source is not None:
        return region_of_source(model, config, prepared.source, notes)
    meta = prepared.inversion.meta
    if not meta.indices:
        raise VidinvertError("this saved inversion does not record which source frames it holds, which a mask is "
                             "taken at", "give the video too (VIDEO --use-inversion FILE.inv), or invert it again")
    return build_region(config.region, tuple(meta.indices), None, meta.height, meta.width,
                        (meta.read or read).resize, model.spatial_factor, model.temporal_factor, notes)


def save_mask_video(region: Region, model: VideoFamily, output: OutputSettings, fps: float) -> None:
    """``--save-mask``: the latent-grid mask as a video, one frame per frame of the clip."""
    if output.save_mask:
        write_video(mask_frames(region, model.spatial_factor, model.temporal_factor), output.save_mask, fps=fps,
                    force=output.force)
