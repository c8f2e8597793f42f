"""A job's budget before it runs: peak memory per phase, FLOPs, predicted time, and whether it fits a device.

Nothing is estimated by formula and nothing is loaded. The model is built with fake tensors (``models/traced.py``)
and the engine's own code runs on it: the VAE encode of the clip, ``invert``, ``edit`` and the decode, for a step
or two, under ``LiveBytes`` (a dispatch mode that adds up the bytes of every tensor an operation creates until the
tensor is freed) and torch's ``FlopCounterMode``. What changes with the step count is added exactly: one
trajectory entry (and, when recorded, one step of keys/values) per further step; FLOPs scale with the steps.

The peak of a job on its device is

    CPU:  this process's resident memory before the model (torch and the libraries) + every weight + the traced peak
    CUDA: the weights on the GPU (all, or those the offload mode keeps there) + the traced peak

What the trace cannot see: a kernel's private scratch space (oneDNN, cuDNN workspaces), the allocator's caching and
fragmentation, and the CUDA context (~0.5 GB, outside ``torch.cuda.max_memory_allocated``). ``bench/fullsize.py``
measures how far that puts the prediction from the measured peak.
"""

from __future__ import annotations

import dataclasses
import resource
import time
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from ..errors import VidinvertError
from ..settings import EditConfig, InvertSettings, ModelSettings, ReadSettings

