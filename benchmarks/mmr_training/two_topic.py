"""Two-topic passages: the Debian set rebuilt so that every passage is about two packages.

In the plain set a one-line summary retrieves the description it summarises: one topic, which a single
vector holds as well as sixteen (the benchmark finds MMR's vectors collapse onto one direction there).
Here every passage, in training and in the test corpus, joins the first ``words`` words of two package
descriptions in random order, and the query is one package's summary: a single vector has to hold both
topics, a multi-vector embedding can spread them over its vectors. Test queries are also scored by the
half their answer sits in, which shows whether the second topic is found at all.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TwoTopicSet:
    """Paired test passages, the queries whose answer is one half of one of them, and which half."""

    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    half: dict[str, str]
    """query id -> "first" or "second": where the answer sits in its two-topic passage."""


def first_words(text: str, words: int) -> str:
    return " ".join(text.split()[:words])


def join_halves(text: str, other: str, words: int, rng: random.Random) -> str:
    """Two descriptions cut to ``words`` words each, in random order, as one passage."""
    halves = [first_words(text, words), first_words(other, words)]
    if rng.random() < 0.5:
        halves.reverse()
    return "\n\n".join(halves)


def write_two_topic_training(source: Path, destination: Path, words: int, seed: int = 0) -> int:
    """Rewrite a training JSONL so every positive and negative shares its passage with another row's positive.

    The partner passages come from other rows of the same (training) split, drawn with ``seed``.
    """
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(seed)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with destination.open("w", encoding="utf-8") as handle:
        for row in rows:
            pair = [join_halves(text, rng.choice(rows)["positive"], words, rng) for text in [row["positive"], *row["negatives"]]]
            handle.write(json.dumps({"query": row["query"], "positive": pair[0], "negatives": pair[1:]}) + "\n")
    return len(rows)


def build_two_topic_set(corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]],
                        words: int, seed: int = 0) -> TwoTopicSet:
    """Pair the test corpus's passages at random; a query's relevant passage is the pair holding its description."""
    ids = sorted(corpus)
    random.Random(seed).shuffle(ids)
    rng = random.Random(seed + 1)
    pair_of: dict[str, tuple[str, str]] = {}
    doc_ids, doc_texts = [], []
    for index in range(0, len(ids) - 1, 2):
        first, second = ids[index], ids[index + 1]
        if rng.random() < 0.5:
            first, second = second, first
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


def mean_by_half(per_query: dict[str, float], half: dict[str, str]) -> dict[str, float]:
    """The mean of a per-query metric over the queries whose answer is the first, and the second, half."""
    means = {}
    for position in ("first", "second"):
        values = [value for query_id, value in per_query.items() if half[query_id] == position]
        means[position] = round(sum(values) / max(1, len(values)), 4)
    return means


def by_half_per_budget(per_budget: dict[str, dict[str, float]], half: dict[str, str]) -> dict[str, dict[str, float]]:
    """``mean_by_half`` for every budget of an arm's per-query metric."""
    return {budget: mean_by_half(values, half) for budget, values in per_budget.items()}
