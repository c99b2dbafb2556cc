"""Exact and cascade MaxSim search over segments; scoring itself is :func:`metaembed.maxsim`."""

from __future__ import annotations

import bisect
import contextvars
import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metaembed.hardware import cpu_has_native_bf16, torch_threads
from metaembed.index.threadchoice import THREAD_CHOICE
from metaembed.index.scan import (SearchTask, joined_parts, scores_from_maxima, search_tasks, task_maxima,
                                  worth_threads)
from metaembed.index.segment import Segment
from metaembed.index.taskboard import TaskBoard, run_as_caller, run_helper
from metaembed.scoring import TIE_WINDOW, paired_maxsim, query_prefix_weights

_PENDING_SCORES = 1 << 20
"""Scores (query x document, fp32: 4 MB) a search thread gathers before merging them into its running top-k."""


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

    ``keys`` are the index's integer document keys for the state the search ran on (``generation``: a writer's
    merge of segments renumbers them; ``MultiVectorIndex.ids_of`` / ``key_of`` translate them); rows with fewer
    than k documents end in key -1 and score -inf."""

    scores: np.ndarray
    """(n_q, k) float32 MaxSim scores."""
    keys: np.ndarray
    """(n_q, k) int64 document keys, -1 where a query has fewer than k results."""
    budgets: list[tuple[int, int]]
    """The (r_q, r_c) each query was scored at."""
    costs: list[int] | None = None
    """Dot products spent per query (None if unknown: HNSW)."""
    generation: int | None = None
    """The committed index state (manifest generation) the keys belong to."""


def default_compute_dtype(storage_dtype: torch.dtype) -> torch.dtype:
    """bf16 for bf16 storage on CPUs with native bf16 matmul (and on GPUs), fp32 otherwise. Never fp16."""
    if storage_dtype == torch.bfloat16 and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def merge_top_k(best: tuple[Tensor, Tensor], scores: Tensor, keys: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Merge a block's (n_q, m) scores and their (m,) or (n_q, m) global keys into the running top-k."""
    if keys.ndim == 1:
        keys = keys.unsqueeze(0).expand(scores.shape[0], -1)
    if scores.shape[1] > k:
        scores, positions = scores.topk(k, dim=1)  # sorted, best first
        keys = keys.gather(1, positions)
        if best[0].shape[1] == 0:  # the first block: nothing to merge with
            return scores, keys
    scores = torch.cat([best[0], scores], dim=1)
    keys = torch.cat([best[1], keys], dim=1)
    # Always through topk, so the running list stays sorted best first even when fewer than k exist.
    scores, positions = scores.topk(min(k, scores.shape[1]), dim=1)
    return scores, keys.gather(1, positions)


