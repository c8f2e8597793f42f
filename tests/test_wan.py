"""Wan (flow matching) as a second family: tiny Wan 2.1 / 2.2 pipelines built in code, checked against diffusers.

Mathematics first: the flow schedule is the scheduler's own sigmas, our Euler sampler reproduces
``WanPipeline.__call__``, inversion round trips, the injection processor equals ``WanAttnProcessor`` with injection
off, Wan 2.2's experts switch at the pipeline's boundary and TI2V's per-token timesteps match the pipeline.
"""

from __future__ import annotations

import pytest
import torch

from vidinvert.inversion import invert, text_model_fn
from vidinvert.metrics import relative_error
from vidinvert.models.wan import WanModel
from vidinvert.sampling import sample_ddim, split_prediction, step_coefficients
from vidinvert.schedule import flow_schedule_from_scheduler
from vidinvert.tiny_wan import TinyWanConfig, build_tiny_wan_pipeline, native_size


@pytest.fixture(scope="module")
def wan_pipes():
    """``{style: pipe}`` for the three tiny Wan layouts, float32 on the CPU."""
    return {style: build_tiny_wan_pipeline(TinyWanConfig(style=style)) for style in ("2.1", "2.2", "2.2-5b")}


@pytest.fixture
def wan(wan_pipes) -> WanModel:
    return WanModel(wan_pipes["2.1"], name="tiny-wan", native_size=native_size("2.1"))


