"""``invert()``: clean latents -> the stored noise trajectory, as a frozen, saveable ``Inversion``.

One inversion serves many edits: ``Inversion.save(path)`` writes a safetensors file (trajectory, clean latents, and
metadata as JSON), ``Inversion.load(path)`` reads it back, and ``check_matches`` refuses it for another model, video
or step count.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .errors import VidinvertError
from .exact import FixedPointReport, solve_fixed_point, warn_if_unconverged
from .attention import InjectionConfig, InjectionState, KVCache, injected
from .guidance import combine, guided_texts, needs_uncond
from .model import VideoModel, resolve_device
from .outputs import publish
from .progress import progress_callback
from .sampling import invert_ddim
from .schedule import Schedule

FORMAT_VERSION = 1
METHODS = ("ddim", "fixed-point")


@dataclass(frozen=True)
class InversionMeta:
    """What an inversion was made from; saved with it and checked before an edit uses it."""

    model: str  # model name or path
    model_fingerprint: str  # VideoModel.fingerprint(): configs + a sample of the weights
    num_steps: int  # steps of the full schedule
    timesteps: tuple[int, ...]  # model timestep of each stored step, sampling order (a tail of the schedule)
    latent_shape: tuple[int, ...]  # [B, T, C, h, w]
    frames: int  # pixel frames of the source
    height: int  # pixel height
    width: int  # pixel width
    source_hash: str = ""  # frames_hash of the source frames ("" if unknown)
    source: str = ""  # path of the source video, informational
    prompt: str = ""  # text the trajectory was inverted with
    negative_prompt: str = ""  # uncond text when guidance > 1
    guidance: float = 1.0  # guidance scale used while inverting
    method: str = "ddim"  # "ddim" or "fixed-point"
    iterations: tuple[int, ...] = ()  # transformer evaluations per stored step (sampling order)
    residuals: tuple[float, ...] = ()  # fixed-point: final relative residual per stored step (sampling order; last =
    #                                    the round trip's relative latent error); () for ddim and older files
    extra: dict = field(default_factory=dict)  # free-form settings (frame selection, fps, ...)
    format_version: int = FORMAT_VERSION


@dataclass(frozen=True)
class Inversion:
    """A stored inversion.

    Args:
        trajectory: float32 ``[N, B, T, C, h, w]`` in sampling order: entry ``i`` is the latent at the start of
            sampling step ``i`` (entry 0 the noisiest). ``N <= meta.num_steps`` (fewer for a partial inversion).
        clean: float32 ``[B, T, C, h, w]``: the VAE latents that were inverted.
        meta: provenance and settings.
        kv_cache: reference keys/values recorded with ``invert(..., record_kv=True)``, for ``reuse_kv`` edits.
    """

    trajectory: torch.Tensor
    clean: torch.Tensor
    meta: InversionMeta
    kv_cache: KVCache | None = field(default=None, compare=False, repr=False)  # kept in memory only, never saved
    report: FixedPointReport | None = field(default=None, compare=False, repr=False)  # fixed-point: how each step
    #                                    was solved (``exact.describe(report)`` says it in one line); in memory only

    @property
    def noise(self) -> torch.Tensor:
        """The fully inverted latent ``[B, T, C, h, w]`` (start of an ``inverted`` edit)."""
        return self.trajectory[0]

    def schedule(self, model: VideoModel) -> Schedule:
        """The model's schedule restricted to the stored steps."""
        schedule = model.schedule(self.meta.num_steps).tail(len(self.meta.timesteps))
        if schedule.timesteps != tuple(self.meta.timesteps):
            raise VidinvertError(
                "the saved inversion's timesteps do not match this model's scheduler",
                "invert the video again with this model",
            )
        return schedule

    def check_matches(self, model: VideoModel | None = None, source_hash: str | None = None, num_steps: int | None = None):
        """Refuse, in one line, an inversion made with another model, video or step count."""
        if model is not None and model.fingerprint() != self.meta.model_fingerprint:
            raise VidinvertError(
                f"the inversion was made with another model ({self.meta.model}), not {model.name}",
                "invert the video again with this model, or pass the same --model",
            )
        if source_hash and self.meta.source_hash and source_hash != self.meta.source_hash:
            raise VidinvertError(
                "the inversion was made from another video or frame selection",
                "invert this video again (same skip/stride/size options) or pass the .inv file alone",
            )
        if num_steps is not None and num_steps != self.meta.num_steps:
            raise VidinvertError(
                f"the inversion has {self.meta.num_steps} steps, {num_steps} were asked for",
                f"use --steps {self.meta.num_steps} or invert again",
            )

    def save(self, path: str | os.PathLike, force: bool = False) -> Path:
        """Write a safetensors file atomically (temp file + rename); refuses to overwrite unless ``force``."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.exists() and not force:
            raise VidinvertError(f"{path} already exists", "use --force to overwrite or choose another name")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps(asdict(self.meta))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file(
                {"trajectory": self.trajectory.float().cpu().contiguous(), "clean": self.clean.float().cpu().contiguous()},
                tmp,
                metadata={"vidinvert": meta},
            )
            publish(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @staticmethod
    def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> "Inversion":
        """Read a file written by ``save``; a missing, truncated or foreign file gives a one-line error."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise VidinvertError(f"inversion file not found: {path}", "check the path, or run `vidinvert invert` first")
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as handle:
                header = (handle.metadata() or {}).get("vidinvert")
                keys = set(handle.keys())
                if header is None or not {"trajectory", "clean"} <= keys:
                    raise ValueError("not a vidinvert inversion")
                raw = json.loads(header)
                trajectory, clean = handle.get_tensor("trajectory"), handle.get_tensor("clean")
        except Exception as err:  # safetensors raises several types for damaged files
            raise VidinvertError(
                f"{path} is not a readable vidinvert inversion ({type(err).__name__})",
                "it may be truncated or from another tool; run `vidinvert invert` again",
            ) from None
        meta = _parse_meta(raw, path)
        if (
            trajectory.ndim != 6
            or tuple(trajectory.shape[1:]) != meta.latent_shape
            or tuple(clean.shape) != meta.latent_shape
            or trajectory.shape[0] != len(meta.timesteps)
        ):
            raise VidinvertError(f"{path} has tensors that disagree with its metadata", "invert the video again")
        if not (torch.isfinite(trajectory).all() and torch.isfinite(clean).all()):
            raise VidinvertError(f"{path} holds non-finite values", "invert the video again")
        return Inversion(trajectory, clean, meta)