TRACED_STEPS = 2  # steps run on the fake model; the rest is added exactly (trajectory) or scaled (FLOPs)
GPU_FLOPS = 989e12  # H100 SXM dense bf16 (NVIDIA's datasheet), the class the time column of docs/planning.md assumes
GPU_UTILISATION = 0.4  # fraction of GPU_FLOPS a video transformer's step reaches, a stated assumption
CPU_UTILISATION = 0.5  # fraction of this CPU's measured matmul rate a whole job reaches, a stated assumption
HOURS_NOTE_SECONDS = 3600  # a job predicted to run longer is announced before it starts
GIB = 2**30


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensors alive, created since the mode was entered, and their peak, per named phase.

    An operation's output whose storage is new (not one of its inputs': views and in-place results are not) is
    counted until its storage is freed. Scalars a traced program reads from a tensor (``if not
    torch.isfinite(x).all()``, a solver's residual) cannot be known: checks pass and residuals are 0.
    """

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}  # id(storage) -> bytes
        self.now = 0
        self.phase = "start"
        self.peaks: dict[str, int] = {}  # phase -> most bytes alive during it

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)

    @contextmanager
    def during(self, phase: str):
        """Record the peak of the tensors alive while the block runs under ``phase``."""
        before, self.phase = self.phase, phase
        self.peaks[phase] = max(self.peaks.get(phase, 0), self.now)
        try:
            yield
        finally:
            self.phase = before

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            return True if args[0].dtype == torch.bool else 0
        out = func(*args, **kwargs)
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = id(storage)
            if key in self.live or key in inputs:
                continue
            self.live[key] = storage.nbytes()
            self.now += self.live[key]
            weakref.finalize(storage, self._free, key)
        if self.now > self.peaks.get(self.phase, 0):
            self.peaks[self.phase] = self.now
        return out


@dataclass(frozen=True)
class Phase:
    """One phase of a job: the bytes of tensors alive at its peak (weights not included) and its FLOPs."""

    name: str  # load (CPU only), encode, invert, edit, decode
    peak_bytes: int  # beyond the weights on the device (negative while loading, before every weight is in)
    flops: int
    cached_bytes: int = 0  # of peak_bytes, weight files' pages mapped while loading: resident, but reclaimable


@dataclass
class Budget:
    """A planned job (``plan_job``)."""

    model: str
    family: str
    published: str | None  # the published checkpoint the model is an architecture of
    device: str  # cpu or cuda
    dtype: str
    frames: int
    height: int
    width: int
    steps: int
    prompts: int
    method: str  # inversion (invert + edit) or flowedit
    weights: dict[str, int]  # component -> bytes of its parameters and buffers
    device_weights: int  # bytes of weights on the device at the job's peak (fewer with offloading)
    baseline_bytes: int  # process memory before the model: resident memory now on the CPU, 0 on CUDA
    phases: tuple[Phase, ...]
    flop_rate: float  # FLOP/s the time assumes
    flop_rate_source: str
    device_memory: int | None = None  # bytes the device has (given, or free now); None: not known
    notes: list[str] = field(default_factory=list)

    @property
    def peak_phase(self) -> Phase:
        return max(self.phases, key=lambda p: p.peak_bytes)

    @property
    def peak_bytes(self) -> int:
        """The predicted peak of the whole job on its device (module docstring)."""
        return self.baseline_bytes + self.device_weights + self.peak_phase.peak_bytes

    @property
    def required_bytes(self) -> int:
        """The peak without the pages the kernel can reclaim under pressure (mapped weight files): what must fit.
        A measured resident peak lies between this and ``peak_bytes``, higher the more memory is free."""
        return self.baseline_bytes + self.device_weights + max(p.peak_bytes - p.cached_bytes for p in self.phases)

    @property
    def flops(self) -> int:
        return sum(p.flops for p in self.phases)

    @property
    def seconds(self) -> float:
        return self.flops / self.flop_rate

    @property
    def fits(self) -> bool | None:
        return None if self.device_memory is None else self.required_bytes <= self.device_memory

    def record(self) -> dict:
        """As one JSON object (``vidinvert plan --json``)."""
        return {
            "model": self.model, "family": self.family, "published": self.published, "device": self.device,
            "dtype": self.dtype, "frames": self.frames, "height": self.height, "width": self.width,
            "steps": self.steps, "prompts": self.prompts, "method": self.method,
            "weights_bytes": self.weights, "device_weights_bytes": self.device_weights,
            "baseline_bytes": self.baseline_bytes,
            "phases": {p.name: {"peak_bytes": p.peak_bytes + self.baseline_bytes + self.device_weights,
                                "activation_bytes": p.peak_bytes, "cached_bytes": p.cached_bytes, "flops": p.flops}
                       for p in self.phases},
            "peak_bytes": self.peak_bytes, "peak_phase": self.peak_phase.name, "required_bytes": self.required_bytes,
            "device_memory_bytes": self.device_memory, "fits": self.fits,
            "flops": self.flops, "seconds": round(self.seconds, 1),
            "flop_rate": self.flop_rate, "flop_rate_source": self.flop_rate_source, "notes": list(self.notes),
        }

    def describe(self) -> str:
        """A few lines for a terminal."""
        lines = [f"{self.model} ({self.published or self.family}) on {self.device} in {self.dtype}: {self.frames} frames "
                 f"of {self.height}x{self.width}, {self.steps} steps, {self.prompts} prompt(s), {self.method}",
                 "weights: " + ", ".join(f"{k} {v / GIB:.2f} GiB" for k, v in self.weights.items())
                 + f" ({self.device_weights / GIB:.2f} GiB on the device at the peak)"]
        if self.baseline_bytes:
            lines.append(f"process before the model: {self.baseline_bytes / GIB:.2f} GiB")
        lines.append(f"{'phase':8s} {'peak GiB':>9s} {'TFLOP':>9s}")
        for p in self.phases:
            total = p.peak_bytes + self.baseline_bytes + self.device_weights
            lines.append(f"{p.name:8s} {total / GIB:9.2f} {p.flops / 1e12:9.2f}")
        fit = "" if self.fits is None else (f"; fits {self.device_memory / GIB:.1f} GiB" if self.fits else
                                            f"; does NOT fit {self.device_memory / GIB:.1f} GiB")
        cached = self.peak_bytes - self.required_bytes
        reclaimable = f" ({cached / GIB:.2f} GiB of it weight files' pages, reclaimable)" if cached > 0 else ""
        lines.append(f"peak {self.peak_bytes / GIB:.2f} GiB in {self.peak_phase.name}{reclaimable}{fit}")
        lines.append(f"time: about {_duration(self.seconds)} ({self.flops / 1e12:.1f} TFLOP at "
                     f"{self.flop_rate / 1e12:.2f} TFLOP/s, {self.flop_rate_source})")
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def resident_bytes() -> int:
    """This process's resident memory now (Linux ``/proc/self/statm``; else its peak so far)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_flop_rate(dtype: torch.dtype, seconds: float = 0.3) -> float:
    """This CPU's matmul rate in ``dtype`` now (FLOP/s), measured on 512x512 products for about ``seconds``."""
    a = torch.randn(512, 512, dtype=dtype)
    b = torch.randn(512, 512, dtype=dtype)
    torch.mm(a, b)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        count += 1
    return count * 2 * 512**3 / (time.perf_counter() - started)


def _device_weights(weights: dict[str, int], offload: str) -> int:
    """Bytes of weights on the device at the job's peak: all of them, the largest model (model offload moves one at
    a time), or none to speak of (sequential offload streams layer by layer; counted as 0)."""
    if offload == "model":
        return max(weights.values())
    if offload == "sequential":
        return 0
    return sum(weights.values())


def plan_job(video: str | None, prompts: list[str], model_settings: ModelSettings = ModelSettings(),
             read: ReadSettings = ReadSettings(), invert_settings: InvertSettings = InvertSettings(),
             config: EditConfig = EditConfig(), *, frames: int | None = None, device: str | None = None,
             device_memory: int | None = None, flop_rate: float | None = None, invert_only: bool = False) -> Budget:
    """Plan an edit of ``video`` with ``prompts`` (what ``engine.run_edit`` would do with the same settings).

    Args:
        frames: plan for this many frames (the model's rule applied) instead of reading ``video``.
        device: ``cpu`` or ``cuda`` (default: ``model_settings.device``, ``auto`` = CUDA when present); a CUDA plan
            can be made on a machine without one.
        device_memory: bytes the device has; default: what is free on this machine's device now (CPU: memory
            available plus this process's own), unknown for a CUDA plan without CUDA.
        flop_rate: FLOP/s for the time; default: a stated share of an H100 (CUDA) or of this CPU's measured rate.
        invert_only: plan ``vidinvert invert`` (encode and invert; no edit, no decode).
    """
    from ..models.device import available_memory
    from ..models.traced import fake_mode, stored_bytes, traced_model, weights_bytes
    from .plan import family_defaults

    target = _target(device or model_settings.device)
    mode = fake_mode()
    model = traced_model(model_settings, mode, target)
    read, invert_settings, config = family_defaults(model, read, invert_settings, config, inverting=True)
    height, width, count = _shape(model, video, read, frames)
    weights = weights_bytes(model.pipe)
    offload = model_settings.cpu_offload if target == "cuda" else "none"
    steps = invert_settings.steps
    traced = min(steps, TRACED_STEPS)
    with warnings.catch_warnings():  # the job itself warns about its settings; a plan does not repeat it
        warnings.simplefilter("ignore")
        phases, extra_per_step, notes = _trace(model, mode, prompts, count, height, width,
                                               dataclasses.replace(invert_settings, steps=traced, checkpoint_every=0),
                                               config, invert_only)
    scale = steps / traced
    if invert_settings.method == "fixed-point":
        scale *= invert_settings.max_iter
        notes.append(f"fixed-point FLOPs count {invert_settings.max_iter} evaluations per step, the most allowed "
                     "(2.4-4.4 on trained weights): an upper bound")
    added = (steps - traced) * extra_per_step
    phases = tuple(Phase(p.name, p.peak_bytes + (added if p.name != "encode" else 0),
                         int(p.flops * (scale if p.name in ("invert", "edit") else 1))) for p in phases)
    dtype = str(next(model.transformer.parameters()).dtype).replace("torch.", "")
    if target == "cpu":  # loading holds each component's file pages beside its weights in the asked dtype
        load, cached = _load_peak(weights, stored_bytes(model_settings, model.pipe))
        phases = (Phase("load", load - sum(weights.values()), 0, cached), *phases)
        baseline = resident_bytes()
        if device_memory is None:
            free = available_memory(torch.device("cpu"))
            device_memory = None if free is None else free + baseline
        rate, source = (flop_rate, "given") if flop_rate else (
            CPU_UTILISATION * cpu_flop_rate(model.transformer.dtype),
            f"{CPU_UTILISATION:.0%} of this CPU's measured matmul rate")
    else:
        baseline = 0
        if device_memory is None and torch.cuda.is_available():
            device_memory = int(torch.cuda.mem_get_info()[0])
        rate, source = (flop_rate, "given") if flop_rate else (
            GPU_UTILISATION * GPU_FLOPS, f"{GPU_UTILISATION:.0%} of an H100's {GPU_FLOPS / 1e12:.0f} dense bf16 TFLOP/s")
    budget = Budget(model=model.name, family=model.family,
                    published=model.published.hub_id if model.published else None, device=target, dtype=dtype,
                    frames=count, height=height, width=width, steps=steps, prompts=len(prompts), method=config.method,
                    weights=weights, device_weights=_device_weights(weights, offload), baseline_bytes=baseline,
                    phases=phases, flop_rate=rate, flop_rate_source=source, device_memory=device_memory, notes=notes)
    if budget.seconds > HOURS_NOTE_SECONDS:
        budget.notes.append(f"predicted to run for {_duration(budget.seconds)} on {target}")
    return budget


# what a refused job could change to fit, tried in this order: (asked, settings fields changed, how a user says it)
REMEDIES = (
    ("model", {"vae_tiling": True}, "--vae-tiling"),
    ("model", {"dtype": "bf16"}, "--dtype bf16"),
    ("model", {"cpu_offload": "model"}, "--cpu-offload model"),
)


def preflight(video: str, prompts: list[str], model_settings: ModelSettings, read: ReadSettings,
              invert_settings: InvertSettings, config: EditConfig, notes: list[str] | None = None,
              invert_only: bool = False) -> Budget | None:
    """Before loading a model folder or hub id: refuse a job whose planned peak does not fit the device's free
    memory, naming the option sets that would fit; note one planned to run for hours. Bundled and tiny models
    (megabytes) are not planned. A model that cannot be planned (``plan_job`` failed) is run unplanned, with a
    note saying so."""
    from ..models.registry import DEMO_MODELS, TINY_MODELS, default_model

    from ..models.published import PUBLISHED
    from ..models.traced import _folder

    name = model_settings.name or default_model()
    if name in DEMO_MODELS or name in TINY_MODELS or (name not in PUBLISHED and _folder(name) is None):
        return None  # megabytes; or a model whose configs are not here: loading it says what is wrong
    try:
        budget = plan_job(video, prompts, model_settings, read, invert_settings, config, invert_only=invert_only)
    except VidinvertError:
        return None  # the job meets the same problem and reports it in its own words
    except Exception as err:  # noqa: BLE001 - a model the tracer cannot run still runs; the user is told
        if notes is not None:
            notes.append(f"the job could not be planned before loading ({type(err).__name__}); memory is checked "
                         "after loading only")
        return None
    if notes is not None and budget.seconds > HOURS_NOTE_SECONDS:
        notes.append(f"predicted to run for about {_duration(budget.seconds)} on {budget.device} "
                     f"({budget.flops / 1e12:.0f} TFLOP; vidinvert plan shows the phases)")
    if budget.fits is False:
        fixes = []
        for _, change, flag in REMEDIES:
            if all(getattr(model_settings, k) == v for k, v in change.items()):
                continue
            if "cpu_offload" in change and budget.device != "cuda":
                continue
            tried = plan_job(video, prompts, dataclasses.replace(model_settings, **change), read, invert_settings,
                             config, device_memory=budget.device_memory, flop_rate=budget.flop_rate,
                             invert_only=invert_only)
            if tried.fits:
                fixes.append(f"{flag} (peak {tried.required_bytes / GIB:.1f} GiB)")
        advice = ("fits with " + " or ".join(fixes)) if fixes else "use fewer frames (--max-num-frames) or a smaller size"
        raise VidinvertError(
            f"this job needs about {budget.required_bytes / GIB:.1f} GiB at its peak ({budget.peak_phase.name}; weights "
            f"{budget.device_weights / GIB:.1f} GiB), but {budget.device} has {budget.device_memory / GIB:.1f} GiB free",
            f"{advice}; vidinvert plan with the same options shows every phase")
    return budget


def _load_peak(weights: dict[str, int], stored: dict[str, int]) -> tuple[int, int]:
    """(most bytes resident while the components load one after another, of which mapped file pages): those loaded
    so far, and the one loading now twice (its files' pages, mapped, and its tensors in the asked dtype)."""
    peak = loaded = cached = 0
    for key, size in weights.items():
        if loaded + stored.get(key, 0) + size > peak:
            peak, cached = loaded + stored.get(key, 0) + size, stored.get(key, 0)
        loaded += size
    return peak, cached


def _target(device: str) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = str(device).split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise VidinvertError(f"cannot plan for device {device!r}", "plan for cpu or cuda")
    return kind


def _shape(model, video: str | None, read: ReadSettings, frames: int | None) -> tuple[int, int, int]:
    """(height, width, frames) the job reads: the clip's, or ``frames`` at the asked or native size."""
    if frames is None:
        from ..video import read_video

        clip = read_video(video, read.height, read.width, skip_start=read.skip_start, skip_end=read.skip_end,
                          stride=read.stride, max_frames=read.frame_cap, resize=read.resize,
                          multiple=model.size_multiple, temporal_multiple=model.temporal_factor)
        count, _, height, width = clip.frames.shape
        return height, width, count
    if frames < 1:
        raise VidinvertError(f"frames must be at least 1, got {frames}", "plan for e.g. 49 frames")
    height, width = read.height, read.width
    if height is None or width is None:
        native = model.native_size()
        height, width = height or native[0], width or native[1]
    return height, width, model.frames_for(frames)


def _trace(model, mode, prompts, count, height, width, invert_settings: InvertSettings, config: EditConfig,
           invert_only: bool):
    """Run the job's phases on the fake ``model``: [Phase], bytes each further step adds, notes."""
    from ..flowedit import flowedit
    from ..windows import resolve as resolve_windows, windowed
    from .run import decode
    from .source import Source, invert_source

    notes: list[str] = []
    tracker = LiveBytes()
    phases = []

    def run(name, fn):
        counter = FlopCounterMode(display=False)
        with tracker.during(name), counter, torch.no_grad():
            value = fn()
        phases.append(Phase(name, tracker.peaks[name], counter.get_total_flops()))
        return value

    with tracker:
        with mode:
            frames = torch.zeros(count, 3, height, width)  # [F, C, H, W] float32, as read_video gives
        latents = run("encode", lambda: model.encode(frames))
        if config.method == "flowedit":
            windows = resolve_windows(model, latents.shape[1], invert_settings.window, invert_settings.overlap)
            edited = run("edit", lambda: flowedit(windowed(model, windows), latents, config.flowedit.source_prompt,
                                                  prompts, config, steps=invert_settings.steps))
            per_step = 0
        else:
            source = Source(clip=_FakeClip(frames), latents=latents, hash="planned", read=ReadSettings())
            inversion = run("invert", lambda: invert_source(model, source, invert_settings))
            entries = inversion.trajectory.shape[0]
            per_step = inversion.trajectory[0].numel() * inversion.trajectory.element_size()
            if inversion.kv_cache is not None:
                per_step += tracker.peaks["invert"] // max(1, entries)  # a step of keys/values, upper bound
                notes.append("recorded keys/values are counted per step at their traced size")
            if invert_only:
                return phases, per_step, notes
            edited = run("edit", lambda: _edit(model, inversion, prompts, config))
        run("decode", lambda: decode(model, edited))
    return phases, per_step, notes


def _edit(model, inversion, prompts, config):
    from ..editing import edit

    return edit(model, inversion, prompts, config)


@dataclass(frozen=True)
class _FakeClip:
    """What ``invert_source`` reads of a clip when planning: its frames (for the provenance record)."""

    frames: torch.Tensor
    fps: float = 8.0
    source: str = "planned"
    indices: tuple = ()
    source_size: tuple = (0, 0)
