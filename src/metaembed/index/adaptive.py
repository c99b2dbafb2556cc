"""Per-query test-time scaling, ``budget="auto"``: every query at (1,1), larger budgets only where it is too close to call.

Stage 1 is exact search at the ladder's first rung for every query, keeping ``candidates`` documents. A query
stops at the first rung where its *margin* -- the rank-1 score minus the rank-2 score, divided by r_q -- is at
least the threshold; the others are reranked exactly on their own candidates at the next rung, up to
``max_budget``. Dividing by r_q makes the margin a gap in mean best-match cosine at every rung, the scale the MMR
loss trains (scores / r_q / temperature), so one threshold holds for the whole ladder.

Scoring is :func:`~metaembed.index.search.exact_search` and :func:`~metaembed.index.search.rerank`; nothing here
computes a similarity itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from metaembed.budgets import PAPER_BUDGETS, Budget, clip_budgets
from metaembed.index.search import (SearchArrays, SearchResult, default_compute_dtype, exact_search, ranked_by_id_on_ties,
                                     rerank)
from metaembed.index.validation import check_positive_int, parse_query_vectors
from metaembed.scoring import query_prefix_weights

if TYPE_CHECKING:
    from metaembed.index.embedded import MultiVectorIndex

DEFAULT_AUTO_MARGIN = 0.09
"""The threshold used when none is passed or calibrated: a gap of 0.09 in score / r_q is 3 logits at the MMR
loss's temperature 0.03, i.e. the model's own odds of rank 1 over rank 2 of e^3 ~ 20:1. Closer than that is
too close to call. Deliberately cautious (it escalates more queries than a calibrated threshold usually does):
without dev data, keeping the max budget's quality matters more than the last bit of saving."""

AUTO_MARGIN_PROPERTY = "auto_margin"
"""The index manifest property a calibrated threshold is stored under (``index.set_properties(auto_margin=x)``)."""

AUTO_CANDIDATES_PROPERTY = "auto_candidates"
"""The index manifest property a calibrated stage-1 candidate count is stored under; the default of auto searches."""

OnRung = Callable[[int, Tensor, Tensor, Tensor], None]
"""Called as ``on_rung(rung, query_rows, scores, keys)`` after each rung with the queries ranked there."""


def default_candidates(k: int) -> int:
    """Stage-1 candidates when none are given: max(100, 10 k), enough for the max budget's top k to be among them."""
    return max(100, 10 * k)


def auto_ladder(max_budget: Budget, ladder: Iterable[Sequence[int]] | None = None) -> list[Budget]:
    """The rungs a query may climb: ``ladder`` (default: the paper's budgets) clipped to ``max_budget``, ending at it.

    Rungs that are not at least the previous rung on both sides are skipped, so every step adds vectors."""
    rungs: list[Budget] = []
    for rung in clip_budgets(ladder or PAPER_BUDGETS, max_budget.query, max_budget.document):
        if not rungs or (rung.query >= rungs[-1].query and rung.document >= rungs[-1].document):
            rungs.append(rung)
    if not rungs or rungs[-1] != max_budget:
        rungs.append(max_budget)
    return rungs


def top_margin(scores: Tensor, r_q: int) -> Tensor:
    """(rank-1 - rank-2 score) / r_q per query of sorted (n_q, K) MaxSim scores; inf with fewer than 2 candidates."""
    if scores.shape[1] < 2:
        return torch.full((scores.shape[0],), math.inf)
    gaps = (scores[:, 0] - scores[:, 1]) / r_q
    return gaps.masked_fill(~torch.isfinite(scores[:, 1]), math.inf)


@dataclass
class LadderOutcome:
    """Each query's final ranking (raw MaxSim at its last rung, best first), that rung, and the dot products spent."""

    scores: Tensor
    keys: Tensor
    rung: Tensor
    cost: Tensor


def climb(index: "MultiVectorIndex", queries: Tensor, ladder: Sequence[Budget], candidates: int, margin: float,
          compute_dtype: torch.dtype, on_rung: OnRung | None = None) -> LadderOutcome:
    """Run the ladder: exact stage 1 at ``ladder[0]``, then rerank each query still below ``margin`` at the next rung.

    ``margin=inf`` takes every query to the last rung (a cascade at the max budget)."""
    first = ladder[0]
    scores, keys = exact_search(index._segments, index._deleted, queries[:, : first.query], first.document, candidates,
                                compute_dtype, threads=index.search_threads())
    keys = keys.masked_fill(torch.isinf(scores), -1)  # fewer live documents than candidates: deleted rows are no candidates
    n_candidates = (keys >= 0).sum(dim=1)
    rung = torch.zeros(len(queries), dtype=torch.long)
    cost = torch.full((len(queries),), len(index) * first.query * first.document, dtype=torch.long)
    active = torch.arange(len(queries))
    for j, budget in enumerate(ladder):
        if j > 0:
            scores[active], keys[active] = rerank(index._segments, index._offsets, queries[active, : budget.query],
                                                  keys[active], budget.document, keys.shape[1], compute_dtype)
            rung[active] = j
            cost[active] += n_candidates[active] * budget.query * budget.document
        if on_rung is not None:
            on_rung(j, active, scores[active], keys[active])
        if j == len(ladder) - 1:
            break
        if math.isinf(margin):
            continue
        active = active[top_margin(scores[active], budget.query) < margin]
        if not len(active):
            break
    return LadderOutcome(scores, keys, rung, cost)


