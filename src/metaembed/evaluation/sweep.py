"""The budget sweep: encode every task once at the full budget, then score every budget by prefixes.

For each budget (r_q, r_c) and task, every query is scored against the whole corpus (or its own candidate
list for MMEB) with :func:`metaembed.maxsim` on the first r_q / r_c vectors, ranked, and judged with
:mod:`metaembed.evaluation.metrics`. The cost of a budget is reported next to its quality: index bytes
per document (r_c * D * 2, a bf16 index) and measured search latency (batched, per query; and one query
at a time, median).

Baselines: any single-vector sentence-transformers model (``SweepSettings.baselines``; by default in the
quickstart, the backbone as users already have it: mean pooling, cosine) is scored on the same queries,
and the headline metric of every budget is compared, query by query, with (1,1) and with each baseline
(paired bootstrap, :mod:`metaembed.evaluation.stats`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metaembed.budgets import Budget
from metaembed.data.tasks import CandidateTask, DataIssues, RetrievalTask, Task
from metaembed.evaluation.cache import EncodingCache, model_fingerprint
from metaembed.evaluation.encoding import DOCUMENT, QUERY, encode_items
from metaembed.evaluation.metrics import DEFAULT_METRICS, evaluate_run, max_cutoff
from metaembed.evaluation.mmeb_groups import MMEB_SUBSETS, mmeb_group_means
from metaembed.evaluation.stats import paired_bootstrap
from metaembed.scoring import maxsim

BF16_BYTES = 2


@dataclass
class SweepSettings:
    """How a sweep encodes, caches and scores."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    batch_size: int = 32
    cache_dir: str | Path | None = None
    use_cache: bool = True
    storage_dtype: torch.dtype = torch.bfloat16
    score_dtype: torch.dtype = torch.float32
    query_chunk: int = 256
    latency_queries: int = 16
    progress: bool = True
    baselines: dict[str, Any] = field(default_factory=dict)
    """Name -> a single-vector model with sentence-transformers' ``encode`` (text tasks only), scored beside the budgets."""
    bootstrap_resamples: int = 2000
    extra: dict[str, Any] = field(default_factory=dict)


def model_budget_limits(model: Any) -> Budget:
    """The largest budget a model can give: (R_q, R_c)."""
    return Budget(int(model.num_query_meta_tokens), int(model.num_document_meta_tokens))


def check_budgets(budgets: Iterable[Budget | str | tuple[int, int]], model: Any, model_name: str = "the model") -> list[Budget]:
    """Parse budgets and stop, before any encoding, on one that the model cannot give."""
    limits = model_budget_limits(model)
    parsed = [Budget.parse(budget) for budget in budgets]
    if not parsed:
        raise ValueError("no budgets given: pass at least one r_q,r_c pair, e.g. --budgets 1,1 16,64")
    for budget in parsed:
        if budget.query > limits.query or budget.document > limits.document:
            side = "query" if budget.query > limits.query else "document"
            asked = budget.query if side == "query" else budget.document
            have = limits.query if side == "query" else limits.document
            raise ValueError(
                f"budget ({budget}) asks for {asked} {side} vectors, but {model_name} has only {have} {side} meta "
                f"tokens (its largest budget is ({limits})); nothing was evaluated"
            )
    return list(dict.fromkeys(parsed))


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def _search(queries: torch.Tensor, documents: torch.Tensor, budget: Budget, k: int, settings: SweepSettings) -> torch.Tensor:
    """Top-k document indices per query at ``budget`` (queries scored in chunks)."""
    k = min(k, documents.shape[0])
    tops = []
    for start in range(0, queries.shape[0], settings.query_chunk):
        scores = maxsim(queries[start : start + settings.query_chunk], documents, budget.query, budget.document, dtype=settings.score_dtype)
        tops.append(scores.topk(k, dim=1).indices)
    return torch.cat(tops)


def _single_query_latency(queries: torch.Tensor, documents: torch.Tensor, budget: Budget, k: int, settings: SweepSettings) -> float | None:
    count = min(settings.latency_queries, queries.shape[0])
    if count == 0:
        return None
    _search(queries[:1], documents, budget, k, settings)  # warm-up: first-call allocations are not search cost
    timings = []
    for index in range(count):
        _, seconds = _timed(_search, queries[index : index + 1], documents, budget, k, settings)
        timings.append(seconds)
    return statistics.median(timings) * 1000.0


