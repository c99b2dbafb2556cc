"""Ranking metrics: hand-computed values on tiny rankings, and agreement with pytrec_eval and ranx."""

from __future__ import annotations

import math
import random

import pytest

from metaembed.evaluation.metrics import evaluate_run, max_cutoff, parse_metric, query_metrics


def test_hand_computed_graded_ranking():
    ranking = ["d1", "d2", "d3", "d4"]
    judgments = {"d2": 2, "d3": 1, "d9": 1, "d1": 0}  # d9 relevant but never retrieved
    values = query_metrics(ranking, judgments, ["ndcg@3", "recall@3", "mrr@3", "map@3", "p@1", "recall@1", "ndcg@1"])
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert values["ndcg@3"] == pytest.approx(dcg / idcg)
    assert values["ndcg@3"] == pytest.approx(0.562727, abs=1e-6)
    assert values["recall@3"] == pytest.approx(2 / 3)
    assert values["mrr@3"] == pytest.approx(1 / 2)
    assert values["map@3"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert values["p@1"] == 0.0 and values["recall@1"] == 0.0 and values["ndcg@1"] == 0.0


def test_perfect_and_cut_rankings():
    perfect = query_metrics(["a", "b", "x"], {"a": 3, "b": 1}, ["ndcg@2", "map@10", "mrr@10", "p@1"])
    assert perfect == {"ndcg@2": 1.0, "map@10": 1.0, "mrr@10": 1.0, "p@1": 1.0}
    # The relevant document sits at rank 3: MRR@2 does not see it, MRR@3 does.
    late = query_metrics(["x", "y", "a"], {"a": 1}, ["mrr@2", "mrr@3", "recall@2", "recall@3"])
    assert late == {"mrr@2": 0.0, "mrr@3": pytest.approx(1 / 3), "recall@2": 0.0, "recall@3": 1.0}
    # Negative grades count as not relevant.
    assert query_metrics(["a"], {"a": -1, "b": 1}, ["p@1"])["p@1"] == 0.0


def test_queries_without_relevant_documents_are_not_scored_and_missing_runs_score_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}, "q3": {"c": 1}}
    run = {"q1": ["a", "b"]}
    means, per_query = evaluate_run(run, qrels, ["p@1"])
    assert set(per_query) == {"q1", "q3"}  # q2 has no relevant document
    assert per_query["q3"]["p@1"] == 0.0  # q3 is judged but was not retrieved
    assert means["p@1"] == pytest.approx(0.5)


def test_metric_names():
    assert parse_metric("precision@1") == ("p", 1)
    assert parse_metric("NDCG@10") == ("ndcg", 10)
    assert max_cutoff(["ndcg@10", "map@100", "p@1"]) == 100
    with pytest.raises(ValueError, match="unknown metric 'bleu@4'"):
        parse_metric("bleu@4")
    with pytest.raises(ValueError, match="k >= 1"):
        parse_metric("ndcg@0")


def _random_run(seed: int = 0, queries: int = 40, documents: int = 60):
    """Graded qrels and a tie-free scored run (so every implementation ranks identically)."""
    rng = random.Random(seed)
    qrels, scores = {}, {}
    for q in range(queries):
        judged = rng.sample(range(documents), rng.randint(1, 6))
        qrels[f"q{q}"] = {f"d{d}": rng.choice([0, 1, 1, 2, 3]) for d in judged}
        if not any(qrels[f"q{q}"].values()):
            qrels[f"q{q}"][f"d{judged[0]}"] = 1
        values = rng.sample(range(10 * documents), documents)
        scores[f"q{q}"] = {f"d{d}": float(values[d]) for d in range(documents)}
    ranked = {q: sorted(s, key=s.get, reverse=True) for q, s in scores.items()}
    return qrels, scores, ranked


def test_matches_pytrec_eval_on_the_same_run():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels, scores, ranked = _random_run()
    ours, per_query = evaluate_run(ranked, qrels, ["ndcg@5", "ndcg@10", "recall@10", "recall@100", "map@100", "p@1", "mrr@1000"])
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.5,10", "recall.10,100", "map_cut.100", "P.1", "recip_rank"})
    theirs = evaluator.evaluate(scores)
    mapping = {"ndcg@5": "ndcg_cut_5", "ndcg@10": "ndcg_cut_10", "recall@10": "recall_10", "recall@100": "recall_100",
               "map@100": "map_cut_100", "p@1": "P_1", "mrr@1000": "recip_rank"}
    for ours_name, their_name in mapping.items():
        for query_id in qrels:
            assert per_query[query_id][ours_name] == pytest.approx(theirs[query_id][their_name], abs=1e-9), (query_id, ours_name)
        mean = sum(values[their_name] for values in theirs.values()) / len(theirs)
        assert ours[ours_name] == pytest.approx(mean, abs=1e-9)


def test_matches_ranx_on_the_same_run():
    ranx = pytest.importorskip("ranx")
    qrels, scores, ranked = _random_run(seed=1)
    names = ["ndcg@10", "recall@10", "mrr@10", "map@100", "precision@1"]
    ours, _ = evaluate_run(ranked, qrels, names)
    # ranx drops zero-grade judgments; keep only relevant ones for it (it scores the same queries as we do).
    ranx_qrels = ranx.Qrels({q: {d: g for d, g in j.items() if g > 0} for q, j in qrels.items()})
    theirs = ranx.evaluate(ranx_qrels, ranx.Run(scores), names)
    for name in names:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-6), name