def wan_frames(height: int = 48, width: int = 64, count: int = 9) -> torch.Tensor:
    """A smooth clip ``[F, 3, H, W]`` in [-1, 1] with a moving bright square."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    clip = []
    for f in range(count):
        background = torch.stack([0.6 * ys, 0.4 * xs, -0.3 + 0.2 * ys * xs])
        square = ((xs - (-0.6 + 0.12 * f)).abs() < 0.25) & (ys.abs() < 0.25)
        clip.append(torch.where(square, torch.tensor([0.9, -0.8, -0.8]).view(3, 1, 1), background))
    return torch.stack(clip).float()


# ---- step 1: schedule and sampler ------------------------------------------------------------------------------
def test_flow_schedule_is_the_schedulers_own_sigmas(wan_pipes):
    """Euler: sigmas after shift 7 and the appended final 0; UniPC flow config: its sigmas and int timesteps."""
    for style in ("2.1", "2.2"):
        scheduler = wan_pipes[style].scheduler
        schedule = flow_schedule_from_scheduler(scheduler, 10)
        reference = type(scheduler).from_config(scheduler.config)
        reference.set_timesteps(10)
        assert schedule.prediction_type == "flow" and len(schedule) == 10
        assert torch.equal(schedule.sigma_from, reference.sigmas[:-1].double())
        assert torch.equal(schedule.sigma_to, reference.sigmas[1:].double())
        assert list(schedule.timesteps) == reference.timesteps.tolist()
        assert float(schedule.sigma_to[-1]) == 0.0
    # the shift formula, independently of diffusers' code: the Euler scheduler's sigma_min is itself the shifted
    # 1/1000 (its __init__ shifts the training sigmas), and set_timesteps spaces evenly between 1 and it, then shifts
    shift = 7.0
    shifted = lambda s: shift * s / (1 + (shift - 1) * s)  # noqa: E731
    sigma = torch.linspace(1.0, shifted(1 / 1000), 10, dtype=torch.float64)[3]
    before = wan_pipes["2.1"].scheduler.timesteps.clone()
    ours = flow_schedule_from_scheduler(wan_pipes["2.1"].scheduler, 10).sigma_from[3]
    assert abs(float(ours) - shifted(float(sigma))) < 1e-6
    assert torch.equal(wan_pipes["2.1"].scheduler.timesteps, before)  # the pipeline's scheduler is untouched


def test_flow_step_algebra():
    """x0 = x - s v and eps = x + (1 - s) v recombine to x; the Euler step is linear with A = 1, B = s_to - s_from."""
    x, v = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    s, s_to = 0.7, 0.4
    x0, eps = split_prediction(x, v, s, "flow")
    assert torch.allclose((1 - s) * x0 + s * eps, x) and torch.allclose(eps - x0, v)
    a, b = step_coefficients(s, s_to, "flow")
    assert (a, b) == (1.0, s_to - s)
    assert torch.allclose((1 - s_to) * x0 + s_to * eps, a * x + b * v)  # moving along the same (x0, eps) line


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_euler_sampler_equals_wan_pipeline(wan, guidance):
    """Our Euler sampler + guidance reproduces WanPipeline.__call__ (same noise, prompt, negative prompt, steps)."""
    noise = torch.randn(1, 16, 3, 6, 8, generator=torch.Generator().manual_seed(3))  # [B, C, T, h, w], pipeline layout
    prompt, negative = "a red disc moving right", "gray"
    expected = wan.pipe(prompt=prompt, negative_prompt=negative, num_frames=9, height=48, width=64,
                        num_inference_steps=6, guidance_scale=guidance, latents=noise.clone(), output_type="latent",
                        max_sequence_length=wan.text_length).frames  # [1, C, T, h, w]
    fn = text_model_fn(wan, prompt, negative, guidance)
    ours = sample_ddim(fn, noise.permute(0, 2, 1, 3, 4), wan.schedule(6))  # [1, T, C, h, w]
    assert torch.allclose(ours.permute(0, 2, 1, 3, 4), expected, atol=1e-5, rtol=1e-5)
    assert relative_error(ours.permute(0, 2, 1, 3, 4), expected) < 1e-6


def test_encode_decode_follow_the_pipelines_normalisation(wan):
    """encode = (z - mean) / std of the posterior mean; decode undoes it exactly as WanPipeline.__call__ does."""
    frames = wan_frames()
    latents = wan.encode(frames)  # [1, T, C, h, w]
    assert latents.shape == (1, 3, 16, 6, 8)
    raw = wan.vae.encode(frames.unsqueeze(0).permute(0, 2, 1, 3, 4)).latent_dist.mode()  # [1, C, T, h, w]
    mean = torch.tensor(wan.vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(wan.vae.config.latents_std).view(1, 16, 1, 1, 1)
    assert torch.allclose(latents.permute(0, 2, 1, 3, 4), (raw - mean) / std, atol=1e-5, rtol=1e-5)
    video = wan.decode(latents)  # [1, F, 3, H, W]
    direct = wan.vae.decode(raw).sample.clamp(-1, 1)  # [1, 3, F, H, W]
    assert video.shape == (1, 9, 3, 48, 64)
    assert torch.allclose(video.permute(0, 2, 1, 3, 4), direct, atol=1e-5)


def test_wan_frame_and_size_rules(wan):
    from vidinvert.errors import VidinvertError
    from conftest import assert_one_line

    assert wan.frames_for(81) == 81 and wan.frames_for(84) == 81 and wan.frames_for(10) == 9
    assert wan.size_multiple == 16 and WanModel(wan.pipe).native_size() == (480, 832)
    with pytest.raises(VidinvertError) as err:
        wan.check_frames(wan_frames(count=8))
    assert_one_line(err.value, "4k+1")
    with pytest.raises(VidinvertError) as err:
        wan.check_frames(wan_frames(height=40))
    assert_one_line(err.value, "divisible by 16")


# ---- step 2: inversion ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps,prompt,guidance", [(25, "", 1.0), (50, "", 1.0), (25, "a red square", 5.0)])
def test_fixed_point_inversion_round_trips(wan, steps, prompt, guidance):
    """fp32: the Euler step is linear in v, so the fixed-point solver inverts it exactly (<= 1e-5 relative latent
    error; measured 2.1e-6 to 3.5e-6 on random weights); plain inversion (1 evaluation per step) stays far off."""
    latents = wan.encode(wan_frames())
    exact = invert(wan, latents, steps=steps, prompt=prompt, guidance=guidance, method="fixed-point", tol=1e-6,
                   max_iter=12)
    fn = text_model_fn(wan, prompt, "", guidance)
    exact_error = relative_error(sample_ddim(fn, exact.noise, exact.schedule(wan)), latents)
    plain = invert(wan, latents, steps=steps, prompt=prompt, guidance=guidance)
    plain_error = relative_error(sample_ddim(fn, plain.noise, plain.schedule(wan)), latents)
    print(f"steps {steps} guidance {guidance}: fixed-point {exact_error:.2e} "
          f"({sum(exact.meta.iterations) / steps:.2f} evaluations/step), plain {plain_error:.2e}")
    assert exact_error <= 1e-5
    assert plain_error > 100 * exact_error
    assert exact.trajectory.shape == (steps, *latents.shape)
    assert float(exact.schedule(wan).sigma_from[0]) == 1.0  # inverted all the way to pure noise


def test_plain_inversion_is_the_backward_euler_step(wan):
    """Plain inversion step i moves x at sigma_to[i] to sigma_from[i] with v evaluated at x (and timestep t_i)."""
    latents = wan.encode(wan_frames())
    inversion = invert(wan, latents, steps=4)
    schedule = inversion.schedule(wan)
    x = latents
    for i in reversed(range(4)):
        v = wan.predict(x, schedule.timesteps[i], wan.encode_text([""]))
        x = x + (float(schedule.sigma_from[i]) - float(schedule.sigma_to[i])) * v
        assert torch.allclose(inversion.trajectory[i], x, atol=1e-6)
