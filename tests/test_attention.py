"""CogVideoX's injection processor against the attention written out by hand, and the injection settings and batch
layouts (what every family's processor shares, equality with diffusers' processor when off and the restoring, is in
test_families.py)."""

import math

import pytest
import torch
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0

from vidinvert.attention import BatchLayout, InjectionConfig, InjectionState
from vidinvert.models.cogvideox_attention import CogVideoXInjectionProcessor


def test_processor_equals_diffusers_on_one_attention_layer(tiny_model):
    """Direct layer-level comparison, RoPE included for the 5b style."""
    attn = tiny_model.transformer.transformer_blocks[0].attn1
    generator = torch.Generator().manual_seed(1)
    video, text = torch.randn(2, 48, attn.to_q.in_features, generator=generator), torch.randn(2, 16, attn.to_q.in_features, generator=generator)
    rope = tiny_model.rotary(3, 8, 8)
    theirs = CogVideoXAttnProcessor2_0()(attn, video.clone(), text.clone(), image_rotary_emb=rope)
    ours = CogVideoXInjectionProcessor(InjectionState(), 0, inject=True)(attn, video.clone(), text.clone(), image_rotary_emb=rope)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


def _explicit_projection(attn, video, text, rope):
    """Queries, keys, values ``[B, heads, S, head_dim]`` computed step by step, RoPE on the video tokens."""
    from diffusers.models.embeddings import apply_rotary_emb

    joint = torch.cat([text, video], 1)
    batch, length, _ = joint.shape
    q, k, v = (f(joint).view(batch, length, attn.heads, -1).transpose(1, 2) for f in (attn.to_q, attn.to_k, attn.to_v))
    q, k = attn.norm_q(q), attn.norm_k(k)
    if rope is not None:
        q = torch.cat([q[:, :, : text.shape[1]], apply_rotary_emb(q[:, :, text.shape[1] :], rope)], 2)
        k = torch.cat([k[:, :, : text.shape[1]], apply_rotary_emb(k[:, :, text.shape[1] :], rope)], 2)
    return q, k, v


def _explicit_attention(attn, q, keys, values, bias=None):
    """softmax(q keys^T / sqrt(d) + bias) values for one row (``[heads, S, d]`` queries), projected out: ``[S, D]``."""
    logits = q @ keys.transpose(-1, -2) / q.shape[-1] ** 0.5
    weights = torch.softmax(logits if bias is None else logits + bias, dim=-1)
    return attn.to_out[0]((weights @ values).transpose(0, 1).reshape(q.shape[1], -1))


LAYOUTS = {  # name: (layout, batch rows)
    "shared": (BatchLayout.build(2, shared_reference=True), 3),
    "paired": (BatchLayout.build(2, shared_reference=False), 4),
    "crossed": (BatchLayout(2, (1, 0), 2), 4),
    "recorded": (BatchLayout(2, (0, 0), 0), 2),  # reference keys/values from a recorded row, as reuse_kv
}


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("weight", [1.0, 3.0])
def test_injection_equals_explicit_attention_over_own_and_reference_keys(tiny_model, name, weight):
    """Main row j: softmax(q_j [k_j; k_ref(j)]^T + [0; log w]) [v_j; v_ref(j)]; reference rows see only themselves."""
    layout, batch = LAYOUTS[name]
    attn = tiny_model.transformer.transformer_blocks[0].attn1
    dim = attn.to_q.in_features
    generator = torch.Generator().manual_seed(2)
    video, text = torch.randn(4, 48, dim, generator=generator), torch.randn(4, 16, dim, generator=generator)
    rope = tiny_model.rotary(3, 8, 8)
    q, k, v = _explicit_projection(attn, video, text, rope)
    state = InjectionState(layout=layout, reference_bias=math.log(weight))
    if layout.num_ref == 0:  # rows 0, 1 main; row 3 plays the recorded reference
        record = InjectionState(record_row=3)
        CogVideoXInjectionProcessor(record, 0, inject=True)(attn, video, text, image_rotary_emb=rope)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(record.recorded[0], (k[3], v[3])))
        state.reference_kv = record.recorded
    out_video, out_text = CogVideoXInjectionProcessor(state, 0, inject=True)(
        attn, video[:batch], text[:batch], image_rotary_emb=rope
    )
    for row in range(batch):
        if row < layout.num_main:
            ref = 3 if layout.num_ref == 0 else layout.num_main + layout.ref_of_main[row]
            keys, values = torch.cat([k[row], k[ref]], 1), torch.cat([v[row], v[ref]], 1)  # [heads, 2S, d]
            bias = torch.cat([torch.zeros(64), torch.full((64,), math.log(weight))])  # [2S]
        else:
            keys, values, bias = k[row], v[row], None
        expected = _explicit_attention(attn, q[row], keys, values, bias)
        assert (out_text[row] - expected[:16]).abs().max() < 1e-5
        assert (out_video[row] - expected[16:]).abs().max() < 1e-5


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_attention_map_injection_equals_reference_weights_over_own_values(tiny_model, name):
    """Attention-map injection, main row j: softmax(q_ref(j) k_ref(j)^T) v_j (the reference weight does not apply);
    reference rows see only themselves; a recorded reference brings its queries."""
    layout, batch = LAYOUTS[name]
    attn = tiny_model.transformer.transformer_blocks[0].attn1
    dim = attn.to_q.in_features
    generator = torch.Generator().manual_seed(4)
    video, text = torch.randn(4, 48, dim, generator=generator), torch.randn(4, 16, dim, generator=generator)
    rope = tiny_model.rotary(3, 8, 8)
    q, k, v = _explicit_projection(attn, video, text, rope)
    state = InjectionState(layout=layout, reference_bias=math.log(3.0), attention_map=True)
    if layout.num_ref == 0:
        record = InjectionState(record_row=3, attention_map=True)
        CogVideoXInjectionProcessor(record, 0, inject=True)(attn, video, text, image_rotary_emb=rope)
        assert len(record.recorded[0]) == 3 and torch.allclose(record.recorded[0][2], q[3], atol=1e-6)
        state.reference_kv = record.recorded
    out_video, out_text = CogVideoXInjectionProcessor(state, 0, inject=True)(
        attn, video[:batch], text[:batch], image_rotary_emb=rope
    )
    for row in range(batch):
        if row < layout.num_main:
            ref = 3 if layout.num_ref == 0 else layout.num_main + layout.ref_of_main[row]
            expected = _explicit_attention(attn, q[ref], k[ref], v[row])
        else:
            expected = _explicit_attention(attn, q[row], k[row], v[row])
        assert (out_text[row] - expected[:16]).abs().max() < 1e-5
        assert (out_video[row] - expected[16:]).abs().max() < 1e-5


