"""Every user-level setting, its default and its validation: the one home of both.

Front ends (CLI flags, web page widgets, batch rows) map their inputs onto these frozen dataclasses and nothing
else; the library functions take their defaults from here. Each field's comment is its documentation. A value out
of range raises ``SettingsError`` (one line: what is wrong and what to use) when the dataclass is built, so every
option is checked before any model work. Messages name the setting in words, not a front end's flag.

Groups: ``ModelSettings`` (which pipeline, where), ``ReadSettings`` (which frames), ``InvertSettings`` (how the
trajectory is recovered), ``EditConfig`` with ``InjectionConfig`` and ``BlendConfig`` (how the edit samples),
``OutputSettings`` (what is written). Counts and fractions never share a name: ``steps`` is always a count of
sampling steps; ``*_fraction`` is a share of them; the inversion's share of the schedule is its ``depth``, the
edit's is its ``strength``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import MISSING, InitVar, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from .errors import SettingsError

# ---- shared limits and defaults -------------------------------------------------------------------------------
DEFAULT_STEPS = 50  # sampling steps of the schedule (inversion and edit)
MAX_STEPS = 1000  # a DDIM / flow schedule cannot have more steps than the model's training timesteps (1000)
KV_BUDGET_GB = 4.0  # memory recorded reference keys/values may take
MAX_GUIDANCE = 100.0  # guidance above this only overflows
DEFAULT_GUIDANCE = 6.0  # edit guidance of a model whose authors publish none (CogVideoX's usual scale)
MAX_BLOCK_INDEX = 1023  # injection block indices above this are typos (real models have at most ~60 blocks)
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds
METHODS = ("ddim", "fixed-point")  # inversion methods
STARTS = ("inverted", "random")  # where an edit starts
REFERENCE_TEXT_MODES = ("inversion", "edit")  # what the reference branch reads
INJECTION_KINDS = ("auto", "keys-values", "attention-map")  # what the reference branch gives the edit
EDIT_METHODS = ("inversion", "flowedit")  # how an edit is made: invert + resample with injection, or FlowEdit
# FlowEdit's defaults (Kulikov et al. 2024, public code's SD3 setting: T = 50, n_max = 33, n_min = 0, n_avg = 1,
# source guidance 3.5, target 13.5). SD3 is a CFG-trained flow model like Wan (FLUX's 1.5/5.5 are for a
# guidance-distilled model), so its source scale is taken here; the target scale is the edit's ``guidance``.
# Nothing here was tuned on Wan (only random-weight Wan models exist in this repository's tests).
FLOWEDIT_NMAX_FRACTION = 33 / 50  # n_max when none is given: this share of the steps, rounded
FLOWEDIT_SOURCE_GUIDANCE = 3.5
RESIZE_MODES = ("stretch", "crop")  # stretch: straight to size; crop: cover, then centre-crop
DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")  # auto = bf16 on CUDA, fp32 elsewhere
OFFLOAD_MODES = ("none", "model", "sequential")
GROUP_OFFLOAD_MODES = ("none", "block", "leaf")  # diffusers' group offloading: off, groups of blocks, each layer
LAYERWISE_CASTING_MODES = ("none", "fp8_e4m3", "fp8_e5m2")  # storage dtypes of layerwise casting (off, fp8 formats)
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".gif")  # containers results can be written as
DEFAULT_OVERLAP = 0.25  # share of a temporal window its neighbours overlap (windows.py)
LONG_CLIP_FRAMES = 100_000  # most frames a windowed job reads when no frame cap is given
DEFAULT_TOL, DEFAULT_MAX_ITER = 1e-6, 8  # fixed-point: per-step relative residual, evaluations per step
# Injection step fraction of a first-frame edit when none is given: the source's attention for the noisiest 80% of
# the steps, the edited frame alone for the rest (AnyV2V injects in the noisiest 20-50%). Measured on demo-i2v:
# bench/first_frame.py, docs/first_frame.md.
FIRST_FRAME_INJECTION_FRACTION = 0.8
MASK_GROW = 0  # latent cells a user's mask is dilated by (a cell already counts when any of its pixels is white)
KRNR_STRENGTH = 0.95  # edit strength K-RNR uses when none is given (the authors' value)
# Edit settings a model folder may recommend for itself, in MODEL_SETTINGS_FILE as {"edit": {...}} (as a
# transformers model ships its generation_config.json): used where the user set none (None in EditConfig), the
# library's own value below where the model recommends nothing. Explicit settings always win.
MODEL_SETTINGS_FILE = "vidinvert.json"
MODEL_EDIT_DEFAULTS = {"blend": False, "reference_weight": 1.0}  # setting -> the library's value
# Inversion settings a model folder may recommend ({"invert": {...}}): a model trained on short clips recommends
# temporal windows of its trained length ("auto"), so a longer clip is not run past what it has seen
MODEL_INVERT_DEFAULTS = {"window": None}
MAX_LORA_SCALE = 100.0  # LoRA scales beyond this are typos
WINDOW_OFF = "off"  # --window off: the whole clip in one window, whatever the model recommends


# ---- checks ---------------------------------------------------------------------------------------------------
def _number(name: str, value, low: float | None = None, high: float | None = None, *, low_open: bool = False,
            integer: bool = False, example=None) -> None:
    """Refuse ``value`` unless it is a finite number (a whole one if ``integer``) in the given range."""
    hint = f"use e.g. {example}" if example is not None else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"{name} must be a number, got {value!r}", hint)
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, got {value}", hint)
    if integer and value != int(value):
        raise SettingsError(f"{name} must be a whole number, got {value}", hint)
    below = low is not None and (value <= low if low_open else value < low)
    if below or (high is not None and value > high):
        if low is not None and high is not None:
            span = f"in ({low:g}, {high:g}]" if low_open else f"between {low:g} and {high:g}"
        elif low is not None:
            span = f"> {low:g}" if low_open else f">= {low:g}"
        else:
            span = f"<= {high:g}"
        raise SettingsError(f"{name} must be {span}, got {value:g}", hint)


def _choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise SettingsError(f"unknown {name} {value!r}", f"use one of {', '.join(map(str, choices))}")


def _fraction(name: str, value, example=1.0) -> None:
    _number(name, value, 0.0, 1.0, example=example)


def _renamed(config, old: str, new: str, value) -> None:
    """Accept a field's old keyword (a count-sounding name for a fraction) with a DeprecationWarning."""
    if value is None:
        return
    warnings.warn(f"{type(config).__name__}({old}=...) is now {new}=...", DeprecationWarning, stacklevel=4)
    object.__setattr__(config, new, value)