def resolve_max_budget(index: "MultiVectorIndex", max_budget: Any, given_query_vectors: int) -> Budget:
    """``max_budget`` (default: every query vector given and every stored document vector), checked against both."""
    if max_budget is None:
        return Budget(given_query_vectors, index.max_document_vectors)
    top = Budget.parse(max_budget)
    if top.query > given_query_vectors:
        raise ValueError(f"max_budget {top}: r_q={top.query} is larger than the {given_query_vectors} query vectors given")
    if top.document > index.max_document_vectors:
        raise ValueError(f"max_budget {top}: r_c={top.document} is larger than the {index.max_document_vectors} vectors "
                         f"per document this index stores ({index.path})")
    return top


def resolve_candidates(index: "MultiVectorIndex", k: int, candidates: int | None = None) -> int:
    """Stage-1 candidates: ``candidates``, else the index's calibrated ``auto_candidates``, else
    :func:`default_candidates`; at least k."""
    stored = getattr(index, "properties", {}).get(AUTO_CANDIDATES_PROPERTY)
    return max(k, candidates or (int(stored) if stored else default_candidates(k)))


def resolve_margin(index: "MultiVectorIndex", auto_margin: float | None) -> float:
    """The threshold: ``auto_margin``, else the index's calibrated one, else :data:`DEFAULT_AUTO_MARGIN`."""
    margin = auto_margin if auto_margin is not None else index.properties.get(AUTO_MARGIN_PROPERTY, DEFAULT_AUTO_MARGIN)
    margin = float(margin)
    if math.isnan(margin) or margin < 0:
        raise ValueError(f"auto_margin must be a number >= 0 (inf: always climb to max_budget), got {margin}")
    return margin


def prepare(index: "MultiVectorIndex", query_vectors: Any, k: int, max_budget: Any, candidates: int | None,
            ladder: Iterable[Sequence[int]] | None,
            compute_dtype: torch.dtype = torch.float32) -> tuple[Tensor, list[Budget], int]:
    """Checked (queries, rungs, candidates) for an auto search or its calibration (see :func:`resolve_candidates`)."""
    k = check_positive_int(k, "k")
    if candidates is not None:
        candidates = check_positive_int(candidates, "candidates")
    queries = parse_query_vectors(query_vectors, index.dim, index.query_finite_dtypes(compute_dtype))
    rungs = auto_ladder(resolve_max_budget(index, max_budget, queries.shape[1]), ladder)
    return queries, rungs, resolve_candidates(index, k, candidates)


def auto_search(index: "MultiVectorIndex", query_vectors: Any, k: int = 10, *, max_budget: Any = None,
                auto_margin: float | None = None, candidates: int | None = None,
                ladder: Iterable[Sequence[int]] | None = None, compute_dtype: torch.dtype | None = None,
                normalize_by_query: bool = False, arrays: bool = False) -> list[SearchResult] | SearchArrays:
    """``index.search(..., budget="auto")``: top-k per query, each with the budget it stopped at and its cost."""
    dtype = compute_dtype or default_compute_dtype(index._storage_torch_dtype())
    queries, rungs, candidates = prepare(index, query_vectors, k, max_budget, candidates, ladder, dtype)
    margin = resolve_margin(index, auto_margin)
    outcome = climb(index, queries, rungs, candidates, margin, dtype)
    used = [rungs[j] for j in outcome.rung.tolist()]
    # Equal scores rank by document id, as exact search and `metaembed eval` rank them.
    scores, keys = ranked_by_id_on_ties(lambda width, rows: (outcome.scores, outcome.keys), k, outcome.scores.shape[1],
                                        index._document_id)
    if normalize_by_query:
        totals = query_prefix_weights(queries)  # (n_q, R_q): a query's total weight at each r_q
        scores = scores / totals.gather(1, torch.tensor([[b.query - 1] for b in used])).to(scores.dtype)
    return index._results(scores, keys, budgets=used, costs=outcome.cost.tolist(), arrays=arrays, k=k)