def exact_search(
    segments: Sequence[Segment],
    deleted: Sequence[Tensor | None],
    queries: Tensor,
    r_c: int,
    k: int,
    compute_dtype: torch.dtype,
    normalize_by_query: bool = False,
    threads: int = 1,
) -> tuple[Tensor, Tensor]:
    """Top-k (scores, keys) of every query over every live document, keys = segment offset + row; ``deleted`` holds
    each segment's deleted rows as a mask, None where it has none (the index keeps it: :func:`deleted_masks`).

    With ``threads`` > 1 the search's tasks (:func:`~metaembed.index.scan.search_tasks`) go to that many
    single-threaded workers, the caller and threads - 1 helpers, each taking the next task when done with its own;
    when none is left the caller runs again any task still in a helper's hands and keeps the first result
    (:mod:`metaembed.index.taskboard`), so a helper whose core is busy elsewhere never holds the search up. The
    caller joins the parts of segments shared by their ranks and merges every result into the top-k. A search too
    small for helpers (:func:`~metaembed.index.scan.worth_threads`) runs in the caller alone, on torch's own
    ``threads``; one task is scored without the board. Either way a search runs on ``threads`` only where that has
    recently been faster than one thread for searches of its size, else on one (:mod:`metaembed.index.threadchoice`):
    on a loaded machine a second thread can cost more than it gives."""
    n_q, r_q, _ = queries.shape
    totals = query_prefix_weights(queries)[:, -1:] if normalize_by_query else None  # (n_q, 1): r_q for unit vectors
    prepared = segments[0].prepare_queries(queries.reshape(n_q * r_q, -1), compute_dtype) if segments else None
    workers = worth_threads([segment.count for segment in segments], r_c, n_q * r_q, queries.shape[-1], threads)
    tasks = search_tasks(segments, r_c, n_q * r_q, queries.shape[-1], workers)
    # one thread or ``threads``, whichever has recently been faster for searches of this size (an idle machine, or
    # a busy one; see metaembed.index.threadchoice): a search shared among workers runs on the caller alone when
    # that is faster, and one too small to share runs in the caller on torch's own threads when those are faster
    helpers = workers > 1 and len(tasks) > 1
    size = THREAD_CHOICE.size(sum(segment.count for segment in segments) * r_c, n_q * r_q, len(tasks), helpers)
    learns = threads > 1 and (helpers or workers == 1)
    chosen = THREAD_CHOICE.choose(size, threads, first=threads if helpers else 1) if learns else 1
    caller_threads = chosen if workers == 1 else 1
    if helpers and chosen == 1:
        # the caller alone runs a one-thread search's tasks (in the 8 rank parts cut for helpers, a lone (16,64)
        # query took ~5-10% longer)
        tasks = search_tasks(segments, r_c, n_q * r_q, queries.shape[-1], 1)
    started = time.perf_counter()

    def done(found: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        if learns:
            THREAD_CHOICE.record(size, chosen, time.perf_counter() - started)
        return found
    merge_every = max(k, _PENDING_SCORES // max(1, n_q))

    def run(number: int) -> Tensor:
        """A task's maxima over its documents' vectors (any thread)."""
        task = tasks[number]
        return task_maxima(segments[task.segment], prepared, n_q * r_q, task.start, task.stop, task.ranks,
                           part_of=r_c if task.parts > 1 else None)

    def scored(task: SearchTask, maxima: Tensor) -> Tensor:
        """(n_q, stop - start) fp32 MaxSim of a task's documents, -inf where deleted."""
        scores = scores_from_maxima(segments[task.segment], maxima, prepared, (n_q, r_q), task.start, task.stop)
        if normalize_by_query:
            scores /= totals
        if deleted[task.segment] is not None:
            scores.masked_fill_(deleted[task.segment][task.start:task.stop], float("-inf"))
        return scores

    if len(tasks) == 1:  # one block (a small search): no board, no merging, keys from positions
        with torch_threads(caller_threads, exactly=True):
            scores = scored(tasks[0], run(0))
            top, positions = scores.topk(min(k, scores.shape[1]), dim=1)
            return done((top, positions.add_(tasks[0].offset + tasks[0].start)))

    parts: dict[int, list[Tensor]] = {}
    best = (torch.empty(n_q, 0), torch.empty(n_q, 0, dtype=torch.long))
    waiting: list[tuple[Tensor, Tensor]] = []
    columns = 0

    def consume(results: Sequence[tuple[int, Tensor]]) -> None:
        """Score finished tasks (a segment shared by its ranks once all its parts are in) and merge them into the
        top-k only when ~_PENDING_SCORES are waiting, so small blocks do not each pay for a top-k."""
        nonlocal best, waiting, columns
        for number, maxima in results:
            task = tasks[number]
            if task.parts > 1:
                collected = parts.setdefault(task.segment, [])
                collected.append(maxima)
                if len(collected) < task.parts:
                    continue
                maxima = joined_parts(segments[task.segment], collected, prepared, task.start, r_c)
            waiting.append((scored(task, maxima), torch.arange(task.offset + task.start, task.offset + task.stop)))
            columns += task.stop - task.start
            if columns >= merge_every:
                best = merge_top_k(best, *_joined(waiting), k)
                waiting, columns = [], 0

    board = TaskBoard(len(tasks))
    with torch_threads(caller_threads, exactly=True):  # the calling thread is the first worker
        if helpers and chosen > 1:
            pool = search_pool(workers - 1)
            for _ in range(workers - 1):
                pool.submit(run_helper, board, run)
        run_as_caller(board, run, consume)
        return done(merge_top_k(best, *_joined(waiting), k) if waiting else best)


def deleted_masks(live: Sequence[Tensor]) -> list[Tensor | None]:
    """Each segment's deleted rows (the complement of its live mask), None for a segment without deletions (most)."""
    return [None if bool(alive.all()) else ~alive for alive in live]


def _joined(blocks: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Blocks of (n_q, m) scores and (m,) keys as one (scores, keys) pair."""
    if len(blocks) == 1:
        return blocks[0]
    return torch.cat([scores for scores, _ in blocks], dim=1), torch.cat([keys for _, keys in blocks])


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def search_pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``threads`` helper workers, each running torch on one thread (made once, reused)."""
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="metaembed-search",
                                                 initializer=torch.set_num_threads, initargs=(1,))
        return _POOLS[threads]


_RESOLVED_THREADS: contextvars.ContextVar[int | None] = contextvars.ContextVar("metaembed_search_threads", default=None)


def search_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an index's search method so that its own torch work (query checks, merges, reranks) runs on one thread in
    the calling thread: the scan shares its blocks among the index's worker threads itself, and a parallel region
    on a busy machine waits for its slowest, possibly descheduled, thread. The index's thread count is resolved
    before (by default it is the caller's torch thread count) and kept for the call (:func:`searching_threads`)."""

    @functools.wraps(method)
    def run(index: Any, *args: Any, **kwargs: Any) -> Any:
        token = _RESOLVED_THREADS.set(searching_threads(index.threads))
        try:
            with torch_threads(1):
                return method(index, *args, **kwargs)
        finally:
            _RESOLVED_THREADS.reset(token)

    return run


def searching_threads(threads: int | None) -> int:
    """The worker threads of a search: ``threads``, else the count a :func:`search_method` call resolved, else
    torch's thread count."""
    if threads is None and _RESOLVED_THREADS.get() is not None:
        return _RESOLVED_THREADS.get()
    return resolve_threads(threads)


def resolve_threads(threads: int | None) -> int:
    """Search threads: ``threads``, or torch's thread count when None."""
    if threads is None:
        return torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None (torch's thread count), got {threads!r}")
    return threads


_RERANK_VALUES = 1 << 20
"""Candidate vector values gathered per rerank step (4 MB in fp32): as many queries at a time as fit. Larger steps
lose more to first touching freshly allocated memory than they save in calls (a 64 MB buffer: ~16,000 page faults,
10x the time of filling a reused one, on this VM)."""


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
    """Exact MaxSim of each query against its own candidates (n_q, K; -1 = none) at budget r_c; top-k (scores,
    keys). ``full_precision``: score a pq index's kept bf16 copies rather than its codes.

    The candidates of as many queries as :data:`_RERANK_VALUES` allows are gathered at once and scored in one
    batched matmul (:func:`~metaembed.scoring.paired_maxsim`), so memory stays bounded whatever the batch."""
    n_q, width = candidate_keys.shape
    scores = torch.full((n_q, width), float("-inf"))
    dim = segments[0].dim if segments else 0
    step = max(1, _RERANK_VALUES // max(1, width * r_c * dim))
    for start in range(0, n_q, step):
        keys = candidate_keys[start : start + step]
        valid = (keys >= 0).reshape(-1)
        if not bool(valid.any()):
            continue
        flat = keys.reshape(-1)
        if bool(valid.all()):
            documents = gather_documents(segments, offsets, flat, r_c, compute_dtype, full_precision)
        else:
            documents = torch.zeros(len(flat), r_c, dim, dtype=compute_dtype)
            documents[valid] = gather_documents(segments, offsets, flat[valid], r_c, compute_dtype, full_precision)
        paired = paired_maxsim(queries[start : start + step].to(compute_dtype),
                               documents.view(len(keys), width, r_c, dim), dtype=compute_dtype,
                               normalize_by_query=normalize_by_query)
        scores[start : start + len(keys)] = paired.masked_fill(~valid.view(len(keys), width), float("-inf"))
    top, where = scores.topk(min(k, width), dim=1)
    return top, candidate_keys.gather(1, where)


def gather_documents(segments: Sequence[Segment], offsets: Tensor, keys: Tensor, r_c: int, dtype: torch.dtype,
                     full_precision: bool = False) -> Tensor:
    """Documents by global key as (len(keys), r_c, D), read from their segments (``full_precision``: as
    :meth:`Segment.gather`). Keys all in one segment (a compacted index) come back as that segment's gather itself,
    with no copy."""
    segment_of = torch.searchsorted(offsets, keys, right=True) - 1
    first, last = (int(segment_of.min()), int(segment_of.max())) if len(keys) else (0, 0)
    if first == last and segments:
        return segments[first].gather(keys - offsets[first], r_c, dtype, full_precision)
    out = torch.empty(len(keys), r_c, segments[0].dim if segments else 0, dtype=dtype)
    for s in segment_of.unique().tolist():
        where = (segment_of == s).nonzero().squeeze(1)
        out.index_copy_(0, where, segments[s].gather(keys[where] - offsets[s], r_c, dtype, full_precision))
    return out


def ids_of_keys(segments: Sequence[Segment], starts: Sequence[int], keys: Any) -> list[list[str | None]]:
    """String ids of a (n_queries, k) array of document keys, None for key -1; a key the index never had is an error."""
    rows = np.asarray(keys, dtype=np.int64)
    if rows.ndim != 2:
        raise ValueError(f"keys must be a 2-d (n_queries, k) array, got shape {rows.shape}")
    total = int(sum(segment.count for segment in segments))
    bad = (rows < -1) | (rows >= total)
    if bad.any():
        raise ValueError(f"document key {int(rows[bad][0])} is not in this index (keys run from 0 to {total - 1}; -1 = none)")
    return [[None if key < 0 else document_id(segments, starts, key) for key in row] for row in rows.tolist()]


def ranked_results(segments: Sequence[Segment], starts: Sequence[int], scores: Tensor, keys: Tensor,
                   budgets: Sequence[tuple[int, int]] | None = None, costs: Sequence[int] | None = None,
                   arrays: bool = False, k: int = 0) -> list[SearchResult] | SearchArrays:
    """Ranked (n_q, <= k) scores and keys as per-query :class:`SearchResult` (ids and metadata looked up), or as one
    :class:`SearchArrays` padded to k columns; -inf scores and keys < 0 are no result. In numpy: the arrays are
    small, and a numpy operation on them costs a fraction of a torch one."""
    scores, keys = scores.float().numpy(), keys.numpy()
    keys = np.where(np.isinf(scores) | (keys < 0), -1, keys).astype(np.int64, copy=False)
    if arrays:
        padded_scores = np.full((len(scores), max(k, scores.shape[1])), -np.inf, dtype=np.float32)
        padded_keys = np.full(padded_scores.shape, -1, dtype=np.int64)
        padded_scores[:, : scores.shape[1]], padded_keys[:, : keys.shape[1]] = scores, keys
        return SearchArrays(padded_scores, padded_keys, budgets=list(budgets) if budgets else [],
                            costs=list(costs) if costs else None)
    results = []
    for q, (query_scores, query_keys) in enumerate(zip(scores.tolist(), keys.tolist())):
        result = SearchResult([], [], [], budget=budgets[q] if budgets else None, cost=costs[q] if costs else None)
        for score, key in zip(query_scores, query_keys):
            if key < 0:
                continue
            s = bisect.bisect_right(starts, key) - 1
            row = key - starts[s]
            result.ids.append(segments[s].ids[row])
            result.scores.append(score)
            result.metadata.append(segments[s].metadata(row))
        results.append(result)
    return results


def document_id(segments: Sequence[Segment], starts: Sequence[int], key: int) -> str:
    """The document id stored under a global key (segment start + row); ``starts`` as a list (a bisect over it
    costs ~1 us, a torch searchsorted ~10: ties look up several ids per query)."""
    s = bisect.bisect_right(starts, key) - 1
    return segments[s].ids[key - starts[s]]


def some(tensor: Tensor, rows: Tensor | None) -> Tensor:
    """The ``rows`` of a per-query tensor, or all of it for None (see :func:`ranked_by_id_on_ties`)."""
    return tensor if rows is None else tensor[rows]


def ranked_by_id_on_ties(search: Callable[[int, Tensor | None], tuple[Tensor, Tensor]], k: int, total: int,
                         id_of_key: Callable[[int], str]) -> tuple[Tensor, Tensor]:
    """Top-k (scores, keys) from ``search(width, rows)`` (the top ``width`` of the queries ``rows``, None: all) with
    equal scores ranked by document id, descending (trec_eval's rule, as ``metaembed eval`` ranks): a few places
    past k are fetched, and more, for the queries whose ties reach the end of what was fetched, only those (in a
    batch one such query used to search the whole batch again). Only runs of equal scores that reach the top k look
    ids up; the rest keeps its order. The (n_q, k + a few) arrays are small, so the pass runs in numpy (~1 us an
    operation against torch's ~4: a fifth of a lone (1,1) query's time over 10,000 documents went to this pass in
    torch)."""
    width = min(total, k + TIE_WINDOW)
    found_scores, found_keys = search(max(width, 1), None)
    scores, keys = found_scores.numpy(), found_keys.numpy()
    while width < total and scores.shape[1] > k:
        last = scores[:, -1:]
        straddling = np.flatnonzero(((scores[:, k - 1 : k] == last) & np.isfinite(last))[:, 0])
        if not len(straddling):
            break
        width = min(total, width * 4)
        again_scores, again_keys = search(width, torch.from_numpy(straddling))
        wider = again_scores.shape[1]  # the others keep what they had, padded as "no document" (-inf, key -1)
        scores = np.concatenate([scores, np.full((len(scores), wider - scores.shape[1]), -np.inf, scores.dtype)], 1)
        keys = np.concatenate([keys, np.full((len(keys), wider - keys.shape[1]), -1, keys.dtype)], 1)
        scores[straddling], keys[straddling] = again_scores.numpy(), again_keys.numpy()
    keep = min(k, scores.shape[1])
    invalid = keys[:, :keep] < 0
    ranked_scores = np.where(invalid, np.float32(-np.inf), scores[:, :keep]).astype(scores.dtype, copy=False)
    ranked_keys = np.where(invalid, -1, keys[:, :keep])
    equal_next = (scores[:, 1:] == scores[:, :-1]) & np.isfinite(scores[:, 1:]) & (keys[:, 1:] >= 0)
    for row in np.flatnonzero(equal_next[:, :keep].any(axis=1)).tolist():  # ties that reach the top k
        row_equal, row_keys = equal_next[row].tolist(), keys[row].tolist()
        start = 0
        while start < keep:  # each run of equal scores that starts in the top k, ordered by id (descending)
            stop = start + 1
            while stop < len(row_keys) and row_equal[stop - 1]:
                stop += 1
            if stop - start > 1:
                row_keys[start:stop] = sorted(row_keys[start:stop], key=id_of_key, reverse=True)
            start = stop
        ranked_keys[row] = row_keys[:keep]
    return torch.from_numpy(ranked_scores), torch.from_numpy(ranked_keys)
