"""Region meta attention (``meta_attention: document_regions``): a document image's meta tokens read nested regions
of its feature grid, the image analogue of ``document_lines``.

With every meta token reading the whole item, MMR training on images leaves every meta vector a near copy of the
first (cosine 0.999 after 100 steps: benchmarks/results/multimodal_meta_vector_spread.md), so no budget can buy
anything. With this layout the vectors differ by construction, coarse to fine, so every budget prefix reads the
image at its coarsest levels first:

    vector 1        the whole item (the mean of its own tokens with a mean first vector)
    vectors 2-5     the grid's four quadrants (overlapping when the side is odd)
    vectors 6-14    its nine 3 x 3 blocks (from a 3 x 3 grid up)
    vectors 15-63   its cells, row by row (a region met before is not repeated: on a 2 x 2 grid the quadrants are
                    the cells)

and past the last region the regions again, from the first. Each region's meta token reads that region's image
cells, the item's first token (the [CLS]/BOS attention sink) and itself; the item's own tokens read as the backbone
reads them. With ``meta_residual`` a region's vector starts at the mean of its cells' token states (see
MetaTokenPooling). An item without an image (or a query: queries keep full attention) gives every meta token the
whole item. Where the layout pays: images that hold several things (benchmarks/results/multimodal_region_ceiling.md:
+5 nDCG@10 over one vector on composites of four images; nothing on single clip-art drawings).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor


@lru_cache(maxsize=8)
def region_membership(side: int) -> Tensor:
    """(regions, side * side) bool: row r marks the cells of :func:`grid_regions` (side)'s region r."""
    regions = grid_regions(side)
    membership = torch.zeros(len(regions), side * side, dtype=torch.bool)
    for row, region in enumerate(regions):
        membership[row, list(region)] = True
    return membership


def grid_regions(side: int) -> list[tuple[int, ...]]:
    """The regions of a ``side`` x ``side`` grid read by vectors 2, 3, ...: each a tuple of row-major cell indices,
    coarse to fine (quadrants, 3 x 3 blocks, cells), each region once."""
    if side < 1:
        raise ValueError(f"a feature grid needs a positive side, got {side}")

    def blocks(count: int) -> list[tuple[int, int]]:
        width = math.ceil(side / count)
        starts = [round(i * (side - width) / (count - 1)) for i in range(count)]
        return [(start, start + width) for start in starts]

    levels = [blocks(count) for count in (2, 3) if side >= count] + [[(i, i + 1) for i in range(side)]]
    regions: list[tuple[int, ...]] = []
    for spans in levels:
        for rows in spans:
            for cols in spans:
                region = tuple(r * side + c for r in range(*rows) for c in range(*cols))
                if region not in regions and len(region) < side * side:
                    regions.append(region)
    return regions


def region_attention(attention_mask: Tensor, meta_positions: Tensor, cell_mask: Tensor, *, causal: bool,
                     first_ordinal: int) -> tuple[Tensor, Tensor]:
    """The attention of ``document_regions`` and what each meta vector averages.

    ``attention_mask`` (batch, seq) marks real and meta tokens, ``meta_positions`` (batch, R) where the meta tokens
    sit, ``cell_mask`` (batch, seq) the image-cell tokens (one square grid per item at most, row-major). Meta token
    ``j`` gives vector ``first_ordinal + j`` (1-based). Returns a boolean (batch, 1, seq, seq) mask, True where
    allowed (own tokens: own tokens, causally for a decoder; a meta token: its region's cells, or every own token for
    the whole item, plus the item's first token and itself; padding: itself), and ``reads`` (batch, R, seq): the own
    tokens each meta vector averages (its region's cells, or every own token).
    """
    batch, seq = attention_mask.shape
    device = attention_mask.device
    meta_positions = meta_positions.to(device)
    is_meta = torch.zeros(batch, seq, dtype=torch.bool, device=device)
    is_meta.scatter_(1, meta_positions, True)
    is_own = attention_mask.bool() & ~is_meta
    cells = cell_mask.to(device).bool() & is_own
    num_meta = meta_positions.shape[1]

    reads = is_own.unsqueeze(1).repeat(1, num_meta, 1)  # the whole item, unless a region is assigned below
    for row in range(batch):
        positions = cells[row].nonzero(as_tuple=True)[0]
        if positions.numel() == 0:
            continue
        side = math.isqrt(positions.numel())
        if side * side != positions.numel():
            raise ValueError(f"meta_attention='document_regions' reads one square feature grid per item; an item "
                             f"holds {positions.numel()} image cells (several images, or a grid that is not square)")
        membership = region_membership(side).to(device)
        if membership.shape[0] == 0:  # a 1 x 1 grid: nothing finer than the whole
            continue
        ordinals = torch.arange(first_ordinal, first_ordinal + num_meta, device=device)
        regional = ordinals >= 2
        region = (ordinals[regional] - 2) % membership.shape[0]
        cell_reads = torch.zeros(int(regional.sum()), seq, dtype=torch.bool, device=device)
        cell_reads[:, positions] = membership[region]
        reads[row, regional] = cell_reads

    own_rows = is_own.unsqueeze(2) & is_own.unsqueeze(1)
    if causal:
        index = torch.arange(seq, device=device)
        own_rows = own_rows & (index.view(1, 1, seq) <= index.view(1, seq, 1))
    first_own = is_own & (is_own.long().cumsum(dim=1) == 1)
    meta_rows = torch.zeros(batch, seq, seq, dtype=torch.bool, device=device)
    rows = torch.arange(batch, device=device).unsqueeze(1).expand_as(meta_positions)
    meta_rows[rows, meta_positions] = reads | first_own.unsqueeze(1)
    itself = torch.eye(seq, dtype=torch.bool, device=device).unsqueeze(0)
    return (own_rows | meta_rows | itself).unsqueeze(1), reads
