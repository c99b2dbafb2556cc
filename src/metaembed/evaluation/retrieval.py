"""Score one retrieval task (BEIR, ViDoRe) at every budget and for every baseline: rankings, metrics, latency.

Every query is scored against the whole corpus with :func:`metaembed.maxsim` on the budget's prefixes and
ranked with :func:`metaembed.scoring.top_k` over a corpus in :func:`~metaembed.scoring.tie_order`, so equal
scores rank by document id exactly as trec_eval does. Latency is the index's (:mod:`metaembed.evaluation.latency`:
the same searches through a bf16 MultiVectorIndex of the task's documents), measured over repeats and reported as
median and p90, with the machine's load average at the time: a figure taken on a busy machine says so.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from metaembed.budgets import Budget
from metaembed.data.tasks import RetrievalTask
from metaembed.evaluation.baselines import accepts_images, encode_single_vector, has_images
from metaembed.evaluation.cache import EncodingCache
from metaembed.evaluation.encoding import DOCUMENT, QUERY, encode_items
from metaembed.evaluation.metrics import evaluate_run, max_cutoff
from metaembed.evaluation.runs import RunWriter
from metaembed.scoring import maxsim, tie_order, top_k

if TYPE_CHECKING:
    from metaembed.evaluation.sweep import SweepSettings
    from metaembed.index import MultiVectorIndex


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (linear interpolation, as numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def spread(milliseconds: Sequence[float]) -> tuple[float | None, float | None]:
    """(median, p90) of timings, or (None, None) when there are none."""
    if not milliseconds:
        return None, None
    return statistics.median(milliseconds), percentile(milliseconds, 0.9)


def load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages (None where the platform has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def search(queries: torch.Tensor, documents: torch.Tensor, budget: Budget, k: int, settings: "SweepSettings",
           on_chunk: Callable[[], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (scores, document rows) per query at ``budget``, queries scored in chunks; ties to the lower row."""
    k = min(k, documents.shape[0])
    values, columns = [], []
    for start in range(0, queries.shape[0], settings.query_chunk):
        scores = maxsim(queries[start : start + settings.query_chunk], documents, budget.query, budget.document, dtype=settings.score_dtype)
        top_values, top_columns = top_k(scores, k)
        values.append(top_values)
        columns.append(top_columns)
        if on_chunk is not None:
            on_chunk()
    return torch.cat(values), torch.cat(columns)


@contextmanager
def timed_index(documents: torch.Tensor, document_budget: int, repeats: int) -> Iterator[MultiVectorIndex | None]:
    """The index the timings go through (:func:`~metaembed.evaluation.latency.latency_index`), or None when no
    latency is asked for (``latency_repeats`` = 0, as the training's dev evaluation asks)."""
    if repeats == 0:
        yield None
        return
    from metaembed.evaluation.latency import latency_index  # the index stack only when latency is asked for

    with latency_index(documents, document_budget) as index:
        yield index