def _parse_meta(raw, path: Path) -> InversionMeta:
    """``InversionMeta`` from a file's JSON header; any other shape is a one-line error."""
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise VidinvertError(f"{path} has inversion format {version!r}, not {FORMAT_VERSION}", "invert the video again")
    try:
        fields = dict(raw)
        for key in ("timesteps", "latent_shape", "iterations"):
            fields[key] = tuple(int(v) for v in fields.get(key, ()))
        fields["residuals"] = tuple(float(v) for v in fields.get("residuals", ()))
        meta = InversionMeta(**fields)
        if not isinstance(meta.extra, dict) or not isinstance(meta.model_fingerprint, str):
            raise TypeError("malformed fields")
        return meta
    except (TypeError, ValueError, AttributeError) as err:
        raise VidinvertError(
            f"{path} has damaged metadata ({type(err).__name__})", "run `vidinvert invert` again"
        ) from None


def text_model_fn(model: VideoModel, prompt: str, negative_prompt: str, guidance: float):
    """``model_fn(x, i, t)`` for one prompt with guidance; one batch row when guidance cannot change anything."""
    with_uncond = needs_uncond(guidance, prompt, negative_prompt)
    text = model.encode_text(guided_texts([prompt], negative_prompt, with_uncond))  # [G, L, D]

    def model_fn(x: torch.Tensor, i: int, t: int) -> torch.Tensor:
        rows = x.repeat_interleave(2, dim=0) if with_uncond else x  # [B * G, T, C, h, w]
        pred = model.predict(rows, t, text.repeat(x.shape[0], 1, 1))
        if not with_uncond:
            return pred
        return combine(pred, x.shape[0], guidance, True)

    model_fn.batch_rows = 2 if with_uncond else 1  # transformer rows per latent row, for accounting
    return model_fn


