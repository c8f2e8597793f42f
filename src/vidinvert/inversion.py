"""``invert()``: clean latents -> the stored noise trajectory, as a frozen, saveable ``Inversion``.

One inversion serves many edits: ``Inversion.save(path)`` writes a safetensors file (trajectory, clean latents, and
metadata as JSON), ``Inversion.load(path)`` reads it back, and ``check_matches`` refuses it for another model, video
or step count.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import atomic_write
from .attention import InjectionConfig, InjectionState, KVCache
from .errors import VidinvertError
from .exact import FixedPointReport, solve_fixed_point, warn_if_unconverged
from .guidance import Cfg, cfg, conditioned, guided_texts, needs_uncond
from .models.base import VideoFamily, negative_prompt_for
from .models.condition import ImageRows
from .models.device import resolve_device
from .progress import progress_callback
from .provenance import FORMAT_VERSION, InversionMeta, SourceInfo, parse_meta  # noqa: F401  (re-exported)
from .sampling import invert_ddim
from .schedule import Schedule
from .settings import DEFAULT_OVERLAP, DEFAULT_STEPS, KV_BUDGET_GB, InvertSettings
from .video import refuse_special_file
from .windows import Windows, from_record, resolve, windowed

CONDITION = "condition."  # prefix of the image condition's tensors in a saved inversion


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
    condition: ImageRows | None = field(default=None, compare=False, repr=False)  # an image-to-video model's
    #                                    condition of the trajectory (one row: the frame it was inverted on); saved

    def windows(self) -> Windows:
        """The temporal windows the trajectory was inverted in (one for files saved before windows)."""
        return from_record(self.meta.latent_shape[1], self.meta.window, self.meta.window_overlap)

    @property
    def noise(self) -> torch.Tensor:
        """The fully inverted latent ``[B, T, C, h, w]`` (start of an ``inverted`` edit)."""
        return self.trajectory[0]

    def schedule(self, model: VideoFamily) -> Schedule:
        """The model's schedule restricted to the stored steps."""
        schedule = model.schedule(self.meta.num_steps, self.meta.split_clean_end).tail(len(self.meta.timesteps))
        if schedule.timesteps != tuple(self.meta.timesteps):
            raise VidinvertError(
                "the saved inversion's timesteps do not match this model's scheduler",
                "invert the video again with this model",
            )
        return schedule

    def check_matches(self, model: VideoFamily | None = None, source_hash: str | None = None, num_steps: int | None = None):
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

        tensors = {"trajectory": self.trajectory.float().cpu().contiguous(), "clean": self.clean.float().cpu().contiguous()}
        if self.condition is not None:
            tensors.update({CONDITION + k: v.float().cpu().contiguous() for k, v in self.condition.tensors.items()})
        header = json.dumps(self.meta.to_json())
        with atomic_write(path, force) as tmp:
            try:
                save_file(tensors, tmp, metadata={"vidinvert": header})
            except Exception as err:  # safetensors raises its own error type for a full disk
                raise VidinvertError(f"could not save the inversion to {path} ({type(err).__name__}: {err})",
                                     "check the disk has space and the folder is writable") from None
        return Path(path)

    @staticmethod
    def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> "Inversion":
        """Read a file written by ``save``; a missing, truncated or foreign file gives a one-line error."""
        from safetensors import safe_open

        path = Path(path)
        refuse_special_file(path, "give the .inv file that `vidinvert invert` wrote")  # a FIFO would block the open
        try:
            with open(path, "rb") as handle:  # the real reason a path cannot be read: missing, a folder, permissions
                handle.read(1)
        except FileNotFoundError:
            raise VidinvertError(f"inversion file not found: {path}",
                                 "check the path, or run `vidinvert invert` first") from None
        except IsADirectoryError:
            raise VidinvertError(f"{path} is a folder, not an inversion file", "give the .inv file itself") from None
        except OSError as err:
            raise VidinvertError(f"cannot read the inversion {path} ({err.strerror or type(err).__name__})",
                                 "check its permissions, or run `vidinvert invert` again") from None
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as handle:
                header = (handle.metadata() or {}).get("vidinvert")
                keys = set(handle.keys())
                if header is None or not {"trajectory", "clean"} <= keys:
                    raise ValueError("not a vidinvert inversion")
                raw = json.loads(header)
                trajectory, clean = handle.get_tensor("trajectory"), handle.get_tensor("clean")
                condition = {k[len(CONDITION):]: handle.get_tensor(k) for k in keys if k.startswith(CONDITION)}
        except Exception as err:  # safetensors raises several types for damaged files
            why = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
            raise VidinvertError(
                f"{path} is not a readable vidinvert inversion ({why})",
                "it may be truncated or from another tool; run `vidinvert invert` again",
            ) from None
        meta = parse_meta(raw, path)
        if (
            trajectory.ndim != 6
            or tuple(trajectory.shape[1:]) != meta.latent_shape
            or tuple(clean.shape) != meta.latent_shape
            or trajectory.shape[0] != len(meta.timesteps)
        ):
            raise VidinvertError(f"{path} has tensors that disagree with its metadata", "invert the video again")
        if not (trajectory.is_floating_point() and clean.is_floating_point()):
            raise VidinvertError(f"{path} holds non-float tensors", "invert the video again")
        trajectory, clean = trajectory.float(), clean.float()  # latents are float32 whatever another writer used
        if not (torch.isfinite(trajectory).all() and torch.isfinite(clean).all()):
            raise VidinvertError(f"{path} holds non-finite values", "invert the video again")
        if bool(condition) != bool(meta.condition_hash) or any(
                not v.is_floating_point() or v.ndim < 2 or v.shape[0] != 1 or not torch.isfinite(v).all()
                for v in condition.values()):
            raise VidinvertError(f"{path} has a first-frame condition that disagrees with its metadata",
                                 "invert the video again")
        return Inversion(trajectory, clean, meta, condition=ImageRows(**condition) if condition else None)


