"""Editing: batch layouts, exact reconstruction through injection, save/load equivalence, seeds."""

import pytest
import torch

from vidinvert.attention import InjectionConfig
from vidinvert.counting import counting
from vidinvert.editing import EditConfig, EditStats, edit
from vidinvert.errors import VidinvertError
from vidinvert.inversion import Inversion, invert
from vidinvert.metrics import relative_error


@pytest.fixture
def inversion(tiny_model, frames):
    return invert(tiny_model, tiny_model.encode(frames), steps=6)


ONE_CALL = dict(rows_per_call=None)  # every row of a step in one transformer call (the default on GPUs)


def test_default_layout_shares_one_reference_row(tiny_model, inversion):
    stats = EditStats()
    with counting(tiny_model.transformer) as calls:
        out = edit(tiny_model, inversion, "a blue box", EditConfig(guidance=6.0, **ONE_CALL), stats=stats)
    assert out.shape == inversion.clean.shape
    assert calls.batches == [3] * 6 == stats.batch_rows  # uncond + cond + one shared reference row


def test_reference_first_then_main_rows_in_small_calls_equals_one_call(tiny_model, inversion):
    """With ``rows_per_call`` the shared reference row runs alone and the main rows follow in calls of at most that
    many rows, reading the keys/values it left: the same edit up to float rounding."""
    prompts = ["a blue box", "a green disc", "a red ball"]
    one_call = edit(tiny_model, inversion, prompts, EditConfig(**ONE_CALL))
    for cap, calls in ((2, [1, 2, 2, 2]), (4, [1, 4, 2]), (6, [1, 6])):
        stats = EditStats()
        split = edit(tiny_model, inversion, prompts, EditConfig(rows_per_call=cap), stats=stats)
        assert stats.batch_rows == calls * 6
        assert relative_error(split, one_call) < 1e-5
    stats = EditStats()
    edit(tiny_model, inversion, prompts, EditConfig(), stats=stats)  # "auto": rows this small run in one call
    assert stats.batch_rows == [7] * 6
    weighted = InjectionConfig(reference_weight=8.0, reference_weight_fraction=0.5)  # the bias reaches the split path
    assert relative_error(edit(tiny_model, inversion, prompts, EditConfig(injection=weighted, rows_per_call=2)),
                          edit(tiny_model, inversion, prompts, EditConfig(injection=weighted, **ONE_CALL))) < 1e-5
    with pytest.raises(VidinvertError, match="rows per call"):
        EditConfig(rows_per_call=0)


def test_reference_compatible_layout_is_the_public_scripts_batch_of_four(tiny_model, inversion):
    stats = EditStats()
    edit(tiny_model, inversion, "a blue box", EditConfig(injection=InjectionConfig(reference_text="edit")), stats=stats)
    assert stats.batch_rows == [4] * 6


def test_several_prompts_share_the_reference_and_match_single_runs(tiny_model, inversion):
    stats = EditStats()
    prompts = ["a blue box", "a green disc"]
    both = edit(tiny_model, inversion, prompts, EditConfig(**ONE_CALL), stats=stats)
    assert stats.batch_rows == [5] * 6  # 2 prompts x (uncond, cond) + 1 reference row
    for k, prompt in enumerate(prompts):
        alone = edit(tiny_model, inversion, prompt, EditConfig(**ONE_CALL))
        assert torch.allclose(both[k : k + 1], alone, atol=1e-5)


def test_injection_window_and_off(tiny_model, inversion):
    stats = EditStats()
    edit(tiny_model, inversion, "a blue box", EditConfig(injection=InjectionConfig(step_fraction=0.5), **ONE_CALL), stats=stats)
    assert stats.batch_rows == [3, 3, 3, 2, 2, 2]
    stats = EditStats()
    edit(tiny_model, inversion, "a blue box", EditConfig(injection=InjectionConfig(step_fraction=0.5), rows_per_call=2),
         stats=stats)
    assert stats.batch_rows == [1, 2] * 3 + [2] * 3  # the reference row alone while injecting
    stats = EditStats()
    edit(tiny_model, inversion, "a blue box", EditConfig(guidance=1.0, injection=InjectionConfig(enabled=False)), stats=stats)
    assert stats.batch_rows == [1] * 6


