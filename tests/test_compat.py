"""``vidinvert.compat.sample`` keeps the public script's contract, and fixes its faults."""

import torch
from diffusers import DDIMInverseScheduler

from vidinvert.attention import InjectionConfig
from vidinvert.compat import sample
from vidinvert.counting import counting
from vidinvert.editing import EditConfig, edit
from vidinvert.inversion import invert


def test_reference_workflow_ports_by_changing_one_import(tiny_model, frames):
    pipe = tiny_model.pipe
    latents = tiny_model.encode(frames)
    with counting(pipe.transformer) as calls:
        inverse = sample(pipe, latents, DDIMInverseScheduler(**pipe.scheduler.config), prompt="",
                         num_inference_steps=5, guidance_scale=6)
        recon = sample(pipe, inverse[-1], pipe.scheduler, prompt="a blue box", num_inference_steps=5,
                       guidance_scale=6, reference_latents=reversed(inverse))
    assert inverse.shape == recon.shape == (5, *latents.shape)
    assert calls.batches == [1] * 5 + [4] * 5  # inversion: one row, not two identical ones; editing: batch of 4
    # same numbers as the library's own functions (alpha table from the forward scheduler, float32)
    ours = invert(tiny_model, latents, steps=5)
    assert torch.allclose(inverse.flip(0), ours.trajectory, atol=1e-6)
    edited = edit(tiny_model, ours, "a blue box",
                  EditConfig(guidance=6, start="inverted", injection=InjectionConfig(reference_text="edit")))
    assert torch.allclose(recon[-1], edited, atol=1e-5)
    assert inverse.dtype == recon.dtype == torch.float32
