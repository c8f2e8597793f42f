"""A small CogVideoX trained on a synthetic video world, shipped as vidinvert's demo model.

- ``world``: the deterministic synthetic world (one coloured shape moving over a plain or gradient background, with
  captions) and its held-out (colour, shape, motion) combinations;
- ``train``: ``python -m vidinvert.demo.train --out DIR`` trains the VAE, then the transformer, on the CPU in under an
  hour and saves a diffusers ``CogVideoXPipeline`` folder;
- ``judges``: programmatic judges (colour, centroid track, motion, background PSNR) used by ``bench/quality.py``.

A Wan 2.1-layout model trained the same way (``python -m vidinvert.demo.train --family wan``) lives in
``WAN_MODEL_DIR`` (``--model demo-wan``).

The trained pipeline lives in ``MODEL_DIR`` (load it with ``CogVideoXPipeline.from_pretrained(MODEL_DIR)`` or
``vidinvert.load_pipeline(str(MODEL_DIR))``); ``SAMPLE_CLIP`` is a clip of a held-out combination to try edits on.
"""

from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"
WAN_MODEL_DIR = Path(__file__).resolve().parent / "model_wan"
SAMPLE_CLIP = Path(__file__).resolve().parent / "sample.mp4"
NATIVE_SIZE = (64, 64)  # (height, width) of the world's frames, which both demo models are trained on
TRAINED_FRAMES = 9  # frames of the world's clips (world.FRAMES): both demo models' temporal window


def model_available(folder: Path = MODEL_DIR) -> bool:
    """Whether a trained demo pipeline is present (``model_index.json`` in ``folder``, default ``MODEL_DIR``)."""
    return (folder / "model_index.json").is_file()


__all__ = ["MODEL_DIR", "NATIVE_SIZE", "SAMPLE_CLIP", "WAN_MODEL_DIR", "model_available"]
