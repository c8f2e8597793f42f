"""Key/value injection as every family installs it: the processor core, the row drop and the context manager.

A family's self-attention processor (``cogvideox_attention.py``, ``wan_attention.py``) subclasses
``InjectionProcessor``: it computes its own queries, keys and values (projections, norms, rotary positions) and
its own output projection, and hands the attention itself to ``InjectionProcessor.attention``, which records keys and
values when asked and, with a batch layout set, attends over ``[own; reference]`` (``attention.attend_with_reference``:
the concatenation, the reference-weight logit bias and the row split). ``injected`` installs one processor per
block's self-attention in every expert of a transformer family described by a ``TransformerSites``, drops the
reference rows after the last injecting block, and restores everything in ``finally``.
"""

from __future__ import annotations

import re
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch

from ..attention import (BatchLayout, InjectionConfig, InjectionState, attend_with_reference, pad_back_dropped_rows,
                         record)


class InjectionProcessor:
    """Self-attention processor of one block, with optional key/value injection (the part every family shares).

    Args:
        state: shared per-step state; its ``layout`` says which rows are main and reference.
        block_index: index of the block this processor serves (the same in every expert).
        inject: whether this block injects at all (``InjectionConfig.injects_block``).
        original: the processor it replaces; its attention backend and parallel config (diffusers'
            ``_attention_backend`` / ``_parallel_config``, set by ``set_attention_backend``) are kept.
    """

    _attention_backend = None
    _parallel_config = None

    def __init__(self, state: InjectionState, block_index: int, inject: bool, original=None):
        self.state = state
        self.block_index = block_index
        self.inject = inject
        self._attention_backend = getattr(original, "_attention_backend", None)
        self._parallel_config = getattr(original, "_parallel_config", None)

    def layout(self, attention_mask) -> BatchLayout | None:
        """The batch layout this call injects with (``None``: plain attention); refuses what injection cannot do."""
        layout = self.state.layout if self.inject else None
        if layout is not None and (attention_mask is not None or getattr(self, "_parallel_config", None) is not None):
            raise ValueError("key/value injection does not support an attention mask or context parallelism")
        return layout

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask, parallel: bool = True):
        """Token-major attention ``[B, S, heads, d]`` -> ``[B, S, heads, d]`` through diffusers' backend dispatch, as
        the families' own processors attend (its default: SDPA on the transposed views); ``parallel``: whether a
        context-parallel config may apply."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        return dispatch_attention_fn(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False,
                                     backend=self._attention_backend,
                                     parallel_config=self._parallel_config if parallel else None)

    def attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask,
                  layout: BatchLayout | None) -> torch.Tensor:
        """Record this block's keys/values if asked, then attend: plainly with no layout, else main rows over
        ``[own; reference]`` keys/values and reference rows alone.

        Args:
            query, key, value: ``[B, S, heads, head_dim]`` token-major, positions already applied.
            mask: the attention mask of a plain call (``None`` while injecting).
            layout: from ``layout()``.

        Returns:
            ``[B, S, heads, head_dim]``.
        """
        record(self.state, self.block_index, key, value, query)
        if layout is None:
            return self.attend(query, key, value, mask)
        return attend_with_reference(query, key, value, self.state, self.block_index,
                                     attention=lambda q, k, v, bias: self.attend(q, k, v, bias, parallel=False))


@dataclass(frozen=True)
class TransformerSites:
    """Where injection goes in one family's transformer (names per the family's diffusers model class)."""

    processor: type  # the family's InjectionProcessor subclass, one per block's self-attention (attn1)
    blocks: str  # the transformer attribute holding its blocks; processors are named "<blocks>.<i>.attn1.processor"
    row_inputs: tuple  # block inputs with one entry per batch row: keyword names, or positions of positional ones
    final_norm: str  # the layer after the last block, where dropped reference rows are padded back


def _drop_unread_reference_rows(transformer, sites: TransformerSites, config: InjectionConfig,
                                state: InjectionState) -> list:
    """Stop computing reference rows after the last injecting block: no later layer reads them.

    A pre-hook on every later block keeps only the main rows of its ``row_inputs`` (the transformer hands each block
    the full batch of its timestep embedding again, so every block is cut); a pre-hook on the final norm pads the
    batch back with zeros, so the transformer's output keeps its batch size (the editor reads only the main rows).
    Returns the hook handles (none when the last block injects).
    """
    blocks = getattr(transformer, sites.blocks)
    last = len(blocks) - 1 if config.blocks is None else max(config.blocks, default=-1)
    if not config.enabled or last >= len(blocks) - 1:
        return []

    def drop(module, args, kwargs):
        layout = state.layout
        if layout is None or layout.num_ref == 0:
            return None
        state.dropped_rows = layout.num_ref
        keep = layout.num_main
        args = list(args)
        for name in sites.row_inputs:  # a no-op for inputs already cut by the previous block
            inputs = args if isinstance(name, int) else kwargs
            inputs[name] = inputs[name][:keep]
        return tuple(args), kwargs

    handles = [block.register_forward_pre_hook(drop, with_kwargs=True) for block in blocks[last + 1 :]]
    final_norm = getattr(transformer, sites.final_norm)
    return handles + [final_norm.register_forward_pre_hook(pad_back_dropped_rows(state))]


@contextmanager
def _injected_one(transformer, sites: TransformerSites, config: InjectionConfig, state: InjectionState):
    originals = dict(transformer.attn_processors)
    block = re.compile(rf"^{sites.blocks}\.(\d+)\.attn1\.processor$")
    replacement = {}
    for name, processor in originals.items():
        match = block.match(name)
        if match:
            index = int(match.group(1))
            replacement[name] = sites.processor(state, index, config.injects_block(index), processor)
        else:
            replacement[name] = processor
    transformer.set_attn_processor(replacement)
    hooks = []
    try:
        hooks = _drop_unread_reference_rows(transformer, sites, config, state)
        yield state
    finally:
        for hook in hooks:
            hook.remove()
        transformer.set_attn_processor(dict(originals))


@contextmanager
def injected(transformers, sites: TransformerSites, config: InjectionConfig, state: InjectionState):
    """Install one ``sites.processor`` per block's self-attention in every expert; restore the originals (and clear
    the state's layout) on exit or error.

    Args:
        transformers: the family's transformers (one, or two experts for Wan 2.2 A14B; same block count).
        sites: where the processors and row-drop hooks go in them.
        config: which blocks inject.
        state: the state object the editor updates per step.

    Yields:
        ``state``.
    """
    num_blocks = len(getattr(transformers[0], sites.blocks))
    if config.blocks is not None and any(not 0 <= b < num_blocks for b in config.blocks):
        raise ValueError(f"injection blocks must be in 0..{num_blocks - 1}, got {list(config.blocks)}")
    try:
        with ExitStack() as stack:
            for transformer in transformers:
                stack.enter_context(_injected_one(transformer, sites, config, state))
            yield state
    finally:
        state.layout, state.reference_kv, state.record_row = None, None, None
