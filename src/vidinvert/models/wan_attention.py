"""Wan's self-attention with key/value injection, and the context manager that installs it in every expert.

Wan attends over video tokens only in each block's ``attn1`` (RoPE on queries and keys, RMS norm across all heads
before the head split); the text enters through ``attn2``, which is left alone. ``WanKVInjectionProcessor`` has the
contract of diffusers' ``WanAttnProcessor`` (per diffusers models/transformers/transformer_wan.py) and, like it,
carries the ``_attention_backend`` / ``_parallel_config`` attributes and attends through ``dispatch_attention_fn``,
so ``transformer.set_attention_backend(...)`` reaches it too. With no batch layout it computes what
``WanAttnProcessor`` computes; with one, the main rows' queries see ``[own keys; reference keys]`` (both at the same
RoPE positions) and reference rows attend only to themselves (``attention.attend_with_reference``).
"""

from __future__ import annotations

import re
from contextlib import ExitStack, contextmanager

import torch

from ..attention import InjectionConfig, InjectionState, attend_with_reference, pad_back_dropped_rows, record


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's RoPE on interleaved pairs ``(x[2j], x[2j+1])`` of ``x`` ``[B, S, heads, head_dim]``; ``cos``/``sin``
    ``[1, S, 1, head_dim]`` hold each pair's angle twice (per diffusers transformer_wan.py ``WanRotaryPosEmbed``)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)  # [B, S, heads, head_dim / 2] each
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def _project(attn, hidden: torch.Tensor, rotary):
    """Queries, keys, values ``[B, N, heads, head_dim]`` of the video tokens ``hidden`` ``[B, N, D]``: projections
    (fused or not), RMS norm across heads, head split, RoPE."""
    if getattr(attn, "fused_projections", False):
        query, key, value = attn.to_qkv(hidden).chunk(3, dim=-1)  # [B, N, inner] each
    else:
        query, key, value = attn.to_q(hidden), attn.to_k(hidden), attn.to_v(hidden)  # [B, N, inner] each
    query, key = attn.norm_q(query), attn.norm_k(key)  # over all heads at once (rms_norm_across_heads)
    query = query.unflatten(2, (attn.heads, -1))  # [B, N, heads, head_dim]
    key = key.unflatten(2, (attn.heads, -1))
    value = value.unflatten(2, (attn.heads, -1))
    if rotary is not None:
        query, key = _rotate(query, *rotary), _rotate(key, *rotary)
    return query, key, value


class WanKVInjectionProcessor:
    """Self-attention processor of one Wan block, with optional key/value injection.

    Args:
        state: shared per-step state; its ``layout`` says which rows are main and reference.
        block_index: index of the block this processor serves (the same in both experts of Wan 2.2).
        inject: whether this block injects at all (``InjectionConfig.injects_block``).
        original: the processor it replaces; its attention backend and parallel config are kept.
    """

    _attention_backend = None
    _parallel_config = None

    def __init__(self, state: InjectionState, block_index: int, inject: bool, original=None):
        self.state = state
        self.block_index = block_index
        self.inject = inject
        self._attention_backend = getattr(original, "_attention_backend", None)
        self._parallel_config = getattr(original, "_parallel_config", None)

    def _attend(self, query, key, value, mask, parallel: bool = True):
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        return dispatch_attention_fn(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False,
                                     backend=self._attention_backend,
                                     parallel_config=self._parallel_config if parallel else None)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        """Same contract as diffusers' ``WanAttnProcessor`` for self-attention: returns ``[B, N, D]``.

        Args:
            hidden_states: video tokens ``[B, N, D]``.
            encoder_hidden_states: must be ``None`` (this processor serves ``attn1`` only).
            attention_mask: optional mask (Wan passes none; refused while injecting).
            rotary_emb: RoPE ``(cos, sin)``, each ``[1, N, 1, head_dim]``.
        """
        if encoder_hidden_states is not None:
            raise ValueError("WanKVInjectionProcessor serves self-attention (attn1) only")
        layout = self.state.layout if self.inject else None
        if layout is not None and (attention_mask is not None or self._parallel_config is not None):
            raise ValueError("key/value injection does not support an attention mask or context parallelism")
        query, key, value = _project(attn, hidden_states, rotary_emb)  # [B, N, heads, head_dim]
        record(self.state, self.block_index, key, value)
        if layout is None:
            out = self._attend(query, key, value, attention_mask)  # [B, N, heads, head_dim]
        else:
            out = attend_with_reference(query, key, value, self.state, self.block_index,
                                        attention=lambda q, k, v, mask: self._attend(q, k, v, mask, parallel=False))
        out = out.flatten(2, 3).type_as(query)  # [B, N, heads * head_dim]
        return attn.to_out[1](attn.to_out[0](out))  # linear projection, dropout


