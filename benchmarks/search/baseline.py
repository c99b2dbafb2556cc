"""The yardstick: the best plain torch code a user could write for exact MaxSim top-k, with no index.

Documents stay in RAM as one (n, r_c, D) tensor: bf16 (what the index stores) where the CPU computes in bf16, and in
the compute dtype otherwise (:func:`resident_documents`: converting bf16 on every call is what a user without native
bf16 would not do); all queries of a call go at once; the corpus is scored in blocks, each block one matmul
(Q*r_q, D) @ (B*r_c, D)^T in the compute dtype, then max over the block's r_c, sum over r_q and a running top-k.
Nothing metaembed-specific: a user writes this in twenty lines. The block size is the best of several, timed on the
machine (:func:`tuned_plain_torch`): on a VM a 64 MB block is first touched page by page on every call (~10x the
time of filling a reused one), and one fixed size is a weak yardstick for some shapes.
"""

from __future__ import annotations

import time

import torch

MAX_BLOCK_ELEMENTS = 1 << 24
"""Similarity-block size (elements): 64 MB of fp32, large enough for full-speed matmuls, small enough for RAM."""


def plain_torch_topk(documents: torch.Tensor, queries: torch.Tensor, budget: tuple[int, int], k: int = 10,
                     compute_dtype: torch.dtype = torch.float32,
                     block_elements: int = MAX_BLOCK_ELEMENTS,
                     documents_left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (scores, document rows), each (Q, k), of ``queries`` (Q, r_q_stored, D) against ``documents``
    (n, r_c_stored, D) at ``budget`` = (r_q, r_c): sum over query vectors of the max over document vectors.
    ``documents_left``: each block as documents @ queries^T (few query vectors: a tall-skinny product) rather than
    queries @ documents^T."""
    r_q, r_c = budget
    n_queries = len(queries)
    flat_queries = queries[:, :r_q].reshape(n_queries * r_q, -1).to(compute_dtype)
    block = max(1, block_elements // (n_queries * r_q * r_c))
    best_scores = torch.full((n_queries, 0), float("-inf"))
    best_rows = torch.zeros((n_queries, 0), dtype=torch.long)
    for start in range(0, len(documents), block):
        chunk = documents[start:start + block, :r_c]
        flat_chunk = chunk.reshape(-1, chunk.shape[-1]).to(compute_dtype)
        if documents_left:
            similarity = flat_chunk @ flat_queries.T  # (B*r_c, Q*r_q)
            scores = similarity.view(len(chunk), r_c, n_queries, r_q).amax(dim=1).sum(dim=-1).float().T  # (Q, B)
        else:
            similarity = flat_queries @ flat_chunk.T  # (Q*r_q, B*r_c)
            scores = similarity.view(n_queries, r_q, len(chunk), r_c).amax(dim=-1).sum(dim=1).float()  # (Q, B)
        scores, rows = torch.cat([best_scores, scores], dim=1), torch.cat(
            [best_rows, torch.arange(start, start + len(chunk)).expand(n_queries, -1)], dim=1)
        best_scores, picked = scores.topk(min(k, scores.shape[1]), dim=1)
        best_rows = rows.gather(1, picked)
    return best_scores, best_rows


BLOCK_CHOICES = (1 << 18, 1 << 20, 1 << 22, 1 << 24)
"""Similarity-block sizes (elements) the tuned yardstick tries: 1 MB to 64 MB of fp32."""


def resident_documents(documents: torch.Tensor, r_c: int, compute_dtype: torch.dtype) -> torch.Tensor:
    """What a user keeps in RAM for budget r_c: the first r_c vectors, contiguous, bf16 rounded (as the index stores
    them), held in the compute dtype (bf16, or fp32 where bf16 is emulated)."""
    return documents[:, :r_c].to(torch.bfloat16).to(compute_dtype).contiguous()


def tuned_plain_torch(documents: torch.Tensor, sample_queries: torch.Tensor, budget: tuple[int, int], k: int = 10,
                      compute_dtype: torch.dtype = torch.float32):
    """``search(queries) -> (scores, rows)``: :func:`plain_torch_topk` at the block size and product orientation that
    were fastest here, each timed once for one query alone (best of 3) and for ``sample_queries`` in one call; the
    lone choice serves a single query, the batch choice anything larger. Returns (search, {"lone": (size,
    documents_left), "batch": ...})."""
    def fastest(queries: torch.Tensor, repeat: int) -> tuple[int, bool]:
        times = {}
        for choice in [(size, left) for size in BLOCK_CHOICES for left in (False, True)]:
            plain_torch_topk(documents, queries, budget, k, compute_dtype, *choice)  # warm-up
            best = float("inf")
            for _ in range(repeat):
                start = time.perf_counter()
                plain_torch_topk(documents, queries, budget, k, compute_dtype, *choice)
                best = min(best, time.perf_counter() - start)
            times[choice] = best
        return min(times, key=times.get)

    chosen = {"lone": fastest(sample_queries[:1], 3), "batch": fastest(sample_queries, 1)}

    def search(queries: torch.Tensor):
        return plain_torch_topk(documents, queries, budget, k, compute_dtype,
                                *(chosen["lone"] if len(queries) == 1 else chosen["batch"]))

    return search, chosen
