"""Editing: batch layouts, exact reconstruction through injection, save/load equivalence, seeds."""

import pytest
import torch

from vidinvert.attention import InjectionConfig
from vidinvert.editing import EditConfig, EditStats, edit
from vidinvert.errors import VidinvertError
from vidinvert.inversion import Inversion, invert
from vidinvert.metrics import relative_error

from test_inversion import CallCounter


@pytest.fixture
def inversion(tiny_model, frames):
    return invert(tiny_model, tiny_model.encode(frames), steps=6)


def test_default_layout_shares_one_reference_row(tiny_model, inversion):
    counter = CallCounter(tiny_model.transformer)
    try:
        stats = EditStats()
        out = edit(tiny_model, inversion, "a blue box", EditConfig(guidance=6.0), stats=stats)
    finally:
        counter.close()
    assert out.shape == inversion.clean.shape
    assert counter.batches == [3] * 6 == stats.batch_rows  # uncond + cond + one shared reference row


def test_reference_compatible_layout_is_the_public_scripts_batch_of_four(tiny_model, inversion):
    stats = EditStats()
    edit(tiny_model, inversion, "a blue box", EditConfig(injection=InjectionConfig(reference_text="edit")), stats=stats)
    assert stats.batch_rows == [4] * 6


def test_several_prompts_share_the_reference_and_match_single_runs(tiny_model, inversion):
    stats = EditStats()
    prompts = ["a blue box", "a green disc"]
    both = edit(tiny_model, inversion, prompts, EditConfig(), stats=stats)
    assert stats.batch_rows == [5] * 6  # 2 prompts x (uncond, cond) + 1 reference row
    for k, prompt in enumerate(prompts):
        alone = edit(tiny_model, inversion, prompt, EditConfig())
        assert torch.allclose(both[k : k + 1], alone, atol=1e-5)


def test_injection_window_and_off(tiny_model, inversion):
    stats = EditStats()
    edit(tiny_model, inversion, "a blue box", EditConfig(injection=InjectionConfig(steps=0.5)), stats=stats)
    assert stats.batch_rows == [3, 3, 3, 2, 2, 2]
    stats = EditStats()
    edit(tiny_model, inversion, "a blue box", EditConfig(guidance=1.0, injection=InjectionConfig(enabled=False)), stats=stats)
    assert stats.batch_rows == [1] * 6


def test_reference_weight_moves_the_edit_towards_the_source(tiny_model, inversion):
    plain = edit(tiny_model, inversion, "a blue box", EditConfig())
    weighted = edit(tiny_model, inversion, "a blue box",
                    EditConfig(injection=InjectionConfig(reference_weight=50.0, reference_weight_steps=1.0)))
    source = edit(tiny_model, inversion, "", EditConfig(guidance=1.0))  # the inversion's own text: the source back
    assert torch.isfinite(weighted).all() and relative_error(weighted, plain) > 1e-4
    assert relative_error(weighted, source) < relative_error(plain, source)


def test_injection_changes_the_result(tiny_model, inversion):
    on = edit(tiny_model, inversion, "a blue box", EditConfig())
    off = edit(tiny_model, inversion, "a blue box", EditConfig(injection=InjectionConfig(enabled=False)))
    assert relative_error(on, off) > 1e-4


def test_exact_reconstruction_holds_with_injection_on(tiny_model, frames):
    """Fixed-point inversion + inverted start + inversion prompt: the main branch tracks the reference exactly."""
    latents = tiny_model.encode(frames)
    inversion = invert(tiny_model, latents, steps=25, method="fixed-point", tol=1e-6, max_iter=20)
    result = edit(tiny_model, inversion, "", EditConfig(guidance=1.0))
    assert relative_error(result, latents) < 2e-5
    plain = invert(tiny_model, latents, steps=25)
    assert relative_error(edit(tiny_model, plain, "", EditConfig(guidance=1.0)), latents) > 1e-2


def test_save_load_then_edit_is_identical(tiny_model, inversion, tmp_path):
    direct = edit(tiny_model, inversion, "a blue box", EditConfig())
    loaded = Inversion.load(inversion.save(tmp_path / "x.inv"))
    assert torch.equal(edit(tiny_model, loaded, "a blue box", EditConfig()), direct)


def test_random_start_is_seeded(tiny_model, inversion):
    first = edit(tiny_model, inversion, "a blue box", EditConfig(start="random", seed=7))
    again = edit(tiny_model, inversion, "a blue box", EditConfig(start="random", seed=7))
    other = edit(tiny_model, inversion, "a blue box", EditConfig(start="random", seed=8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_edit_refuses_bad_settings(tiny_model, inversion, tiny_pipes):
    with pytest.raises(VidinvertError, match="guidance must be"):
        EditConfig(guidance=0.5)
    with pytest.raises(VidinvertError, match="unknown start"):
        EditConfig(start="middle")
    with pytest.raises(VidinvertError, match="no edit prompt"):
        edit(tiny_model, inversion, [], EditConfig())
    from vidinvert.model import VideoModel

    other = VideoModel(tiny_pipes["2b" if "5b" in tiny_model.name else "5b"])
    with pytest.raises(VidinvertError, match="another model"):
        edit(other, inversion, "a blue box")