def text_model_fn(model: VideoFamily, prompt: str, negative_prompt: str, guidance: float,
                  guidance_2: float | None = None, image=None):
    """``model_fn(x, i, t)`` for one prompt with guidance; one batch row when guidance cannot change anything.
    ``guidance_2``: the scale at timesteps the low-noise expert evaluates (``model.expert_for(t) == 1``).
    ``image``: an image-to-video model's condition (one row of ``model.encode_image``), shared by both branches as
    the diffusers I2V pipelines share it."""
    scales = (guidance,) if guidance_2 is None else (guidance, guidance_2)
    with_uncond = any(needs_uncond(g, prompt, negative_prompt) for g in scales)
    text = model.encode_text(guided_texts([prompt], negative_prompt, with_uncond))  # [G, L, D]

    def scale(i: int, t: int) -> float:
        return guidance_2 if guidance_2 is not None and model.expert_for(t) == 1 else guidance

    return cfg(conditioned(model.predict, text, image), Cfg(scale, with_uncond))  # .batch_rows: G, for accounting


def invert(
    model: VideoFamily,
    latents: torch.Tensor,
    steps: int = DEFAULT_STEPS,
    prompt: str = "",
    guidance: float = 1.0,
    negative_prompt: str | None = None,
    method: str = "ddim",
    strength: float = 1.0,
    progress: bool = False,
    provenance: SourceInfo | None = None,
    record_kv: bool = False,
    kv_budget_gb: float = KV_BUDGET_GB,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    trajectory_device: str | torch.device | None = None,
    split_clean_end: bool | None = None,
    window: int | str | None = None,
    overlap: float = DEFAULT_OVERLAP,
    image: ImageRows | None = None,
    image_hash: str = "",
    **method_options,
) -> Inversion:
    """Invert clean latents along the model's own DDIM schedule.

    Args:
        model: a family adapter (``VideoModel(pipe)`` for CogVideoX; ``models.wrap(pipe)`` for any family).
        latents: float32 ``[B, T, C, h, w]`` from ``model.encode``.
        steps: steps of the full sampling schedule (the edit uses the same).
        prompt: text to invert with; ``""`` (the default) as in the public reference.
        guidance: guidance scale while inverting; with ``prompt == negative_prompt`` it changes nothing and costs
            nothing (one batch row per step).
        negative_prompt: uncond text when ``guidance != 1``; ``None``: the model's ``default_negative_prompt``.
        method: ``"ddim"`` (one evaluation per step, approximate) or ``"fixed-point"`` (solves each step exactly;
            see exact.py; options ``tol``, ``max_iter``, ``anderson``).
        strength: fraction of the schedule to invert, from the clean end (1.0 = the whole schedule down to pure
            noise); an edit then starts at that noise level.
        progress: show a progress bar.
        provenance: where the latents came from (source file, hash, frames read); saved in ``InversionMeta``.
        record_kv: keep every block's keys/values of the accepted evaluation of each step (``Inversion.kv_cache``)
            so edits can skip the reference row (``InjectionConfig(reuse_kv=True)``); exact with ``fixed-point``.
        kv_budget_gb: most memory the cache may take; a larger estimate records nothing and warns (edits then
            recompute the reference branch). At 49 frames 480x720 a 50-step cache of CogVideoX-5b is ~460 GB.
        checkpoint: file to save the finished steps to every ``checkpoint_every`` steps; an interrupted run given
            the same file and settings resumes after the last saved step. Deleted when the inversion completes.
        checkpoint_every: steps between checkpoint saves (0 = no checkpoint, whatever ``checkpoint`` says).
        trajectory_device: where the stored trajectory lives (``"cpu"`` spares GPU memory: 50 steps of a 49-frame
            480x720 video are 50 x 13 x 16 x 60 x 90 float32 values = 225 MB); default: the latents' device.
        split_clean_end: cut the last (clean-end) step in two (``schedule.split_last_step``); edits of this
            inversion then sample the same split schedule. ``None``: on for ``fixed-point``, whose round trip is
            bounded by that step's residual on trained weights; off for ``ddim`` (which then matches diffusers'
            inverse scheduler step for step).
        window: temporal window in latent frames (``windows.resolve``): ``None`` inverts the whole clip in one
            window; ``"auto"`` uses the model's trained length. A clip of one window takes the unwindowed path.
            Recorded in the inversion; its edits use the same windows.
        overlap: share of a window its neighbours overlap (rounded down to whole latent frames, at least one).
        image: an image-to-video model's condition (one row of ``model.encode_image``: the source's first frame);
            required by a model that needs one. Saved with the inversion; its edits' reference rows use it.
        image_hash: what identifies the conditioning frame (``video.frames_hash`` of it), recorded.

    Returns:
        An ``Inversion`` whose trajectory is ``[N, B, T, C, h, w]``, ``N = round(strength * steps)`` (+ 1 with the
        split clean-end step).
    """
    InvertSettings(steps=steps, prompt=prompt, guidance=guidance, negative_prompt=negative_prompt, method=method,
                   depth=strength, kv_budget_gb=kv_budget_gb, checkpoint_every=checkpoint_every, window=window,
                   overlap=overlap,
                   **{k: v for k, v in method_options.items() if k in ("tol", "max_iter", "anderson", "clean_max_iter")})  # validates
    negative_prompt = negative_prompt_for(model, negative_prompt)
    if latents.ndim != 5:
        raise VidinvertError(f"latents must be [B, T, C, h, w], got {tuple(latents.shape)}", "encode frames with model.encode")
    if not torch.isfinite(latents).all():
        raise VidinvertError("the encoded latents contain NaN or inf", "check the input video, or use --dtype fp32/bf16")
    windows = resolve(model, latents.shape[1], window, overlap)
    if image is None and model.needs_image:
        raise VidinvertError("an image-to-video model inverts a clip conditioned on a frame",
                             "pass image=model.encode_image(frames[0], latent_frames)")
    if image is not None and windows.count > 1:
        raise VidinvertError("a clip conditioned on its first frame is inverted in one window (later windows have "
                             "no first frame to follow)", "use --window off, or fewer frames (--max-num-frames)")
    if windows.count > 1 and record_kv:
        raise VidinvertError("recording keys/values works on a clip of one window",
                             "drop key/value reuse for a clip edited in windows")
    model = windowed(model, windows)
    if trajectory_device is None and windows.count > 1:
        trajectory_device = _long_trajectory_device(model, latents, steps)
    if trajectory_device is not None:
        trajectory_device = resolve_device(trajectory_device)
    if split_clean_end is None:
        split_clean_end = method == "fixed-point"
    full = model.schedule(steps, split_clean_end)
    split_clean_end = len(full) > steps  # a last step too short to cut stays whole
    schedule = full.tail(max(1, round(strength * steps)) + int(split_clean_end))
    model_fn = text_model_fn(model, prompt, negative_prompt, guidance, image=image)
    latents = latents.float()
    recorder = _KVRecorder.create(model, latents, schedule, model_fn, method, kv_budget_gb) if record_kv else None
    saver, done = None, None
    if checkpoint is not None and checkpoint_every > 0:
        from .checkpoint import InversionCheckpoint, latents_hash

        key = dict(model=model.fingerprint(), latents=latents_hash(latents), timesteps=schedule.timesteps,
                   prompt=prompt, negative_prompt=negative_prompt, guidance=guidance, method=method, **method_options,
                   **({"windows": list(windows.record())} if windows.count > 1 else {}))
        saver = InversionCheckpoint(checkpoint, checkpoint_every, key, shape=tuple(latents.shape))
        done = saver.resume()  # [k, B, T, C, h, w], sampling order, or None
    resumed = 0 if done is None else done.shape[0]
    remaining = schedule[: len(schedule) - resumed]
    start = latents if done is None else done[0].to(latents.device)
    inner = _chain(recorder.accept if recorder else None, saver.step if saver else None)
    recording = model.injected(InjectionConfig(enabled=False), recorder.state) if recorder else nullcontext()
    label = "invert" if windows.count == 1 else f"invert ({windows.count} windows x {len(remaining)} steps)"
    with recording, progress_callback(len(remaining), label, progress, inner=inner) as callback:
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
    frames = (latents.shape[1] - 1) * model.temporal_factor + 1
    info = provenance or SourceInfo(frames=frames, height=latents.shape[3] * model.spatial_factor,
                                    width=latents.shape[4] * model.spatial_factor)
    return Inversion(
        trajectory=trajectory,
        clean=latents,
        meta=InversionMeta(
            model=model.name,
            model_fingerprint=model.fingerprint(),
            num_steps=steps,
            timesteps=schedule.timesteps,
            latent_shape=tuple(latents.shape),
            frames=info.frames or frames,
            height=info.height or latents.shape[3] * model.spatial_factor,
            width=info.width or latents.shape[4] * model.spatial_factor,
            source_hash=info.hash,
            source=info.path,
            prompt=prompt,
            negative_prompt=negative_prompt,
            guidance=float(guidance),
            method=method,
            iterations=tuple(int(n) for n in iterations),
            fps=float(info.fps),
            indices=tuple(info.indices),
            read=info.read,
            resumed_steps=resumed,
            split_clean_end=split_clean_end,
            residuals=tuple(float(f"{r:.4g}") for r in report.residuals) if report else (),
            window=windows.record()[0],
            window_overlap=windows.record()[1],
            condition_hash=(image_hash or "unrecorded") if image is not None else "",
            **(_solver_record(method_options) if method == "fixed-point" else {}),
        ),
        kv_cache=recorder.cache if recorder else None,
        report=report,
        condition=image.rows(slice(0, 1)) if image is not None else None,
    )


