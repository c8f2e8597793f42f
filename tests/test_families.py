"""What every model family does the same way (``models/family.py``, ``models/injection.py``), tested once over the
tiny models of every layout: CogVideoX 5b / 2b / 1.5 and Wan 2.1 / 2.2 A14B (two experts) / 2.2 TI2V-5B.

Family-specific mathematics (schedules, samplers against the pipelines, explicit attention sums, experts, per-token
timesteps) lives in test_loading.py, test_attention.py and test_wan.py.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import assert_one_line, assert_one_line_error, moving_square
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

import vidinvert
from vidinvert.attention import BatchLayout, InjectionConfig, InjectionState
from vidinvert.errors import VidinvertError
from vidinvert.models import CogVideoXModel, WanModel, adapter_for, load_pipeline
from vidinvert.models.cogvideox_attention import CogVideoXInjectionProcessor
from vidinvert.models.wan_attention import WanInjectionProcessor

# tiny name: (adapter class, diffusers' own self-attention processor, ours, latents [1, T, C', h, w] of the clip)
TIMESTEPS = (900, 300)  # one on each side of Wan 2.2 A14B's expert boundary (875)
FAMILIES = {
    "tiny": (CogVideoXModel, CogVideoXAttnProcessor2_0, CogVideoXInjectionProcessor, (1, 3, 4, 8, 8)),
    "tiny-2b": (CogVideoXModel, CogVideoXAttnProcessor2_0, CogVideoXInjectionProcessor, (1, 3, 4, 8, 8)),
    "tiny-1.5": (CogVideoXModel, CogVideoXAttnProcessor2_0, CogVideoXInjectionProcessor, (1, 3, 4, 8, 8)),
    "tiny-wan": (WanModel, WanAttnProcessor, WanInjectionProcessor, (1, 3, 16, 6, 8)),
    "tiny-wan22": (WanModel, WanAttnProcessor, WanInjectionProcessor, (1, 3, 16, 6, 8)),
    "tiny-wan22-5b": (WanModel, WanAttnProcessor, WanInjectionProcessor, (1, 3, 48, 4, 4)),
}




@pytest.fixture(params=list(FAMILIES))
def model(request, pipes):
    """The adapter of each tiny layout in turn, chosen by the pipeline's class."""
    return adapter_for(pipes(request.param), request.param)


def clip(model) -> torch.Tensor:
    """The 9-frame moving-square clip ``[9, 3, H, W]`` at the model's native size."""
    return moving_square(*model.native_size(), 9)