def resolve_strength(strength: float | None, krnr: int | None) -> tuple[float, float | None]:
    """One user-facing strength -> ``(inversion depth, edit strength)``.

    Without K-RNR the inversion goes as deep as the edit re-samples (unset: the whole schedule). K-RNR needs the
    fully inverted noise, so with it the inversion runs in full and the strength (default ``KRNR_STRENGTH``) is the
    edit's alone.
    """
    if krnr is not None:
        return 1.0, KRNR_STRENGTH if strength is None else strength
    return (1.0 if strength is None else strength), strength


def parse_blocks(text: str | None) -> tuple[int, ...] | None:
    """``"0-9,20"`` -> ``(0, ..., 9, 20)``; ``None`` -> ``None`` (every block). Ranges are checked before they are
    expanded, so a typo cannot build a huge list."""
    if text is None:
        return None
    blocks: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                low, high = (int(v) for v in part.split("-", 1))
            elif part:
                low = high = int(part)
            else:
                continue
        except ValueError:
            raise SettingsError(f"cannot read injection blocks {text!r}", "use indices and ranges like 0-9,20") from None
        if low < 0 or high > MAX_BLOCK_INDEX or low > high:
            raise SettingsError(f"injection block range {part!r} is not a range of block indices",
                                "use ascending indices between 0 and the model's last block, like 0-9,20")
        blocks.update(range(low, high + 1))
    if not blocks:
        raise SettingsError(f"injection blocks {text!r} names no block",
                            "name blocks like 0-9,20, or turn injection off instead")
    return tuple(sorted(blocks))


# ---- model ----------------------------------------------------------------------------------------------------
def parse_box(value) -> tuple[int, int, int, int] | None:
    """``"X0,Y0,X1,Y1"`` (or a list of four) -> whole pixel coordinates of a box; ``None`` for none."""
    if value is None or value == "":
        return None
    parts = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != 4 or not all(math.isfinite(n) and n == int(n) for n in numbers):
        raise SettingsError(f"a box is four whole pixel numbers X0,Y0,X1,Y1, got {value!r}",
                            "e.g. 64,0,128,128 for the right half of a 128x128 frame")
    return tuple(int(n) for n in numbers)


@dataclass(frozen=True)
class LoraFile:
    """One LoRA to load onto a transformer."""

    path: str  # a LoRA .safetensors file (diffusers' or peft's key layout), or a folder holding
    #            pytorch_lora_weights.safetensors
    scale: float = 1.0  # how much of it is added (0 = none, 1 = as trained)