def _drop_unread_reference_rows(transformer, config: InjectionConfig, state: InjectionState) -> list:
    """Stop computing reference rows after the last injecting block: no later layer reads them.

    A pre-hook on every later block keeps only the main rows of its inputs (hidden states, text, the block's
    timestep projection; the transformer hands each block the full batch again, so every one is cut); a pre-hook on
    ``norm_out`` pads the batch back with zeros, so the output keeps its batch size (the editor reads only the main
    rows). Returns the hook handles (none when the last block injects).
    """
    blocks = transformer.blocks
    last = len(blocks) - 1 if config.blocks is None else max(config.blocks, default=-1)
    if not config.enabled or last >= len(blocks) - 1:
        return []

    def drop(module, args):
        layout = state.layout
        if layout is None or layout.num_ref == 0:
            return None
        state.dropped_rows = layout.num_ref
        keep = layout.num_main
        hidden, text, temb, *rest = args  # rotary_emb ([1, N, 1, d]) is shared by every row
        return (hidden[:keep], text[:keep], temb[:keep], *rest)  # a no-op for inputs already cut

    handles = [block.register_forward_pre_hook(drop) for block in blocks[last + 1 :]]
    return handles + [transformer.norm_out.register_forward_pre_hook(pad_back_dropped_rows(state))]


_BLOCK = re.compile(r"^blocks\.(\d+)\.attn1\.processor$")


@contextmanager
def _injected_one(transformer, config: InjectionConfig, state: InjectionState):
    originals = dict(transformer.attn_processors)
    replacement = {}
    for name, processor in originals.items():
        match = _BLOCK.match(name)
        if match:
            index = int(match.group(1))
            replacement[name] = WanKVInjectionProcessor(state, index, config.injects_block(index), processor)
        else:
            replacement[name] = processor
    transformer.set_attn_processor(replacement)
    hooks = []
    try:
        hooks = _drop_unread_reference_rows(transformer, config, state)
        yield state
    finally:
        for hook in hooks:
            hook.remove()
        transformer.set_attn_processor(dict(originals))


@contextmanager
def injected(transformers, config: InjectionConfig, state: InjectionState):
    """Install one ``WanKVInjectionProcessor`` per block's self-attention in every expert; restore the originals
    (and clear the state's layout) on exit or error.

    Args:
        transformers: the ``WanTransformer3DModel`` experts (one, or two for Wan 2.2 A14B; same block count).
        config: which blocks inject.
        state: the state object the editor updates per step.

    Yields:
        ``state``.
    """
    num_blocks = len(transformers[0].blocks)
    if config.blocks is not None and any(not 0 <= b < num_blocks for b in config.blocks):
        raise ValueError(f"injection blocks must be in 0..{num_blocks - 1}, got {list(config.blocks)}")
    try:
        with ExitStack() as stack:
            for transformer in transformers:
                stack.enter_context(_injected_one(transformer, config, state))
            yield state
    finally:
        state.layout, state.reference_kv, state.record_row = None, None, None