def _inputs(model, batch=3, seed=0):
    """Latents ``[batch, 3, C', h, w]`` at the native size and prompt embeddings ``[batch, L, D]``."""
    height, width = model.native_size()
    shape = (batch, 3, model.transformer.config.in_channels, height // model.spatial_factor,
             width // model.spatial_factor)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return x, model.encode_text(["a red disc moving right", "", "a blue box"][:batch])


def _reference_scaling(model, raw: torch.Tensor) -> torch.Tensor:
    """The family's latent scaling written out independently: ``[1, C', T, h, w]`` -> ``[1, T, C', h, w]``."""
    if model.family == "cogvideox":  # per diffusers pipeline_cogvideox.py
        scaled = raw * model.vae.config.scaling_factor
    else:  # per diffusers pipeline_wan.py: (z - mean) / std per channel
        shape = (1, model.vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(model.vae.config.latents_mean).view(shape)
        std = torch.tensor(model.vae.config.latents_std).view(shape)
        scaled = (raw - mean) / std
    return scaled.permute(0, 2, 1, 3, 4)


# ---- adapters -------------------------------------------------------------------------------------------------
def test_registry_picks_the_adapter_by_pipeline_class(model):
    cls, *_ = FAMILIES[model.name]
    assert type(model) is cls and model.family == {CogVideoXModel: "cogvideox", WanModel: "wan"}[cls]
    config = model.transformer.config
    assert model.num_blocks == 2 and model.attention_width() == config.num_attention_heads * config.attention_head_dim
    assert model.experts == ((model.transformer, model.transformer_2) if model.name == "tiny-wan22"
                             else (model.transformer,))


@pytest.mark.parametrize("cls,label", [(CogVideoXModel, "CogVideoX"), (WanModel, "Wan")])
def test_a_pipeline_of_another_kind_is_refused(cls, label):
    class Fake:
        transformer = vae = text_encoder = tokenizer = scheduler = None

    with pytest.raises(VidinvertError, match=f"not a {label}"):
        cls(Fake())


def test_encode_decode_shapes_dtypes_and_scaling(model):
    """encode = the family's scaling of the posterior mean, float32 ``[1, T, C', h, w]``; decode undoes the scaling
    and keeps the last ``F`` frames the VAE decodes, float32 in [-1, 1]."""
    frames = clip(model)
    latents = model.encode(frames)
    assert latents.shape == FAMILIES[model.name][3] and latents.dtype == torch.float32
    raw = model.vae.encode(frames.unsqueeze(0).permute(0, 2, 1, 3, 4)).latent_dist.mode()  # [1, C', T, h, w]
    assert torch.allclose(latents, _reference_scaling(model, raw), atol=1e-6, rtol=1e-5)
    video = model.decode(latents)  # [1, F, 3, H, W]
    assert video.shape == (1, 9, 3, *model.native_size()) and video.dtype == torch.float32
    assert video.abs().max() <= 1
    direct = model.vae.decode(raw).sample[:, :, -9:].clamp(-1, 1)  # [1, 3, F, H, W]
    assert torch.allclose(video.permute(0, 2, 1, 3, 4), direct, atol=1e-5)
    z = raw.to(model.vae.dtype)
    assert torch.allclose(model.unscale_latents(model.scale_latents(z)), z, atol=1e-6)


def test_library_encode_decode_take_any_familys_pipeline_or_adapter(model):
    frames = clip(model)
    latents = model.encode(frames)
    assert torch.equal(vidinvert.encode(model.pipe, frames), latents)
    assert torch.equal(vidinvert.encode(model, frames), latents)
    assert torch.equal(vidinvert.decode(model.pipe, latents), model.decode(latents))
    assert torch.equal(vidinvert.decode(model, latents), model.decode(latents))
    assert_one_line_error(lambda: vidinvert.encode(object(), frames), "not a pipeline vidinvert can edit with")


def test_frames_are_checked_before_the_vae(model):
    height, width = model.native_size()
    m = model.size_multiple
    assert model.frames_for(81) == 81 and model.frames_for(84) == 81 and model.frames_for(10) == 9
    with pytest.raises(VidinvertError) as err:
        model.encode(torch.zeros(8, 3, height, width))
    assert_one_line(err.value, "4k+1")
    with pytest.raises(VidinvertError) as err:
        model.encode(torch.zeros(9, 3, height - 8, width))
    assert_one_line(err.value, f"not divisible by {m}")
    with pytest.raises(VidinvertError, match="must be \\[F, 3, H, W\\]"):
        model.encode(torch.zeros(9, height, width))


def test_long_prompts_warn_with_what_was_cut(model):
    prompt = " ".join(["a red disc moving right"] * 6)
    with pytest.warns(UserWarning, match="this part was cut: .*moving right"):
        model.encode_text([prompt])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.encode_text(["a red disc"])


# ---- injection ------------------------------------------------------------------------------------------------
def _self_attention(model) -> set[str]:
    return {f"{model.sites.blocks}.{i}.attn1.processor" for i in range(model.num_blocks)}


def test_processor_off_equals_diffusers_processor(model):
    """Installed with no layout: bit for bit what diffusers' own processor computes, in every block of every
    expert; only the self-attention processors are replaced (Wan's cross-attention is left alone)."""
    _, theirs, ours, _ = FAMILIES[model.name]
    x, text = _inputs(model)
    for t in TIMESTEPS:
        expected = model.predict(x, t, text)
        assert all(isinstance(p, theirs) for e in model.experts for p in e.attn_processors.values())
        with model.injected(InjectionConfig(), InjectionState()):
            for expert in model.experts:
                kinds = {name: type(p) for name, p in expert.attn_processors.items()}
                assert {name for name, kind in kinds.items() if kind is ours} == _self_attention(model)
                assert all(kind is theirs for name, kind in kinds.items() if name not in _self_attention(model))
            got = model.predict(x, t, text)
        assert torch.equal(got, expected)


def test_processors_restored_after_exit_and_after_exception(model):
    before = [dict(e.attn_processors) for e in model.experts]
    with model.injected(InjectionConfig(blocks=(0,)), InjectionState()):
        pass
    assert [e.attn_processors for e in model.experts] == before
    state = InjectionState(layout=BatchLayout.build(1, shared_reference=True), record_row=0)
    with pytest.raises(RuntimeError, match="boom"):
        with model.injected(InjectionConfig(blocks=(0,)), state):
            assert all(dict(e.attn_processors) != b for e, b in zip(model.experts, before))
            raise RuntimeError("boom")
    for expert, procs in zip(model.experts, before):
        after = expert.attn_processors
        assert after.keys() == procs.keys() and all(after[k] is procs[k] for k in procs)
        blocks = getattr(expert, model.sites.blocks)
        assert all(not block._forward_pre_hooks for block in blocks)
        assert not getattr(expert, model.sites.final_norm)._forward_pre_hooks
    assert (state.layout, state.reference_kv, state.record_row) == (None, None, None)


def test_block_selection_and_bad_blocks(model):
    with model.injected(InjectionConfig(blocks=(1,)), InjectionState()):
        flags = [[p.inject for name, p in e.attn_processors.items() if name in _self_attention(model)]
                 for e in model.experts]
    assert flags == [[False, True]] * len(model.experts)
    before = [dict(e.attn_processors) for e in model.experts]
    with pytest.raises(ValueError, match="blocks must be in"):
        with model.injected(InjectionConfig(blocks=(7,)), InjectionState()):
            pass
    assert [e.attn_processors for e in model.experts] == before


def test_identical_main_and_reference_rows_give_the_plain_prediction(model):
    """Attending to a duplicate of one's own keys changes nothing (the basis of exact reconstruction with
    injection); dropping the reference row after the last injecting block leaves the main row unchanged."""
    x, text = _inputs(model, batch=1)
    for t in TIMESTEPS:
        plain = model.predict(x, t, text)
        for blocks in (None, (0,)):
            state = InjectionState()
            with model.injected(InjectionConfig(blocks=blocks), state):
                state.layout = BatchLayout.build(1, shared_reference=True)
                both = model.predict(torch.cat([x, x]), t, torch.cat([text, text]))
            assert torch.allclose(both[0], plain[0], atol=1e-5)
            if blocks is None:  # the reference row is computed to the end
                assert torch.allclose(both[1], plain[0], atol=1e-5)


@pytest.mark.parametrize("blocks", [(0,), ()])
def test_reference_rows_are_not_computed_after_the_last_injecting_block(model, blocks):
    """Every block after the last injecting one sees only the main rows (with blocks=() that is every block, so
    the drop must hold for several blocks in a row), and the main rows' output is unchanged."""
    x, text = _inputs(model, batch=3)
    layout = BatchLayout.build(2, shared_reference=True)
    seen = []

    def rows(module, args, output):
        seen.append((output[0] if isinstance(output, tuple) else output).shape[0])

    block_list = getattr(model.transformer, model.sites.blocks)
    handles = [block.register_forward_hook(rows) for block in block_list]
    try:
        results = []
        for drop in (True, False):
            config = InjectionConfig(blocks=blocks if drop else None)
            state = InjectionState()
            with model.injected(config, state):
                if not drop:  # the same computation without the row drop: only the chosen blocks inject here
                    for processor in model.transformer.attn_processors.values():
                        if hasattr(processor, "inject"):
                            processor.inject = processor.block_index in blocks
                state.layout = layout
                results.append(model.predict(x, 900, text))
    finally:
        for handle in handles:
            handle.remove()
    kept = [3 if b <= max(blocks, default=-1) else 2 for b in range(len(handles))]
    assert seen == kept + [3] * len(handles)
    assert torch.allclose(results[0][:2], results[1][:2], atol=1e-6)
