"""CogVideoX's self-attention with key/value injection: its projections and RoPE over the shared core.

CogVideoX attends jointly over ``[text; video]`` tokens in each block's ``attn1``. ``CogVideoXInjectionProcessor``
has the contract of diffusers' ``CogVideoXAttnProcessor2_0`` and, with no batch layout set, computes exactly what that
processor computes, but attends through diffusers' ``dispatch_attention_fn`` with the ``_attention_backend`` /
``_parallel_config`` attributes of diffusers' newer processors (diffusers' default backend is the same SDPA call), so
an attention backend set on the model reaches it. ``CogVideoXAttnProcessor`` is the same processor never injecting:
what ``placement.set_attention_backend`` installs first, since diffusers' own CogVideoX processor has no backend. With a layout, the main rows' queries see ``[own keys;
reference keys]`` (text and video tokens of both, RoPE applied to each group's video tokens at their own positions)
and reference rows attend only to themselves (``injection.InjectionProcessor.attention``). ``SITES`` says where
``injection.injected`` installs it.

Copies: queries/keys/values stay in the projections' token-major memory (``[B, S, heads, head_dim]``, handed to
SDPA as transposed views, the layout diffusers' own processor uses), RoPE is written over the video slice in place,
a shared reference row is broadcast rather than gathered.
"""

from __future__ import annotations

import torch

from ..attention import InjectionState
from .injection import InjectionProcessor, TransformerSites


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


class CogVideoXInjectionProcessor(InjectionProcessor):
    """Self-attention processor of one CogVideoX block, with optional key/value injection (arguments: see
    ``InjectionProcessor``; the attention backend and parallel config of ``original`` are kept)."""

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
        layout = self.layout(attention_mask)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        query, key, value = _project(attn, hidden, text_length, image_rotary_emb)  # [B, S, heads, head_dim]
        out = self.attention(query, key, value, attention_mask, layout)  # [B, S, heads, head_dim]
        out = out.reshape(batch, length, -1)  # [B, S, heads * head_dim]
        out = attn.to_out[1](attn.to_out[0](out))  # linear projection, dropout
        text_out, video_out = out.split([text_length, length - text_length], dim=1)
        return video_out, text_out


class CogVideoXAttnProcessor(CogVideoXInjectionProcessor):
    """diffusers' ``CogVideoXAttnProcessor2_0`` through diffusers' backend dispatch: the injection processor, never
    injecting (its own idle state), so that ``transformer.set_attention_backend`` reaches CogVideoX's blocks."""

    def __init__(self, original=None):
        super().__init__(InjectionState(), -1, False, original)


# per diffusers cogvideox_transformer_3d.py: blocks called with keyword inputs, norm_final after the last one
SITES = TransformerSites(CogVideoXInjectionProcessor, "transformer_blocks",
                         ("hidden_states", "encoder_hidden_states", "temb"), "norm_final")
