"""User regions: where an edit may change the video, from a mask file or a box, brought to the latent grid.

A mask is an image (one mask for every frame), a video or a folder of images (one mask per frame, taken at the
clip's own source frame indices, so skip / stride / max frames select the same frames). A pixel may change where it
is brighter than half the mask's brightest value: 0/255 masks, 0/1 label images and video-codec noise all read as
meant. ``--box X0,Y0,X1,Y1`` is a rectangle in pixels of the source frame. Either is fitted to the clip's size by
the clip's own resize rule, then brought to the grid the model edits on:

- spatially by area: a latent cell may change when any pixel it covers may (its pixels are decoded from it), then
  dilated by ``grow`` cells;
- temporally as the union of the frames each latent frame covers: latent frame 0 is pixel frame 0, latent frame
  ``j >= 1`` pixel frames ``(j - 1) f + 1 .. j f`` (``f`` = the VAE's temporal factor; CogVideoX and Wan alike).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import VidinvertError
from .provenance import file_sha256
from .settings import MASK_GROW, RegionConfig
from .video import IMAGE_SUFFIXES, fit_frame, read_frame_image, read_video, refuse_special_file

MASK_FIX = "give a black-and-white image (PNG/JPEG), a video or a folder of images; white = may change"


@dataclass(frozen=True)
class Region:
    """A user's region on the latent grid, and what the settings JSON records of it.

    Args:
        latent: float32 ``[1, T, 1, h, w]``, 1 where the edit may change the latents, 0 where they stay the source's.
        pixels: bool ``[F, 1, H, W]``: the mask at the clip's frames and size, before the latent grid.
        record: the source (path and sha256, or the box), grow and coverage, for the settings JSON.
    """

    latent: torch.Tensor
    pixels: torch.Tensor
    record: dict

    @property
    def coverage(self) -> float:
        """Fraction of latent cells that may change."""
        return float(self.latent.mean())


def check_mask_path(path: str) -> None:
    """One-line errors, before any model work, for a mask path that cannot be a mask."""
    where = Path(path)
    refuse_special_file(where, MASK_FIX)
    if not where.exists():
        raise VidinvertError(f"mask not found: {path}", "check the path")


def _binary(frames: torch.Tensor) -> torch.Tensor:
    """Frames ``[F, 3, H, W]`` in [-1, 1] -> bool ``[F, 1, H, W]``: brighter than half the brightest value."""
    level = frames.amax(dim=1, keepdim=True) + 1.0  # [F, 1, H, W], 0 = black .. 2 = white
    return level > level.max() / 2 if level.max() > 0 else torch.zeros_like(level, dtype=torch.bool)


def read_mask(path: str, indices: tuple[int, ...], height: int, width: int, resize: str) -> torch.Tensor:
    """The mask file ``path`` at the clip's source frame ``indices``, fitted to ``height`` x ``width`` by the clip's
    ``resize`` rule -> bool ``[F, 1, H, W]`` (an image: one mask repeated for every frame)."""
    check_mask_path(path)
    where = Path(path)
    if where.is_file() and where.suffix.lower() in IMAGE_SUFFIXES:
        frame, _ = read_frame_image(where, height, width, resize, what="mask")  # [3, H, W]
        return _binary(frame[None]).expand(len(indices), -1, -1, -1).clone()  # [F, 1, H, W]
    needed = max(indices) + 1
    try:
        clip = read_video(where, height, width, stride=1, max_frames=needed, resize=resize, multiple=1,
                          temporal_multiple=1, min_frames=1)
    except VidinvertError as err:
        raise VidinvertError(f"the mask {where.name} is not a readable image or video ({err.problem})",
                             MASK_FIX) from None
    have = clip.frames.shape[0]
    if have < needed:
        raise VidinvertError(f"the mask video {where.name} has {have} frames; the clip reads {len(indices)} frames "
                             f"up to source frame {needed - 1}, so it needs at least {needed}",
                             "give one mask frame for every frame of the source video, or one image for all")
    return _binary(clip.frames[list(indices)])  # [F, 1, H, W]


def box_mask(box: tuple[int, int, int, int], source_size: tuple[int, int], frames: int, height: int, width: int,
             resize: str) -> torch.Tensor:
    """The rectangle ``box`` (pixels of the ``source_size`` frame) on the clip's frames, fitted as the frames are
    -> bool ``[F, 1, H, W]``."""
    x0, y0, x1, y1 = box
    src_h, src_w = source_size
    if x1 > src_w or y1 > src_h:
        raise VidinvertError(f"the box {x0},{y0},{x1},{y1} reaches outside the source frame ({src_w} wide, "
                             f"{src_h} high)", f"keep X1 <= {src_w} and Y1 <= {src_h}")
    plane = torch.full((1, src_h, src_w), -1.0)
    plane[:, y0:y1, x0:x1] = 1.0
    fitted = fit_frame(plane, height, width, resize)  # [1, H, W], the box as the clip's frames are resized
    return (fitted > 0.0)[None].expand(frames, -1, -1, -1).clone()  # [F, 1, H, W]


def to_latent_grid(pixels: torch.Tensor, spatial_factor: int, temporal_factor: int, grow: int) -> torch.Tensor:
    """Pixel mask bool ``[F, 1, H, W]`` (``F = 1 + k temporal_factor``) -> float32 ``[1, T, 1, h, w]`` in {0, 1}."""
    frames = pixels.shape[0]
    spread = pixels.float()  # [F, 1, H, W]
    cells = F.max_pool2d(spread, spatial_factor, stride=spatial_factor)  # [F, 1, h, w]: any pixel of the cell
    groups = [cells[:1]] + [cells[1 + j : 1 + j + temporal_factor].amax(dim=0, keepdim=True)
                            for j in range(0, frames - 1, temporal_factor)]
    latent = torch.cat(groups)  # [T, 1, h, w]
    if grow:
        latent = F.max_pool2d(latent, 2 * grow + 1, stride=1, padding=grow)  # [T, 1, h, w]
    return latent[None]  # [1, T, 1, h, w]


def latent_frames_of(pixel_frames: int, temporal_factor: int) -> list[int]:
    """The latent frame each pixel frame is decoded from (see ``to_latent_grid``)."""
    return [0 if f == 0 else (f - 1) // temporal_factor + 1 for f in range(pixel_frames)]


def build_region(config: RegionConfig, indices: tuple[int, ...], source_size: tuple[int, int] | None,
                 height: int, width: int, resize: str, spatial_factor: int, temporal_factor: int,
                 notes: list[str] | None = None) -> Region | None:
    """The region ``config`` asks for on a clip (its source frame ``indices``, its source frame size and the size and
    resize rule it was read with); ``None`` when it asks for none. One-line errors for a region that selects
    nothing; a note when it selects everything."""
    if not config.enabled:
        return None
    if config.box is not None:
        if source_size is None:
            raise VidinvertError("--box is in pixels of the source video's frames, which a saved inversion alone "
                                 "does not record", "give the video too (VIDEO --use-inversion FILE.inv), or a --mask")
        pixels = box_mask(config.box, source_size, len(indices), height, width, resize)
        record = {"box": list(config.box)}
        what = f"the box {','.join(str(v) for v in config.box)}"
    else:
        pixels = read_mask(config.mask, indices, height, width, resize)
        record = {"mask": str(Path(config.mask).resolve()),
                  "sha256": file_sha256(config.mask) if Path(config.mask).is_file() else _folder_hash(config.mask)}
        what = f"the mask {Path(config.mask).name}"
    latent = to_latent_grid(pixels, spatial_factor, temporal_factor, config.grow)
    if not bool(latent.any()):
        raise VidinvertError(f"{what} selects nothing of the clip's {height}x{width} frames (no white pixels there)",
                             "white marks where the edit may change: draw the region in white")
    region = Region(latent=latent, pixels=pixels,
                    record={**record, "grow": config.grow, "coverage": round(float(latent.mean()), 4)})
    if bool(latent.all()) and notes is not None:
        notes.append(f"{what} covers the whole clip on the model's latent grid (grown by {config.grow}): the edit "
                     "may change everything, as without one")
    return region


def _folder_hash(folder: str) -> str:
    """sha256 over the file hashes of a folder of mask images, in name order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        digest.update(path.name.encode() + file_sha256(path).encode())
    return digest.hexdigest()


