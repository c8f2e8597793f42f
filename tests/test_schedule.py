"""The inverse schedule is the forward scheduler's own; diffusers' DDIMInverseScheduler(**config) is not (2b)."""

import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, DDIMInverseScheduler

from vidinvert.sampling import invert_ddim, step_coefficients, ddim_move
from vidinvert.schedule import schedule_from_scheduler
from vidinvert.tiny import scheduler_config


@pytest.mark.parametrize("style", ["2b", "5b"])
@pytest.mark.parametrize("steps", [10, 30, 50])
def test_schedule_reads_the_forward_alpha_table(style, steps):
    forward = CogVideoXDDIMScheduler(**scheduler_config(style))
    schedule = schedule_from_scheduler(forward, steps)
    forward.set_timesteps(steps)
    assert list(schedule.timesteps) == forward.timesteps.tolist()
    table = forward.alphas_cumprod.double()
    ratio = 1000 // steps
    for i, t in enumerate(schedule.timesteps):
        assert schedule.alpha_from[i] == table[t]
        expected_to = table[t - ratio] if t - ratio >= 0 else torch.tensor(1.0, dtype=torch.float64)
        assert schedule.alpha_to[i] == expected_to
    # the inversion walks exactly these levels backwards: same table, same timesteps, reversed
    inverse = DDIMInverseScheduler(**forward.config)
    inverse.set_timesteps(steps)
    assert list(reversed(schedule.timesteps)) == inverse.timesteps.tolist()


def test_reference_inverse_scheduler_drops_snr_shift_for_2b():
    """What the public script does: the inverse scheduler built from the forward config has another alpha table."""
    forward = CogVideoXDDIMScheduler(**scheduler_config("2b"))
    naive = DDIMInverseScheduler(**forward.config)
    gap = (naive.alphas_cumprod.double() - forward.alphas_cumprod.double()).abs().max().item()
    assert gap > 0.05  # snr_shift_scale=3.0 is silently ignored
    ours = schedule_from_scheduler(forward, 50)
    assert torch.equal(ours.alpha_from, forward.alphas_cumprod.double()[list(ours.timesteps)])
    # 5b (shift 1.0): the same up to float32 rounding of the betas
    forward5 = CogVideoXDDIMScheduler(**scheduler_config("5b"))
    naive5 = DDIMInverseScheduler(**forward5.config)
    assert (naive5.alphas_cumprod.double() - forward5.alphas_cumprod.double()).abs().max().item() < 1e-5


@pytest.mark.parametrize("style", ["2b", "5b"])
def test_ddim_inversion_matches_diffusers_inverse_scheduler_given_the_right_table(style):
    """Our DDIM inversion = DDIMInverseScheduler step for step, once its alpha table is the forward one."""
    forward = CogVideoXDDIMScheduler(**scheduler_config(style))
    steps = 20
    schedule = schedule_from_scheduler(forward, steps)
    inverse = DDIMInverseScheduler(**forward.config)
    inverse.alphas_cumprod = forward.alphas_cumprod.clone().float()  # the fix the reference lacks
    inverse.set_timesteps(steps)
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 4, generator=generator) * 0.3

    def model_fn(x, i, t):  # a smooth deterministic stand-in for the transformer
        return torch.tanh(torch.einsum("btchw,cd->btdhw", x, weight)) * (1 + t / 1000)

    x0 = torch.randn(1, 3, 4, 8, 8, generator=generator)
    ours = invert_ddim(model_fn, x0, schedule)
    x = x0.clone()
    theirs = []
    for t in inverse.timesteps.tolist():
        x = inverse.step(model_fn(x, None, t), t, x).prev_sample
        theirs.append(x)
    theirs = torch.stack(theirs).flip(0)  # to sampling order
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon", "sample"])
def test_step_coefficients_are_the_ddim_move(prediction_type):
    x, pred = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    for a_from, a_to in [(0.0, 0.05), (0.3, 0.5), (0.9, 1.0)]:
        if prediction_type == "epsilon" and a_from == 0.0:
            continue  # eps-prediction is undefined at zero SNR
        if prediction_type == "sample" and a_from == 1.0:
            continue
        coef_a, coef_b = step_coefficients(a_from, a_to, prediction_type)
        assert torch.allclose(coef_a * x + coef_b * pred, ddim_move(x, pred, a_from, a_to, prediction_type))