def test_reference_weight_moves_the_edit_towards_the_source(tiny_model, inversion):
    plain = edit(tiny_model, inversion, "a blue box", EditConfig())
    weighted = edit(tiny_model, inversion, "a blue box",
                    EditConfig(injection=InjectionConfig(reference_weight=50.0, reference_weight_fraction=1.0)))
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
    from vidinvert.models import VideoModel

    other = VideoModel(tiny_pipes["2b" if "5b" in tiny_model.name else "5b"])
    with pytest.raises(VidinvertError, match="another model"):
        edit(other, inversion, "a blue box")


def test_auto_rows_per_call_splits_only_large_rows_on_the_cpu(tiny_model):
    from vidinvert.editing import SPLIT_MIN_VALUES, resolve_rows_per_call

    width = tiny_model.config.num_attention_heads * tiny_model.config.attention_head_dim
    text = tiny_model.config.max_text_seq_length
    small, large = (1, 3, 4, 8, 8), (1, 13, 4, 32, 32)  # 16 + 3 x 4 x 4 tokens; 16 + 13 x 16 x 16 tokens
    assert (text + 48) * width < SPLIT_MIN_VALUES <= (text + 13 * 256) * width
    assert resolve_rows_per_call("auto", tiny_model, small) is None
    assert resolve_rows_per_call("auto", tiny_model, large) == 2
    assert resolve_rows_per_call(3, tiny_model, small) == 3 and resolve_rows_per_call(None, tiny_model, large) is None


def _recording_predict(calls):
    """A stand-in transformer: records each call's rows and texts, predicts ``rows * (1 + text)`` per row."""

    def predict(rows, t, text):
        calls.append((rows.clone(), text.clone()))
        return rows * (1 + text.view(-1, 1, 1, 1, 1))

    return predict


def test_guidance_and_reference_row_wrap_the_model_function_in_one_call():
    """``cfg(with_reference(...))``: per step one call of ``[u_1, c_1, u_2, c_2 | reference]``, the reference row
    dropped from the result, and ``u + s (c - u)`` per prompt exactly as ``combine`` computes it."""
    from vidinvert.guidance import Cfg, cfg, combine, conditioned, with_reference

    calls = []
    text = torch.tensor([0.0, 1.0, 0.0, 2.0, 5.0]).view(5, 1, 1)  # [neg, p1, neg, p2 | reference] as [N, L, D]
    reference = torch.full((1, 1, 1, 2, 2), 7.0)
    fn = with_reference(conditioned(_recording_predict(calls), text), lambda i: reference * (i + 1), 1)
    model_fn = cfg(fn, Cfg(lambda i, t: 3.0 + i, True))
    x = torch.stack([torch.full((1, 1, 2, 2), 1.5), torch.full((1, 1, 2, 2), -0.5)])  # [K=2, T, C, h, w]
    out = model_fn(x, 1, 900)
    assert model_fn.batch_rows == 2 and len(calls) == 1
    rows, texts = calls[0]
    assert torch.equal(rows, torch.cat([x.repeat_interleave(2, dim=0), 2 * reference]))  # [2K + 1] rows
    assert torch.equal(texts, text)
    pred = x.repeat_interleave(2, dim=0) * (1 + text[:4].view(4, 1, 1, 1, 1))
    assert torch.equal(out, combine(pred, 2, 4.0, True)) and out.shape == x.shape


def test_guidance_without_uncond_evaluates_the_cond_rows_alone():
    """With nothing for guidance to change, the latents themselves go in (one row each) and come back unmixed;
    a text of one row serves every latent row."""
    from vidinvert.guidance import Cfg, cfg, conditioned

    calls = []
    model_fn = cfg(conditioned(_recording_predict(calls), torch.full((1, 1, 1), 2.0)), Cfg(6.0, False))
    x = torch.randn(3, 1, 1, 2, 2)
    out = model_fn(x, 0, 999)
    assert model_fn.batch_rows == 1 and len(calls) == 1
    assert torch.equal(calls[0][0], x) and torch.equal(calls[0][1], torch.full((3, 1, 1), 2.0))
    assert torch.equal(out, x * 3.0)


def test_join_rows_splits_a_prediction_back_per_group():
    from vidinvert.guidance import join_rows

    a, b = torch.zeros(2, 3), torch.ones(4, 3)
    rows, split = join_rows(a, b)
    assert rows.shape == (6, 3)
    first, second = split(rows * 2)
    assert torch.equal(first, a) and torch.equal(second, 2 * b)
