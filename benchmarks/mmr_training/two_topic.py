"""Two-topic passages: does a multi-vector budget help when a passage is about two things?

The Debian test set pairs a one-line summary with the description it summarises: one topic, which one
vector can hold. Here every passage of the test corpus is the concatenation of two descriptions (each cut
to ``words`` words), so a query's answer is half of a passage. A single vector must hold both topics; a
multi-vector embedding can spread them over its vectors. Queries are split by the half their answer is in.

Used by run.py (``two_topic_results``) on the models it trains; runs alone on a finished run's models:

    .venv/bin/python benchmarks/mmr_training/two_topic.py --work-dir /tmp/metaembed-mmr-benchmark
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

import metaembed
from metaembed.budgets import Budget
from metaembed.evaluation import evaluate_run


@dataclass
class TwoTopicSet:
    """Paired passages, the queries whose answer is one of their halves, and which half it is."""

    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    half: dict[str, str]
    """query id -> "first" or "second": where the answer sits in its two-topic passage."""


def first_words(text: str, words: int) -> str:
    return " ".join(text.split()[:words])


def build_two_topic_set(corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]],
                        words: int = 45, seed: int = 0) -> TwoTopicSet:
    """Pair the corpus's passages at random (seeded); a query's relevant pair is the one holding its passage."""
    ids = sorted(corpus)
    random.Random(seed).shuffle(ids)
    if len(ids) % 2:
        ids = ids[:-1]
    pair_of: dict[str, tuple[str, str]] = {}
    doc_ids, doc_texts = [], []
    for index in range(0, len(ids), 2):
        first, second = ids[index], ids[index + 1]
        pair_id = f"pair-{index // 2}"
        doc_ids.append(pair_id)
        doc_texts.append(first_words(corpus[first], words) + "\n\n" + first_words(corpus[second], words))
        pair_of[first], pair_of[second] = (pair_id, "first"), (pair_id, "second")
    query_ids, query_texts, pair_qrels, half = [], [], {}, {}
    for query_id, judgments in qrels.items():
        relevant = [doc for doc, grade in judgments.items() if grade > 0 and doc in pair_of]
        if len(relevant) != 1:
            continue
        pair_id, position = pair_of[relevant[0]]
        query_ids.append(query_id)
        query_texts.append(queries[query_id])
        pair_qrels[query_id] = {pair_id: 1}
        half[query_id] = position
    return TwoTopicSet(doc_ids, doc_texts, query_ids, query_texts, pair_qrels, half)


def evaluate_two_topic(query_vectors: torch.Tensor, doc_vectors: torch.Tensor, data: TwoTopicSet,
                       budgets: list[Budget]) -> dict[str, dict[str, float]]:
    """nDCG@10 per budget: over all queries, and over those whose answer is the first / second half."""
    results = {}
    for budget in budgets:
        scores = metaembed.maxsim(query_vectors, doc_vectors, budget.query, budget.document)
        top = scores.topk(10, dim=1).indices.tolist()
        run = {qid: [data.doc_ids[j] for j in row] for qid, row in zip(data.query_ids, top)}
        means, per_query = evaluate_run(run, data.qrels, ("ndcg@10",))
        row = {"all": round(means["ndcg@10"], 4)}
        for position in ("first", "second"):
            values = [per_query[q]["ndcg@10"] for q in per_query if data.half[q] == position]
            row[position] = round(sum(values) / max(1, len(values)), 4)
        results[str(budget)] = row
    return results


def main() -> None:
    import argparse
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import PAPER_BUDGETS, encode_arm, mean_pooled_reference, minilm_path  # noqa: E402

    from metaembed.data.beir import load_beir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/metaembed-mmr-benchmark")
    parser.add_argument("--data", default="debian-2000-10000")
    parser.add_argument("--words", type=int, default=45)
    parser.add_argument("--arms", nargs="+", default=["a_mmr", "b_largest_group_only", "c_single_vector"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    work = Path(args.work_dir)
    task = load_beir(work / args.data / "beir", "test")
    data = build_two_topic_set({k: v.text for k, v in task.corpus.items()}, {k: v.text for k, v in task.queries.items()},
                               task.qrels, words=args.words)
    results = {"words_per_half": args.words, "passages": len(data.doc_ids), "queries": len(data.query_ids), "arms": {}}
    for arm in args.arms:
        q, d = encode_arm(str(work / "runs" / arm / "model"), data.query_texts, data.doc_texts, text_tokens=2 * args.words * 2)
        budgets = [Budget(*b) for b in PAPER_BUDGETS] if q.shape[1] > 1 else [Budget(1, 1)]
        results["arms"][arm] = evaluate_two_topic(q, d, data, budgets)
        print(arm, json.dumps(results["arms"][arm]), flush=True)
    q, d = mean_pooled_reference(minilm_path(), 2 * args.words * 2, data.query_texts, data.doc_texts, 64)
    results["arms"]["d_untrained_mean_pooling"] = evaluate_two_topic(q, d, data, [Budget(1, 1)])
    print(json.dumps(results, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
