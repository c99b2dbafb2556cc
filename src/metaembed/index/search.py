"""Exact and cascade MaxSim search over segments; scoring itself is :func:`metaembed.maxsim`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
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

_RUNNING_MAX_ELEMENTS = 1 << 22
"""Documents per block are chosen so the running (query vectors x documents) maximum holds ~4M values (8 MB in
bf16): large enough for full-speed matmuls (0.67 of the bf16 peak for 1,600 query vectors on one thread against
0.47 at 1M values), small enough to stay in the last-level cache."""
_RANK_GROUPS_MAX_QUERY_VECTORS = 64
"""Up to this many query vectors a matmul against stored vectors is memory-bound (~64 FLOP per byte read, below a
bf16 AMX core's ~100), so a segment's ranks are scored in large groups, which stream memory faster."""
_PENDING_SCORES = 1 << 20
"""Scores (query x document, fp32: 4 MB) a search thread gathers before merging them into its running top-k."""
_CHUNKS_PER_THREAD = 2
"""Document blocks per search thread (at least): a thread slowed by other work on its core takes fewer of them."""
_MIN_TASK_MACS = 1 << 26
"""Multiply-adds worth a task of its own: ~2 ms on one core, well above the cost of handing a task over."""
_MIN_TASK_VECTORS = 1 << 18
"""Document vectors worth a task of its own when queries are few: 200 MB at D = 384, ~20 ms of reading on one core.
Cutting a segment costs more than the hand-over (a few tenths of a millisecond): a whole segment's ranks are read in
a few large matmuls (~11 GB/s on one core), a part of it one rank at a time (~7.5 GB/s)."""


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
    best = max_over_ranks(rank_maxima(segment, queries, n_q * r_q, start, stop, r_c))  # (n_q * r_q, n)
    anchors = segment.anchor_scores(start, stop, queries)  # pq: the part every rank of a document shares
    if anchors is not None:
        best = best.float() + anchors.float()
    if r_q == 1:
        return best.float()
    return best.view(n_q, r_q, stop - start).float().sum(dim=1)


def rank_maxima(segment: Segment, queries: Tensor | PreparedQueries, n_query_vectors: int, start: int, stop: int,
                r_c: int) -> Iterator[Tensor]:
    """(n_qv, n) score blocks whose elementwise maximum is each document's best over its first r_c vectors: for a
    whole segment of plain vectors and few query vectors (a memory-bound matmul), the maxima of groups of ranks
    scored in one matmul each (as many ranks as keep ~_RUNNING_MAX_ELEMENTS scores); otherwise one block per rank
    (many query vectors: the per-rank running maximum stays in cache)."""
    group = _RUNNING_MAX_ELEMENTS // max(1, (stop - start) * n_query_vectors)
    if (start == 0 and stop == segment.count and r_c > 1 and group > 1 and segment.stores_plain_vectors
            and n_query_vectors <= _RANK_GROUPS_MAX_QUERY_VECTORS):
        for first in range(0, r_c, group):
            yield max_of_stacked(segment.rank_group_scores(first, min(r_c, first + group), queries)).T
    else:
        for rank in range(r_c):
            yield segment.rank_scores(rank, start, stop, queries)


def max_over_ranks(blocks: Iterable[Tensor]) -> Tensor:
    """Elementwise maximum of same-shaped score blocks (at least one), kept in the first block's memory.

    bf16 blocks are compared by their bits as int16, which the CPU maximises natively (~4x faster than torch's
    bf16 maximum, which converts to fp32): a bf16 value >= 0 orders as its bits do and every negative one has a
    negative int16, so the largest bits are the largest value whenever any value is >= 0; where all are negative,
    the smallest bits are the largest value (the smallest magnitude)."""
    blocks = iter(blocks)
    best = next(blocks)
    if best.dtype != torch.bfloat16:
        for block in blocks:
            torch.maximum(best, block, out=best)
        return best
    high, low = best.view(torch.int16), None
    for block in blocks:
        bits = block.view(torch.int16)
        if low is None:
            low = high.clone()
        torch.maximum(high, bits, out=high)
        torch.minimum(low, bits, out=low)
    return best if low is None else torch.where(high >= 0, high, low).view(torch.bfloat16)


def max_of_stacked(scores: Tensor) -> Tensor:
    """The maximum over the first dimension of (r, ...) scores; bf16 by its bits as :func:`max_over_ranks` does,
    taking the minimum of the bits only if some entry has no non-negative value."""
    if scores.dtype != torch.bfloat16:
        return scores.amax(dim=0)
    bits = scores.view(torch.int16)
    high = bits.amax(dim=0)
    negative = high < 0
    if bool(negative.any()):
        high = torch.where(negative, bits.amin(dim=0), high)
    return high.view(torch.bfloat16)


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
    = r_c) of a block reach their floor. A segment is cut into equal blocks, so no thread is left a small remainder."""
    total = sum(counts)
    if threads > 1:
        share = -(-total // (threads * _CHUNKS_PER_THREAD))
        floor = min(-(-_MIN_TASK_MACS // max(1, macs_per_document)), -(-_MIN_TASK_VECTORS // max(1, vectors_per_document)))
        block = min(block, max(floor, share))
    chunks, offset = [], 0
    for s, count in enumerate(counts):
        pieces = max(1, -(-count // block))
        bounds = [count * piece // pieces for piece in range(pieces + 1)]
        chunks.extend((s, start, stop, offset) for start, stop in zip(bounds, bounds[1:]) if stop > start)
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

    deleted = [None if bool(alive.all()) else ~alive for alive in live]  # most segments have no deletions
    merge_every = max(k, _PENDING_SCORES // max(1, n_q))

    def scan(pending: Iterator[tuple[int, int, int, int]]) -> tuple[Tensor, Tensor]:
        """Score blocks as they come; merge them into the top-k only when ~_PENDING_SCORES are waiting (once, for
        a lone query over a small index), so small blocks do not each pay for a top-k and two concatenations."""
        best = (torch.empty(n_q, 0), torch.empty(n_q, 0, dtype=torch.long))
        waiting: list[tuple[Tensor, Tensor]] = []
        columns = 0
        for s, start, stop, offset in pending:
            scores = segment_block_scores(segments[s], prepared, (n_q, r_q), start, stop, r_c)
            if normalize_by_query:
                scores /= totals
            if deleted[s] is not None:
                scores.masked_fill_(deleted[s][start:stop], float("-inf"))
            waiting.append((scores, torch.arange(offset + start, offset + stop)))
            columns += stop - start
            if columns >= merge_every:
                best = merge_top_k(best, *_joined(waiting), k)
                waiting, columns = [], 0
        return merge_top_k(best, *_joined(waiting), k) if waiting else best

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


def _joined(blocks: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Blocks of (n_q, m) scores and (m,) keys as one (scores, keys) pair."""
    if len(blocks) == 1:
        return blocks[0]
    return torch.cat([scores for scores, _ in blocks], dim=1), torch.cat([keys for _, keys in blocks])


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
    reach the end of what was fetched. Only runs of equal scores that reach the top k look ids up; the rest keeps
    its order."""
    width = min(total, k + TIE_WINDOW)
    while True:
        scores, keys = search(max(width, 1))
        last = scores[:, -1:] if scores.shape[1] else scores
        straddle = scores.shape[1] > k and bool(((scores[:, k - 1 : k] == last) & torch.isfinite(last)).any())
        if width >= total or not straddle:
            break
        width = min(total, width * 4)
    keep = min(k, scores.shape[1])
    invalid = keys[:, :keep] < 0
    ranked_scores = scores[:, :keep].masked_fill(invalid, float("-inf"))
    ranked_keys = keys[:, :keep].masked_fill(invalid, -1)
    equal_next = (scores[:, 1:] == scores[:, :-1]) & torch.isfinite(scores[:, 1:]) & (keys[:, 1:] >= 0)
    for row in torch.nonzero(equal_next[:, :keep].any(dim=1)).flatten().tolist():  # ties that reach the top k
        row_equal, row_keys = equal_next[row].tolist(), keys[row].tolist()
        start = 0
        while start < keep:  # each run of equal scores that starts in the top k, ordered by id (descending)
            stop = start + 1
            while stop < len(row_keys) and row_equal[stop - 1]:
                stop += 1
            if stop - start > 1:
                row_keys[start:stop] = sorted(row_keys[start:stop], key=id_of_key, reverse=True)
            start = stop
        ranked_keys[row] = torch.tensor(row_keys[:keep])
    return ranked_scores, ranked_keys
