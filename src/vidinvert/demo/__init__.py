"""A small CogVideoX trained on a synthetic video world, shipped as vidinvert's demo model.

- ``world``: the deterministic synthetic world (one coloured shape moving over a plain or gradient background, with
  captions) and its held-out (colour, shape, motion) combinations;
- ``train``: ``python -m vidinvert.demo.train --out DIR`` trains the VAE, then the transformer, on the CPU in under an
  hour and saves a diffusers ``CogVideoXPipeline`` folder;
- ``judges``: programmatic judges (colour, centroid track, motion, background PSNR) used by ``bench/quality.py``.

The trained pipeline lives in ``MODEL_DIR`` (load it with ``CogVideoXPipeline.from_pretrained(MODEL_DIR)`` or
``vidinvert.load_pipeline(str(MODEL_DIR))``); ``SAMPLE_CLIP`` is a clip of a held-out combination to try edits on.
"""

from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"
SAMPLE_CLIP = Path(__file__).resolve().parent / "sample.mp4"


def model_available() -> bool:
    """Whether the trained demo pipeline is present (``model_index.json`` in ``MODEL_DIR``)."""
    return (MODEL_DIR / "model_index.json").is_file()


__all__ = ["MODEL_DIR", "SAMPLE_CLIP", "model_available"]
