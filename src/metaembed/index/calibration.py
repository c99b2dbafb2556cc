"""Calibrate search settings on dev queries: ``budget="auto"``'s margin and candidates, the cascade's candidate count.

``budget="auto"``: first the stage-1 candidate count that holds the max budget's top k (as for a cascade), then the
smallest margin threshold that keeps a target share of what climbing every query to the max budget (on those
candidates) buys over the first rung (or, with ``keep="metric"``, of the max budget's exact quality). Every dev query is ranked once at every rung of the ladder (one
climb with every query escalated), then each candidate threshold is simulated from those rankings: a threshold t
stops a query at the first rung whose margin is >= t, so only the observed margins (and 0, and inf) need trying,
and the whole sweep costs one sort.

Why the gain by default: how close (1,1) already comes to the max budget differs between query sets far more than
which queries are close calls does. On the dense Python docs (benchmarks/results/auto_budget_pydocs_dense_lines.md)
dev's (1,1) is 96% of its (16,64) and test's 92%: 95% of the metric, met on dev by (1,1) alone, stops every test
query there (92% of (16,64) on test); 95% of the gain keeps 99% of (16,64) on test at 7.7% of its dot products.
The gain is measured up to the ceiling (every query climbed, on the candidates), not to exact search: no margin
wins back what the candidates miss, and on a small dev set that shortfall alone can exceed 5% of the gain.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from metaembed.budgets import Budget
from metaembed.index.adaptive import climb, prepare, top_margin
from metaembed.index.search import default_compute_dtype, exact_search
from metaembed.index.validation import check_positive_int

if TYPE_CHECKING:
    from metaembed.index.embedded import MultiVectorIndex


@dataclass
class AutoMarginCalibration:
    """A calibrated threshold and what it gives on the calibration queries."""

    margin: float
    """Store it with :meth:`store` or pass it as ``search(..., auto_margin=margin)``."""
    candidates: int
    """Stage-1 candidates reranked by the later rungs (given, or calibrated to ``candidate_recall``)."""
    target: float
    keep: str
    """``gain``: ``achieved`` >= first + target x (ceiling - first); ``metric``: >= target x reference."""
    metric: str
    reference: float
    """The metric of exact search at the fixed ``max_budget``."""
    first: float
    """The metric with every query at the ladder's first rung (margin 0)."""
    ceiling: float
    """The metric with every query climbing to ``max_budget`` on the candidates (margin inf): the most auto gives;
    below ``reference`` by what the candidates miss."""
    goal: float
    """The metric ``achieved`` must reach (see ``keep``)."""
    achieved: float
    """The metric of ``budget="auto"`` at ``margin`` (>= goal unless ``reached`` is False)."""
    reached: bool
    """False when even escalating every query (margin inf) stays below the goal: its candidates miss too much."""
    max_budget: Budget
    stopped: dict[str, int]
    """How many queries stop at each rung ("r_q,r_c" -> count)."""
    mean_cost: float
    """Dot products per query at ``margin``."""
    fixed_cost: float
    """Dot products per query of exact search at ``max_budget``."""
    curve: list[tuple[float, float, float]]
    """(threshold, metric, mean dot products per query) at every candidate threshold, ascending: the whole
    cost/quality trade-off, to pick another operating point without searching again."""

    def store(self, index: "MultiVectorIndex") -> None:
        """Make these the index's defaults for ``budget="auto"`` (its ``auto_margin`` and ``auto_candidates``)."""
        from metaembed.index.adaptive import AUTO_CANDIDATES_PROPERTY, AUTO_MARGIN_PROPERTY

        index.set_properties(**{AUTO_MARGIN_PROPERTY: self.margin, AUTO_CANDIDATES_PROPERTY: self.candidates})