def evaluate_retrieval_task(model: Any, task: RetrievalTask, budgets: Sequence[Budget], settings: SweepSettings, cache: EncodingCache | None) -> dict[str, Any]:
    """Encode a retrieval task once and score it at every budget."""
    issues = task.issues
    corpus_ids = list(task.corpus)
    documents, documents_cached = encode_items(
        model, DOCUMENT, corpus_ids, [task.corpus[i] for i in corpus_ids], batch_size=settings.batch_size,
        prompt=task.document_prompt, cache=cache, storage_dtype=settings.storage_dtype, issues=issues,
        where=f"{task.source} corpus", progress=settings.progress,
    )
    if not documents.ids:
        raise ValueError(f"{task.source}: no corpus item could be encoded; nothing to search")
    usable_docs = set(documents.ids)
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

    k = max_cutoff(settings.metrics)
    per_budget: dict[str, dict[str, Any]] = {}
    per_query: dict[str, dict[str, float]] = {}

    def score(name: str, query_vectors: torch.Tensor, document_vectors: torch.Tensor, budget: Budget) -> None:
        single = _single_query_latency(query_vectors, document_vectors, budget, k, settings)
        top, seconds = _timed(_search, query_vectors, document_vectors, budget, k, settings)
        run = {query_id: [documents.ids[i] for i in row] for query_id, row in zip(queries.ids, top.tolist())}
        means, by_query = evaluate_run(run, qrels, tuple(dict.fromkeys([*settings.metrics, task.headline])))
        per_budget[name] = {
            "metrics": means,
            "latency_ms_per_query": seconds * 1000.0 / len(queries.ids),
            "latency_ms_single_query": single,
        }
        per_query[name] = {query_id: values[task.headline] for query_id, values in by_query.items()}

    for budget in budgets:
        score(str(budget), queries.vectors, documents.vectors, budget)
    baselines: dict[str, dict[str, Any]] = {}
    for name, baseline in settings.baselines.items():
        baseline_queries = encode_single_vector(baseline, [task.queries[i] for i in queries.ids], settings, f"{name}: queries")
        baseline_documents = encode_single_vector(baseline, [task.corpus[i] for i in documents.ids], settings, f"{name}: corpus")
        score(name, baseline_queries, baseline_documents, Budget(1, 1))
        baselines[name] = {**per_budget.pop(name), "embedding_dim": int(baseline_documents.shape[-1])}
    return {
        "kind": task.kind, "headline": task.headline, "source": task.source,
        "num_queries": len(queries.ids), "num_documents": len(documents.ids),
        "cached": {"queries": queries_cached, "documents": documents_cached},
        "budgets": per_budget,
        "baselines": baselines,
        "per_query_headline": per_query,
    }


def encode_single_vector(model: Any, items: Sequence[Any], settings: SweepSettings, where: str) -> torch.Tensor:
    """(n, 1, D) unit vectors from a single-vector sentence-transformers model, for text items."""
    texts = []
    for item in items:
        if getattr(item, "image", None) is not None or not getattr(item, "text", None):
            raise ValueError(f"{where}: a single-vector text baseline cannot encode an item without text or with an image")
        texts.append(item.text)
    vectors = model.encode(texts, batch_size=settings.batch_size, convert_to_tensor=True, normalize_embeddings=True,
                           show_progress_bar=settings.progress)
    return vectors.float().cpu().unsqueeze(1)


def paired_differences(task_results: dict[str, dict[str, Any]], budgets: Sequence[Budget], resamples: int) -> dict[str, Any]:
    """The headline metric of every budget minus the first budget's and minus each baseline's, paired over
    every query of every retrieval task (ids prefixed by task), with 95% bootstrap intervals."""
    pooled: dict[str, dict[str, float]] = {}
    for task_name, result in task_results.items():
        for system, values in result.get("per_query_headline", {}).items():
            pooled.setdefault(system, {}).update({f"{task_name}/{q}": v for q, v in values.items()})
    if not pooled:
        return {}
    keys = [str(budget) for budget in budgets]
    baselines = [system for system in pooled if system not in keys]
    comparisons = {}
    for key in keys:
        if key != keys[0]:
            comparisons[f"({key}) - ({keys[0]})"] = paired_bootstrap(pooled[key], pooled[keys[0]], resamples)
        for baseline in baselines:
            comparisons[f"({key}) - {baseline}"] = paired_bootstrap(pooled[key], pooled[baseline], resamples)
    return comparisons


