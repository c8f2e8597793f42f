"""CogVideoX's self-attention with key/value injection, and the context manager that installs it.

CogVideoX attends jointly over ``[text; video]`` tokens in each block's ``attn1``. ``KVInjectionProcessor`` has the
contract of diffusers' ``CogVideoXAttnProcessor2_0``; with no batch layout set it computes exactly what that
processor computes. With a layout, the main rows' queries see ``[own keys; reference keys]`` (text and video tokens
of both, RoPE applied to each group's video tokens at their own positions; see ``attention.attend_with_reference``)
and reference rows attend only to themselves, so the reference branch reproduces the inversion's computation.

Copies: queries/keys/values stay in the projections' token-major memory (``[B, S, heads, head_dim]``, handed to
SDPA as transposed views, the layout diffusers' own processor uses), RoPE is written over the video slice in place,
a shared reference row is broadcast rather than gathered.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import torch

from ..attention import (InjectionConfig, InjectionState, attend_with_reference, pad_back_dropped_rows, record,
                         sdpa)


def _project(attn, hidden: torch.Tensor, text_length: int, rotary):
    """Queries, keys, values ``[B, S, heads, head_dim]`` (token-major) for the joint [text; video] sequence, RoPE on
    video. SDPA takes them as ``.transpose(1, 2)`` views, the layout diffusers' processor hands it."""
    query = attn.to_q(hidden).unflatten(-1, (attn.heads, -1))  # [B, S, heads, head_dim]
    key = attn.to_k(hidden).unflatten(-1, (attn.heads, -1))  # [B, S, heads, head_dim]
    value = attn.to_v(hidden).unflatten(-1, (attn.heads, -1))  # [B, S, heads, head_dim]
    if attn.norm_q is not None:  # a LayerNorm over head_dim: the same numbers in either layout
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    if rotary is not None:
        from diffusers.models.embeddings import apply_rotary_emb

        # per diffusers attention_processor.py CogVideoXAttnProcessor2_0: RoPE written over the video slice in place
        for tensor in (query,) if attn.is_cross_attention else (query, key):
            video = tensor[:, text_length:].transpose(1, 2)  # [B, heads, N, head_dim] view
            video.copy_(apply_rotary_emb(video, rotary))
    return query, key, value


class KVInjectionProcessor:
    """Self-attention processor of one CogVideoX block, with optional key/value injection.

    Args:
        state: shared per-step state; its ``layout`` says which rows are main and reference.
        block_index: index of the block this processor serves.
        inject: whether this block injects at all (``InjectionConfig.injects_block``).
    """

    def __init__(self, state: InjectionState, block_index: int, inject: bool):
        self.state = state
        self.block_index = block_index
        self.inject = inject

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        """Same contract as diffusers' ``CogVideoXAttnProcessor2_0``: returns ``(video_out, text_out)``.

        Args:
            hidden_states: video tokens ``[B, N, D]``.
            encoder_hidden_states: text tokens ``[B, L, D]``.
            attention_mask: optional mask (CogVideoX passes none; refused while injecting).
            image_rotary_emb: RoPE ``(cos, sin)`` for the N video tokens, or ``None``.
        """
        text_length = encoder_hidden_states.size(1)
        hidden = torch.cat([encoder_hidden_states, hidden_states], dim=1)  # [B, L + N, D]
        batch, length, _ = hidden.shape
        layout = self.state.layout if self.inject else None
        if attention_mask is not None:
            if layout is not None:
                raise ValueError("key/value injection does not support an attention mask")
            attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        query, key, value = _project(attn, hidden, text_length, image_rotary_emb)  # [B, S, heads, head_dim]
        record(self.state, self.block_index, key, value)
        if layout is None:
            out = sdpa(query, key, value, attention_mask)  # [B, S, heads, head_dim]
        else:
            out = attend_with_reference(query, key, value, self.state, self.block_index)
        out = out.reshape(batch, length, -1)  # [B, S, heads * head_dim]
        out = attn.to_out[1](attn.to_out[0](out))  # linear projection, dropout
        text_out, video_out = out.split([text_length, length - text_length], dim=1)
        return video_out, text_out


def _drop_unread_reference_rows(transformer, config: InjectionConfig, state: InjectionState) -> list:
    """Stop computing reference rows after the last injecting block: no later layer reads them.

    A pre-hook on every later block keeps only the main rows of its inputs (the transformer hands each block the
    full-batch timestep embedding again, so one cut at the first of them is not enough); a pre-hook on
    ``norm_final`` pads the batch back with zeros, so the transformer's output keeps its batch size (the editor
    reads only the main rows). Returns the hook handles (none when the last block injects).
    """
    blocks = transformer.transformer_blocks
    last = len(blocks) - 1 if config.blocks is None else max(config.blocks, default=-1)
    if not config.enabled or last >= len(blocks) - 1:
        return []

    def drop(module, args, kwargs):
        layout = state.layout
        if layout is None or layout.num_ref == 0:
            return None
        state.dropped_rows = layout.num_ref
        keep = layout.num_main
        for name in ("hidden_states", "encoder_hidden_states", "temb"):
            kwargs[name] = kwargs[name][:keep]  # a no-op for inputs already cut by the previous block
        return args, kwargs

    handles = [block.register_forward_pre_hook(drop, with_kwargs=True) for block in blocks[last + 1 :]]
    return handles + [transformer.norm_final.register_forward_pre_hook(pad_back_dropped_rows(state))]


_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.attn1\.processor$")


@contextmanager
def injected(transformer, config: InjectionConfig, state: InjectionState):
    """Install one ``KVInjectionProcessor`` per block's self-attention; restore the originals on exit or error.

    Args:
        transformer: a ``CogVideoXTransformer3DModel``.
        config: which blocks inject.
        state: the state object the editor updates per step.

    Yields:
        ``state``.
    """
    originals = dict(transformer.attn_processors)
    num_blocks = len(transformer.transformer_blocks)
    if config.blocks is not None and any(not 0 <= b < num_blocks for b in config.blocks):
        raise ValueError(f"injection blocks must be in 0..{num_blocks - 1}, got {list(config.blocks)}")
    replacement = {}
    for name, processor in originals.items():
        match = _BLOCK.match(name)
        if match:
            index = int(match.group(1))
            replacement[name] = KVInjectionProcessor(state, index, config.injects_block(index))
        else:
            replacement[name] = processor
    transformer.set_attn_processor(replacement)
    hooks = _drop_unread_reference_rows(transformer, config, state)
    try:
        yield state
    finally:
        for hook in hooks:
            hook.remove()
        transformer.set_attn_processor(dict(originals))
        state.layout, state.reference_kv, state.record_row = None, None, None
