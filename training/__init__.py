"""Tools of the repository that make and judge the demo models; not part of the installed package.

- ``world``: the deterministic synthetic world (one coloured shape moving over a plain or gradient background, with
  captions) and its held-out (colour, shape, motion) combinations;
- ``train``: ``python -m training.train --out DIR`` (from the repository's root) trains the VAE, then the
  transformer, on the CPU and saves a diffusers pipeline folder (``--family wan``: the Wan layout, ``train_wan``);
- ``checkpoint``: the resumable stages of a training run;
- ``judges``: programmatic judges (colour, centroid track, motion, background PSNR) used by ``bench/`` and the tests.

The trained weights ship inside the package (``vidinvert.demo.MODEL_DIR``, ``vidinvert.demo.WAN_MODEL_DIR``).
"""