def evaluate_candidate_task(model: Any, task: CandidateTask, budgets: Sequence[Budget], settings: SweepSettings, cache: EncodingCache | None) -> dict[str, Any]:
    """Encode an MMEB-style task once (each distinct candidate once) and score precision@1 at every budget.

    Ties are broken as VLM2Vec does (argmax keeps the first index, the positive): the positive is
    ranked first unless a candidate scores strictly higher.
    """
    issues = task.issues
    unique: dict[Any, int] = {}
    candidate_index: list[list[int]] = []
    unique_items = []
    for candidates in task.candidates:
        row = []
        for item in candidates:
            key = (item.text, item.image if not isinstance(item.image, bytes) else hash(item.image))
            if key not in unique:
                unique[key] = len(unique_items)
                unique_items.append(item)
            row.append(unique[key])
        candidate_index.append(row)
    candidate_ids = [f"c{i}" for i in range(len(unique_items))]
    documents, documents_cached = encode_items(
        model, DOCUMENT, candidate_ids, unique_items, batch_size=settings.batch_size, cache=cache,
        storage_dtype=settings.storage_dtype, issues=issues, where=f"{task.source} candidates", progress=settings.progress,
    )
    position = {int(c[1:]): n for n, c in enumerate(documents.ids)}
    query_ids = [f"q{i}" for i in range(len(task.queries))]
    queries, queries_cached = encode_items(
        model, QUERY, query_ids, task.queries, batch_size=settings.batch_size, cache=cache,
        storage_dtype=settings.storage_dtype, issues=issues, where=f"{task.source} queries", progress=settings.progress,
    )
    rows: list[tuple[int, list[int]]] = []
    for query_row, query_id in enumerate(queries.ids):
        number = int(query_id[1:])
        indices = candidate_index[number]
        if indices[0] not in position:
            issues.add("candidate_positive_unreadable", f"{task.source}: row {number}: the positive candidate cannot be encoded; query skipped")
            continue
        usable = [position[i] for i in indices if i in position]
        if len(usable) < len(indices):
            issues.add("candidate_unreadable", f"{task.source}: row {number}: {len(indices) - len(usable)} candidate(s) cannot be encoded; ranked without them")
        rows.append((query_row, usable))
    if not rows:
        raise ValueError(f"{task.source}: no query with an encodable positive; nothing to evaluate")

    per_budget: dict[str, dict[str, Any]] = {}
    for budget in budgets:
        hits = 0
        start = time.perf_counter()
        for query_row, usable in rows:
            scores = maxsim(queries.vectors[query_row : query_row + 1], documents.vectors[usable], budget.query, budget.document, dtype=settings.score_dtype)[0]
            hits += int(not bool((scores[1:] > scores[0]).any()))
        seconds = time.perf_counter() - start
        per_budget[str(budget)] = {
            "metrics": {"p@1": hits / len(rows)},
            "latency_ms_per_query": seconds * 1000.0 / len(rows),
            "latency_ms_single_query": seconds * 1000.0 / len(rows),
        }
    return {
        "kind": task.kind, "headline": task.headline, "source": task.source,
        "num_queries": len(rows), "num_documents": len(documents.ids),
        "cached": {"queries": queries_cached, "documents": documents_cached},
        "budgets": per_budget,
    }


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def run_budget_sweep(
    model: Any,
    tasks: Sequence[Task],
    budgets: Iterable[Budget | str | tuple[int, int]],
    settings: SweepSettings | None = None,
    *,
    model_name: str = "the model",
) -> dict[str, Any]:
    """Evaluate ``tasks`` at every budget; returns the results dictionary written to results.json."""
    settings = settings or SweepSettings()
    budgets = check_budgets(budgets, model, model_name)
    if not tasks:
        raise ValueError("no tasks to evaluate")
    cache = EncodingCache(settings.cache_dir) if settings.use_cache else None
    dimension = int(getattr(model, "embedding_dim"))
    task_results: dict[str, dict[str, Any]] = {}
    issues = DataIssues(quiet=True)
    for task in tqdm(tasks, desc="tasks", disable=not settings.progress or len(tasks) == 1):
        if task.name in task_results:
            raise ValueError(f"two tasks are named {task.name!r} ({task_results[task.name]['source']} and {task.source})")
        if isinstance(task, CandidateTask):
            result = evaluate_candidate_task(model, task, budgets, settings, cache)
        else:
            result = evaluate_retrieval_task(model, task, budgets, settings, cache)
        if settings.baselines and isinstance(task, CandidateTask):
            task.issues.add("baseline_not_run", f"{task.source}: baselines are scored on retrieval tasks only")
        result["skipped"] = task.issues.as_dict()["counts"]
        task_results[task.name] = result
        issues.merge(task.issues)

    headlines = {result["headline"] for result in task_results.values()}
    headline = headlines.pop() if len(headlines) == 1 else "ndcg@10"
    is_mmeb = all(r["kind"] == "candidates" for r in task_results.values())
    summary: dict[str, Any] = {}
    for budget in budgets:
        key = str(budget)
        metric_names = sorted({m for r in task_results.values() for m in r["budgets"][key]["metrics"]})
        overall = {m: _mean([r["budgets"][key]["metrics"].get(m) for r in task_results.values()]) for m in metric_names}
        entry: dict[str, Any] = {
            "overall": overall,
            "tasks": {name: r["budgets"][key]["metrics"] for name, r in task_results.items()},
            "index_bytes_per_document": budget.document * dimension * BF16_BYTES,
            "latency_ms_per_query": _mean([r["budgets"][key]["latency_ms_per_query"] for r in task_results.values()]),
            "latency_ms_single_query": _mean([r["budgets"][key]["latency_ms_single_query"] for r in task_results.values()]),
            "score_flops_per_query_document": 2 * budget.query * budget.document * dimension,
        }
        if is_mmeb and any(name in MMEB_SUBSETS for name in task_results):
            entry["groups"] = mmeb_group_means({n: r["budgets"][key]["metrics"]["p@1"] for n, r in task_results.items()})
        summary[key] = entry
    baselines: dict[str, Any] = {}
    for name in settings.baselines:
        runs = [r["baselines"][name] for r in task_results.values() if name in r.get("baselines", {})]
        if runs:
            metric_names = sorted({m for run in runs for m in run["metrics"]})
            baselines[name] = {
                "overall": {m: _mean([run["metrics"].get(m) for run in runs]) for m in metric_names},
                "index_bytes_per_document": runs[0]["embedding_dim"] * BF16_BYTES,
                "latency_ms_per_query": _mean([run["latency_ms_per_query"] for run in runs]),
                "latency_ms_single_query": _mean([run["latency_ms_single_query"] for run in runs]),
            }
    paired = paired_differences(task_results, budgets, settings.bootstrap_resamples)
    return {
        "model": {
            "name": model_name, "fingerprint": model_fingerprint(model), "embedding_dim": dimension,
            "num_query_meta_tokens": model_budget_limits(model).query,
            "num_document_meta_tokens": model_budget_limits(model).document,
        },
        "settings": {
            "metrics": list(settings.metrics), "batch_size": settings.batch_size,
            "storage_dtype": str(settings.storage_dtype).removeprefix("torch."),
            "score_dtype": str(settings.score_dtype).removeprefix("torch."),
            "cache_dir": str(cache.root) if cache else None, "latency_queries": settings.latency_queries,
            "torch_threads": torch.get_num_threads(), **settings.extra,
        },
        "headline": headline,
        "budget_list": [str(b) for b in budgets],
        "budgets": summary,
        "baselines": baselines,
        "paired": {"metric": headline, "comparisons": paired} if paired else {},
        "tasks": {name: {k: v for k, v in r.items() if k not in ("budgets", "baselines", "per_query_headline")}
                  for name, r in task_results.items()},
        "skipped": issues.as_dict(),
    }