def check_fits(region: torch.Tensor, latent_shape) -> None:
    """One-line error unless the latent-grid ``region`` ``[1, T, 1, h, w]`` fits latents ``[B, T, C, h, w]``."""
    if tuple(region.shape) != (1, latent_shape[1], 1, *latent_shape[3:]):
        raise VidinvertError(f"the region's latent grid {tuple(region.shape)} does not fit the latents "
                             f"{tuple(latent_shape)}", "build the region for this clip (regions.build_region)")


def _cells_as_pixels(region: Region, spatial_factor: int, temporal_factor: int) -> torch.Tensor:
    """The latent-grid mask at pixel resolution: float ``[F, 1, H, W]``, one frame per pixel frame of the clip (the
    latent frame it is decoded from), each latent cell ``spatial_factor`` pixels wide."""
    latent = region.latent[0, latent_frames_of(region.pixels.shape[0], temporal_factor)]  # [F, 1, h, w]
    return latent.repeat_interleave(spatial_factor, dim=2).repeat_interleave(spatial_factor, dim=3)  # [F, 1, H, W]


def mask_frames(region: Region, spatial_factor: int, temporal_factor: int) -> torch.Tensor:
    """The latent-grid mask as frames to write (``--save-mask``): float ``[F, 3, H, W]`` in [-1, 1], white where
    the edit may change (``_cells_as_pixels``)."""
    cells = _cells_as_pixels(region, spatial_factor, temporal_factor)  # [F, 1, H, W]
    return (cells * 2.0 - 1.0).expand(-1, 3, -1, -1).contiguous()  # [F, 3, H, W]


