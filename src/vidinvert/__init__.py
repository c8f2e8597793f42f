"""vidinvert: edit real videos with text-to-video diffusion transformers by inversion and key/value injection.

Data flows one way: settings -> video (io) -> models (one adapter per family) -> schedule/sampling/exact ->
inversion -> editing (with attention injection) -> export -> engine -> front ends (cli, web).
"""

__version__ = "0.1.0"

import importlib

# Public names -> the module that defines them, imported on first use (PEP 562): ``import vidinvert`` (and so the
# ``vidinvert`` command, whose entry point lives in this package) stays free of torch until something needs it, so
# Ctrl-C during the heavy imports reaches ``cli.main``'s handler instead of printing a traceback.
_EXPORTS = {
    "InjectionConfig": "attention", "BlendConfig": "blend", "sample": "compat", "EditConfig": "editing",
    "edit": "editing", "VidinvertError": "errors", "side_by_side": "export", "write_video": "export",
    "Inversion": "inversion", "InversionMeta": "inversion", "SourceInfo": "inversion", "invert": "inversion",
    "InvertSettings": "settings", "ModelSettings": "settings", "OutputSettings": "settings", "ReadSettings": "settings",
    "VideoModel": "models", "load_pipeline": "models", "open_model": "models", "Clip": "video", "read_video": "video",
    "RegionConfig": "settings", "Region": "regions", "clip_region": "regions",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def _family(pipe_or_model):
    """A family adapter as given, or the one for a pipeline's class (``models.adapter_for``)."""
    from .models import VideoFamily, adapter_for

    return pipe_or_model if isinstance(pipe_or_model, VideoFamily) else adapter_for(pipe_or_model)


def encode(pipe_or_model, frames, **kwargs):
    """Frames ``[F, C, H, W]`` in [-1, 1] -> float32 latents ``[1, T, C', h, w]`` with a pipeline of any family or
    its adapter (see ``DiffusersFamily.encode``)."""
    return _family(pipe_or_model).encode(frames, **kwargs)


def decode(pipe_or_model, latents):
    """Latents ``[B, T, C', h, w]`` -> float32 frames ``[B, F, C, H, W]`` in [-1, 1] with a pipeline of any family or
    its adapter (see ``DiffusersFamily.decode``)."""
    return _family(pipe_or_model).decode(latents)


__all__ = [
    "BlendConfig", "Clip", "EditConfig", "InjectionConfig", "Inversion", "InversionMeta", "InvertSettings",
    "ModelSettings", "OutputSettings", "ReadSettings", "Region", "RegionConfig", "SourceInfo", "VideoModel", "VidinvertError", "decode", "edit",
    "clip_region", "encode", "invert", "load_pipeline", "open_model", "read_video", "sample", "side_by_side", "write_video",
]
