"""Wan's self-attention with key/value injection: its projections, RMS norms and RoPE over the shared core.

Wan attends over video tokens only in each block's ``attn1`` (RoPE on queries and keys, RMS norm across all heads
before the head split); the text enters through ``attn2``, which is left alone. ``WanInjectionProcessor`` has the
contract of diffusers' ``WanAttnProcessor`` (per diffusers models/transformers/transformer_wan.py) and, like it,
carries the ``_attention_backend`` / ``_parallel_config`` attributes and attends through ``dispatch_attention_fn``,
so ``transformer.set_attention_backend(...)`` reaches it too. With no batch layout it computes what
``WanAttnProcessor`` computes; with one, the main rows' queries see ``[own keys; reference keys]`` (both at the same
RoPE positions) and reference rows attend only to themselves (``injection.InjectionProcessor.attention``).
``SITES`` says where ``injection.injected`` installs it in every expert.
"""

from __future__ import annotations

import torch

from .injection import InjectionProcessor, TransformerSites


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


class WanInjectionProcessor(InjectionProcessor):
    """Self-attention processor of one Wan block, with optional key/value injection (arguments: see
    ``InjectionProcessor``; the attention backend and parallel config of ``original`` are kept)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        """Same contract as diffusers' ``WanAttnProcessor`` for self-attention: returns ``[B, N, D]``.

        Args:
            hidden_states: video tokens ``[B, N, D]``.
            encoder_hidden_states: must be ``None`` (this processor serves ``attn1`` only).
            attention_mask: optional mask (Wan passes none; refused while injecting).
            rotary_emb: RoPE ``(cos, sin)``, each ``[1, N, 1, head_dim]``.
        """
        if encoder_hidden_states is not None:
            raise ValueError("WanInjectionProcessor serves self-attention (attn1) only")
        layout = self.layout(attention_mask)
        query, key, value = _project(attn, hidden_states, rotary_emb)  # [B, N, heads, head_dim]
        out = self.attention(query, key, value, attention_mask, layout)  # [B, N, heads, head_dim]
        out = out.flatten(2, 3).type_as(query)  # [B, N, heads * head_dim]
        return attn.to_out[1](attn.to_out[0](out))  # linear projection, dropout


# per diffusers transformer_wan.py: blocks called with positional (hidden, text, timestep projection, rotary) inputs,
# norm_out after the last one
SITES = TransformerSites(WanInjectionProcessor, "blocks", (0, 1, 2), "norm_out")
