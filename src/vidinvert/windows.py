"""Temporal windows: a clip longer than the model's trained length, evaluated window by window in latent space.

A model sees a fixed number of latent frames well (the length it was trained on: 13 for CogVideoX's 49 frames, 21
for Wan's 81, 3 for the demo's 9). A longer clip is cut into windows of that length that overlap their neighbours;
every transformer evaluation runs once per window, and the windows' predictions are averaged where they overlap with
linear-ramp weights that sum to one at every latent frame. The windowed evaluation is still one deterministic map of
the whole latent, so DDIM inversion, the exact (fixed-point) solve and sampling apply to it unchanged.

The seam is ``predict``: ``WindowedModel`` is a ``VideoFamily`` whose ``predict`` cuts every batch row along the
frame axis. An edit's reference rows are rows of the same batch, so each window's main rows read the keys/values of
the same window of the stored trajectory, and positions (RoPE, sincos) are window-local. A clip that fits in one
window gets the model itself back (``windowed``), so it takes exactly the unwindowed path.

Rounding: the overlap is ``overlap x window`` latent frames rounded down, at least one. The windows are spread
evenly over the clip (first at frame 0, last ending at the last frame), so every overlap is at least that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import SettingsError
from .models.base import VideoFamily
from .settings import DEFAULT_OVERLAP, WINDOW_OFF


@dataclass(frozen=True)
class Windows:
    """Windows of ``size`` latent frames over a clip of ``frames`` latent frames.

    Args:
        frames: latent frames of the clip.
        size: latent frames per window (the whole clip for one window).
        overlap: least latent frames two neighbouring windows share (0 for one window).
        starts: first latent frame of each window, ascending; window ``k`` is ``[starts[k], starts[k] + size)``.
    """

    frames: int
    size: int
    overlap: int
    starts: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.starts)

    def spans(self) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` in latent frames."""
        return [(s, s + self.size) for s in self.starts]

    def weights(self) -> torch.Tensor:
        """Blend weights ``[count, frames]`` (float32): 0 outside a window, a linear ramp over each frame it shares
        with a neighbour, 1 elsewhere; normalised so every latent frame's weights sum to one."""
        weights = torch.zeros(self.count, self.frames, dtype=torch.float64)
        spans = self.spans()
        for k, (start, stop) in enumerate(spans):
            ramp = torch.ones(self.size, dtype=torch.float64)
            local = torch.arange(self.size, dtype=torch.float64)
            if k > 0:  # ramp up over the frames shared with the previous window
                shared = spans[k - 1][1] - start
                ramp = torch.minimum(ramp, (local + 1) / (shared + 1))
            if k < self.count - 1:  # ramp down over the frames shared with the next window
                shared = stop - spans[k + 1][0]
                ramp = torch.minimum(ramp, (self.size - local) / (shared + 1))
            weights[k, start:stop] = ramp
        return (weights / weights.sum(dim=0, keepdim=True)).float()  # [count, frames]

    def pixel_borders(self, temporal_factor: int) -> tuple[int, ...]:
        """Pixel frames where a window's contribution starts or stops, as ``metrics.seam_score`` takes them: a
        border ``b`` means frames ``b - 1`` and ``b`` are not blended from the same windows.

        Latent frame 0 decodes to pixel frame 0 and latent ``j >= 1`` to pixel frames ``tf*(j-1)+1 .. tf*j`` (the
        causal temporal VAE, ``tf = temporal_factor``). Every window after the first starts contributing at the
        first pixel frame of its first latent frame (where an overlap zone begins); every window before the last
        stops after the last pixel frame of its last latent frame (where an overlap zone ends). Both edges are
        borders: the blend weights change slope at each. Empty for one window.

        Args:
            temporal_factor: pixel frames per latent frame after the first (4 for CogVideoX, Wan and the demo).
        """
        first_pixel = [0 if s == 0 else temporal_factor * (s - 1) + 1 for s in self.starts]
        spans = self.spans()
        starts = first_pixel[1:]  # where windows 1.. begin
        stops = [temporal_factor * (stop - 1) + 1 for _, stop in spans[:-1]]  # the frame after windows ..-2 end
        return tuple(sorted(set(starts + stops)))

    def record(self) -> tuple[int, int]:
        """``(size, overlap)`` as an inversion saves them (``(0, 0)`` for one window: the whole clip)."""
        return (0, 0) if self.count == 1 else (self.size, self.overlap)


