"""Local blend: the mask is empty where the prompts agree, and outside the mask the edit is exactly the source."""

import pytest
import torch

from vidinvert.blend import BlendConfig, blend_step, edit_mask, mask_levels
from vidinvert.editing import EditConfig, EditStats, edit
from vidinvert.errors import VidinvertError
from vidinvert.inversion import invert

SOURCE = "a red box"


@pytest.fixture
def inversion(tiny_model, frames):
    return invert(tiny_model, tiny_model.encode(frames), steps=6, prompt=SOURCE)


def test_blend_step_takes_the_edit_inside_and_the_source_outside():
    edited = torch.randn(2, 3, 4, 5, 5)
    source = torch.randn(1, 3, 4, 5, 5)
    mask = (torch.rand(2, 3, 1, 5, 5) > 0.5).float()
    out = blend_step(mask, edited, source)
    inside = mask.expand_as(edited).bool()
    assert torch.equal(out[inside], edited[inside])
    assert torch.equal(out[~inside], source.expand_as(edited)[~inside])


def test_mask_levels_are_mid_schedule_and_distinct():
    assert mask_levels(50, 5) == [15, 20, 25, 30, 35]
    assert mask_levels(6, 5) == [2, 3, 4]  # rounding merges levels on short schedules
    assert mask_levels(1, 5) == [0] and mask_levels(10, 1) == [5]


def test_agreeing_prompts_give_an_empty_mask_and_the_edit_is_the_source(tiny_model, inversion):
    stats = EditStats()
    config = EditConfig(guidance=1.0, blend=BlendConfig(enabled=True))  # source text: the inversion's prompt
    out = edit(tiny_model, inversion, SOURCE, config, stats=stats)
    assert stats.blend_coverage == [0.0]
    assert torch.equal(out, inversion.clean.float())  # every step put back to the stored trajectory


def test_outside_the_mask_the_edit_equals_the_source_exactly(tiny_model, inversion):
    blend = BlendConfig(enabled=True, grow=1)
    prompts = [SOURCE, "a blue ball"]
    mask = edit_mask(tiny_model, inversion, "", prompts, blend)  # [K, T, 1, h, w]
    _, frames, _, height, width = inversion.clean.shape
    assert mask.shape == (2, frames, 1, height, width)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask[0].sum() == 0 and mask[1].sum() > 0  # the same text changes nothing; another text something
    assert (mask[1].flatten(1).sum(1) > 0).all()  # every latent frame has its edited region
    stats = EditStats()
    out = edit(tiny_model, inversion, prompts, EditConfig(guidance=6.0, blend=blend), stats=stats)
    clean = inversion.clean.float().expand_as(out)
    outside = (mask == 0).expand_as(out)
    assert torch.equal(out[outside], clean[outside])
    assert not torch.equal(out[~outside], clean[~outside])
    assert stats.blend_coverage == pytest.approx(mask.mean(dim=(1, 2, 3, 4)).tolist())
    assert stats.mask_rows == [3] * len(mask_levels(6, blend.levels))  # source + 2 prompts per mask call


def test_blending_on_no_step_is_the_plain_edit(tiny_model, inversion):
    plain = edit(tiny_model, inversion, "a blue ball", EditConfig())
    unblended = edit(tiny_model, inversion, "a blue ball", EditConfig(blend=BlendConfig(enabled=True, step_fraction=0.0)))
    assert torch.equal(plain, unblended)


def test_without_a_source_description_the_mask_is_taken_against_the_empty_text(tiny_model, frames):
    plain = invert(tiny_model, tiny_model.encode(frames), steps=4)  # inverted with the empty prompt
    blend = BlendConfig(enabled=True)
    empty, edited = edit_mask(tiny_model, plain, "", ["", "a blue ball"], blend)  # DiffEdit's empty reference text
    assert empty.sum() == 0 and edited.sum() > 0  # the empty text agrees with itself; an edit prompt does not
    out = edit(tiny_model, plain, "a blue ball", EditConfig(blend=blend))
    outside = (edited == 0).expand_as(out[0])
    assert torch.equal(out[0][outside], plain.clean[0].float()[outside])


def test_blend_refuses_bad_settings():
    for bad in (dict(threshold=0.0), dict(threshold=1.0), dict(grow=-1), dict(levels=0), dict(steps=1.5)):
        with pytest.raises(VidinvertError, match="blend"):
            BlendConfig(**bad)
