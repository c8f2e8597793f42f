"""FlowEdit (Kulikov et al. 2024, "FlowEdit: Inversion-Free Text-Based Editing Using Pre-Trained Flow Models").

No inversion and no attention injection: an ODE is integrated directly from the source latent to the edit. With
sigma levels ``t`` from 1 (noise) to 0 (clean) and ``x_src`` the clean source latent, each editing step draws fresh
noise ``eps`` and moves

    z_src = (1 - t) x_src + t eps,   z_tar = z_edit + (z_src - x_src),
    z_edit <- z_edit + (t_next - t) (v_tar(z_tar) - v_src(z_src)),

``v_src``/``v_tar`` being the guided velocities of the source and target prompts, averaged over ``n_avg`` draws.
Only the ``n_max`` cleanest steps of the schedule edit (the noisiest ``T - n_max`` are skipped, ``z_edit`` starts at
``x_src``); of those, the last ``n_min`` are plain Euler sampling of the target prompt from
``z_edit + (z_src - x_src)`` with one fresh draw at the first of them (as the public FlowEdit code does; its source
velocity there is computed and discarded, here it is not computed).

Cost per editing step: ``n_avg x (S + K G)`` transformer rows in one call for K target prompts, ``S``/``G`` = 2 with
classifier-free guidance (1 without); the source rows are shared, since every prompt sees the same noise. The
``n_min`` sampling steps cost ``K G`` rows. The noise depends only on the seed and the latent's shape, so a batch of
K prompts gives what K single-prompt runs give.
"""

from __future__ import annotations

import torch

from .editing import EditStats
from .errors import VidinvertError
from .guidance import Cfg, cfg, conditioned, guided_texts, join_rows, needs_uncond
from .models.base import VideoFamily, negative_prompt_for
from .progress import progress_callback
from .regions import check_fits
from .sampling import check_finite
from .schedule import Schedule
from .settings import DEFAULT_STEPS, EditConfig, FlowEditConfig, with_model_guidance


def flow_schedule(model: VideoFamily, steps: int) -> Schedule:
    """The model's schedule of ``steps`` steps; a one-line error unless it is a flow-matching one."""
    schedule = model.schedule(steps)
    if not schedule.is_flow:
        raise VidinvertError("FlowEdit needs a flow-matching model (Wan)",
                             "use --method inversion with this model, or a Wan model")
    return schedule


def rows_per_step(num_prompts: int, source_rows: int, target_rows: int, n_avg: int, sampling: bool) -> int:
    """Transformer rows of one step: ``n_avg (S + K G)`` while editing, ``K G`` in the ``n_min`` sampling phase."""
    return num_prompts * target_rows if sampling else n_avg * (source_rows + num_prompts * target_rows)


