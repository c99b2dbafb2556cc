"""The yardstick: the best plain torch code a user could write for exact MaxSim top-k, with no index.

Documents stay in RAM as one bf16 (n, r_c, D) tensor (what the index stores); all queries of a call go at once; the
corpus is scored in blocks, each block one matmul (Q*r_q, D) @ (B*r_c, D)^T in the compute dtype, then max over the
block's r_c, sum over r_q and a running top-k. Nothing metaembed-specific: a user writes this in twenty lines.
"""

from __future__ import annotations

import torch

MAX_BLOCK_ELEMENTS = 1 << 24
"""Similarity-block size (elements): 64 MB of fp32, large enough for full-speed matmuls, small enough for RAM."""


def plain_torch_topk(documents: torch.Tensor, queries: torch.Tensor, budget: tuple[int, int], k: int = 10,
                     compute_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (scores, document rows), each (Q, k), of ``queries`` (Q, r_q_stored, D) against ``documents``
    (n, r_c_stored, D) at ``budget`` = (r_q, r_c): sum over query vectors of the max over document vectors."""
    r_q, r_c = budget
    n_queries = len(queries)
    flat_queries = queries[:, :r_q].reshape(n_queries * r_q, -1).to(compute_dtype)
    block = max(1, MAX_BLOCK_ELEMENTS // (n_queries * r_q * r_c))
    best_scores = torch.full((n_queries, 0), float("-inf"))
    best_rows = torch.zeros((n_queries, 0), dtype=torch.long)
    for start in range(0, len(documents), block):
        chunk = documents[start:start + block, :r_c]
        similarity = flat_queries @ chunk.reshape(-1, chunk.shape[-1]).to(compute_dtype).T  # (Q*r_q, B*r_c)
        scores = similarity.view(n_queries, r_q, len(chunk), r_c).amax(dim=-1).sum(dim=1).float()  # (Q, B)
        scores, rows = torch.cat([best_scores, scores], dim=1), torch.cat(
            [best_rows, torch.arange(start, start + len(chunk)).expand(n_queries, -1)], dim=1)
        best_scores, picked = scores.topk(min(k, scores.shape[1]), dim=1)
        best_rows = rows.gather(1, picked)
    return best_scores, best_rows
