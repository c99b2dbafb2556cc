"""Nested-window meta attention: meta token i reads one window of the item, coarse to fine.

In the paper every meta token attends to the whole item. Trained with MMR on short text, their vectors
then collapse onto one direction (benchmarks/results/mmr_training_investigation.md) and a larger budget
buys nothing. With nested windows the vectors differ by construction, and a larger budget adds finer views:

    vector 1        the whole item
    vectors 2-3     its two halves
    vectors 4-7     its four quarters
    vectors 8-15    its eighths, ... (vector i, 1-based, sees part i - 2**level of 2**level, level = floor(log2 i))

so every budget prefix covers the item at its coarsest levels first. Each meta token also sees the item's
first token (the [CLS]/BOS attention sink) and itself; it never sees other meta tokens, and the item's own
tokens never see the meta tokens, so the item's token states are exactly the backbone's. The untrained
MiniLM's window means already rise with the budget on the Debian sources set (benchmarks/results/
meta_windows_headroom.md), where every meta token seeing everything gives one flat line.
"""

from __future__ import annotations

import torch
from torch import Tensor

FULL, DOCUMENT_WINDOWS, WINDOWS = "full", "document_windows", "windows"
DOCUMENT_LINES, DOCUMENT_SEGMENTS = "document_lines", "document_segments"
DOCUMENT_REGIONS = "document_regions"
META_ATTENTION_MODES = (FULL, DOCUMENT_WINDOWS, WINDOWS, DOCUMENT_LINES, DOCUMENT_SEGMENTS, DOCUMENT_REGIONS)
"""``full``: the paper's (every meta token sees the whole item); ``document_windows``: nested windows for
documents, full for queries; ``windows``: nested windows on both sides; ``document_lines``: a document's meta
token v reads its line v - 1; ``document_segments``: the same with the lines' own tokens also read apart (see
metaembed.model.meta_segments); ``document_regions``: a document image's meta tokens read nested regions of its
feature grid (metaembed.model.meta_regions; a composed vision-language backbone); all three full for queries."""

FIRST_VECTORS = ("meta", "mean")
"""What an item's first vector is: ``meta`` (the paper: the first meta token's state) or ``mean`` (the mean of the
item's own token states, which never read the meta tokens (:func:`meta_blind_attention`): the backbone's own
mean-pooled embedding, so the (1,1) budget starts where the backbone stands; the meta tokens give vectors 2..R)."""

AUTO_META_ATTENTION = "auto"
"""A setting, not a layout: ``document_lines`` where the backbone can read a document's lines (a text backbone
with a fast tokenizer that takes an explicit attention mask), else ``full``. A built model records the layout
it chose."""

AUTO_FIRST_VECTOR = "auto"
"""A setting, not a layout: ``mean`` where the backbone supports it (a text model, a decoder, or metaembed's
composed VLM, which takes the explicit mask), else ``meta`` (another vision-language model over a bidirectional
encoder). A built model always records the layout it chose."""


def check_meta_attention(mode: str) -> str:
    """``mode`` when it is a layout or ``auto``; else an error that names the setting and its choices."""
    if mode not in (*META_ATTENTION_MODES, AUTO_META_ATTENTION):
        raise ValueError(f"meta_attention must be one of {', '.join(META_ATTENTION_MODES)} or {AUTO_META_ATTENTION}, "
                         f"got {mode!r}")
    return mode


def windowed_sides(mode: str) -> tuple[str, ...]:
    """The sides ("query", "document") whose meta tokens read nested windows under ``mode`` (a layout, not auto)."""
    if check_meta_attention(mode) == AUTO_META_ATTENTION:
        raise ValueError("meta_attention 'auto' is resolved when the backbone is loaded (see AUTO_META_ATTENTION)")
    return {FULL: (), DOCUMENT_WINDOWS: ("document",), WINDOWS: ("query", "document"), DOCUMENT_LINES: (),
            DOCUMENT_SEGMENTS: (), DOCUMENT_REGIONS: ()}[mode]


def segmented_sides(mode: str) -> tuple[str, ...]:
    """The sides whose items are read line by line under ``mode`` (see metaembed.model.meta_segments)."""
    windowed_sides(mode)  # names the setting and its choices when wrong
    return ("document",) if mode in (DOCUMENT_LINES, DOCUMENT_SEGMENTS) else ()


