"""Model families behind one protocol (``base.VideoFamily``), and the registry that opens them.

Each family (``cogvideox``, ``wan``) is one module on the diffusers-backed base ``family.DiffusersFamily``, with
its injection processor on ``injection.InjectionProcessor``. Import what front ends need from here: ``open_model``,
``load_pipeline``, ``wrap``, ``adapter_for``, ``default_model``, ``DEMO_MODEL``, ``TINY_MODELS``, ``resolve_device``,
``resolve_dtype``.
"""

from .base import VideoFamily
from .cogvideox import CogVideoXI2VModel, CogVideoXModel, VideoModel
from .device import DTYPES, auto_dtype, resolve_device, resolve_dtype
from .family import DiffusersFamily
from .registry import (DEMO_MODEL, DEMO_MODELS, DEMO_WAN, FAMILIES, TINY_MODELS, adapter_for, default_model,
                       load_pipeline, model_note, open_model, sample_video, wrap)
from .condition import ImageRows
from .wan import WanI2VModel, WanModel

__all__ = [
    "DEMO_MODEL", "DEMO_MODELS", "DEMO_WAN", "DTYPES", "FAMILIES", "TINY_MODELS", "CogVideoXI2VModel", "CogVideoXModel",
    "DiffusersFamily", "ImageRows", "WanI2VModel",
    "VideoFamily", "VideoModel", "WanModel", "adapter_for", "auto_dtype", "default_model", "load_pipeline",
    "model_note", "open_model", "resolve_device", "resolve_dtype", "sample_video", "wrap",
]
