"""Line meta attention (``meta_attention: document_lines`` / ``document_segments``): one meta token per document line.

Trained with MMR, meta tokens that all read the whole item carry one summary of it, not its parts, so a larger budget
buys nothing, even on documents whose parts are worth +9 nDCG@10 to token-level late interaction
(benchmarks/results/late_interaction_ceiling_pydocs_dense.md). Encoded apart, a document's lines (a module's members,
a source package's binaries) are what a query about one of them matches (benchmarks/results/
teacher_headroom_pydocs_dense.md). With these layouts, in one forward pass:

    the item's own tokens   document_lines: as the backbone reads them (the whole item);
                            document_segments: within their own line (and the special tokens: [CLS]/[SEP]/BOS),
                            so each line is encoded apart
    vector 1                the whole item (the mean of its own tokens with a mean first vector)
    vector v >= 2           line v - 1: its meta token reads that line only; an item with n < r_c - 1 lines
                            reads them again (vector v: line ((v - 2) mod n) + 1), so every vector past the first
                            is a line and a larger budget never adds a second summary of the whole item

so a budget r_c covers the item and its first r_c - 1 lines (all of them, some twice, when it has fewer). With
``meta_residual`` each line's vector starts at the mean of that line's token states (see MetaTokenPooling). Lines are the text's non-empty lines, found from the fast
tokenizer's character offsets; an input that is not plain text (an image, a chat message) is one segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import torch
from torch import Tensor


def line_segment_ids(texts: Sequence[str], offsets: Tensor) -> Tensor:
    """(batch, seq) long: 0 for tokens with no characters (special tokens, padding), else the 1-based number of the
    non-empty line of ``texts[row]`` the token starts in. ``offsets`` (batch, seq, 2) are the tokenizer's
    character spans (``return_offsets_mapping``)."""
    segments = torch.zeros(offsets.shape[:2], dtype=torch.long)
    for row, text in enumerate(texts):
        lines = text.split("\n")
        line_starts = torch.tensor(list(accumulate((len(line) + 1 for line in lines[:-1]), initial=0)))
        numbers = torch.tensor([bool(line.strip()) for line in lines]).cumsum(dim=0)  # non-empty lines so far
        starts, stops = offsets[row, :, 0].long().contiguous(), offsets[row, :, 1].long()
        line = torch.searchsorted(line_starts, starts, right=True) - 1  # the line each token starts in
        segments[row] = torch.where(stops > starts, numbers[line], 0)
    return segments


def meta_segments(num_meta: int, num_segments: Tensor, first_ordinal: int) -> Tensor:
    """(batch, num_meta) long: the line each appended meta token reads (1-based), 0 for the whole item. Meta token
    ``j`` gives vector ``first_ordinal + j`` (1-based): vector 1 is the whole item, vector v >= 2 line v - 1, and
    past the item's n lines line ((v - 2) mod n) + 1; an item without lines gives every meta token the whole item."""
    ordinal = torch.arange(first_ordinal, first_ordinal + num_meta, device=num_segments.device).unsqueeze(0)
    lines = num_segments.unsqueeze(1)
    line = (ordinal - 2) % lines.clamp(min=1) + 1  # past the item's last line: its lines again, from line 1
    return torch.where((ordinal >= 2) & (lines > 0), line, torch.zeros_like(line))


def segment_attention(attention_mask: Tensor, meta_positions: Tensor, segment_ids: Tensor, *, causal: bool,
                      first_ordinal: int, apart: bool) -> tuple[Tensor, Tensor]:
    """The attention of ``document_lines`` (``apart=False``) or ``document_segments`` (``apart=True``) and what each
    meta vector averages.

    ``attention_mask`` (batch, seq) marks real and meta tokens, ``meta_positions`` (batch, R) where the meta tokens sit,
    ``segment_ids`` (batch, seq) each token's line (0: special token, meta token or padding). Returns a boolean
    (batch, 1, seq, seq) mask, True where allowed: an own token reads every own token, or with ``apart`` its line
    and the special tokens (a special token reads every own token), causally for a decoder; a meta token reads its
    line (or the whole item) and the special tokens, and itself; padding only itself. And ``reads`` (batch, R, seq):
    the own tokens of each meta token's line (every own token for the whole item), what its residual base averages.
    """
    batch, seq = attention_mask.shape
    device = attention_mask.device
    segment_ids = segment_ids.to(device)
    meta_positions = meta_positions.to(device)
    is_meta = torch.zeros(batch, seq, dtype=torch.bool, device=device)
    is_meta.scatter_(1, meta_positions, True)
    is_own = attention_mask.bool() & ~is_meta
    own_segment = segment_ids.masked_fill(~is_own, 0)
    special = is_own & (own_segment == 0)

    # The line each row (query position) reads; -1: every own token (special tokens, whole-item meta tokens).
    row_segment = own_segment.masked_fill(special, -1) if apart else torch.full_like(own_segment, -1)
    assigned = meta_segments(meta_positions.shape[1], own_segment.amax(dim=1), first_ordinal)
    row_segment = row_segment.scatter(1, meta_positions, assigned.masked_fill(assigned == 0, -1))
    reads_all = row_segment.unsqueeze(2) == -1
    same_line = (row_segment.unsqueeze(2) == own_segment.unsqueeze(1)) & (own_segment.unsqueeze(1) > 0)
    keys = is_own.unsqueeze(1) & (reads_all | same_line | special.unsqueeze(1))
    rows = (is_own | is_meta).unsqueeze(2)
    if causal:
        positions = torch.arange(seq, device=device)
        keys = keys & ((positions.view(1, 1, seq) <= positions.view(1, seq, 1)) | is_meta.unsqueeze(2))
    itself = torch.eye(seq, dtype=torch.bool, device=device).unsqueeze(0)
    allowed = (rows & keys) | itself

    meta_rows = row_segment.gather(1, meta_positions)  # (batch, R)
    reads = is_own.unsqueeze(1) & ((meta_rows.unsqueeze(2) == -1) | (meta_rows.unsqueeze(2) == own_segment.unsqueeze(1)))
    return allowed.unsqueeze(1), reads
