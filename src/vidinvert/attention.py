"""Key/value injection: the main branch's tokens attend to their own keys/values and to a reference branch's.

The editor runs the main branch (the video being edited, one row per guidance condition and prompt) and a reference
branch (the stored inversion trajectory) in one transformer batch. In each injected self-attention the main rows'
queries see ``[own keys; reference keys]`` (text and video tokens of both, RoPE applied to each group's video
tokens at their own positions); reference rows attend only to themselves, so the reference branch reproduces the
inversion's computation. With no layout set the processor computes exactly what diffusers'
``CogVideoXAttnProcessor2_0`` computes.

Pieces: ``InjectionConfig`` (frozen user settings), ``BatchLayout`` (which rows are main/reference and who reads
whom, built in one place), ``InjectionState`` (what the editor sets per step), ``KVInjectionProcessor`` (one per
block) and ``injected()`` (installs them, restores the originals in ``finally``).

Copies: queries/keys/values stay in the projections' token-major memory (``[B, S, heads, head_dim]``, handed to
SDPA as transposed views, the layout diffusers' own processor uses), RoPE is written over the video slice in place,
a shared reference row is broadcast rather than gathered, and the main rows' ``[own; reference]`` keys/values are
written once, by one ``cat`` per tensor. Results are bit-identical to the earlier gather-and-concatenate code.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

REFERENCE_TEXT_MODES = ("inversion", "edit")


@dataclass(frozen=True)
class InjectionConfig:
    """User settings of key/value injection.

    Args:
        enabled: let the main branch attend to the reference branch's keys/values.
        steps: fraction of the sampling steps, counted from the noisiest, that inject (1.0 = all, 0.5 = first half).
        blocks: indices of the transformer blocks that inject; ``None`` = every block.
        reference_text: ``"inversion"`` (the reference branch sees the prompt the video was inverted with: the
            trajectory's own condition, one reference row shared by every main row) or ``"edit"`` (the public
            script's layout: one reference row per main row, seeing that row's text, edit or negative prompt).
        reuse_kv: take the reference keys/values recorded during inversion (``invert(..., record_kv=True)``)
            instead of evaluating the reference row (needs ``reference_text="inversion"``); exact after
            fixed-point inversion, an approximation after plain DDIM inversion (see ``KVCache``).
        reference_weight: how much more the main rows attend to the reference tokens than to their own: ``log w``
            is added to their logits for the reference keys (1 = plain attention over ``[own; reference]``; larger
            keeps the source's layout more and lets the edit change less).
        reference_weight_steps: fraction of the sampling steps, from the noisiest, that use ``reference_weight``
            (later injecting steps use weight 1).
    """

    enabled: bool = True
    steps: float = 1.0
    blocks: tuple[int, ...] | None = None
    reference_text: str = "inversion"
    reuse_kv: bool = False
    reference_weight: float = 1.0
    reference_weight_steps: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.steps <= 1.0:
            raise ValueError(f"injection steps must be a fraction in [0, 1], got {self.steps}")
        if self.reference_text not in REFERENCE_TEXT_MODES:
            raise ValueError(f"reference_text must be one of {REFERENCE_TEXT_MODES}, got {self.reference_text!r}")
        if not (self.reference_weight > 0 and math.isfinite(self.reference_weight)):
            raise ValueError(f"reference weight must be a positive number, got {self.reference_weight}")
        if not 0.0 <= self.reference_weight_steps <= 1.0:
            raise ValueError(f"reference weight steps must be a fraction in [0, 1], got {self.reference_weight_steps}")
        if self.reuse_kv and self.reference_text != "inversion":
            raise ValueError("reuse_kv needs reference_text='inversion' (the recorded keys saw the inversion prompt)")
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(sorted(set(int(b) for b in self.blocks))))

    def active_at(self, step: int, num_steps: int) -> bool:
        """Whether sampling step ``step`` (0 = noisiest) of ``num_steps`` injects."""
        return self.enabled and step < round(self.steps * num_steps)

    def reference_bias(self, step: int, num_steps: int) -> float:
        """Logit offset of the reference keys at sampling step ``step``: ``log(reference_weight)`` or 0."""
        if self.reference_weight == 1.0 or step >= round(self.reference_weight_steps * num_steps):
            return 0.0
        return math.log(self.reference_weight)

    def injects_block(self, index: int) -> bool:
        return self.enabled and (self.blocks is None or index in self.blocks)


@dataclass(frozen=True)
class BatchLayout:
    """Rows of one transformer batch: ``num_main`` main rows first, then the reference rows.

    Args:
        num_main: rows of the main branch (guidance conditions x prompts).
        ref_of_main: for each main row, the index (among the reference rows) of the reference row it attends to.
        num_ref: number of reference rows.
    """

    num_main: int
    ref_of_main: tuple[int, ...]
    num_ref: int

    @staticmethod
    def build(num_main: int, shared_reference: bool) -> "BatchLayout":
        """Shared: one reference row read by every main row. Not shared: reference row ``j`` for main row ``j``."""
        if shared_reference:
            return BatchLayout(num_main, (0,) * num_main, 1)
        return BatchLayout(num_main, tuple(range(num_main)), num_main)

    @property
    def size(self) -> int:
        return self.num_main + self.num_ref

    def reference_for_main(self, reference: torch.Tensor) -> torch.Tensor:
        """The reference row each main row reads, without copying where the layout allows.

        Args:
            reference: ``[R, ...]``, one entry per reference row (R = ``num_ref``, or 1 for recorded keys/values).

        Returns:
            ``[num_main, ...]``: a broadcast view when every main row reads row 0, the rows themselves when main row
            ``j`` reads reference row ``j``, a gathered copy otherwise.
        """
        if all(j == 0 for j in self.ref_of_main):
            return reference[:1].expand(self.num_main, *reference.shape[1:])
        if self.ref_of_main == tuple(range(reference.shape[0])):
            return reference
        return reference[list(self.ref_of_main)]


class KVCache:
    """Reference keys/values recorded during inversion, per sampling step and block, within a memory budget.

    Entry ``(i, block)`` holds ``(key, value)``, each ``[heads, S, head_dim]`` (RoPE applied), of the evaluation at
    timestep ``t_i`` that inversion accepted for step ``i``. After fixed-point inversion that evaluation's input is
    exactly ``trajectory[i]`` with the inversion prompt, i.e. what the reference row computes while editing
    (``exact=True``); after plain DDIM inversion its input is the less noisy latent ``trajectory[i + 1]``
    (``exact=False``: reuse then approximates the reference branch).

    Args:
        budget_bytes: most bytes the cache may hold.
        device: where entries are kept (``"cpu"`` or the model's device).
        exact: whether the entries are the reference branch's own keys/values.
    """

    def __init__(self, budget_bytes: int, device: str | torch.device = "cpu", exact: bool = True):
        self.budget_bytes = int(budget_bytes)
        self.device = torch.device(device)
        self.exact = exact
        self.entries: dict[int, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
        self.nbytes = 0

    @staticmethod
    def estimate_bytes(num_steps: int, num_blocks: int, tokens: int, inner_dim: int, element_size: int) -> int:
        """Size of a full cache: steps x blocks x (key, value) x tokens x inner_dim x bytes per element."""
        return num_steps * num_blocks * 2 * tokens * inner_dim * element_size

    def put(self, step: int, blocks: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in blocks.values())
        if self.nbytes + size > self.budget_bytes:
            raise MemoryError(f"key/value cache over its budget of {self.budget_bytes / 2**30:.2f} GiB")
        self.entries[step] = {b: (k.to(self.device), v.to(self.device)) for b, (k, v) in blocks.items()}
        self.nbytes += size

    def step(self, step: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]] | None:
        return self.entries.get(step)


@dataclass
class InjectionState:
    """Per-call state the editor (or inversion) sets before each transformer evaluation.

    Args:
        layout: row roles of the batch; ``None`` means plain attention. A layout with ``num_ref == 0`` reads the
            reference keys/values from ``reference_kv`` instead of from reference rows.
        reference_kv: ``{block: (key, value)}`` of the current step, each ``[heads, S, head_dim]``.
        record_row: when set, every block stores the keys/values of this batch row into ``recorded``.
        recorded: ``{block: (key, value)}`` of the last evaluation, filled when ``record_row`` is set.
    """

    layout: BatchLayout | None = None
    reference_kv: dict | None = None
    reference_bias: float = 0.0
    record_row: int | None = None
    recorded: dict = field(default_factory=dict)
    dropped_rows: int = 0  # reference rows removed after the last injecting block (restored before the output)


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
        if self.state.record_row is not None:
            row = self.state.record_row
            self.state.recorded[self.block_index] = (  # [heads, S, head_dim]
                key[row].detach().transpose(0, 1).clone(),
                value[row].detach().transpose(0, 1).clone(),
            )

        if layout is None:
            out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                                 attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
            out = out.transpose(1, 2)  # [B, S, heads, head_dim]
        else:
            if layout.size != batch:
                raise ValueError(f"batch layout expects {layout.size} rows, the batch has {batch}")
            m = layout.num_main
            if layout.num_ref == 0:  # reference keys/values recorded during inversion, [heads, S, head_dim]
                ref_key, ref_value = self.state.reference_kv[self.block_index]
                ref_key = ref_key.to(key.device, key.dtype).transpose(0, 1).unsqueeze(0)  # [1, S, heads, head_dim]
                ref_value = ref_value.to(value.device, value.dtype).transpose(0, 1).unsqueeze(0)
            else:
                ref_key, ref_value = key[m:], value[m:]  # [R, S, heads, head_dim]
            ref_key, ref_value = layout.reference_for_main(ref_key), layout.reference_for_main(ref_value)  # [m, ...]
            key_main = torch.cat([key[:m], ref_key], dim=1)  # [m, 2S, heads, head_dim]
            value_main = torch.cat([value[:m], ref_value], dim=1)  # [m, 2S, heads, head_dim]
            bias = None
            if self.state.reference_bias:  # log(reference weight) on the reference keys' logits
                bias = torch.zeros(1, 2 * length, device=query.device, dtype=query.dtype)  # [1, 2S]
                bias[:, length:] = self.state.reference_bias
            out = F.scaled_dot_product_attention(query[:m].transpose(1, 2), key_main.transpose(1, 2),
                                                 value_main.transpose(1, 2), attn_mask=bias, dropout_p=0.0,
                                                 is_causal=False)
            out = out.transpose(1, 2)  # [m, S, heads, head_dim]
            if layout.num_ref:
                out_ref = F.scaled_dot_product_attention(query[m:].transpose(1, 2), key[m:].transpose(1, 2),
                                                         value[m:].transpose(1, 2), dropout_p=0.0, is_causal=False)
                out = torch.cat([out, out_ref.transpose(1, 2)])  # [B, S, heads, head_dim]

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

    def restore(module, args):
        if not state.dropped_rows:
            return None
        hidden = args[0]
        padding = hidden.new_zeros(state.dropped_rows, *hidden.shape[1:])
        state.dropped_rows = 0
        return (torch.cat([hidden, padding]), *args[1:])

    handles = [block.register_forward_pre_hook(drop, with_kwargs=True) for block in blocks[last + 1 :]]
    return handles + [transformer.norm_final.register_forward_pre_hook(restore)]


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