def calibrate_auto_margin(
    index: "MultiVectorIndex",
    query_vectors: Tensor,
    query_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    target: float = 0.95,
    keep: str = "gain",
    max_budget: Budget | tuple[int, int] | str | None = None,
    metric: str = "ndcg@10",
    candidates: int | None = None,
    candidate_recall: float = 0.99,
    ladder: Iterable[Sequence[int]] | None = None,
    compute_dtype: torch.dtype | None = None,
) -> AutoMarginCalibration:
    """The smallest observed margin at which ``budget="auto"`` keeps ``target`` of the gain in ``metric`` that
    climbing every query to ``max_budget`` gives over the first rung (``keep="metric"``: reaches ``target`` x the
    fixed ``max_budget``'s ``metric``) on these dev queries
    (query_vectors (n, R_q, D), their ids, qrels query -> doc -> grade). ``candidates`` (default: the fewest that
    keep ``candidate_recall`` of the max budget's top k among the first rung's, :func:`calibrate_cascade`)."""
    from metaembed.evaluation.metrics import evaluate_run, max_cutoff

    if not 0 <= target <= 1:
        raise ValueError(f"target must be between 0 and 1 (a share of the max budget's {metric} or gain), got {target}")
    if keep not in ("gain", "metric"):
        raise ValueError(f"keep must be 'gain' (of the max budget over the first rung) or 'metric', got {keep!r}")
    query_ids = list(query_ids)
    k = max_cutoff([metric])
    queries, rungs, n_candidates = prepare(index, query_vectors, k, max_budget, candidates, ladder)
    if len(query_ids) != len(queries):
        raise ValueError(f"{len(query_ids)} query ids for {len(queries)} queries of vectors")
    dtype = compute_dtype or default_compute_dtype(index._storage_torch_dtype())
    if candidates is None:
        n_candidates = calibrate_cascade(index, queries, k=k, target=candidate_recall, budget=rungs[-1],
                                         first_stage_budget=rungs[0], compute_dtype=dtype).candidates
    judged = {q: qrels[q] for q in query_ids if q in qrels}

    rankings: list[dict[str, list[str]]] = [{} for _ in rungs]
    margins = np.full((len(queries), len(rungs)), np.inf)
    n_valid = np.zeros(len(queries))

    def record(rung: int, rows: Tensor, scores: Tensor, keys: Tensor) -> None:
        margins[rows.numpy(), rung] = top_margin(scores, rungs[rung].query).numpy()
        if rung == 0:
            n_valid[rows.numpy()] = (keys >= 0).sum(dim=1).numpy()
        for row, result in zip(rows.tolist(), index._results(scores[:, :k], keys[:, :k])):
            rankings[rung][query_ids[row]] = result.ids

    climb(index, queries, rungs, n_candidates, math.inf, dtype, on_rung=record)
    reference_run = {q: r.ids for q, r in zip(query_ids, index.search(queries, k, rungs[-1], compute_dtype=dtype))}
    reference = evaluate_run(reference_run, judged, [metric])[0][metric]
    per_rung = [evaluate_run(run, judged, [metric])[1] for run in rankings]
    values = np.array([[per_rung[j].get(q, {}).get(metric, 0.0) for j in range(len(rungs))] for q in query_ids])
    scored = max(1, len(per_rung[0]))

    # A query leaves rung j once t exceeds the largest margin it saw up to j (it would have stopped there).
    leave = np.maximum.accumulate(margins, axis=1)[:, :-1]
    leave = np.minimum(leave, np.finfo(np.float64).max)  # fewer than 2 candidates: climbs only at t = inf
    gains = values[:, 1:] - values[:, :-1]
    extra = n_valid[:, None] * np.array([[b.query * b.document for b in rungs[1:]]])  # dot products of each climb
    order = np.argsort(leave, axis=None, kind="stable")
    events = leave.ravel()[order]
    thresholds = np.unique(np.concatenate([[0.0], events[events < np.finfo(np.float64).max], [np.inf]]))
    applied = np.searchsorted(events, thresholds, side="left")  # climbs taken at each threshold: margins below it
    totals = (values[:, 0].sum() + np.concatenate([[0.0], np.cumsum(gains.ravel()[order])])[applied]) / scored
    stage1 = len(index) * rungs[0].query * rungs[0].document
    costs = stage1 + np.concatenate([[0.0], np.cumsum(extra.ravel()[order])])[applied] / max(1, len(queries))
    first, ceiling = float(totals[0]), float(totals[-1])  # thresholds 0 and inf: every query at the first / last rung
    goal = target * reference if keep == "metric" else first + target * max(0.0, ceiling - first)
    good = np.nonzero(totals >= goal - 1e-12)[0]
    best = good[0] if len(good) else len(thresholds) - 1
    chosen = float(thresholds[best]) if len(good) else math.inf
    stop = (leave < chosen).sum(axis=1)
    return AutoMarginCalibration(
        margin=chosen, candidates=int(n_candidates), target=target, keep=keep, metric=metric,
        reference=float(reference), first=first, ceiling=ceiling, goal=float(goal), achieved=float(totals[best]),
        reached=bool(len(good)), max_budget=rungs[-1],
        stopped={str(b): int((stop == j).sum()) for j, b in enumerate(rungs)},
        mean_cost=float(costs[best]), fixed_cost=float(len(index) * rungs[-1].query * rungs[-1].document),
        curve=[(float(t), float(m), float(c)) for t, m, c in zip(thresholds, totals, costs)],
    )


