"""Exact and cascade MaxSim search over segments; scoring itself is :func:`metaembed.maxsim`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metaembed.hardware import cpu_has_native_bf16, torch_threads
from metaembed.index.codebook import PreparedQueries
from metaembed.index.segment import Segment
from metaembed.scoring import TIE_WINDOW, maxsim, query_prefix_weights

_RUNNING_MAX_ELEMENTS = 1 << 20
"""Documents per block are chosen so the running (query vectors x documents) maximum stays cache-sized (~4 MB)."""
_CHUNKS_PER_THREAD = 4
"""Document blocks per search thread (at least): a thread slowed by other work on its core takes fewer of them."""
_MIN_TASK_MACS = 1 << 26
"""Multiply-adds worth a task of its own: ~2 ms on one core, well above the cost of handing a task over."""
_MIN_TASK_VECTORS = 1 << 12
"""Document vectors worth a task of its own (read, converted, multiplied: ~1 ms on one core when queries are few)."""


@dataclass
class SearchResult:
    """The top-k documents for one query, best first."""

    ids: list[str]
    scores: list[float]
    metadata: list[Any] = field(default_factory=list)
    budget: tuple[int, int] | None = None
    """The (r_q, r_c) the scores were computed at: the fixed budget, or the rung a ``budget="auto"`` query stopped at."""
    cost: int | None = None
    """Query-vector x document-vector dot products spent on this query (each is D multiply-adds); None if unknown (HNSW)."""

    def __len__(self) -> int:
        return len(self.ids)

    def hits(self) -> list[dict[str, Any]]:
        """[{"id", "score", "metadata"}, ...] for printing or JSON."""
        return [
            {"id": i, "score": s, "metadata": m}
            for i, s, m in zip(self.ids, self.scores, self.metadata or [None] * len(self.ids))
        ]


@dataclass
class SearchArrays:
    """The top-k of a batch of queries as arrays, best first, for callers that want no per-query objects.

    ``keys`` are the index's integer document keys (stable while the index lives: segments are only appended;
    ``MultiVectorIndex.ids_of`` / ``key_of`` translate them); rows with fewer than k documents end in key -1
    and score -inf."""

    scores: np.ndarray
    """(n_q, k) float32 MaxSim scores."""
    keys: np.ndarray
    """(n_q, k) int64 document keys, -1 where a query has fewer than k results."""
    budgets: list[tuple[int, int]]
    """The (r_q, r_c) each query was scored at."""
    costs: list[int] | None = None
    """Dot products spent per query (None if unknown: HNSW)."""


def default_compute_dtype(storage_dtype: torch.dtype) -> torch.dtype:
    """bf16 for bf16 storage on CPUs with native bf16 matmul (and on GPUs), fp32 otherwise. Never fp16."""
    if storage_dtype == torch.bfloat16 and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def block_documents(n_query_vectors: int) -> int:
    """How many documents to score per block."""
    return max(256, _RUNNING_MAX_ELEMENTS // max(1, n_query_vectors))


def segment_block_scores(segment: Segment, queries: Tensor | PreparedQueries, shape: tuple[int, int], start: int,
                         stop: int, r_c: int) -> Tensor:
    """MaxSim of queries against documents ``start:stop`` of a rank-major segment: (n_q, n) fp32.

    ``queries`` are the n_q * r_q query vectors as :meth:`Segment.prepare_queries` made them, ``shape`` (n_q, r_q).
    One matmul (or, for pq codes, one table lookup per residual plus one anchor matmul) per document vector rank over its contiguous slice of the
    file, with a running maximum, so nothing is transposed or copied and a budget r_c reads exactly the first r_c
    slices."""
    n_q, r_q = shape
    best = segment.rank_scores(0, start, stop, queries)  # (n_q * r_q, n)
    for rank in range(1, r_c):
        torch.maximum(best, segment.rank_scores(rank, start, stop, queries), out=best)
    anchors = segment.anchor_scores(start, stop, queries)  # pq: the part every rank of a document shares
    if anchors is not None:
        best = best.float() + anchors.float()
    if r_q == 1:
        return best.float()
    return best.view(n_q, r_q, stop - start).float().sum(dim=1)


def merge_top_k(best: tuple[Tensor, Tensor], scores: Tensor, keys: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Merge a block's (n_q, m) scores and their (m,) or (n_q, m) global keys into the running top-k."""
    if keys.ndim == 1:
        keys = keys.unsqueeze(0).expand(scores.shape[0], -1)
    if scores.shape[1] > k:
        scores, positions = scores.topk(k, dim=1)
        keys = keys.gather(1, positions)
    scores = torch.cat([best[0], scores], dim=1)
    keys = torch.cat([best[1], keys], dim=1)
    # Always through topk, so the running list stays sorted best first even when fewer than k exist.
    scores, positions = scores.topk(min(k, scores.shape[1]), dim=1)
    return scores, keys.gather(1, positions)


