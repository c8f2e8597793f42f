"""``sample()`` with the public reference script's contract (CogVideo ``inference/ddim_inversion.py``).

Code written against that script ports by changing one import::

    from vidinvert.compat import sample   # instead of the script's own sample()

    inverse = sample(pipe, video_latents, DDIMInverseScheduler(**pipe.scheduler.config), prompt="", ...)
    recon = sample(pipe, torch.randn_like(video_latents), pipe.scheduler, prompt=prompt,
                   reference_latents=reversed(inverse))

The contract is kept (arguments, return layout, the reference branch seeing the edit prompt); the known faults are
not: an inverse scheduler passed in is used only to choose the direction, the alpha table always comes from the
pipeline's own scheduler (so ``snr_shift_scale`` is honoured), guidance with identical prompts costs one batch row,
models without RoPE (2b) work, latents stay float32, and the attention processors are installed and restored here.
"""

from __future__ import annotations

import torch

from .attention import BatchLayout, InjectionConfig, InjectionState
from .errors import VidinvertError
from .guidance import dynamic_scale, guided_texts, needs_uncond
from .models.cogvideox import VideoModel
from .sampling import invert_ddim, sample_ddim
from .schedule import schedule_from_scheduler


def _is_inverse(scheduler) -> bool:
    return "Inverse" in type(scheduler).__name__


def sample(
    pipeline,
    latents: torch.Tensor,
    scheduler,
    prompt: str | None = None,
    negative_prompt: str | None = None,
    num_inference_steps: int = 50,
    guidance_scale: float = 6,
    use_dynamic_cfg: bool = False,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    attention_kwargs: dict | None = None,
    reference_latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run DDIM forwards (or backwards, given an inverse scheduler) and return every step's latents.

    Args:
        pipeline: a ``CogVideoXPipeline``.
        latents: ``[B, T, C, h, w]``: clean latents to invert, or the starting noise to sample from.
        scheduler: ``DDIMInverseScheduler`` (any class named ``*Inverse*``) to invert, else a forward DDIM scheduler
            (its config must equal the pipeline scheduler's: the alpha table is read from the pipeline's).
        prompt: text; ``None`` means ``""``.
        negative_prompt: uncond text; ``None`` means ``""``.
        num_inference_steps: steps.
        guidance_scale: classifier-free guidance scale.
        use_dynamic_cfg: CogVideoX's dynamic guidance schedule.
        eta: must be 0 (deterministic DDIM), as the script used it.
        generator: unused (eta = 0 draws no noise); accepted for compatibility.
        attention_kwargs: must be empty; accepted for compatibility.
        reference_latents: ``[N, B, T, C, h, w]`` in sampling order (``reversed(inverse_trajectory)``): switches on
            key/value injection with the script's layout (reference rows see the same texts as the main rows).

    Returns:
        float32 ``[N, B, T, C, h, w]``: the latents after each step, in the order the steps ran (for inversion the
        least noisy first, as the script returns them).
    """
    if eta != 0.0:
        raise VidinvertError(f"eta={eta} is not supported", "use eta=0 (deterministic DDIM), as the reference does")
    if attention_kwargs:
        raise VidinvertError("attention_kwargs are not supported here", "configure injection with vidinvert.edit")
    model = pipeline if isinstance(pipeline, VideoModel) else VideoModel(pipeline)
    if not _is_inverse(scheduler) and dict(scheduler.config) != dict(model.pipe.scheduler.config):
        raise VidinvertError(
            "the scheduler passed differs from the pipeline's scheduler",
            "pass pipeline.scheduler (the alpha table is read from it)",
        )
    schedule = schedule_from_scheduler(model.pipe.scheduler, num_inference_steps)
    prompt = "" if prompt is None else prompt
    negative_prompt = "" if negative_prompt is None else negative_prompt
    with_uncond = needs_uncond(guidance_scale, prompt, negative_prompt)
    texts = guided_texts([prompt], negative_prompt, with_uncond)
    rows = len(texts)
    batch = latents.shape[0]
    inject = reference_latents is not None
    text = model.encode_text(texts * (2 if inject else 1)).repeat_interleave(batch, dim=0)  # [(R) * G * B, L, D]
    state = InjectionState()
    config = InjectionConfig(enabled=inject, reference_text="edit")
    layout = BatchLayout.build(rows * batch, shared_reference=False)

    def model_fn(x: torch.Tensor, i: int, t: int) -> torch.Tensor:
        main = x.repeat(rows, 1, 1, 1, 1)  # [G * B, ...], uncond block first
        if inject:
            reference = reference_latents[i].to(main.device, torch.float32).repeat(rows, 1, 1, 1, 1)
            state.layout = layout
            pred = model.predict(torch.cat([main, reference]), t, text)[: layout.num_main]
        else:
            pred = model.predict(main, t, text)
        if not with_uncond:
            return pred
        scale = dynamic_scale(guidance_scale, t, num_inference_steps) if use_dynamic_cfg else guidance_scale
        uncond, cond = pred.chunk(2)
        return uncond + scale * (cond - uncond)

    steps: list[torch.Tensor] = []
    with model.injected(config, state):
        if _is_inverse(scheduler):
            trajectory = invert_ddim(model_fn, latents.float(), schedule)  # sampling order
            return trajectory.flip(0)  # the order the inversion ran: least noisy first
        sample_ddim(model_fn, latents.float(), schedule, callback=lambda i, t, x: steps.append(x))
    return torch.stack(steps)

