"""The approximate first stage of ``cascade_search(first_stage="hnsw")``: a usearch HNSW graph over each live
document's first vector, searched by inner product."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metaembed.index.segment import Segment


def build_first_vector_hnsw(segments: Sequence[Segment], live: Sequence[Tensor], offsets: Tensor, dim: int,
                            connectivity: int = 16, expansion_add: int = 128, expansion_search: int = 256) -> Any:
    """A usearch index over every live document's first vector, keyed by global key (segment offset + row)."""
    from usearch.index import Index

    index = Index(ndim=dim, metric="ip", dtype="bf16", connectivity=connectivity,
                  expansion_add=expansion_add, expansion_search=expansion_search)
    for s, segment in enumerate(segments):
        rows = torch.nonzero(live[s]).flatten()
        if len(rows):
            first = segment.gather(rows, 1, torch.float32)[:, 0].numpy()
            index.add((rows + offsets[s]).numpy().astype(np.uint64), first, threads=0)
    return index


def hnsw_candidates(index: Any, first_query_vectors: Tensor, candidates: int) -> Tensor:
    """(n_q, candidates) global keys found by the HNSW walk for each query's first vector; -1 pads short lists."""
    matches = index.search(first_query_vectors.float().numpy(), candidates, threads=0)
    keys = torch.from_numpy(np.asarray(matches.keys, dtype=np.int64).reshape(len(first_query_vectors), -1))
    counts = np.asarray(matches.counts) if hasattr(matches, "counts") else np.asarray([len(matches.keys)])  # 1 query
    counts = torch.as_tensor(counts).reshape(-1, 1)
    keys[torch.arange(keys.shape[1]).unsqueeze(0) >= counts] = -1
    return keys