def flowedit(
    model: VideoFamily,
    x_src: torch.Tensor,
    source_prompt: str,
    prompts: str | list[str],
    config: EditConfig = EditConfig(method="flowedit"),
    steps: int = DEFAULT_STEPS,
    progress: bool = False,
    stats: EditStats | None = None,
    region: torch.Tensor | None = None,
) -> torch.Tensor:
    """Edit the clean latent ``x_src`` from ``source_prompt`` towards each of ``prompts`` with FlowEdit.

    Args:
        model: a flow-matching model (Wan); DDIM models are refused.
        x_src: the source video's VAE latent ``[1, T, C, h, w]`` (``Source.latents`` or ``Inversion.clean``).
        source_prompt: what the source shows (overrides ``config.flowedit.source_prompt``).
        prompts: one target prompt, or several edited in one batch.
        config: ``guidance`` (target scale), ``negative_prompt``, ``seed`` and ``flowedit`` are read.
        steps: steps of the model's schedule; FlowEdit runs its ``n_max`` cleanest.
        progress: show a progress bar.
        stats: filled with the rows of every transformer call, if given.
        region: float32 ``[1, T, 1, h, w]`` in {0, 1}: where the edit may change the latent. Outside it the
            velocity difference is zero (``z_edit`` stays ``x_src``), and in the ``n_min`` sampling phase the latent
            is put back to the source at each level, so the result equals ``x_src`` there exactly.

    Returns:
        float32 latents ``[K, T, C, h, w]``, one per prompt; decode with ``model.decode``.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise VidinvertError("no edit prompt given", 'pass --prompt "..." (several allowed)')
    schedule = flow_schedule(model, steps)
    if x_src.ndim != 5 or x_src.shape[0] != 1:
        raise VidinvertError(f"FlowEdit takes the latent of one video [1, T, C, h, w], got {tuple(x_src.shape)}",
                             "edit one video at a time")
    config = with_model_guidance(config, model.default_guidance)  # guidance left to the model: its published scale
    settings: FlowEditConfig = config.flowedit
    n_max, n_min = settings.editing_steps(len(schedule))
    seed = config.seed if settings.seed is None else settings.seed
    x_src = x_src.float().to(model.device)
    num_prompts, negative = len(prompts), negative_prompt_for(model, config.negative_prompt)
    source_uncond = needs_uncond(settings.source_guidance, source_prompt, negative)
    target_uncond = any(needs_uncond(config.guidance, p, negative) for p in prompts)
    source_texts = guided_texts([source_prompt], negative, source_uncond)  # [neg, src] or [src]
    target_texts = guided_texts(prompts, negative, target_uncond)  # [neg, p1, neg, p2, ...] or [p1, ...]
    text = model.encode_text(source_texts + target_texts)  # [S + K G, L, D]
    source_cfg, target_cfg = Cfg(settings.source_guidance, source_uncond), Cfg(config.guidance, target_uncond)
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def fresh_noise() -> torch.Tensor:  # [1, T, C, h, w], the same for every prompt
        return torch.randn(x_src.shape, generator=generator, dtype=torch.float32).to(x_src.device)

    def predict(rows: torch.Tensor, t, texts: torch.Tensor) -> torch.Tensor:
        if stats is not None:
            stats.batch_rows.append(rows.shape[0])
        return model.predict(rows, t, texts).float()

    # the n_min sampling phase: the target rows alone, a plain guided model function
    target_fn = cfg(conditioned(predict, text[len(source_texts) :]), target_cfg)  # [K, ...] -> [K, ...]
    first, sampling_from = len(schedule) - n_max, len(schedule) - n_min
    if stats is not None:
        stats.steps = n_max
    if region is not None:
        check_fits(region, x_src.shape)
    inside = None if region is None else region.to(x_src.device).bool()  # [1, T, 1, h, w]
    z_edit = x_src.repeat(num_prompts, 1, 1, 1, 1)  # [K, T, C, h, w]
    x_tar = None  # the target latent of the n_min sampling phase
    with progress_callback(n_max, "flowedit", progress) as callback:
        for i in range(first, len(schedule)):
            t = schedule.timesteps[i]
            sigma, sigma_next = float(schedule.sigma_from[i]), float(schedule.sigma_to[i])
            if i < sampling_from:
                delta = torch.zeros_like(z_edit)
                for _ in range(settings.n_avg):
                    z_src = (1.0 - sigma) * x_src + sigma * fresh_noise()  # [1, T, C, h, w]
                    z_tar = z_src + (z_edit - x_src)  # [K, ...]; exactly z_src while z_edit is x_src
                    rows, split = join_rows(source_cfg.rows(z_src), target_cfg.rows(z_tar))  # [S + K G, ...]
                    pred_src, pred_tar = split(predict(rows, t, text))
                    v_src = source_cfg.combine(pred_src, i, t)  # [1, ...]
                    v_tar = target_cfg.combine(pred_tar, i, t)  # [K, ...]
                    delta += v_tar - v_src
                if inside is not None:  # no velocity difference outside the region: z_edit stays x_src there
                    delta = torch.where(inside, delta, torch.zeros_like(delta))
                z_edit = z_edit + (sigma_next - sigma) * (delta / settings.n_avg)
                check_finite(z_edit, i, t, "FlowEdit")
                callback(i, t, z_edit)
            else:
                if x_tar is None:  # re-noise the edit to this level once, then sample the target prompt
                    noise = fresh_noise()
                    z_src = (1.0 - sigma) * x_src + sigma * noise
                    x_tar = z_src + (z_edit - x_src)
                v_tar = target_fn(x_tar, i, t)
                x_tar = x_tar + (sigma_next - sigma) * v_tar
                if inside is not None:  # outside the region: the source at the next level (x_src itself at 0)
                    x_tar = torch.where(inside, x_tar, (1.0 - sigma_next) * x_src + sigma_next * noise)
                check_finite(x_tar, i, t, "FlowEdit sampling")
                callback(i, t, x_tar)
    return z_edit if x_tar is None else x_tar
