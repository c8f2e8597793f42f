"""The demo models vidinvert ships: a small CogVideoX (``MODEL_DIR``, the default ``--model demo``) and a Wan
2.1-layout model (``WAN_MODEL_DIR``, ``--model demo-wan``), both trained on a synthetic video world of coloured
shapes, and ``SAMPLE_CLIP``, a clip of a held-out combination to try edits on.

Load one with ``CogVideoXPipeline.from_pretrained(MODEL_DIR)`` or ``vidinvert.load_pipeline(str(MODEL_DIR))``. The
code that made them (the world, the training recipe, the judges of ``bench/quality.py``) is a tool of the
repository, not of the installed package: ``training/`` at the repository's root (``python -m training.train``).
"""

from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"
WAN_MODEL_DIR = Path(__file__).resolve().parent / "model_wan"
I2V_MODEL_DIR = Path(__file__).resolve().parent / "model_i2v"  # CogVideoX-I2V layout, fine-tuned from MODEL_DIR
SAMPLE_CLIP = Path(__file__).resolve().parent / "sample.mp4"
NATIVE_SIZE = (64, 64)  # (height, width) of the world's frames, which both demo models are trained on
TRAINED_FRAMES = 9  # frames of the world's clips (world.FRAMES): both demo models' temporal window


def model_available(folder: Path = MODEL_DIR) -> bool:
    """Whether a trained demo pipeline is present (``model_index.json`` in ``folder``, default ``MODEL_DIR``)."""
    return (folder / "model_index.json").is_file()


__all__ = ["I2V_MODEL_DIR", "MODEL_DIR", "NATIVE_SIZE", "SAMPLE_CLIP", "WAN_MODEL_DIR", "model_available"]
