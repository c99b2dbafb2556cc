"""Latency as a user of the index sees it: a task's searches timed through a :class:`MultiVectorIndex` (bf16, on
disk in a temporary folder) holding the task's documents, one query at a time and all queries in one call.

The rankings themselves come from the sweep's own exact scorer (fp32, trec_eval's tie order); only the timings
come from the index, so a latency column says what a search at that budget costs in the product rather than what
the evaluation's brute-force scorer costs (several times more at large budgets)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import Tensor

from metaembed.budgets import Budget
from metaembed.index import MultiVectorIndex


@contextmanager
def latency_index(documents: Tensor, document_budget: int) -> Iterator[MultiVectorIndex]:
    """A bf16 index of ``documents`` (n, R_c, D), keeping their first ``document_budget`` vectors, in a temporary
    folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="metaembed-latency-") as folder:
        index = MultiVectorIndex.create(Path(folder) / "index", dim=documents.shape[-1],
                                        max_document_vectors=document_budget)
        try:
            index.add([str(row) for row in range(len(documents))], documents[:, :document_budget])
            yield index
        finally:
            index.close()


def single_query_ms(index: MultiVectorIndex, queries: Tensor, budget: Budget, k: int, count: int,
                    repeats: int) -> list[float]:
    """Milliseconds of one-query searches: the first ``count`` queries, each ``repeats`` times, after a warm-up
    (first-call allocations and the first read of each rank are not search cost)."""
    count = min(count, len(queries))
    if count == 0 or repeats == 0:
        return []
    index.search(queries[:1], k=k, budget=budget)
    timings = []
    for _ in range(repeats):
        for row in range(count):
            start = time.perf_counter()
            index.search(queries[row : row + 1], k=k, budget=budget)
            timings.append((time.perf_counter() - start) * 1000.0)
    return timings


def batched_ms_per_query(index: MultiVectorIndex, queries: Tensor, budget: Budget, k: int, repeats: int) -> list[float]:
    """Milliseconds per query of searching all ``queries`` in one call, ``repeats`` times."""
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        index.search(queries, k=k, budget=budget)
        timings.append((time.perf_counter() - start) * 1000.0 / max(1, len(queries)))
    return timings



def search_timings(index: MultiVectorIndex, queries: Tensor, budget: Budget, k: int, count: int,
                   repeats: int) -> tuple[list[float], list[float]]:
    """(one-query milliseconds, batched milliseconds per query) of searches at ``budget`` through ``index``."""
    return (single_query_ms(index, queries, budget, k, count, repeats),
            batched_ms_per_query(index, queries, budget, k, repeats))