def document_chunks(counts: Sequence[int], block: int, threads: int, macs_per_document: int = 1,
                    vectors_per_document: int = 1) -> list[tuple[int, int, int, int]]:
    """(segment, start, stop, offset of the segment) blocks covering every stored row, at most ``block`` documents
    each, and small enough that each of ``threads`` threads gets a few, but never under ~2 ms of work: the
    multiply-adds (``macs_per_document``, for the whole batch of queries) or the vectors read (``vectors_per_document``
    = r_c) of a block reach their floor."""
    total = sum(counts)
    if threads > 1:
        share = -(-total // (threads * _CHUNKS_PER_THREAD))
        floor = min(-(-_MIN_TASK_MACS // max(1, macs_per_document)), -(-_MIN_TASK_VECTORS // max(1, vectors_per_document)))
        block = min(block, max(floor, share))
    chunks, offset = [], 0
    for s, count in enumerate(counts):
        chunks.extend((s, start, min(start + block, count), offset) for start in range(0, count, block))
        offset += count
    return chunks


def exact_search(
    segments: Sequence[Segment],
    live: Sequence[Tensor],
    queries: Tensor,
    r_c: int,
    k: int,
    compute_dtype: torch.dtype,
    normalize_by_query: bool = False,
    threads: int = 1,
) -> tuple[Tensor, Tensor]:
    """Top-k (scores, keys) of every query over every live document, keys = segment offset + row.

    With ``threads`` > 1 the document blocks go to that many single-threaded workers (the caller and threads - 1
    helpers), each pulling the next block when done with its own: a few large tasks instead of many small parallel
    ones, so a thread whose core is busy elsewhere holds up only the block it has (2 threads on a loaded machine
    are not slower than 1)."""
    n_q, r_q, _ = queries.shape
    totals = query_prefix_weights(queries)[:, -1:] if normalize_by_query else None  # (n_q, 1): r_q for unit vectors
    prepared = segments[0].prepare_queries(queries.reshape(n_q * r_q, -1), compute_dtype) if segments else None
    chunks = document_chunks([segment.count for segment in segments], block_documents(n_q * r_q), threads,
                             macs_per_document=n_q * r_q * r_c * queries.shape[-1], vectors_per_document=r_c)

    def scan(pending: Iterator[tuple[int, int, int, int]]) -> tuple[Tensor, Tensor]:
        best = (torch.empty(n_q, 0), torch.empty(n_q, 0, dtype=torch.long))
        for s, start, stop, offset in pending:
            scores = segment_block_scores(segments[s], prepared, (n_q, r_q), start, stop, r_c)
            if normalize_by_query:
                scores /= totals
            dead = ~live[s][start:stop]
            if dead.any():
                scores[:, dead] = float("-inf")
            best = merge_top_k(best, scores, torch.arange(offset + start, offset + stop), k)
        return best

    if threads <= 1 or len(chunks) <= 1:  # too little work to share: one thread, no parallel regions to wait on
        with torch_threads(1):
            return scan(iter(chunks))
    pending = _SharedIterator(chunks)
    helpers = [search_pool(threads - 1).submit(scan, pending) for _ in range(threads - 1)]
    with torch_threads(1):  # the calling thread is the first worker
        best = scan(pending)
    for helper in helpers:
        if not helper.cancel():  # a helper that never started (its pool busy with another search) has nothing
            best = merge_top_k(best, *helper.result(), k)
    return best


class _SharedIterator:
    """An iterator several threads pull from, each item handed out once."""

    def __init__(self, items: Sequence[Any]) -> None:
        self._items = iter(items)
        self._lock = threading.Lock()

    def __iter__(self) -> "_SharedIterator":
        return self

    def __next__(self) -> Any:
        with self._lock:
            return next(self._items)


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def search_pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``threads`` helper workers, each running torch on one thread (made once, reused)."""
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="metaembed-search",
                                                 initializer=torch.set_num_threads, initargs=(1,))
        return _POOLS[threads]


def resolve_threads(threads: int | None) -> int:
    """Search threads: ``threads``, or torch's thread count when None."""
    if threads is None:
        return torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None (torch's thread count), got {threads!r}")
    return threads


def rerank(
    segments: Sequence[Segment],
    offsets: Tensor,
    queries: Tensor,
    candidate_keys: Tensor,
    r_c: int,
    k: int,
    compute_dtype: torch.dtype,
    normalize_by_query: bool = False,
    full_precision: bool = False,
) -> tuple[Tensor, Tensor]:
    """Exact MaxSim of each query against its own candidates (n_q, K) at budget r_c; top-k (scores, keys).
    ``full_precision``: score a pq index's kept bf16 copies rather than its codes.

    Candidates are gathered one query at a time, so memory stays at K x r_c x D whatever the batch."""
    scores = torch.full(candidate_keys.shape, float("-inf"))
    for i in range(queries.shape[0]):
        valid = candidate_keys[i] >= 0
        keys = candidate_keys[i][valid]
        if keys.numel():
            documents = gather_documents(segments, offsets, keys, r_c, compute_dtype, full_precision)
            scores[i, valid] = maxsim(queries[i : i + 1].to(compute_dtype), documents, dtype=compute_dtype,
                                      normalize_by_query=normalize_by_query)[0]
    top, where = scores.topk(min(k, candidate_keys.shape[1]), dim=1)
    return top, candidate_keys.gather(1, where)


def gather_documents(segments: Sequence[Segment], offsets: Tensor, keys: Tensor, r_c: int, dtype: torch.dtype,
                     full_precision: bool = False) -> Tensor:
    """Documents by global key as (len(keys), r_c, D), read from their segments (``full_precision``: as
    :meth:`Segment.gather`)."""
    dim = segments[0].dim if segments else 0
    out = torch.empty(len(keys), r_c, dim, dtype=dtype)
    segment_of = torch.searchsorted(offsets, keys, right=True) - 1
    for s in segment_of.unique().tolist():
        mask = segment_of == s
        rows = keys[mask] - offsets[s]
        out[mask] = segments[s].gather(rows, r_c, dtype, full_precision)
    return out


def ids_of_keys(segments: Sequence[Segment], offsets: Tensor, keys: Any) -> list[list[str | None]]:
    """String ids of a (n_queries, k) array of document keys, None for key -1; a key the index never had is an error."""
    rows = np.asarray(keys, dtype=np.int64)
    if rows.ndim != 2:
        raise ValueError(f"keys must be a 2-d (n_queries, k) array, got shape {rows.shape}")
    total = int(sum(segment.count for segment in segments))
    bad = (rows < -1) | (rows >= total)
    if bad.any():
        raise ValueError(f"document key {int(rows[bad][0])} is not in this index (keys run from 0 to {total - 1}; -1 = none)")
    return [[None if key < 0 else document_id(segments, offsets, key) for key in row] for row in rows.tolist()]


def ranked_results(segments: Sequence[Segment], offsets: Tensor, scores: Tensor, keys: Tensor,
                   budgets: Sequence[tuple[int, int]] | None = None, costs: Sequence[int] | None = None,
                   arrays: bool = False, k: int = 0) -> list[SearchResult] | SearchArrays:
    """Ranked (n_q, <= k) scores and keys as per-query :class:`SearchResult` (ids and metadata looked up), or as one
    :class:`SearchArrays` padded to k columns; -inf scores and keys < 0 are no result."""
    keys = keys.masked_fill(torch.isinf(scores) | (keys < 0), -1)
    if arrays:
        short = max(0, k - scores.shape[1])
        scores = torch.nn.functional.pad(scores.float(), (0, short), value=float("-inf"))
        keys = torch.nn.functional.pad(keys, (0, short), value=-1)
        return SearchArrays(scores.numpy().copy(), keys.numpy().astype(np.int64),
                            budgets=list(budgets) if budgets else [], costs=list(costs) if costs else None)
    segment_of = (torch.searchsorted(offsets, keys.clamp_min(0), right=True) - 1).tolist() if len(offsets) else []
    starts = offsets.tolist()
    results = []
    for q, (query_scores, query_keys) in enumerate(zip(scores.tolist(), keys.tolist())):
        result = SearchResult([], [], [], budget=budgets[q] if budgets else None, cost=costs[q] if costs else None)
        for column, (score, key) in enumerate(zip(query_scores, query_keys)):
            if key < 0:
                continue
            s = segment_of[q][column]
            row = key - starts[s]
            result.ids.append(segments[s].ids[row])
            result.scores.append(score)
            result.metadata.append(segments[s].metadata(row))
        results.append(result)
    return results


def document_id(segments: Sequence[Segment], offsets: Tensor, key: int) -> str:
    """The document id stored under a global key (segment offset + row)."""
    s = int(torch.searchsorted(offsets, key, right=True)) - 1
    return segments[s].ids[key - int(offsets[s])]


def ranked_by_id_on_ties(search: Callable[[int], tuple[Tensor, Tensor]], k: int, total: int,
                         id_of_key: Callable[[int], str]) -> tuple[Tensor, Tensor]:
    """Top-k (scores, keys) from ``search(width)`` with equal scores ranked by document id, descending
    (trec_eval's rule, as ``metaembed eval`` ranks): a few places past k are fetched, and more while ties
    reach the end of what was fetched. Only rows with equal scores look ids up; the others keep their order."""
    width = min(total, k + TIE_WINDOW)
    while True:
        scores, keys = search(max(width, 1))
        last = scores[:, -1:] if scores.shape[1] else scores
        straddle = scores.shape[1] > k and bool(((scores[:, k - 1 : k] == last) & torch.isfinite(last)).any())
        if width >= total or not straddle:
            break
        width = min(total, width * 4)
    keep = min(k, scores.shape[1])
    ranked_scores = scores[:, :keep].clone()
    ranked_keys = keys[:, :keep].clone()
    invalid = ranked_keys < 0
    ranked_scores[invalid], ranked_keys[invalid] = float("-inf"), -1
    tied = ((scores[:, 1:] == scores[:, :-1]) & torch.isfinite(scores[:, 1:])).any(dim=1)
    for row in torch.nonzero(tied).flatten().tolist():
        pairs = sorted(((s, key) for s, key in zip(scores[row].tolist(), keys[row].tolist()) if key >= 0),
                       key=lambda pair: (pair[0], id_of_key(pair[1])), reverse=True)[:k]
        ranked_scores[row], ranked_keys[row] = float("-inf"), -1
        for column, (score, key) in enumerate(pairs):
            ranked_scores[row, column], ranked_keys[row, column] = score, key
    return ranked_scores, ranked_keys