def invert(
    model: VideoModel,
    latents: torch.Tensor,
    steps: int = 50,
    prompt: str = "",
    guidance: float = 1.0,
    negative_prompt: str = "",
    method: str = "ddim",
    strength: float = 1.0,
    progress: bool = False,
    meta: dict | None = None,
    record_kv: bool = False,
    kv_budget_gb: float = 4.0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    trajectory_device: str | torch.device | None = None,
    **method_options,
) -> Inversion:
    """Invert clean latents along the model's own DDIM schedule.

    Args:
        model: a ``VideoModel`` (wrap a pipeline with ``VideoModel(pipe)``).
        latents: float32 ``[B, T, C, h, w]`` from ``model.encode``.
        steps: steps of the full sampling schedule (the edit uses the same).
        prompt: text to invert with; ``""`` (the default) as in the public reference.
        guidance: guidance scale while inverting; with ``prompt == negative_prompt`` it changes nothing and costs
            nothing (one batch row per step).
        negative_prompt: uncond text when ``guidance != 1``.
        method: ``"ddim"`` (one evaluation per step, approximate) or ``"fixed-point"`` (solves each step exactly;
            see exact.py; options ``tol``, ``max_iter``, ``anderson``).
        strength: fraction of the schedule to invert, from the clean end (1.0 = the whole schedule down to pure
            noise); an edit then starts at that noise level.
        progress: show a progress bar.
        meta: extra fields for ``InversionMeta`` (source hash, path, frame selection...).
        record_kv: keep every block's keys/values of the accepted evaluation of each step (``Inversion.kv_cache``)
            so edits can skip the reference row (``InjectionConfig(reuse_kv=True)``); exact with ``fixed-point``.
        kv_budget_gb: most memory the cache may take; a larger estimate records nothing and warns (edits then
            recompute the reference branch). At 49 frames 480x720 a 50-step cache of CogVideoX-5b is ~460 GB.
        checkpoint: file to save the finished steps to every ``checkpoint_every`` steps; an interrupted run given
            the same file and settings resumes after the last saved step. Deleted when the inversion completes.
        checkpoint_every: steps between checkpoint saves.
        trajectory_device: where the stored trajectory lives (``"cpu"`` spares GPU memory: 50 steps of a 49-frame
            480x720 video are 50 x 13 x 16 x 60 x 90 float32 values = 225 MB); default: the latents' device.

    Returns:
        An ``Inversion`` whose trajectory is ``[N, B, T, C, h, w]``, ``N = round(strength * steps)``.
    """
    if steps < 1:
        raise VidinvertError(f"steps must be >= 1, got {steps}", "use e.g. --steps 50")
    if guidance < 1.0:
        raise VidinvertError(f"guidance must be >= 1, got {guidance}", "use 1 (no guidance) or more")
    if not 0.0 < strength <= 1.0:
        raise VidinvertError(f"strength must be in (0, 1], got {strength}", "use e.g. 1.0 (full) or 0.8")
    if method not in METHODS:
        raise VidinvertError(f"unknown inversion method {method!r}", f"use one of {', '.join(METHODS)}")
    if latents.ndim != 5:
        raise VidinvertError(f"latents must be [B, T, C, h, w], got {tuple(latents.shape)}", "encode frames with model.encode")
    if not torch.isfinite(latents).all():
        raise VidinvertError("the encoded latents contain NaN or inf", "check the input video, or use --dtype fp32/bf16")
    if trajectory_device is not None:
        trajectory_device = resolve_device(trajectory_device)
    count = max(1, round(strength * steps))
    schedule = model.schedule(steps).tail(count)
    model_fn = text_model_fn(model, prompt, negative_prompt, guidance)
    latents = latents.float()
    recorder = _KVRecorder.create(model, latents, schedule, model_fn, method, kv_budget_gb) if record_kv else None
    saver, done = None, None
    if checkpoint is not None:
        from .checkpoint import InversionCheckpoint, latents_hash

        key = dict(model=model.fingerprint(), latents=latents_hash(latents), timesteps=schedule.timesteps,
                   prompt=prompt, negative_prompt=negative_prompt, guidance=guidance, method=method, **method_options)
        saver = InversionCheckpoint(checkpoint, checkpoint_every, key)
        done = saver.resume()  # [k, B, T, C, h, w], sampling order, or None
    resumed = 0 if done is None else done.shape[0]
    remaining = schedule[: len(schedule) - resumed]
    start = latents if done is None else done[0].to(latents.device)
    inner = _chain(recorder.accept if recorder else None, saver.step if saver else None)
    recording = injected(model.transformer, InjectionConfig(enabled=False), recorder.state) if recorder else nullcontext()
    with recording, progress_callback(len(remaining), "invert", progress, inner=inner) as callback:
        fn = recorder.wrap(model_fn) if recorder else model_fn
        if recorder is not None and recorder.exact:  # the recorder keeps the evaluation at each accepted latent
            method_options = {**method_options, "verify": True}
        if method == "fixed-point":  # the model's rounding sets the floor of each step's residual
            method_options = {"precision": model.dtype, **method_options}
        trajectory, iterations, report = _solve(fn, start, remaining, method, callback, trajectory_device, method_options)
    if done is not None:
        trajectory = torch.cat([trajectory, done.to(trajectory.device)])  # [N, B, T, C, h, w]
        iterations = tuple(iterations) + (0,) * resumed  # evaluations of resumed steps are not known
        report = None  # residuals of resumed steps are not known either
    if saver is not None:
        saver.finish()
    extra = dict(meta or {}, **({"resumed_steps": resumed} if resumed else {}))
    info = {k: extra.pop(k) for k in ("source_hash", "source", "frames", "height", "width") if k in extra}
    frames = (latents.shape[1] - 1) * model.temporal_factor + 1
    return Inversion(
        trajectory=trajectory,
        clean=latents,
        meta=InversionMeta(
            model=model.name,
            model_fingerprint=model.fingerprint(),
            num_steps=steps,
            timesteps=schedule.timesteps,
            latent_shape=tuple(latents.shape),
            frames=info.get("frames", frames),
            height=info.get("height", latents.shape[3] * model.spatial_factor),
            width=info.get("width", latents.shape[4] * model.spatial_factor),
            source_hash=info.get("source_hash", ""),
            source=info.get("source", ""),
            prompt=prompt,
            negative_prompt=negative_prompt,
            guidance=float(guidance),
            method=method,
            iterations=tuple(int(n) for n in iterations),
            residuals=tuple(float(f"{r:.4g}") for r in report.residuals) if report else (),
            extra=extra,
        ),
        kv_cache=recorder.cache if recorder else None,
        report=report,
    )


