"""Ranking metrics with graded relevance, defined exactly as trec_eval (and so pytrec_eval, BEIR, MTEB) does.

- nDCG@k: gain = the grade (linear, trec_eval's ``ndcg_cut``), discount log2(rank + 1); the ideal DCG
  uses every judged document with grade > 0, best first.
- Recall@k: relevant documents in the top k / all relevant documents.
- MRR@k: 1 / rank of the first relevant document within the top k (0 if none).
- MAP@k: sum of precision@rank over the relevant documents ranked within k, divided by the number of
  relevant documents (trec_eval's ``map_cut``).
- P@1: whether the top document is relevant.

A document is relevant when its grade is > 0; negative grades count as 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Qrels = Mapping[str, Mapping[str, int]]
"""query id -> document id -> relevance grade."""
Run = Mapping[str, Sequence[str]]
"""query id -> ranked document ids, best first."""

DEFAULT_METRICS: tuple[str, ...] = (
    "ndcg@1", "ndcg@5", "ndcg@10", "recall@1", "recall@5", "recall@10", "recall@100", "mrr@10", "map@100", "p@1",
)


def parse_metric(name: str) -> tuple[str, int]:
    """``"ndcg@10"`` -> ("ndcg", 10); ``"p@1"`` and ``"precision@1"`` -> ("p", 1)."""
    base, _, cutoff = name.lower().partition("@")
    base = {"precision": "p", "ndcg_cut": "ndcg", "map_cut": "map", "recip_rank": "mrr"}.get(base, base)
    if base not in ("ndcg", "recall", "mrr", "map", "p") or not cutoff.isdigit() or int(cutoff) < 1:
        raise ValueError(f"unknown metric {name!r}: use ndcg@k, recall@k, mrr@k, map@k or p@k (k >= 1)")
    return base, int(cutoff)


def query_metrics(ranking: Sequence[str], judgments: Mapping[str, int], metrics: Iterable[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Every metric for one query: its ranked document ids and its judged documents with grades."""
    grades = {doc: max(0, int(grade)) for doc, grade in judgments.items()}
    relevant_total = sum(1 for grade in grades.values() if grade > 0)
    ideal = sorted((grade for grade in grades.values() if grade > 0), reverse=True)
    results: dict[str, float] = {}
    for name in metrics:
        base, k = parse_metric(name)
        top = ranking[:k]
        top_grades = [grades.get(doc, 0) for doc in top]
        if base == "ndcg":
            dcg = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(top_grades))
            idcg = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(ideal[:k]))
            value = dcg / idcg if idcg > 0 else 0.0
        elif base == "recall":
            value = sum(1 for grade in top_grades if grade > 0) / relevant_total if relevant_total else 0.0
        elif base == "mrr":
            value = next((1.0 / (rank + 1) for rank, grade in enumerate(top_grades) if grade > 0), 0.0)
        elif base == "map":
            hits, precision_sum = 0, 0.0
            for rank, grade in enumerate(top_grades):
                if grade > 0:
                    hits += 1
                    precision_sum += hits / (rank + 1)
            value = precision_sum / relevant_total if relevant_total else 0.0
        else:  # p@k: relevant in the top k / k (trec_eval's P_k: a short ranking still divides by k)
            value = sum(1 for grade in top_grades if grade > 0) / k
        results[name] = value
    return results


def evaluate_run(run: Run, qrels: Qrels, metrics: Iterable[str] = DEFAULT_METRICS) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean metrics over the queries that have at least one relevant document, and the per-query values.

    Queries of ``qrels`` without any relevant document are not scored (as trec_eval and BEIR do); a query
    with relevant documents but missing from ``run`` scores 0.
    """
    metrics = tuple(metrics)
    per_query: dict[str, dict[str, float]] = {}
    for query_id, judgments in qrels.items():
        if not any(grade > 0 for grade in judgments.values()):
            continue
        per_query[query_id] = query_metrics(run.get(query_id, ()), judgments, metrics)
    if not per_query:
        return {name: 0.0 for name in metrics}, per_query
    means = {name: sum(values[name] for values in per_query.values()) / len(per_query) for name in metrics}
    return means, per_query


def max_cutoff(metrics: Iterable[str]) -> int:
    """The deepest rank any of the metrics looks at: how many documents a search must return."""
    return max(parse_metric(name)[1] for name in metrics)
