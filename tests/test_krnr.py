"""K-RNR: the closed form equals the recursion, the adaptive variant equals order 2, edits start from it, and a
flow-matching model (Wan) is refused before any model work."""

import math

import pytest
import torch

from vidinvert.cli import main
from vidinvert.editing import EditConfig, EditStats, edit, start_latents
from vidinvert.errors import VidinvertError
from vidinvert.inversion import invert
from vidinvert.krnr import krnr, krnr_adaptive, krnr_coefficients


def _tensors(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mean, z, noise = (torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64) for _ in range(3))
    std = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64) + 0.1
    return mean, std, mean + std * z, noise


@pytest.mark.parametrize("alpha_bar", [0.0, 0.05, 0.5, 0.97, 1.0])
@pytest.mark.parametrize("order", [0, 1, 2, 3, 7])
def test_closed_form_is_the_recursion(alpha_bar, order):
    _, _, clean, noise = _tensors()
    a, b = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    recursive = noise.clone()
    for _ in range(order):
        recursive = a * clean + b * recursive
    assert torch.allclose(krnr(clean, noise, alpha_bar, order), recursive, rtol=0, atol=1e-12)


def test_low_orders_are_the_inverted_noise_and_forward_noising():
    _, _, clean, noise = _tensors()
    assert torch.equal(krnr(clean, noise, 0.4, 0), noise)
    assert torch.allclose(krnr(clean, noise, 0.4, 1), math.sqrt(0.4) * clean + math.sqrt(0.6) * noise, atol=1e-15)
    assert krnr_coefficients(0.0, 3) == (0.0, 1.0)  # zero SNR: K-RNR cannot bring the clean latent back


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_adaptive_variant_equals_order_two(order):
    mean, std, clean, noise = _tensors(1)
    adaptive = krnr_adaptive(clean, noise, 0.3, order, mean, std)
    assert torch.allclose(adaptive, krnr(clean, noise, 0.3, 2), atol=1e-7)
    # with the posterior mean as the clean latent (vidinvert's encode), every order gives order 2 of the mean
    assert torch.allclose(krnr_adaptive(mean, noise, 0.3, order), krnr(mean, noise, 0.3, 2), atol=1e-12)


def test_coefficients_refuse_bad_input():
    with pytest.raises(ValueError, match="order"):
        krnr_coefficients(0.5, -1)
    with pytest.raises(ValueError, match="alpha_bar"):
        krnr_coefficients(1.5, 1)


@pytest.fixture
def full_inversion(tiny_model, frames):
    return invert(tiny_model, tiny_model.encode(frames), steps=6)


def test_edit_strength_on_a_full_inversion_equals_a_partial_inversion(tiny_model, frames, full_inversion):
    partial = invert(tiny_model, tiny_model.encode(frames), steps=6, strength=0.5)
    assert torch.equal(partial.trajectory, full_inversion.trajectory[3:])
    stats = EditStats()
    from_full = edit(tiny_model, full_inversion, "a blue box", EditConfig(strength=0.5), stats=stats)
    assert stats.batch_rows == [3] * 3
    from_partial = edit(tiny_model, partial, "a blue box", EditConfig())
    assert torch.equal(from_full, from_partial)


def test_krnr_start_is_built_from_the_clean_latent_and_the_terminal_noise(tiny_model, full_inversion):
    config = EditConfig(strength=0.5, krnr=2)
    alpha = float(full_inversion.schedule(tiny_model)[3:].alpha_from[0])
    start = start_latents(full_inversion, 2, config, offset=3, alpha_bar=alpha)
    expected = krnr(full_inversion.clean, full_inversion.trajectory[0], alpha, 2)
    assert start.shape[0] == 2 and torch.equal(start[:1], expected) and torch.equal(start[1:], expected)
    out = edit(tiny_model, full_inversion, "a blue box", config)
    plain = edit(tiny_model, full_inversion, "a blue box", EditConfig(strength=0.5))
    assert out.shape == plain.shape and torch.isfinite(out).all() and not torch.equal(out, plain)


def test_krnr_at_the_zero_snr_step_warns_and_changes_nothing(tiny_model, full_inversion):
    with pytest.warns(UserWarning, match="zero-SNR"):
        out = edit(tiny_model, full_inversion, "a blue box", EditConfig(krnr=2))
    assert torch.equal(out, edit(tiny_model, full_inversion, "a blue box", EditConfig()))


def test_krnr_and_edit_strength_refusals(tiny_model, frames):
    with pytest.raises(VidinvertError, match="random start"):
        EditConfig(krnr=1, start="random")
    with pytest.raises(VidinvertError, match="order"):
        EditConfig(krnr_adaptive=True)
    with pytest.raises(VidinvertError, match="edit fraction must be"):
        EditConfig(strength=0.0)
    partial = invert(tiny_model, tiny_model.encode(frames), steps=6, strength=0.5)
    with pytest.raises(VidinvertError, match="holds 3") as err:
        edit(tiny_model, partial, "a blue box", EditConfig(strength=0.9))
    assert "\n" not in str(err.value)


@pytest.fixture
def clip(tmp_path, frames):
    from vidinvert.export import write_video

    return write_video(frames, tmp_path / "clip.mp4", fps=8)


KRNR_ON_FLOW = ("vidinvert: error: K-RNR is built on DDIM's alpha-bar levels and does not apply to flow-matching "
                "models such as Wan; drop --krnr")


def assert_krnr_on_wan_refused(clip, tmp_path, capsys) -> None:
    """``edit --krnr 2`` on tiny-wan exits 2 with the one K-RNR line and writes nothing."""
    out = tmp_path / "k.mp4"
    assert main(["edit", str(clip), "--model", "tiny-wan", "--prompt", "x", "--steps", "2", "--krnr", "2", "-o",
                 str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(KRNR_ON_FLOW), err
    assert not list(tmp_path.glob("k*"))


def test_cli_krnr_on_wan_is_refused_before_the_model_loads(clip, tmp_path, capsys, no_model):
    assert_krnr_on_wan_refused(clip, tmp_path, capsys)


def test_cli_krnr_on_a_model_known_only_once_loaded_is_refused_before_inverting(clip, tmp_path, capsys, monkeypatch):
    """A hub id's family is known once it is loaded: the refusal comes then, before the video is inverted."""
    import vidinvert.engine.plan
    import vidinvert.engine.source

    def no_inversion(*args, **kwargs):
        raise AssertionError("the inversion ran before K-RNR was refused")

    monkeypatch.setattr(vidinvert.engine.plan, "family_before_loading", lambda settings: None)
    monkeypatch.setattr(vidinvert.engine.source, "invert_source", no_inversion)
    assert_krnr_on_wan_refused(clip, tmp_path, capsys)