def evaluate_retrieval_task(model: Any, task: RetrievalTask, budgets: Sequence[Budget], settings: "SweepSettings",
                            cache: EncodingCache | None, writer: RunWriter | None = None) -> dict[str, Any]:
    """Encode a retrieval task once and score it at every budget and for every baseline."""
    issues = task.issues
    corpus_ids = list(task.corpus)
    documents, documents_cached = encode_items(
        model, DOCUMENT, corpus_ids, [task.corpus[i] for i in corpus_ids], batch_size=settings.batch_size,
        prompt=task.document_prompt, cache=cache, storage_dtype=settings.storage_dtype, issues=issues,
        where=f"{task.source} corpus", progress=settings.progress,
    )
    if not documents.ids:
        raise ValueError(f"{task.source}: no corpus item could be encoded; nothing to search")
    order = tie_order(documents.ids)  # columns in trec_eval's tie order: equal scores rank by id, descending
    document_ids = [documents.ids[i] for i in order]
    document_vectors = documents.vectors[order]
    usable_docs = set(document_ids)
    qrels: dict[str, dict[str, int]] = {}
    for query_id, judged in task.qrels.items():
        kept = {doc: grade for doc, grade in judged.items() if doc in usable_docs}
        if not any(grade > 0 for grade in kept.values()):
            issues.add("query_without_relevant", f"{task.source}: query {query_id!r} has no encodable relevant document; query skipped")
            continue
        qrels[query_id] = kept
    query_ids = list(qrels)
    queries, queries_cached = encode_items(
        model, QUERY, query_ids, [task.queries[i] for i in query_ids], batch_size=settings.batch_size,
        prompt=task.query_prompt, cache=cache, storage_dtype=settings.storage_dtype, issues=issues,
        where=f"{task.source} queries", progress=settings.progress,
    )
    qrels = {q: qrels[q] for q in queries.ids}
    if not qrels:
        raise ValueError(f"{task.source}: no query could be encoded; nothing to evaluate")
    if writer is not None:
        writer.write_qrels(task.name, qrels)

    k = max_cutoff(settings.metrics)
    metrics = tuple(dict.fromkeys([*settings.metrics, task.headline]))
    baselines = dict(settings.baselines)
    items = [*(task.corpus[i] for i in document_ids), *(task.queries[q] for q in queries.ids)]
    if baselines and has_images(items):
        text_only = sorted(name for name, baseline in baselines.items() if not accepts_images(baseline))
        if text_only and all((getattr(item, "text", None) or "").strip() for item in items):
            issues.add("baseline_text_only", f"{task.source}: the text baselines ({', '.join(text_only)}) read the "
                       "items' text alone, their images unseen")
        elif text_only:
            issues.add("baseline_not_run", f"{task.source}: items with an image and no text; the text baselines "
                       f"({', '.join(text_only)}) are not scored on it")
            baselines = {name: baseline for name, baseline in baselines.items() if name not in text_only}
    encoded_baselines = {  # (queries, documents), encoded before the scoring bar starts
        name: (encode_single_vector(baseline, [task.queries[i] for i in queries.ids], settings.batch_size, settings.progress),
               encode_single_vector(baseline, [task.corpus[i] for i in document_ids], settings.batch_size, settings.progress))
        for name, baseline in baselines.items()
    }
    repeats = settings.latency_repeats
    chunks = -(-len(queries.ids) // settings.query_chunk)
    bar = tqdm(total=(len(budgets) + len(baselines)) * chunks, desc=f"scoring {task.name}", unit="chunk",
               disable=not settings.progress)
    per_budget: dict[str, dict[str, Any]] = {}
    per_query: dict[str, dict[str, float]] = {}

    def score(name: str, query_vectors: torch.Tensor, vectors: torch.Tensor, budget: Budget,
              index: MultiVectorIndex | None) -> dict[str, Any]:
        bar.set_postfix_str(f"({name})" if name[0].isdigit() else name)
        load = load_average()
        values, columns = search(query_vectors, vectors, budget, k, settings, bar.update)  # the ranking
        single, batched = [], []
        if index is not None:  # the timings: the same searches through the index
            from metaembed.evaluation.latency import search_timings

            single, batched = search_timings(index, query_vectors, budget, k, settings.latency_queries, repeats)
        run = {query_id: [document_ids[i] for i in row] for query_id, row in zip(queries.ids, columns.tolist())}
        means, by_query = evaluate_run(run, qrels, metrics)
        if writer is not None:
            writer.write_run(task.name, name, queries.ids, document_ids, columns, values)
            writer.write_per_query(task.name, name, by_query)
        per_query[name] = {query_id: row[task.headline] for query_id, row in by_query.items()}
        (batched_median, batched_p90), (single_median, single_p90) = spread(batched), spread(single)
        return {
            "metrics": means,
            "latency_ms_per_query": batched_median, "latency_ms_per_query_p90": batched_p90,
            "latency_ms_single_query": single_median, "latency_ms_single_query_p90": single_p90,
            "latency_repeats": {"batched": len(batched), "single": len(single)},
            "load_average": load,
        }

    with timed_index(document_vectors, max(budget.document for budget in budgets), repeats) as index:
        for budget in budgets:
            per_budget[str(budget)] = score(str(budget), queries.vectors, document_vectors, budget, index)
    baseline_results: dict[str, dict[str, Any]] = {}
    for name, (baseline_queries, baseline_documents) in encoded_baselines.items():
        with timed_index(baseline_documents, 1, repeats) as index:
            baseline_results[name] = {**score(name, baseline_queries, baseline_documents, Budget(1, 1), index),
                                      "embedding_dim": int(baseline_documents.shape[-1])}
    bar.close()
    return {
        "kind": task.kind, "headline": task.headline, "source": task.source,
        "num_queries": len(queries.ids), "num_documents": len(document_ids),
        "cached": {"queries": queries_cached, "documents": documents_cached},
        "budgets": per_budget,
        "baselines": baseline_results,
        "per_query_headline": per_query,
    }
