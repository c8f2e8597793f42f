"""Model families behind one protocol (``base.VideoFamily``), and the registry that opens them.

``cogvideox`` is the one family today. Import what front ends need from here: ``open_model``, ``load_pipeline``,
``wrap``, ``default_model``, ``DEMO_MODEL``, ``TINY_MODELS``, ``resolve_device``, ``resolve_dtype``.
"""

from .base import VideoFamily
from .cogvideox import VideoModel
from .device import DTYPES, auto_dtype, resolve_device, resolve_dtype
from .registry import (DEMO_MODEL, DEMO_MODELS, DEMO_WAN, FAMILIES, TINY_MODELS, default_model, load_pipeline,
                       model_note, open_model, sample_video, wrap)

__all__ = [
    "DEMO_MODEL", "DEMO_MODELS", "DEMO_WAN", "DTYPES", "FAMILIES", "TINY_MODELS", "VideoFamily", "VideoModel",
    "auto_dtype", "default_model", "load_pipeline", "model_note", "open_model", "resolve_device", "resolve_dtype", "sample_video", "wrap",
]