def clip_region(clip, model, mask: str | None = None, box: tuple[int, int, int, int] | None = None,
                grow: int = MASK_GROW, resize: str = "stretch", notes: list[str] | None = None) -> Region:
    """The Python API's region: ``mask`` (a path) or ``box`` on a ``Clip`` from ``read_video`` (read with
    ``resize``), on the latent grid of ``model`` (a family adapter: its ``spatial_factor`` and ``temporal_factor``).
    Pass ``region.latent`` to ``edit(..., region=)`` or ``flowedit(..., region=)``."""
    frames = clip.frames  # [F, C, H, W]
    region = build_region(RegionConfig(mask=mask, box=box, grow=grow), tuple(clip.indices), clip.source_size,
                          frames.shape[2], frames.shape[3], resize, model.spatial_factor, model.temporal_factor, notes)
    if region is None:
        raise VidinvertError("no region given", "give mask= (a path) or box=(x0, y0, x1, y1)")
    return region


def source_alpha(region: Region, spatial_factor: int, temporal_factor: int, feather: int) -> torch.Tensor:
    """Where the decoded result takes the source's own pixels back: float ``[F, 1, H, W]`` in [0, 1], 1 in the
    pixels of kept latent cells, ramping down to 0 over ``feather`` pixels towards the region (0 inside it), so the
    decoder's mixing at the border is blended, not cut."""
    kept = 1.0 - _cells_as_pixels(region, spatial_factor, temporal_factor)  # [F, 1, H, W]
    if feather <= 0:
        return kept
    size = 2 * feather + 1
    mean = F.avg_pool2d(kept, size, stride=1, padding=feather, count_include_pad=False)  # 0.5 at the border
    return (2.0 * mean - 1.0).clamp(0.0, 1.0) * kept  # 0 at the border, 1 from ``feather`` px into the kept side


def paste_source(videos: torch.Tensor, source: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Decoded results ``[K, F, C, H, W]`` with the source frames ``[F, C, H, W]`` put back by ``alpha``
    ``[F, 1, H, W]`` (1: the source's pixel exactly)."""
    alpha = alpha.to(videos.device, videos.dtype)
    source = source.to(videos.device, videos.dtype)
    return torch.where(alpha >= 1.0, source, alpha * source + (1.0 - alpha) * videos)