def region_sides(mode: str) -> tuple[str, ...]:
    """The sides whose image items are read by grid regions under ``mode`` (see metaembed.model.meta_regions)."""
    windowed_sides(mode)  # names the setting and its choices when wrong
    return ("document",) if mode == DOCUMENT_REGIONS else ()


def nested_window_bounds(num_meta: int, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Where each meta token's window starts and stops among an item's own tokens.

    ``lengths`` (batch,) counts each item's own tokens; returns ``starts, stops`` (batch, num_meta), half-open
    and never empty (an item shorter than a level's part count gives its parts one token each).
    """
    ordinal = torch.arange(1, num_meta + 1, device=lengths.device)  # 1-based vector number
    parts = 2 ** torch.floor(torch.log2(ordinal.double())).long()  # parts at this vector's level
    part = ordinal - parts
    lengths = lengths.long().unsqueeze(1)
    starts = torch.minimum((part * lengths) // parts, (lengths - 1).clamp(min=0))
    stops = torch.maximum(((part + 1) * lengths) // parts, starts + 1)
    return starts, stops


def nested_window_attention(attention_mask: Tensor, meta_positions: Tensor, *, causal: bool) -> Tensor:
    """Which position may attend to which: a boolean (batch, 1, seq, seq) mask, True where allowed.

    ``attention_mask`` (batch, seq) marks real and meta tokens, ``meta_positions`` (batch, R) where the meta
    tokens sit (after the item's own tokens, as MetaTransformer lays them out). Own tokens attend to own
    tokens (causally for a decoder); meta token i to its window, the item's first token and itself; padding
    only to itself (so no softmax row is empty).
    """
    batch, seq = attention_mask.shape
    device = attention_mask.device
    is_meta = torch.zeros(batch, seq, dtype=torch.bool, device=device)
    is_meta.scatter_(1, meta_positions.to(device), True)
    is_own = attention_mask.bool() & ~is_meta
    own_index = is_own.long().cumsum(dim=1) - 1  # 0-based position among the item's own tokens
    starts, stops = nested_window_bounds(meta_positions.shape[1], is_own.sum(dim=1))

    # Per query position: the window of own-token indices it may read (meta rows only).
    window_start = torch.zeros(batch, seq, dtype=torch.long, device=device)
    window_stop = torch.zeros(batch, seq, dtype=torch.long, device=device)
    window_start.scatter_(1, meta_positions.to(device), starts)
    window_stop.scatter_(1, meta_positions.to(device), stops)

    key_index = own_index.unsqueeze(1)  # (batch, 1, seq): keys
    key_is_own = is_own.unsqueeze(1)
    in_window = key_is_own & (key_index >= window_start.unsqueeze(2)) & (key_index < window_stop.unsqueeze(2))
    sink = key_is_own & (key_index == 0)
    meta_rows = is_meta.unsqueeze(2) & (in_window | sink)
    own_rows = is_own.unsqueeze(2) & key_is_own
    if causal:
        positions = torch.arange(seq, device=device)
        own_rows = own_rows & (positions.view(1, 1, seq) <= positions.view(1, seq, 1))
    itself = torch.eye(seq, dtype=torch.bool, device=device).unsqueeze(0)
    return (meta_rows | own_rows | itself).unsqueeze(1)


def meta_blind_attention(attention_mask: Tensor, meta_positions: Tensor) -> Tensor:
    """A boolean (batch, 1, seq, seq) mask, True where allowed, for a bidirectional backbone: the item's own tokens
    attend to own tokens only, so their states are exactly the backbone's; meta tokens attend to every real token
    (own and meta); padding only to itself. (A decoder needs no such mask: its meta tokens come last.)"""
    batch, seq = attention_mask.shape
    device = attention_mask.device
    is_meta = torch.zeros(batch, seq, dtype=torch.bool, device=device)
    is_meta.scatter_(1, meta_positions.to(device), True)
    real = attention_mask.bool()
    is_own = real & ~is_meta
    own_rows = is_own.unsqueeze(2) & is_own.unsqueeze(1)
    meta_rows = is_meta.unsqueeze(2) & real.unsqueeze(1)
    itself = torch.eye(seq, dtype=torch.bool, device=device).unsqueeze(0)
    return (own_rows | meta_rows | itself).unsqueeze(1)