def test_injection_kind_auto_and_refusals():
    assert InjectionConfig().attention_map(first_frame=True) and not InjectionConfig().attention_map(first_frame=False)
    assert InjectionConfig(kind="attention-map").attention_map(first_frame=False)
    assert not InjectionConfig(kind="keys-values").attention_map(first_frame=True)
    assert not InjectionConfig(reuse_kv=True).attention_map(first_frame=True)  # recorded keys carry no queries
    with pytest.raises(ValueError, match="attention-map injection needs the reference's queries"):
        InjectionConfig(kind="attention-map", reuse_kv=True)
    with pytest.raises(ValueError, match="injection kind"):
        InjectionConfig(kind="maps")


def test_reference_weight_schedule_and_refusals():
    config = InjectionConfig(reference_weight=8.0, reference_weight_fraction=0.6)
    assert [config.reference_bias(i, 10) for i in (0, 5, 6, 9)] == [math.log(8.0)] * 2 + [0.0] * 2
    assert InjectionConfig().reference_bias(0, 10) == 0.0
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="reference weight"):
            InjectionConfig(reference_weight=bad)
    with pytest.raises(ValueError, match="reference weight step fraction"):
        InjectionConfig(reference_weight_fraction=1.5)


def test_injection_under_autograd_matches_and_backpropagates(tiny_model):
    """RoPE is written in place over the video slice: gradients still flow, and the numbers match no-grad ones."""
    attn = tiny_model.transformer.transformer_blocks[0].attn1
    processor = CogVideoXInjectionProcessor(InjectionState(layout=BatchLayout.build(2, shared_reference=True)), 0, inject=True)
    video = torch.randn(3, 48, attn.to_q.in_features, requires_grad=True)
    words = torch.randn(3, 16, attn.to_q.in_features)
    rope = tiny_model.rotary(3, 8, 8)
    graded = processor(attn, video, words, image_rotary_emb=rope)
    graded[0].sum().backward()
    assert video.grad is not None and torch.isfinite(video.grad).all()
    with torch.no_grad():
        plain = processor(attn, video, words, image_rotary_emb=rope)
    assert all(torch.equal(a, b) for a, b in zip(graded, plain))


def test_injection_config_validation_and_steps():
    config = InjectionConfig(step_fraction=0.5)
    assert [config.active_at(i, 10) for i in range(10)] == [True] * 5 + [False] * 5
    with pytest.warns(DeprecationWarning, match="step_fraction"):
        assert InjectionConfig(steps=0.5) == config  # the old keyword still works
    assert not InjectionConfig(enabled=False).active_at(0, 10)
    with pytest.raises(ValueError):
        InjectionConfig(step_fraction=1.5)
    with pytest.raises(ValueError):
        InjectionConfig(reference_text="other")


def test_batch_layouts():
    shared = BatchLayout.build(4, shared_reference=True)
    assert (shared.size, shared.ref_of_main) == (5, (0, 0, 0, 0))
    paired = BatchLayout.build(2, shared_reference=False)
    assert (paired.size, paired.ref_of_main) == (4, (0, 1))
