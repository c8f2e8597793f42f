"""The image condition of an image-to-video model, one entry per transformer batch row.

An image-to-video (I2V) family conditions each row on a frame (the source's first frame, or an edited one) through
tensors of its own: CogVideoX-I2V concatenates image latents on the channels, Wan 2.1 I2V adds a mask, condition
latents and a CLIP image embedding, Wan 2.2 TI2V holds the first latent frame clean. ``ImageRows`` carries those
tensors with the rows first, so the samplers' wrappers can repeat, slice and join them exactly as they do the text
embeddings of the same rows; only the family adapter that made them reads what is inside.
"""

from __future__ import annotations

import torch

I2V_MODELS = "--model demo-i2v, THUDM/CogVideoX-5b-I2V or Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"  # named in refusals


class ImageRows:
    """Named tensors whose first dimension is the batch rows they condition (every tensor the same row count)."""

    def __init__(self, **tensors: torch.Tensor):
        if not tensors:
            raise ValueError("an image condition needs at least one tensor")
        rows = {value.shape[0] for value in tensors.values()}
        if len(rows) != 1:
            raise ValueError(f"the tensors of an image condition disagree on their rows: {sorted(rows)}")
        self.tensors = dict(tensors)

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def rows(self, index) -> "ImageRows":
        """The rows ``index`` selects (a slice, or a list/tensor of row numbers)."""
        if isinstance(index, slice):
            return ImageRows(**{k: v[index] for k, v in self.tensors.items()})
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageRows(**{k: v[index.to(v.device)] for k, v in self.tensors.items()})

    def repeat(self, count: int) -> "ImageRows":
        """All rows ``count`` times in turn (``[a, b] -> [a, b, a, b]``), as ``text.repeat(count, 1, 1)``."""
        if count == 1:
            return self
        return ImageRows(**{k: v.repeat(count, *(1,) * (v.ndim - 1)) for k, v in self.tensors.items()})

    def repeat_each(self, count: int) -> "ImageRows":
        """Each row ``count`` times in place (``[a, b] -> [a, a, b, b]``): one condition for a guided pair of rows."""
        if count == 1:
            return self
        return ImageRows(**{k: v.repeat_interleave(count, dim=0) for k, v in self.tensors.items()})

    @staticmethod
    def cat(parts: list["ImageRows"]) -> "ImageRows":
        """The rows of ``parts`` in order (every part with the same tensor names)."""
        names = set(parts[0].tensors)
        if any(set(p.tensors) != names for p in parts):
            raise ValueError("image conditions of different families cannot be joined")
        return ImageRows(**{k: torch.cat([p.tensors[k] for p in parts]) for k in parts[0].tensors})

    def to(self, device=None, dtype: torch.dtype | None = None) -> "ImageRows":
        """Every tensor moved to ``device``; floating tensors also cast to ``dtype``."""
        return ImageRows(**{k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else
                                    v.dtype) for k, v in self.tensors.items()})

    def equal(self, other: "ImageRows") -> bool:
        return set(self.tensors) == set(other.tensors) and all(
            torch.equal(v, other.tensors[k].to(v.device)) for k, v in self.tensors.items())


def row_conditions(count: int, image: ImageRows | None) -> ImageRows | None:
    """``image`` (one row or ``count``) as ``count`` rows; ``None`` stays ``None`` (a text-to-video model)."""
    if image is None or len(image) == count:
        return image
    if len(image) == 1:
        return image.repeat(count)
    raise ValueError(f"{len(image)} image conditions for {count} rows")
