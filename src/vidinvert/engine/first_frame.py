"""First-frame edits: the request checked, the edited frames read like the clip, and their conditions.

With an image-to-video model, ``vidinvert edit clip.mp4 --first-frame edited.png`` inverts the clip conditioned on
its own first frame and regenerates it conditioned on the edited one, with key/value injection from the stored
trajectory (AnyV2V's recipe, on video DiTs). The prompts are optional: each edited frame takes the source prompt
unless prompts are given (one for every frame, or one per frame).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import VidinvertError
from ..models.base import VideoFamily
from ..models.condition import I2V_MODELS, ImageRows
from ..provenance import file_sha256
from ..settings import EditConfig, ModelSettings
from ..video import MIN_IMAGE_SIDE, frames_hash, read_frame_image


def check_first_frame_request(paths: list[str], prompts: list[str] | None, config: EditConfig,
                              model_settings: ModelSettings | None, reconstruct: bool = False) -> None:
    """One-line errors, before any model work, for first frames the job cannot use."""
    if not paths:
        return
    if reconstruct:
        raise VidinvertError("a reconstruction regenerates the source as it is, on its own first frame",
                             "drop --first-frame, or use vidinvert edit")
    if config.method == "flowedit":
        raise VidinvertError("--first-frame edits by inversion", "drop --method flowedit")
    if prompts and len(prompts) > 1 and len(paths) > 1 and len(prompts) != len(paths):
        raise VidinvertError(f"{len(paths)} first frames for {len(prompts)} prompts",
                             "give one --first-frame for every prompt, or one --prompt for every frame")
    for path in paths:  # each a readable image, before the model is loaded and the clip inverted
        read_frame_image(path, MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)
    from ..models.registry import takes_image_named

    name = model_settings.name if model_settings is not None else None
    if takes_image_named(name) is False:
        raise VidinvertError(f"the model {name or 'demo'} is text-to-video: it cannot follow a first frame",
                             f"use an image-to-video model ({I2V_MODELS})")


def refuse_text_to_video(model: VideoFamily) -> None:
    """A loaded model that cannot follow a first frame: one line naming the models that can."""
    if not model.takes_image:
        raise VidinvertError(f"{model.name} is a text-to-video model: it cannot follow a first frame",
                             f"use an image-to-video model ({I2V_MODELS})")


def paired_prompts(prompts: list[str] | None, paths: list[str], source_prompt: str) -> list[str]:
    """The prompt of each edit: the prompts given (one repeated for every frame), else the source prompt."""
    if not paths:
        return prompts
    if not prompts:
        return [source_prompt] * len(paths)
    return prompts * len(paths) if len(prompts) == 1 else list(prompts)


def read_first_frames(model: VideoFamily, paths: list[str], height: int, width: int, resize: str,
                      latent_frames: int, notes: list[str] | None = None) -> tuple[ImageRows, list[dict]]:
    """The conditions of the edited first frames (one row each, in order) and what the settings JSON records of
    them. Each image is fitted to the clip's ``height`` x ``width`` by the clip's own rule (``resize``), with a note
    when its size differs; the model must take an image (one-line error otherwise)."""
    refuse_text_to_video(model)
    rows, records = [], []
    for path in paths:
        frame, (src_h, src_w) = read_frame_image(path, height, width, resize)
        if (src_h, src_w) != (height, width) and notes is not None:
            notes.append(f"the first frame {Path(path).name} is {src_h}x{src_w}; fitted to the clip's {height}x{width} "
                         f"as the clip's frames are (--resize {resize})")
        with torch.no_grad():
            rows.append(model.encode_image(frame, latent_frames))
        records.append({"path": str(Path(path).resolve()), "sha256": file_sha256(path),
                        "frame_hash": frames_hash(frame[None]), "size": [src_h, src_w]})
    return ImageRows.cat(rows), records
