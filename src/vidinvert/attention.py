"""Key/value injection: the main branch's tokens attend to their own keys/values and to a reference branch's.

The editor runs the main branch (the video being edited, one row per guidance condition and prompt) and a reference
branch (the stored inversion trajectory) in one transformer batch. In each injected self-attention the main rows'
queries see ``[own keys; reference keys]`` (text and video tokens of both, RoPE applied to each group's video
tokens at their own positions); reference rows attend only to themselves, so the reference branch reproduces the
inversion's computation. With ``attention_map`` set the main rows instead take the reference rows' attention weights
(their queries and keys) over their own values, plug-and-play's injection. With no layout set a family's processor computes exactly what
diffusers' own processor for that family computes.

This module holds what every model family shares: ``InjectionConfig`` (frozen user settings, from ``settings``),
``BatchLayout`` (which rows are main/reference and who reads whom, built in one place), ``InjectionState`` (what the
editor sets per step), ``KVCache`` (keys/values recorded during inversion) and ``attend`` (the main rows' attention
over ``[own; reference]``). Each family's processor, and the context manager that installs it and restores the
originals in ``finally``, live with the family under ``models/``.

Copies: queries/keys/values stay in the projections' token-major memory (``[B, S, heads, head_dim]``, handed to
SDPA as transposed views, the layout diffusers' own processor uses), RoPE is written over the video slice in place,
a shared reference row is broadcast rather than gathered, and the main rows' ``[own; reference]`` keys/values are
written once, by one ``cat`` per tensor. Results are bit-identical to the earlier gather-and-concatenate code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .settings import REFERENCE_TEXT_MODES, InjectionConfig  # noqa: F401  (re-exported)


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
    attention_map: bool = False  # main rows take the reference's queries and keys over their own values


def record(state: InjectionState, block_index: int, key: torch.Tensor, value: torch.Tensor,
           query: torch.Tensor | None = None) -> None:
    """Keep row ``state.record_row`` of a block's keys/values ``[B, S, heads, head_dim]`` as ``[heads, S, head_dim]``
    (and its queries, third, when the state injects attention maps)."""
    if state.record_row is None:
        return
    row = state.record_row
    kept = [key, value, query] if state.attention_map and query is not None else [key, value]
    state.recorded[block_index] = tuple(t[row].detach().transpose(0, 1).clone() for t in kept)


def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask=None) -> torch.Tensor:
    """Token-major attention: ``[B, S, heads, d]`` in, ``[B, S, heads, d]`` out (SDPA on transposed views)."""
    out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                         attn_mask=mask, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2)


def attend_with_reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, state: InjectionState,
                          block_index: int, attention=sdpa) -> torch.Tensor:
    """Attention of a batch laid out by ``state.layout``: main rows over ``[own; reference]``, reference rows alone.

    Args:
        query, key, value: ``[B, S, heads, head_dim]`` token-major, positions already applied.
        state: its ``layout`` (not ``None``) says which rows are main and which reference; with ``num_ref == 0``
            the reference keys/values come from ``state.reference_kv[block_index]`` (``[heads, S, head_dim]``).
        block_index: the block being evaluated.
        attention: ``(q, k, v, mask) -> out`` on token-major tensors (a family may pass its backend dispatch).

    Returns:
        ``[B, S, heads, head_dim]``.
    """
    layout = state.layout
    batch, length = query.shape[:2]
    if layout.size != batch:
        raise ValueError(f"batch layout expects {layout.size} rows, the batch has {batch}")
    m = layout.num_main
    if layout.num_ref == 0:  # recorded keys/values (and queries), [heads, S, head_dim] each
        recorded = [t.to(key.device, key.dtype).transpose(0, 1).unsqueeze(0)  # [1, S, heads, head_dim]
                    for t in state.reference_kv[block_index]]
        ref_key, ref_value = recorded[:2]
        ref_query = recorded[2] if len(recorded) > 2 else None
    else:
        ref_key, ref_value, ref_query = key[m:], value[m:], query[m:]  # [R, S, heads, head_dim]
    ref_key, ref_value = layout.reference_for_main(ref_key), layout.reference_for_main(ref_value)  # [m, ...]
    if state.attention_map:
        if ref_query is None:
            raise ValueError("attention-map injection needs the reference's queries (record them with the keys)")
        # the reference's attention weights over the main rows' own values: its layout and motion, their content
        out = attention(layout.reference_for_main(ref_query), ref_key, value[:m], None)  # [m, S, heads, head_dim]
        if layout.num_ref:
            out = torch.cat([out, attention(query[m:], key[m:], value[m:], None)])
        return out
    key_main = torch.cat([key[:m], ref_key], dim=1)  # [m, 2S, heads, head_dim]
    value_main = torch.cat([value[:m], ref_value], dim=1)  # [m, 2S, heads, head_dim]
    bias = None
    if state.reference_bias:  # log(reference weight) on the reference keys' logits
        bias = torch.zeros(1, 2 * length, device=query.device, dtype=query.dtype)  # [1, 2S]
        bias[:, length:] = state.reference_bias
    out = attention(query[:m], key_main, value_main, bias)  # [m, S, heads, head_dim]
    if layout.num_ref:
        out_ref = attention(query[m:], key[m:], value[m:], None)
        out = torch.cat([out, out_ref])  # [B, S, heads, head_dim]
    return out


def pad_back_dropped_rows(state: InjectionState):
    """A forward pre-hook for the layer after the last block: pads the batch back with zeros for the reference rows
    dropped after the last injecting block, so the transformer's output keeps its batch size (the editor reads only
    the main rows)."""

    def restore(module, args):
        if not state.dropped_rows:
            return None
        hidden = args[0]
        padding = hidden.new_zeros(state.dropped_rows, *hidden.shape[1:])
        state.dropped_rows = 0
        return (torch.cat([hidden, padding]), *args[1:])

    return restore