def parse_lora(value, setting: str = "LoRA") -> LoraFile:
    """``"PATH[:SCALE]"`` (or a ``LoraFile``, or a ``[path, scale]`` pair) -> a checked ``LoraFile``. The text is cut
    at its last ``:`` only when what follows reads as a number, so a path holding ``:`` still works."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        value = LoraFile(str(value[0]), value[1])
    elif isinstance(value, dict) and set(value) <= {"path", "scale"} and "path" in value:
        value = LoraFile(str(value["path"]), value.get("scale", 1.0))
    elif not isinstance(value, LoraFile):
        text = str(value).strip()
        path, scale = text, 1.0
        head, sep, tail = text.rpartition(":")
        if sep and head:
            try:
                path, scale = head, float(tail)
            except ValueError:
                pass
        value = LoraFile(path, scale)
    _number(f"{setting} scale", value.scale, -MAX_LORA_SCALE, MAX_LORA_SCALE, example=0.8)
    if not value.path.strip():
        raise SettingsError(f"{setting} names no file", "give PATH or PATH:SCALE, e.g. style.safetensors:0.8")
    if not Path(value.path).expanduser().exists():
        raise SettingsError(f"{setting} file not found: {value.path}", "give a LoRA .safetensors file, e.g. "
                            "style.safetensors:0.8")
    return LoraFile(value.path, float(value.scale))


@dataclass(frozen=True)
class ModelSettings:
    """Which pipeline runs, and where."""

    name: str | None = None  # folder, hub id, "demo", "demo-wan" or "tiny*"; None = the bundled demo model (models.default_model)
    dtype: str = "auto"  # fp32, bf16, fp16 or auto (bf16 on CUDA, fp32 elsewhere); latents stay fp32 regardless
    device: str = "auto"  # cpu, cuda, cuda:N or auto
    cpu_offload: str = "none"  # none, model (whole models wait on the CPU) or sequential (layer by layer)
    vae_tiling: bool = False  # encode/decode in spatial tiles (less memory for large frames)
    vae_slicing: bool = False  # decode one video of a batch at a time
    group_offload: str = "none"  # none, block or leaf: weights wait on the CPU and move to the device one group of
    #                              group_offload_blocks blocks (block) or one layer (leaf) at a time (diffusers' group
    #                              offloading, every model of the pipeline; CUDA streams where the device has them)
    group_offload_blocks: int = 1  # blocks per group with group_offload="block"
    layerwise_casting: str = "none"  # none, fp8_e4m3 or fp8_e5m2: the transformers' weights stored in that fp8
    #                                  format and cast to dtype layer by layer as they run (norms and embeddings kept)
    attention_backend: str | None = None  # diffusers' attention backend (native, flash, sage, ...); None = its default
    lora: tuple = ()  # LoRAs on the transformer (Wan 2.2 A14B: its high-noise expert): LoraFile or "PATH[:SCALE]"
    lora_2: tuple = ()  # LoRA weights on Wan 2.2 A14B's second (low-noise) expert, as ``lora``

    def __post_init__(self):
        _choice("dtype", self.dtype, DTYPE_CHOICES)
        _choice("cpu offload mode", self.cpu_offload, OFFLOAD_MODES)
        _choice("group offload mode", self.group_offload, GROUP_OFFLOAD_MODES)
        _number("group offload blocks", self.group_offload_blocks, 1, integer=True, example=1)
        if self.group_offload != "none" and self.cpu_offload != "none":
            raise SettingsError(f"group offload ({self.group_offload}) and cpu offload ({self.cpu_offload}) both "
                                "decide where the weights wait", "use one of them")
        _choice("layerwise casting", self.layerwise_casting, LAYERWISE_CASTING_MODES)
        if self.attention_backend is not None and not str(self.attention_backend).strip():
            raise SettingsError("the attention backend is empty", "name one such as native, or leave it unset")
        for name, setting in (("lora", "LoRA"), ("lora_2", "LoRA 2 (second expert)")):
            value = getattr(self, name)
            items = [value] if isinstance(value, (str, LoraFile)) else list(value or ())
            object.__setattr__(self, name, tuple(parse_lora(item, setting) for item in items))
        if self.name is not None and not str(self.name).strip():
            raise SettingsError("the model name is empty", "name a pipeline folder or hub id, or leave it unset")


# ---- reading --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReadSettings:
    """How frames are taken from the source video (the public script's options, plus the resize mode)."""

    height: int | None = None  # pixel height; None = the model's native height (480 for CogVideoX-5b)
    width: int | None = None  # pixel width; None = the model's native width (720 for CogVideoX-5b)
    skip_start: int = 0  # frames dropped from the start
    skip_end: int = 0  # frames dropped from the end
    stride: int | None = None  # take every n-th frame; None = only when the range is longer than max_frames
    max_frames: int | None = None  # most frames kept, then trimmed to the model's rule (4k+1); None: the model's
    #                                default_frames (49 CogVideoX, 81 Wan), or every frame when edited in windows
    resize: str = "stretch"  # "stretch" straight to size (as the reference) or "crop" (cover, centre-crop)

    def __post_init__(self):
        for name, value in (("height", self.height), ("width", self.width)):
            if value is not None:
                _number(name, value, 1, integer=True, example=480 if name == "height" else 720)
        _number("frames skipped at the start", self.skip_start, 0, integer=True, example=0)
        _number("frames skipped at the end", self.skip_end, 0, integer=True, example=0)
        if self.stride is not None:
            _number("frame stride", self.stride, 1, integer=True, example=2)
        if self.max_frames is not None:
            _number("max frames", self.max_frames, 1, LONG_CLIP_FRAMES, integer=True, example=49)
        _choice("resize mode", self.resize, RESIZE_MODES)

    @property
    def frame_cap(self) -> int:
        """Most frames read: ``max_frames``, or ``LONG_CLIP_FRAMES`` when it is None (every frame)."""
        return LONG_CLIP_FRAMES if self.max_frames is None else self.max_frames


# ---- inversion ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InvertSettings:
    """How the video is inverted."""

    steps: int = DEFAULT_STEPS  # sampling steps of the schedule (edits use the same)
    prompt: str = ""  # text the video is inverted with (the public reference uses "")
    guidance: float = 1.0  # guidance while inverting (1 = one batch row per step)
    negative_prompt: str | None = None  # uncond text when guidance > 1; None = the model's default (EditConfig's)
    method: str = "ddim"  # "ddim" (1 evaluation per step) or "fixed-point" (each step solved exactly)
    depth: float = 1.0  # fraction of the schedule inverted, from the clean end (1 = down to pure noise)
    tol: float = DEFAULT_TOL  # fixed-point: per-step relative residual to reach
    max_iter: int = DEFAULT_MAX_ITER  # fixed-point: evaluations allowed per step
    clean_max_iter: int | None = None  # fixed-point: evaluations for the clean-end step (None = max_iter)
    split_clean_end: bool | None = None  # cut the last step in two (None = for fixed-point only; edits follow)
    anderson: int = 0  # fixed-point: Anderson history (0 = plain iteration)
    record_kv: bool = False  # keep reference keys/values in memory for reuse_kv edits
    kv_budget_gb: float = KV_BUDGET_GB  # most memory the recorded keys/values may take
    checkpoint_every: int = 0  # save the finished steps every N steps so an interrupted run resumes (0 = off)
    trajectory_device: str | None = None  # where the stored trajectory lives ("cpu" spares GPU memory; for a clip
    #                                      of several windows the default moves it there when the GPU lacks room)
    window: int | str | None = None  # temporal window in latent frames: None = the model's recommendation, else the
    #                                   whole clip in one window; "off" = one window (the model sees every frame at
    #                                   once); "auto" = the model's trained length (13 for CogVideoX's 49 frames, 21
    #                                   for Wan's 81), or a count; edits use the same
    overlap: float = DEFAULT_OVERLAP  # share of a window its neighbours overlap, 0 < overlap < 1 (rounded down to
    #                                   whole latent frames, at least one); predictions are blended there

    def __post_init__(self):
        _number("steps", self.steps, 1, MAX_STEPS, integer=True, example=DEFAULT_STEPS)
        _number("inversion guidance", self.guidance, 1.0, MAX_GUIDANCE, example=1)
        _choice("inversion method", self.method, METHODS)
        _number("inversion depth (fraction)", self.depth, 0.0, 1.0, low_open=True, example=1.0)
        _number("fixed-point tolerance", self.tol, 0.0, 1.0, low_open=True, example=1e-6)
        _number("fixed-point iterations", self.max_iter, 1, 10_000, integer=True, example=10)
        _number("Anderson history", self.anderson, 0, 100, integer=True, example=3)
        if self.clean_max_iter is not None:
            _number("clean-end iterations", self.clean_max_iter, 1, 10_000, integer=True, example=16)
        _number("key/value budget (GB)", self.kv_budget_gb, 0.0, 1e6, low_open=True, example=KV_BUDGET_GB)
        _number("checkpoint interval", self.checkpoint_every, 0, MAX_STEPS, integer=True, example=10)
        object.__setattr__(self, "window", check_window(self.window, self.overlap))


def check_window(window, overlap: float) -> int | str | None:
    """A temporal window is None, "auto", "off" or a whole count of latent frames >= 1 (a digit string is read as
    one); the overlap a share in (0, 1). Returns the window as None, "auto", "off" or an int."""
    if window is not None and window not in ("auto", WINDOW_OFF):
        if isinstance(window, str):
            try:
                window = int(window)
            except ValueError:
                raise SettingsError(f"window must be auto, off or a count of latent frames, got {window!r}",
                                    "use e.g. auto or 13") from None
        _number("window (latent frames)", window, 1, 100_000, integer=True, example=13)
        window = int(window)
    _number("window overlap", overlap, 0.0, low_open=True, example=DEFAULT_OVERLAP)  # above 1: the line below
    if overlap >= 1.0:
        raise SettingsError(f"window overlap must be below 1 (a share of the window), got {overlap:g}",
                            f"use e.g. {DEFAULT_OVERLAP}")
    return window


# ---- editing --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InjectionConfig:
    """Key/value injection: the edit's tokens also attend to the source's.

    Args:
        enabled: let the main branch attend to the reference branch's keys/values.
        step_fraction: fraction of the sampling steps, counted from the noisiest, that inject (1.0 = all, 0.5 = the
            first half). ``None``: 1, or ``FIRST_FRAME_INJECTION_FRACTION`` for an edit that follows an edited first
            frame (``fraction``). (``steps=`` is its old name, still accepted.)
        blocks: indices of the transformer blocks that inject; ``None`` = every block.
        reference_text: ``"inversion"`` (the reference branch sees the prompt the video was inverted with: the
            trajectory's own condition, one reference row shared by every main row) or ``"edit"`` (the public
            script's layout: one reference row per main row, seeing that row's text, edit or negative prompt).
        reuse_kv: take the reference keys/values recorded during inversion (``invert(..., record_kv=True)``)
            instead of evaluating the reference row (needs ``reference_text="inversion"``); exact after
            fixed-point inversion, an approximation after plain DDIM inversion (see ``KVCache``).
        reference_weight: how much more the main rows attend to the reference tokens than to their own: ``log w``
            is added to their logits for the reference keys (1 = plain attention over ``[own; reference]``; larger
            keeps the source's layout more and lets the edit change less). ``None``: the model's recommendation
            (``MODEL_SETTINGS_FILE``), else 1.
        reference_weight_fraction: fraction of the sampling steps, from the noisiest, that use ``reference_weight``
            (later injecting steps use weight 1). (``reference_weight_steps=`` is its old name.)
        kind: ``"keys-values"``: the edit's queries attend over ``[own; reference]`` keys/values (keeps layout and
            colours); ``"attention-map"``: the edit takes the reference's attention weights (its queries and keys)
            over its own values, as plug-and-play and AnyV2V inject them (keeps layout and motion, lets colours
            follow the edit's own condition); ``"auto"``: attention-map for an edit that follows an edited first
            frame (measured on demo-i2v, docs/methods.md), else keys-values.
    """

    enabled: bool = True
    step_fraction: float | None = None
    blocks: tuple[int, ...] | None = None
    reference_text: str = "inversion"
    reuse_kv: bool = False
    reference_weight: float | None = None
    reference_weight_fraction: float = 1.0
    kind: str = "auto"
    steps: InitVar[float | None] = None
    reference_weight_steps: InitVar[float | None] = None

    def __post_init__(self, steps, reference_weight_steps):
        _renamed(self, "steps", "step_fraction", steps)
        _renamed(self, "reference_weight_steps", "reference_weight_fraction", reference_weight_steps)
        if self.step_fraction is not None:
            _fraction("injection step fraction", self.step_fraction)
        _choice("reference text", self.reference_text, REFERENCE_TEXT_MODES)
        if self.reference_weight is not None:
            _number("reference weight", self.reference_weight, 0.0, 1e6, low_open=True, example=8)
        _fraction("reference weight step fraction", self.reference_weight_fraction)
        _choice("injection kind", self.kind, INJECTION_KINDS)
        if self.reuse_kv and self.kind == "attention-map":
            raise SettingsError("attention-map injection needs the reference's queries, which are not recorded",
                                "drop key/value reuse or use injection kind keys-values")
        if self.reuse_kv and self.reference_text != "inversion":
            raise SettingsError("reusing recorded keys/values needs the reference to read the inversion prompt",
                                "drop key/value reuse or keep the reference text 'inversion'")
        if self.blocks is not None:
            blocks = tuple(sorted(set(int(b) for b in self.blocks)))
            if blocks and not 0 <= blocks[0] <= blocks[-1] <= MAX_BLOCK_INDEX:
                raise SettingsError(f"injection blocks must be block indices >= 0, got {list(blocks)}",
                                    "use e.g. 0-9,20")
            object.__setattr__(self, "blocks", blocks)

    def attention_map(self, first_frame: bool) -> bool:
        """Whether this edit injects attention maps (``kind``; ``"auto"``: when it follows an edited first frame and
        does not reuse recorded keys/values)."""
        if self.kind == "auto":
            return first_frame and not self.reuse_kv
        return self.kind == "attention-map"

    def fraction(self, first_frame: bool = False) -> float:
        """The step fraction that injects: the one given, else 1, or ``FIRST_FRAME_INJECTION_FRACTION`` for an edit
        that follows an edited first frame (``first_frame``)."""
        if self.step_fraction is not None:
            return self.step_fraction
        return FIRST_FRAME_INJECTION_FRACTION if first_frame else 1.0

    def active_at(self, step: int, num_steps: int, first_frame: bool = False) -> bool:
        """Whether sampling step ``step`` (0 = noisiest) of ``num_steps`` injects (``first_frame``: the edit follows
        an edited first frame)."""
        return self.enabled and step < round(self.fraction(first_frame) * num_steps)

    def reference_bias(self, step: int, num_steps: int) -> float:
        """Logit offset of the reference keys at sampling step ``step``: ``log(reference_weight)`` or 0."""
        weight = MODEL_EDIT_DEFAULTS["reference_weight"] if self.reference_weight is None else self.reference_weight
        if weight == 1.0 or step >= round(self.reference_weight_fraction * num_steps):
            return 0.0
        return math.log(weight)

    def injects_block(self, index: int) -> bool:
        return self.enabled and (self.blocks is None or index in self.blocks)


@dataclass(frozen=True)
class BlendConfig:
    """Local blend settings (off unless ``enabled``).

    Args:
        enabled: blend the edit into the source outside a mask; ``None``: the model's recommendation
            (``MODEL_SETTINGS_FILE``), else off.
        source_prompt: text describing the source video; the mask is where the edit prompt's prediction departs
            from this one's ("": the prompt the video was inverted with; when that is empty too, the empty text,
            DiffEdit's reference when no caption is at hand).
        threshold: fraction of each frame's largest disagreement above which a latent pixel is edited.
        grow: latent pixels the mask is dilated by (room for a changed outline).
        levels: stored noise levels the disagreement is averaged over (mid-schedule, evenly spaced).
        step_fraction: fraction of the edit's steps that blend (from the first); the rest run free, to smooth the
            seam. (``steps=`` is its old name, still accepted.)
    """

    enabled: bool | None = None
    source_prompt: str = ""
    threshold: float = 0.5
    grow: int = 0
    levels: int = 5
    step_fraction: float = 1.0
    steps: InitVar[float | None] = None

    def __post_init__(self, steps):
        _renamed(self, "steps", "step_fraction", steps)
        _number("blend threshold", self.threshold, 0.0, 1.0, low_open=True, example=0.5)
        if self.threshold >= 1.0:
            raise SettingsError(f"blend threshold must be below 1, got {self.threshold:g}", "use e.g. 0.5")
        _number("blend grow", self.grow, 0, 64, integer=True, example=1)
        _number("blend levels", self.levels, 1, 100, integer=True, example=5)
        _fraction("blend step fraction", self.step_fraction)

    def active_at(self, step: int, total: int) -> bool:
        return bool(self.enabled) and step < round(self.step_fraction * total)


@dataclass(frozen=True)
class RegionConfig:
    """Where the edit may change the video (``regions.py``): a mask file or a box; neither = everywhere.

    Args:
        mask: an image (one mask for every frame), a video or a folder of images (one per frame, taken at the
            clip's own source frames); white (brighter than half the mask's brightest value) may change, black is
            kept as the source.
        box: ``(x0, y0, x1, y1)``, pixels of the source frame: a rectangle that may change.
        grow: latent cells the mask is dilated by (room for the edit at the region's edge).
        paste_source: after decoding, put the source's own pixels back outside the region, feathered over one
            latent cell towards it (the decoder mixes latents across the border); off: the VAE's round trip there.
    """

    mask: str | None = None
    box: tuple[int, int, int, int] | None = None
    grow: int = MASK_GROW
    paste_source: bool = True

    def __post_init__(self):
        if self.mask is not None and self.box is not None:
            raise SettingsError("a mask and a box were both given", "give one: the mask, or the box")
        if self.mask is not None and not str(self.mask).strip():
            raise SettingsError("the mask path is empty", "give a mask image or video, or no mask")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if min(self.box) < 0 or x1 <= x0 or y1 <= y0:
                raise SettingsError(f"the box {x0},{y0},{x1},{y1} is empty or negative: it needs 0 <= X0 < X1 and "
                                    "0 <= Y0 < Y1", "give the top-left corner first, then the bottom-right one")
        _number("mask grow", self.grow, 0, 64, integer=True, example=1)

    @property
    def enabled(self) -> bool:
        return self.mask is not None or self.box is not None


@dataclass(frozen=True)
class FlowEditConfig:
    """FlowEdit settings (``EditConfig.method == "flowedit"``; Kulikov et al. 2024, see ``flowedit.py``).

    Args:
        source_prompt: text describing the source video (the velocity FlowEdit subtracts is this prompt's).
        n_max: steps, counted from the clean end, that edit (the noisiest ``steps - n_max`` are skipped);
            ``None``: ``round(33/50 x steps)``, the paper's SD3 setting. 0 returns the source unchanged.
        n_min: of those, the last ``n_min`` (the cleanest) are plain sampling of the target prompt from the edited
            latent re-noised with fresh noise (0 = FlowEdit all the way, the paper's default).
        source_guidance: guidance scale of the source prompt's velocity (the target's is ``EditConfig.guidance``).
        n_avg: noise draws averaged per step (each costs the source and target evaluations again).
        seed: seed of the fresh noise; ``None``: ``EditConfig.seed``.
    """

    source_prompt: str = ""
    n_max: int | None = None
    n_min: int = 0
    source_guidance: float = FLOWEDIT_SOURCE_GUIDANCE
    n_avg: int = 1
    seed: int | None = None

    def __post_init__(self):
        if self.n_max is not None:
            _number("FlowEdit n_max", self.n_max, 0, MAX_STEPS, integer=True, example=33)
        _number("FlowEdit n_min", self.n_min, 0, MAX_STEPS, integer=True, example=0)
        if self.n_max is not None and self.n_min > self.n_max:
            raise SettingsError(f"FlowEdit n_min ({self.n_min}) must not exceed n_max ({self.n_max})",
                                "use n_min <= n_max, e.g. 0")
        _number("FlowEdit source guidance", self.source_guidance, 1.0, MAX_GUIDANCE, example=FLOWEDIT_SOURCE_GUIDANCE)
        _number("FlowEdit noise draws per step", self.n_avg, 1, 64, integer=True, example=1)
        if self.seed is not None:
            _number("FlowEdit seed", self.seed, 0, MAX_SEED, integer=True, example=42)

    def editing_steps(self, steps: int) -> tuple[int, int]:
        """``(n_max, n_min)`` for a schedule of ``steps`` steps (``n_max`` resolved, both checked against it)."""
        n_max = round(FLOWEDIT_NMAX_FRACTION * steps) if self.n_max is None else self.n_max
        if n_max > steps:
            raise SettingsError(f"FlowEdit n_max ({n_max}) exceeds the {steps} steps", f"use n_max <= {steps}")
        if self.n_min > n_max:
            raise SettingsError(f"FlowEdit n_min ({self.n_min}) must not exceed n_max ({n_max})",
                                "use n_min <= n_max, e.g. 0")
        return n_max, self.n_min


@dataclass(frozen=True)
class EditConfig:
    """Settings of an edit (the CLI and the page map their options onto these fields).

    Args:
        guidance: classifier-free guidance scale; 1 disables guidance. ``None``: the model's, the scale its authors
            publish (``published.PUBLISHED``: 6 for CogVideoX and Wan 2.1 1.3B, 5 for Wan 2.1 14B and 2.2
            TI2V-5B, 4 for Wan 2.2 T2V-A14B), else ``DEFAULT_GUIDANCE``.
        guidance_2: Wan 2.2 A14B: guidance scale of the low-noise expert (``transformer_2``, the steps below the
            pipeline's boundary), as ``WanPipeline``'s ``guidance_scale_2``; ``None``: ``guidance`` throughout (or,
            with ``guidance`` left to the model too, the model's published second scale).
        negative_prompt: text of the uncond branch; ``None``: the model's default, ``default_negative_prompt`` of
            its family adapter (``""`` for CogVideoX, as its pipeline; for Wan models with Wan's own UMT5 tokenizer,
            the negative prompt Wan's model cards and reference code sample with; ``""`` for small Wan models whose
            tokenizer cannot read it). ``""`` is no negative text.
        start: ``"inverted"`` starts from the inverted noise (keeps layout and colours best); ``"random"`` starts
            from fresh Gaussian noise drawn from ``seed`` (what the public reference does).
        seed: seed of the random start.
        dynamic_guidance: CogVideoX's ``use_dynamic_cfg`` guidance schedule.
        injection: key/value injection settings.
        strength: fraction of the model's schedule the edit re-samples, from the clean end (``None``: every step the
            inversion stored). At most the inversion's depth; with a full inversion and ``strength < 1`` the edit
            starts from the stored latent at that step (the same latent a partial inversion would end on).
        krnr: start an ``inverted`` edit from the order-``krnr`` recursive noise representation (K-RNR) of the
            clean latent and the inversion's noisiest latent at the edit's first noise level, instead of the stored
            latent there (``None``: off; the authors pair it with a full inversion and strength 0.95).
        krnr_adaptive: use the authors' adaptive variant (moment-matched to order 2; equal to order 2, see
            ``krnr.py``).
        blend: local blend (``blend.py``): after every step, outside a mask of where the edit prompt departs from
            the source's description, the latent is put back to the inversion's.
        rows_per_call: with a shared reference row, evaluate it alone first (every block's keys/values kept for
            the step) and the main rows after it in calls of at most this many rows; equal to the one-call batch up
            to float rounding. ``None``: one call of every row. ``"auto"``: split on the CPU for rows large enough
            that smaller calls are faster, one call otherwise and on GPUs (see ``editing.resolve_rows_per_call``).
        method: ``"inversion"`` (invert, then resample with key/value injection: ``editing.edit``) or
            ``"flowedit"`` (FlowEdit, no inversion: ``flowedit.flowedit``; flow-matching models only). FlowEdit
            reads ``guidance`` (target scale), ``negative_prompt``, ``seed`` and ``flowedit``; start, injection,
            strength, K-RNR, blend, dynamic guidance and guidance_2 do not apply to it.
        flowedit: FlowEdit's own settings.
        region: where the edit may change the video (a mask file or a box); outside it the result's latents are
            the source's, exactly.
    """

    guidance: float | None = None
    negative_prompt: str | None = None
    start: str = "inverted"
    seed: int = 42
    dynamic_guidance: bool = False
    injection: InjectionConfig = field(default_factory=InjectionConfig)
    strength: float | None = None
    krnr: int | None = None
    krnr_adaptive: bool = False
    blend: BlendConfig = field(default_factory=BlendConfig)
    rows_per_call: int | str | None = "auto"
    guidance_2: float | None = None
    method: str = "inversion"
    flowedit: FlowEditConfig = field(default_factory=FlowEditConfig)
    region: RegionConfig = field(default_factory=RegionConfig)

    def __post_init__(self):
        if self.guidance is not None:
            _number("guidance", self.guidance, 1.0, MAX_GUIDANCE, example=6)
        _choice("edit method", self.method, EDIT_METHODS)
        if self.method == "flowedit":
            unused = [name for name, on in (("a random start", self.start != "inverted"),
                                            ("an edit fraction", self.strength is not None),
                                            ("K-RNR", self.krnr is not None), ("local blend", self.blend.enabled),
                                            ("dynamic guidance", self.dynamic_guidance),
                                            ("a second guidance scale", self.guidance_2 is not None)) if on]
            if unused:
                raise SettingsError(f"FlowEdit does not use {', '.join(unused)}",
                                    "drop them (FlowEdit's n_max sets how much is re-sampled)")
        if self.guidance_2 is not None:
            _number("second guidance", self.guidance_2, 1.0, MAX_GUIDANCE, example=3)
        _choice("start", self.start, STARTS)
        _number("seed", self.seed, 0, MAX_SEED, integer=True, example=42)
        if self.strength is not None:
            _number("edit fraction", self.strength, 0.0, 1.0, low_open=True, example=0.95)
        if self.krnr is not None:
            _number("K-RNR order", self.krnr, 0, 64, integer=True, example=2)
        if self.krnr_adaptive and self.krnr is None:
            raise SettingsError("adaptive K-RNR needs a K-RNR order", "set the K-RNR order, e.g. 2")
        if not (self.rows_per_call in (None, "auto") or (isinstance(self.rows_per_call, int)
                                                          and not isinstance(self.rows_per_call, bool)
                                                          and self.rows_per_call >= 1)):
            raise SettingsError(f"rows per call must be a count >= 1, 'auto' or all, got {self.rows_per_call!r}",
                                "use e.g. 2, or auto")
        if self.krnr is not None and self.start != "inverted":
            raise SettingsError("K-RNR builds an inverted start; it does not apply to a random start",
                                "start from the inverted noise to use K-RNR")


def _recommended(values, source: str, section: str, known: dict, check: Callable[[dict], dict]) -> dict:
    """One section (``"edit"``, ``"invert"``) of a model's ``MODEL_SETTINGS_FILE``, checked: a ``dict`` of ``known``
    keys that ``check`` accepts (and returns, normalised), else one line naming ``source``."""
    fix = f"fix or delete {source}"
    if not isinstance(values, dict):
        raise SettingsError(f"{source}: '{section}' must be an object of settings, got {values!r}", fix)
    unknown = sorted(set(values) - set(known))
    what = "edit" if section == "edit" else "inversion"
    if unknown:
        raise SettingsError(f"{source}: unknown {what} setting {unknown[0]!r} (known: {', '.join(known)})", fix)
    try:
        return check(values)
    except SettingsError as err:
        raise SettingsError(f"{source}: {err}", fix) from None


def _edit_recommendation(values: dict) -> dict:
    if "blend" in values and not isinstance(values["blend"], bool):
        raise SettingsError(f"'blend' must be true or false, got {values['blend']!r}")
    InjectionConfig(reference_weight=values.get("reference_weight"))
    return dict(values)


def _invert_recommendation(values: dict) -> dict:
    window = check_window(values.get("window"), DEFAULT_OVERLAP)
    return {} if window is None else {"window": window}


def check_model_edit_defaults(values, source: str) -> dict:
    """A model's recommended edit settings (the ``"edit"`` object of its ``MODEL_SETTINGS_FILE``), checked."""
    return _recommended(values, source, "edit", MODEL_EDIT_DEFAULTS, _edit_recommendation)


def check_model_invert_defaults(values, source: str) -> dict:
    """A model's recommended inversion settings (the ``"invert"`` object of its ``MODEL_SETTINGS_FILE``), checked."""
    return _recommended(values, source, "invert", MODEL_INVERT_DEFAULTS, _invert_recommendation)


def with_model_edit_defaults(config: EditConfig, recommended: dict | None = None) -> EditConfig:
    """``config`` with every setting left to the model (``None``) filled in: ``recommended`` (the model's, see
    ``MODEL_SETTINGS_FILE``), else the library's ``MODEL_EDIT_DEFAULTS``. FlowEdit uses neither setting: the
    library's values. What an edit runs with and its settings record shows."""
    values = {**MODEL_EDIT_DEFAULTS, **((recommended or {}) if config.method == "inversion" else {})}
    blend, injection = config.blend, config.injection
    if blend.enabled is None:
        blend = replace(blend, enabled=values["blend"])
    if injection.reference_weight is None:
        injection = replace(injection, reference_weight=values["reference_weight"])
    if blend is config.blend and injection is config.injection:
        return config
    return replace(config, blend=blend, injection=injection)


# ---- output ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputSettings:
    """What a job writes and how."""

    output: str | None = None  # the main output file; None = <output_dir>/<video>_<kind>.mp4 (.inv for invert)
    output_dir: str = "outputs"  # folder for outputs when ``output`` is not given
    fps: float | None = None  # frame rate of written videos; None = the source's
    comparison: bool = True  # also write a side-by-side source|result video
    force: bool = False  # overwrite existing outputs
    progress: bool = True  # progress bars
    metrics: bool = False  # temporal metrics of each output against the source (reconstruct always measures them)
    save_mask: str | None = None  # also write the edit region on the latent grid as a video (for checking)

    def __post_init__(self):
        if self.fps is not None:
            _number("fps", self.fps, 0.0, 1000.0, low_open=True, example=8)
        if self.output is not None and not str(self.output).strip():
            raise SettingsError("the output name is empty", "give a file name such as out.mp4")


def field_defaults(cls) -> dict:
    """``{field: default}`` of a settings dataclass (front ends read their initial values here)."""
    out = {}
    for f in fields(cls):
        if f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = f.default
    return out


def with_model_guidance(config: EditConfig, published: tuple[float, float | None]) -> EditConfig:
    """``config`` with guidance left to the model (``None``) set to ``published`` (main, second expert's): the
    scales the model's authors publish (``models.registry.default_guidance``)."""
    if config.guidance is not None:
        return config
    second = config.guidance_2 if config.guidance_2 is not None else published[1]
    return replace(config, guidance=published[0], guidance_2=second if config.method == "inversion" else None)
