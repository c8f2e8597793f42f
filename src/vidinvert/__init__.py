"""vidinvert: edit real videos with text-to-video diffusion transformers by inversion and key/value injection.

Data flows one way: settings -> video (io) -> models (one adapter per family) -> schedule/sampling/exact ->
inversion -> editing (with attention injection) -> export -> jobs -> front ends (cli, web).
"""

__version__ = "0.1.0"

from .attention import InjectionConfig  # noqa: E402
from .blend import BlendConfig  # noqa: E402
from .compat import sample  # noqa: E402
from .editing import EditConfig, edit  # noqa: E402
from .errors import VidinvertError  # noqa: E402
from .export import side_by_side, write_video  # noqa: E402
from .inversion import Inversion, InversionMeta, SourceInfo, invert  # noqa: E402
from .settings import InvertSettings, ModelSettings, OutputSettings, ReadSettings  # noqa: E402
from .models import VideoModel, load_pipeline, open_model  # noqa: E402
from .video import Clip, read_video  # noqa: E402


def encode(pipe_or_model, frames, **kwargs):
    """Frames ``[F, C, H, W]`` in [-1, 1] -> float32 latents ``[1, T, C', h, w]`` (see ``VideoModel.encode``)."""
    model = pipe_or_model if isinstance(pipe_or_model, VideoModel) else VideoModel(pipe_or_model)
    return model.encode(frames, **kwargs)


def decode(pipe_or_model, latents):
    """Latents ``[B, T, C', h, w]`` -> float32 frames ``[B, F, C, H, W]`` in [-1, 1] (see ``VideoModel.decode``)."""
    model = pipe_or_model if isinstance(pipe_or_model, VideoModel) else VideoModel(pipe_or_model)
    return model.decode(latents)


__all__ = [
    "BlendConfig", "Clip", "EditConfig", "InjectionConfig", "Inversion", "InversionMeta", "InvertSettings",
    "ModelSettings", "OutputSettings", "ReadSettings", "SourceInfo", "VideoModel", "VidinvertError", "decode", "edit",
    "encode", "invert", "load_pipeline", "open_model", "read_video", "sample", "side_by_side", "write_video",
]
