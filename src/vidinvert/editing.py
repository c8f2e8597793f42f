"""``edit()``: sample forward under new prompts while the attention also sees the stored trajectory.

Per step ``i`` the transformer evaluates the main rows (``[uncond, cond]`` per prompt, or ``[cond]`` with
guidance 1) and, while injection is active, the reference rows fed ``inversion.trajectory[i]``: by default a single
row with the inversion prompt, shared by all main rows (K prompts cost ``2K + 1`` rows); in the public script's
layout (``reference_text="edit"``) one reference row per main row with that row's text (``4`` rows for one prompt).
One call holds them all, or (``rows_per_call``; by default on the CPU for large rows) the shared reference row goes
first, alone, and the main rows follow in smaller calls that read the keys/values it left.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from .attention import BatchLayout, InjectionConfig, InjectionState  # noqa: F401  (InjectionConfig re-exported)
from .blend import BlendConfig, blend_step, edit_mask, mask_levels
from .errors import VidinvertError
from .settings import STARTS, EditConfig, with_model_guidance  # noqa: F401  (re-exported)
from .guidance import Cfg, cfg, dynamic_scale, guided_texts, needs_uncond, with_reference
from .inversion import Inversion
from .krnr import krnr, krnr_adaptive, refuse_on_flow
from .models.base import VideoFamily, negative_prompt_for
from .models.condition import I2V_MODELS, ImageRows
from .progress import progress_callback
from .regions import check_fits
from .sampling import sample_ddim
from .windows import windowed

@dataclass
class EditStats:
    """What an edit evaluated (for the benchmarks and the CLI summary)."""

    steps: int = 0  # sampling steps of the edit
    batch_rows: list[int] = field(default_factory=list)  # rows of each transformer call of the sampling steps
    mask_rows: list[int] = field(default_factory=list)  # rows of each call that built the blend mask
    blend_coverage: list[float] = field(default_factory=list)  # per prompt: fraction of latent pixels edited


ROWS_PER_CALL_CPU = 2  # main rows per transformer call on the CPU (one prompt's uncond and cond)
SPLIT_MIN_VALUES = 2**16  # "auto" splits only rows this large (tokens x width); below, per-call overhead dominates


def resolve_rows_per_call(setting: int | str | None, model: VideoFamily, latent_shape) -> int | None:
    """``EditConfig.rows_per_call`` for this model and latent size ``[B, T, C, h, w]``: a row count, or ``None``
    for one call of every row.

    ``"auto"`` splits on the CPU only, and only rows of at least ``SPLIT_MIN_VALUES`` activations (tokens x width).
    Measured with one torch thread: ``bench/speed.py``'s model (336 tokens x 512) takes 2.6-2.7 s for a 9-row call
    and 2.4 s for the reference row plus four 2-row calls; the demo model (80 tokens x 128) edits in 2.2 s in one
    call per step and 2.9 s split.
    """
    if setting != "auto":
        return setting
    if model.device.type != "cpu":
        return None  # GPUs are faster with larger batches
    tokens, width_values = model.tokens_per_row(tuple(latent_shape)), model.attention_width()
    return ROWS_PER_CALL_CPU if tokens * width_values >= SPLIT_MIN_VALUES else None


def edit_offset(inversion: Inversion, strength: float | None) -> int:
    """Index of the stored step an edit of ``strength`` starts at (0 = the inversion's noisiest)."""
    stored = len(inversion.meta.timesteps)
    if strength is None:
        return 0
    count = max(1, round(strength * inversion.meta.num_steps))
    if count > inversion.meta.steps_stored:
        raise VidinvertError(
            f"edit fraction {strength} needs {count} inverted steps, the inversion holds {inversion.meta.steps_stored}",
            f"invert with --inversion-fraction {strength} or more, or edit with --edit-fraction {inversion.meta.steps_stored / inversion.meta.num_steps:g}",
        )
    return stored - count - int(inversion.meta.split_clean_end)


def start_latents(
    inversion: Inversion, num_prompts: int, config: EditConfig, offset: int = 0, alpha_bar: float | None = None
) -> torch.Tensor:
    """Initial latents ``[K, T, C, h, w]`` for K prompts: the stored latent at ``offset`` (or its K-RNR at noise
    level ``alpha_bar``, the edit's first), or seeded Gaussian noise."""
    stored = inversion.trajectory[offset]  # [B, T, C, h, w]
    if stored.shape[0] != 1:
        raise VidinvertError(f"edits take an inversion of one video, this one holds {stored.shape[0]}", "invert one video")
    if config.start == "inverted" and config.krnr is not None:
        if alpha_bar is None:
            raise ValueError("K-RNR needs the noise level of the edit's first step")
        if alpha_bar == 0.0:
            warnings.warn("K-RNR at the zero-SNR step returns the inverted noise unchanged; edit with a strength "
                          "below 1 (the authors use 0.95) for it to have an effect", stacklevel=3)
        build = krnr_adaptive if config.krnr_adaptive else krnr
        start = build(inversion.clean.float(), inversion.noise.float(), alpha_bar, config.krnr)  # [1, T, C, h, w]
        return start.repeat(num_prompts, 1, 1, 1, 1)
    if config.start == "inverted":
        return stored.float().repeat(num_prompts, 1, 1, 1, 1)  # [K, T, C, h, w]
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    fresh = torch.randn((num_prompts, *stored.shape[1:]), generator=generator, dtype=torch.float32)
    return fresh.to(stored.device)


def edit_conditions(model: VideoFamily, inversion: Inversion, first_frames: ImageRows | None,
                    count: int) -> ImageRows | None:
    """The image conditions of ``count`` edits: ``first_frames`` (one row, or one per edit), else the inversion's
    own; ``None`` for a text-to-video model. One-line errors for a condition the model or inversion cannot use."""
    if not model.takes_image:
        if first_frames is not None:
            raise VidinvertError(f"{model.name} is a text-to-video model: it cannot be conditioned on a first frame",
                                 f"use an image-to-video model ({I2V_MODELS})")
        return None
    if inversion.condition is None:
        if first_frames is None and not model.needs_image:
            return None  # a model that also generates from text alone (Wan 2.2 TI2V), inverted without a frame
        raise VidinvertError("the inversion was made without a first-frame condition, which this image-to-video "
                             "model needs for its reference rows", "invert the video again with this model")
    chosen = inversion.condition if first_frames is None else first_frames
    if len(chosen) not in (1, count):
        raise VidinvertError(f"{len(chosen)} first frames for {count} prompts", "give one first frame, or one per prompt")
    return chosen.repeat(count) if len(chosen) == 1 else chosen


def edit(
    model: VideoFamily,
    inversion: Inversion,
    prompts: str | list[str],
    config: EditConfig = EditConfig(),
    progress: bool = False,
    stats: EditStats | None = None,
    first_frames: ImageRows | None = None,
    region: torch.Tensor | None = None,
) -> torch.Tensor:
    """Regenerate the inverted video under ``prompts``.

    Args:
        model: the ``VideoModel`` the inversion was made with.
        inversion: from ``invert`` or ``Inversion.load``.
        prompts: one edit prompt, or several run in one batch sharing the reference branch.
        config: guidance, start and injection settings.
        progress: show a progress bar.
        stats: filled with the rows of every transformer call, if given.
        first_frames: an image-to-video model's conditions on the edited first frames (``model.encode_image``),
            one row per prompt or one for all; ``None``: the inversion's own (the source's first frame). The
            reference rows always take the inversion's, as they replay the source's trajectory.
        region: float32 ``[1, T, 1, h, w]`` in {0, 1} (``regions.Region.latent``): where the edit may change the
            latents. After every step the latents outside it are put back to the inversion's at the same level, so
            the result equals ``inversion.clean`` there exactly; with local blend, the blend mask is limited to it.

    Returns:
        float32 latents ``[K, T, C, h, w]``, one video per prompt; decode with ``model.decode``.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise VidinvertError("no edit prompt given", 'pass --prompt "..." (several allowed)')
    inversion.check_matches(model)
    config = with_model_guidance(config, model.default_guidance)  # guidance left to the model: its published scale
    windows = inversion.windows()
    if windows.count > 1 and config.injection.reuse_kv:
        raise VidinvertError("recorded keys/values are not kept for a clip inverted in windows",
                             "drop key/value reuse (the reference rows are evaluated per window)")
    model = windowed(model, windows)  # the inversion's windows; each reads its own window of the trajectory
    offset = edit_offset(inversion, config.strength)
    schedule = inversion.schedule(model)[offset:]
    refuse_on_flow(config.krnr is not None and schedule.is_flow)
    num_prompts, injection = len(prompts), config.injection
    if config.guidance_2 is not None and not any(model.expert_for(t) for t in schedule.timesteps):
        raise VidinvertError("a second guidance scale applies to the low-noise expert of a two-expert model "
                             "(Wan 2.2 A14B), which this edit does not run", "drop --guidance-2")
    scales = (config.guidance,) if config.guidance_2 is None else (config.guidance, config.guidance_2)
    negative = negative_prompt_for(model, config.negative_prompt)
    with_uncond = any(needs_uncond(g, p, negative) for g in scales for p in prompts)
    main_texts = guided_texts(prompts, negative, with_uncond)  # [neg, p1, neg, p2, ...] or [p1, ...]
    shared = injection.reference_text == "inversion"
    ref_texts = [inversion.meta.prompt] if shared else main_texts
    layout = BatchLayout.build(len(main_texts), shared_reference=shared)
    cache = inversion.kv_cache if injection.reuse_kv else None
    if injection.reuse_kv and cache is None:
        raise VidinvertError(
            "reuse_kv needs an inversion recorded with record_kv=True in this process (caches are not saved)",
            "invert with record_kv=True (CLI: --reuse-kv on a video, not a .inv), or drop reuse_kv",
        )
    text_main = model.encode_text(main_texts)  # [M, L, D]
    text_all = torch.cat([text_main, model.encode_text(ref_texts)])  # [M + R, L, D]
    edits = edit_conditions(model, inversion, first_frames, num_prompts)  # [K] rows, or None (text-to-video)
    image_main = edits.repeat_each(len(main_texts) // num_prompts) if edits is not None else None  # [M]
    image_all = ImageRows.cat([image_main, inversion.condition.repeat(len(ref_texts))]) if edits is not None else None
    image_ref = image_all.rows(slice(len(main_texts), None)) if edits is not None else None  # [R]
    trajectory = inversion.trajectory
    state = InjectionState(attention_map=injection.attention_map(first_frames is not None))

    if stats is not None:
        stats.steps = len(schedule)
    cap = resolve_rows_per_call(config.rows_per_call, model, inversion.clean.shape)
    # the paired layout keeps each reference row beside its main row; a windowed call holds every row of a window
    split = cap is not None and shared and windows.count == 1
    text_ref = text_all[len(main_texts) :]  # [R, L, D]

    def predict(x: torch.Tensor, t: int, text: torch.Tensor, layout_now: BatchLayout | None, image) -> torch.Tensor:
        state.layout = layout_now
        if stats is not None:
            stats.batch_rows.append(x.shape[0])
        return model.predict(x, t, text) if image is None else model.predict(x, t, text, image)

    def predict_main(main: torch.Tensor, t: int, reference_kv: dict) -> torch.Tensor:
        """Main rows reading ``reference_kv`` (``{block: (key, value)}``), in calls of at most ``cap`` rows."""
        state.reference_kv = reference_kv
        step = cap or main.shape[0]
        preds = []
        for start in range(0, main.shape[0], step):
            chunk = main[start : start + step]
            n = chunk.shape[0]
            image = image_main.rows(slice(start, start + n)) if image_main is not None else None
            preds.append(predict(chunk, t, text_main[start : start + n], BatchLayout(n, (0,) * n, 0), image))
        return torch.cat(preds)  # [M, T, C, h, w]

    joint = with_reference(lambda rows, i, t: predict(rows, t, text_all, layout, image_all),
                           lambda i: trajectory[offset + i], layout.num_ref)  # [M + R] rows in, [M] out

    def main_fn(main: torch.Tensor, i: int, t: int) -> torch.Tensor:
        """Predictions of the main rows ``[M, T, C, h, w]`` at step ``i``, with the reference branch while active."""
        recorded = cache.step(offset + i) if cache is not None else None
        state.reference_bias = injection.reference_bias(i, len(schedule))
        active = injection.active_at(i, len(schedule), first_frames is not None)
        if active and recorded is not None:
            return predict_main(main, t, recorded)
        if active and split:  # the reference row alone, keeping every block's keys/values for this step
            state.record_row, state.recorded = 0, {}
            predict(trajectory[offset + i].to(main.device, main.dtype), t, text_ref, None, image_ref)  # [1, T, C, h, w]
            step_kv, state.record_row, state.recorded = state.recorded, None, {}
            return predict_main(main, t, step_kv)
        if active:
            return joint(main, i, t)
        return predict(main, t, text_main, None, image_main)

    def scale(i: int, t: int) -> float:
        base = config.guidance_2 if config.guidance_2 is not None and model.expert_for(t) == 1 else config.guidance
        return dynamic_scale(base, t, len(schedule)) if config.dynamic_guidance else base

    model_fn = cfg(main_fn, Cfg(scale, with_uncond))

    mask = None
    if config.blend.enabled:
        mask = edit_mask(model, inversion, config.blend.source_prompt, prompts, config.blend, offset,
                         edits)  # [K, T, 1, h, w]
        if stats is not None:
            stats.mask_rows = [num_prompts + 1] * len(mask_levels(len(schedule), config.blend.levels))
            stats.blend_coverage = mask.mean(dim=(1, 2, 3, 4)).tolist()

    if region is not None:
        check_fits(region, inversion.clean.shape)

    def blend_into_source(i: int, x: torch.Tensor) -> torch.Tensor:
        """Outside the mask (the user's region, and the blend mask while it blends), put the latent after step
        ``i`` back to the inversion's at the same level."""
        blending = mask is not None and config.blend.active_at(i, len(schedule))
        if not blending and region is None:
            return x
        keep = mask if blending else None  # [K, T, 1, h, w]
        if region is not None:
            keep = region if keep is None else keep * region  # the prompt-derived mask limited to the user's
        after = offset + i + 1
        source = trajectory[after] if after < len(trajectory) else inversion.clean  # [1, T, C, h, w]
        return blend_step(keep.to(x.device), x, source.to(x.device, x.dtype))

    x = start_latents(inversion, num_prompts, config, offset, float(schedule.alpha_from[0]))
    label = "edit" if windows.count == 1 else f"edit ({windows.count} windows x {len(schedule)} steps)"
    with model.injected(injection, state), progress_callback(len(schedule), label, progress) as callback:
        return sample_ddim(model_fn, x, schedule, callback=callback,
                           post_step=blend_into_source if mask is not None or region is not None else None)