CASCADE_CANDIDATES_PROPERTY = "cascade_candidates"
"""The index manifest property a calibrated candidate count is stored under; ``cascade_search`` uses it by default."""


@dataclass
class CascadeCalibration:
    """A calibrated first-stage candidate count for ``cascade_search`` and the recall it gives on the dev queries."""

    candidates: int
    """Store it with ``index.set_properties(cascade_candidates=candidates)`` or pass it as ``candidates=``."""
    target: float
    recall: float
    """Share of exact search's top k (at ``budget``) that the first stage keeps among ``candidates``: the cascade's
    recall@k, since its rerank is exact at ``budget``."""
    reached: bool
    """False when even ``max_candidates`` keep less than ``target``; ``candidates`` is then ``max_candidates``."""
    k: int
    budget: Budget
    first_stage_budget: Budget
    curve: list[tuple[int, float]]
    """(candidates, recall) at every count where the recall rises: the whole trade-off, read without searching again."""


def calibrate_cascade(
    index: "MultiVectorIndex",
    query_vectors: Tensor,
    *,
    k: int = 10,
    target: float = 0.99,
    budget: Budget | tuple[int, int] | str | None = None,
    first_stage_budget: Budget | tuple[int, int] | str = (1, 1),
    max_candidates: int | None = None,
    compute_dtype: torch.dtype | None = None,
) -> CascadeCalibration:
    """The smallest candidate count at which ``cascade_search(k=k, budget=budget, first_stage_budget=...)`` keeps
    ``target`` of exact search's top ``k`` on these dev queries (n, R_q, D); no relevance judgments needed.

    One exact search at ``budget`` and one first-stage ranking of ``max_candidates`` (default min(len(index),
    10,000)) per query: the position of each exact top-k document in that ranking is the count that finds it."""
    if not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1] (a share of exact search's top k), got {target}")
    dtype = compute_dtype or default_compute_dtype(index._storage_torch_dtype())
    k = check_positive_int(k, "k")
    queries, r_c = index._prepare_queries(query_vectors, budget, dtype)
    first = index._first_stage(first_stage_budget, queries.shape[1])
    depth = min(len(index), 10_000) if max_candidates is None else check_positive_int(max_candidates, "max_candidates")
    depth = max(depth, k)
    threads = index.search_threads()
    exact_scores, exact_keys = exact_search(index._segments, index._deleted, queries, r_c, k, dtype, threads=threads)
    first_scores, ranked = exact_search(index._segments, index._deleted, queries[:, : first.query], first.document, depth,
                                        dtype, threads=threads)
    ranked = ranked.masked_fill(torch.isinf(first_scores), -1)
    found = exact_keys.unsqueeze(2) == ranked.unsqueeze(1)  # (n_q, k, depth): where each exact hit sits
    needed = torch.where(found.any(dim=2), found.float().argmax(dim=2) + 1, depth + 1)  # candidates that find it
    needed = needed[torch.isfinite(exact_scores)].sort().values.numpy()
    if not len(needed):
        raise ValueError(f"no live documents in {index.path} to calibrate on")
    reachable = needed[needed <= depth]
    counts = np.unique(np.maximum(reachable, k))  # a cascade keeps at least k candidates
    recalls = np.searchsorted(reachable, counts, side="right") / len(needed)
    curve = [(int(c), float(r)) for c, r in zip(counts, recalls)]
    good = [(c, r) for c, r in curve if r >= target - 1e-12]
    candidates, recall = good[0] if good else (depth, curve[-1][1] if curve else 0.0)
    return CascadeCalibration(candidates=candidates, target=target, recall=recall, reached=bool(good), k=k,
                              budget=Budget(queries.shape[1], r_c), first_stage_budget=first, curve=curve)