def trained_window(model: VideoFamily) -> int:
    """The ``"auto"`` window: latent frames of the clip length the model was trained on, rounded down to a multiple
    of its temporal patch (a window must be one, and rounding down keeps it within the trained length: CogVideoX
    1.5's 81 trained frames are 21 latent frames, its patch 2, so its window is 20)."""
    patch = model.temporal_patch
    return max(patch, ((model.trained_frames - 1) // model.temporal_factor + 1) // patch * patch)


def plan(frames: int, size: int, overlap: int) -> Windows:
    """Windows of ``size`` latent frames sharing at least ``overlap`` frames with each neighbour, spread evenly
    from the clip's first latent frame to its last. ``size >= frames`` gives one window of the whole clip."""
    if size >= frames:
        return Windows(frames, frames, 0, (0,))
    if not 1 <= overlap < size:
        raise SettingsError(f"a window of {size} latent frames cannot overlap its neighbour by {overlap}",
                            "use a longer window or a smaller overlap")
    count = math.ceil((frames - overlap) / (size - overlap))
    starts = tuple(round(k * (frames - size) / (count - 1)) for k in range(count))
    return Windows(frames, size, overlap, starts)


def resolve(model: VideoFamily, frames: int, window: int | str | None, overlap: float = DEFAULT_OVERLAP) -> Windows:
    """The windows a job's settings give for a clip of ``frames`` latent frames.

    Args:
        model: the family adapter (its trained length for ``"auto"``, its temporal patch).
        frames: latent frames of the clip.
        window: ``None`` or ``"off"`` (one window: the whole clip), ``"auto"`` (the model's trained length) or latent
            frames.
        overlap: share of a window its neighbours overlap, ``0 < overlap < 1`` (rounded down to whole latent
            frames, at least one).

    Raises:
        SettingsError: a window longer than the clip, shorter than the model's temporal patch or not a multiple of
            it, or an overlap outside (0, 1).
    """
    if window is None or window == WINDOW_OFF:
        return plan(frames, frames, 0)
    if not 0.0 < overlap < 1.0:
        raise SettingsError(f"window overlap must be between 0 and 1 (a share of the window), got {overlap:g}",
                            "use e.g. 0.25")
    patch = model.temporal_patch
    size = trained_window(model) if window == "auto" else int(window)
    if window != "auto" and size > frames:
        raise SettingsError(f"a window of {size} latent frames is longer than the clip's {frames}",
                            f"use a window of at most {frames} latent frames, or auto")
    least = max(2, patch)
    if size < least:
        raise SettingsError(f"a window of {size} latent frames is too short: windows must be at least {least} latent "
                            "frames" + (f" (the model's temporal patch is {patch})" if patch > 1 else ""),
                            f"use --window auto or a window of {least} or more")
    if size % patch:
        raise SettingsError(f"a window of {size} latent frames does not fit the model's temporal patch ({patch}): "
                            f"windows must be a multiple of {patch}",
                            f"use --window auto or --window {size // patch * patch}")
    return spread(frames, size, overlap)


def spread(frames: int, size: int, overlap: float) -> Windows:
    """Windows of ``size`` latent frames over ``frames``, neighbours sharing the share ``overlap`` of a window
    (rounded down to whole latent frames, at least one); one window of the whole clip when ``size >= frames``.
    What ``resolve`` gives for a window already checked against the model."""
    if size >= frames:
        return plan(frames, frames, 0)
    return plan(frames, size, max(1, math.floor(overlap * size)))


def from_record(frames: int, size: int, overlap: int) -> Windows:
    """The windows an inversion recorded (``Windows.record``): ``size == 0`` is one window of the whole clip."""
    return plan(frames, size or frames, overlap)


def windowed(model: VideoFamily, windows: Windows) -> VideoFamily:
    """``model`` itself for one window (the unwindowed path, bit for bit), else a ``WindowedModel``."""
    return model if windows.count == 1 else WindowedModel(model, windows)


class WindowedModel:
    """A ``VideoFamily`` whose ``predict`` runs the wrapped model once per temporal window and blends the windows'
    predictions; everything else is the wrapped model's.

    Args:
        model: the family adapter.
        windows: the windows over the latent frames every ``predict`` call receives.
    """

    def __init__(self, model: VideoFamily, windows: Windows):
        self.model, self.windows = model, windows
        self.family, self.name = model.family, model.name
        self.spatial_factor, self.temporal_factor = model.spatial_factor, model.temporal_factor
        self.size_multiple, self.text_length = model.size_multiple, model.text_length
        self.trained_frames, self.temporal_patch = model.trained_frames, model.temporal_patch
        self._weights = windows.weights()  # [count, T]
        self.window_calls = 0  # transformer calls made per window (each counts once per window)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def num_blocks(self) -> int:
        return self.model.num_blocks

    @property
    def takes_image(self) -> bool:
        return self.model.takes_image

    @property
    def needs_image(self) -> bool:
        return self.model.needs_image

    def fingerprint(self) -> str:
        return self.model.fingerprint()

    @property
    def default_guidance(self) -> tuple[float, float | None]:
        return self.model.default_guidance

    def native_size(self) -> tuple[int, int]:
        return self.model.native_size()

    def frames_for(self, count: int) -> int:
        return self.model.frames_for(count)

    def schedule(self, num_steps: int, split_clean_end: bool = False):
        return self.model.schedule(num_steps, split_clean_end)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        return self.model.encode_text(prompts)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.encode(frames)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.decode(latents)

    def check_frames(self, frames: torch.Tensor) -> None:
        self.model.check_frames(frames)

    def expert_for(self, t) -> int:
        return self.model.expert_for(t)

    def tokens_per_row(self, latent_shape: tuple[int, ...]) -> int:
        """Tokens of one row of one window."""
        batch, _, channels, height, width = latent_shape
        return self.model.tokens_per_row((batch, self.windows.size, channels, height, width))

    def memory_need(self, frames: int, height: int, width: int, rows: int) -> dict[str, int]:
        """The VAE works on the whole clip (in its own temporal chunks); the transformer on one window."""
        need = dict(self.model.memory_need(frames, height, width, rows))
        window_frames = (self.windows.size - 1) * self.temporal_factor + 1
        need["transformer"] = self.model.memory_need(min(frames, window_frames), height, width, rows)["transformer"]
        return need

    def attention_width(self) -> int:
        return self.model.attention_width()

    def injected(self, config, state):
        return self.model.injected(config, state)

    def predict(self, latents: torch.Tensor, t, text: torch.Tensor) -> torch.Tensor:
        """The blend of one evaluation per window.

        Args:
            latents: ``[B, T, C', h, w]``, ``T == windows.frames`` (main and reference rows alike).
            t: the model timestep.
            text: ``[B, L, D]``.

        Returns:
            float32 ``[B, T, C', h, w]``: ``sum_k w_k[T] * predict(latents[:, window k])``.
        """
        if latents.shape[1] != self.windows.frames:
            raise ValueError(f"windows are planned for {self.windows.frames} latent frames, got {latents.shape[1]}")
        out = None
        for k, (start, stop) in enumerate(self.windows.spans()):
            pred = self.model.predict(latents[:, start:stop], t, text)  # [B, size, C', h, w]
            self.window_calls += 1
            if out is None:
                out = torch.zeros(pred.shape[0], latents.shape[1], *pred.shape[2:], dtype=torch.float32,
                                  device=pred.device)  # [B, T, C', h, w]
            weight = self._weights[k, start:stop].to(pred.device).view(1, -1, 1, 1, 1)  # [1, size, 1, 1, 1]
            out[:, start:stop] += weight * pred
        return out