def _solve(model_fn, start, schedule: Schedule, method: str, callback, store_device, options: dict):
    """Run the chosen inversion over ``schedule``.

    Returns:
        ``(trajectory [N, B, T, C, h, w], evaluations per step, FixedPointReport or None)``.
    """
    if len(schedule) == 0:  # everything was resumed from a checkpoint
        return torch.empty(0, *start.shape, device=store_device or start.device), (), None
    if method == "ddim":
        trajectory = invert_ddim(model_fn, start, schedule, callback=callback, store_device=store_device)
        return trajectory, (1,) * len(schedule), None
    trajectory, report = solve_fixed_point(model_fn, start, schedule, callback=callback, store_device=store_device,
                                           **options)
    warn_if_unconverged(report, stacklevel=4)
    return trajectory, report.evaluations, report


def _chain(*callbacks):
    """One step callback calling each given one (``None`` entries skipped); ``None`` if there are none."""
    active = [c for c in callbacks if c is not None]
    if not active:
        return None

    def callback(i, t, x):
        for c in active:
            c(i, t, x)

    return callback


class _KVRecorder:
    """Keeps, for each inversion step, the keys/values of the evaluation whose input the step accepted."""

    def __init__(self, state: InjectionState, cache: KVCache, exact: bool):
        self.state, self.cache, self.exact = state, cache, exact
        self.recent: list = []  # [(input latents, step, {block: (key, value)})], the last two evaluations

    @staticmethod
    def create(model: VideoModel, latents, schedule: Schedule, model_fn, method: str, budget_gb: float):
        """A recorder, or ``None`` (with a warning) when the full cache would exceed the budget."""
        import warnings

        _, frames, _, height, width = latents.shape
        p, p_t = model.config.patch_size, model.config.patch_size_t or 1
        tokens = model.text_length + -(-frames // p_t) * (height // p) * (width // p)
        inner = model.config.num_attention_heads * model.config.attention_head_dim
        element = torch.empty((), dtype=model.dtype).element_size()
        need = KVCache.estimate_bytes(len(schedule), len(model.transformer.transformer_blocks), tokens, inner, element)
        budget = int(budget_gb * 2**30)
        if need > budget:
            warnings.warn(
                f"recording reference keys/values needs {need / 2**30:.3g} GiB, over the {budget_gb:g} GiB budget; "
                "nothing recorded, edits will recompute the reference branch (raise --kv-budget-gb to reuse)",
                stacklevel=3,
            )
            return None
        row = model_fn.batch_rows - 1  # the cond row: the text the reference branch will see
        state = InjectionState(record_row=row)
        return _KVRecorder(state, KVCache(budget, device="cpu", exact=method == "fixed-point"), method == "fixed-point")

    def wrap(self, model_fn):
        def recording_fn(x, i, t):
            pred = model_fn(x, i, t)
            self.recent = (self.recent + [(x, i, dict(self.state.recorded))])[-2:]
            return pred

        recording_fn.batch_rows = model_fn.batch_rows
        return recording_fn

    def accept(self, i: int, t: int, x_accepted) -> None:
        """Fixed-point: the evaluation at the accepted latent; DDIM: the step's only evaluation."""
        for x, step, blocks in reversed(self.recent):
            if step == i and (not self.exact or x is x_accepted):
                self.cache.put(i, blocks)
                break
        self.recent = []