def _solver_record(options: dict) -> dict:
    """The fixed-point solver's settings as ``InversionMeta`` records them: those given, else the solver's defaults;
    the clean-end cap resolved (unset, it is ``max_iter``), so ``None`` in a header only ever means "not
    fixed-point"."""
    import inspect

    defaults = inspect.signature(solve_fixed_point).parameters
    record = {name: options.get(name, defaults[name].default)
              for name in ("tol", "max_iter", "clean_max_iter", "anderson")}
    record["clean_max_iter"] = record["clean_max_iter"] or record["max_iter"]
    return record


def _long_trajectory_device(model: VideoFamily, latents: torch.Tensor, steps: int) -> str | None:
    """``"cpu"`` when a GPU has not room for the whole trajectory (``steps + 1`` latents) twice over; else ``None``
    (the latents' device)."""
    from .models.device import available_memory

    if latents.device.type == "cpu":
        return None
    free = available_memory(latents.device)
    need = (steps + 1) * latents.numel() * 4
    return "cpu" if free is not None and 2 * need > free else None


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
    def create(model: VideoFamily, latents, schedule: Schedule, model_fn, method: str, budget_gb: float):
        """A recorder, or ``None`` (with a warning) when the full cache would exceed the budget."""
        import warnings

        tokens = model.tokens_per_row(tuple(latents.shape))
        inner = model.attention_width()
        element = torch.empty((), dtype=model.dtype).element_size()
        need = KVCache.estimate_bytes(len(schedule), model.num_blocks, tokens, inner, element)
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
