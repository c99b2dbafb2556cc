"""The budget sweep: encode every task once at the full budget, then score every budget by prefixes.

For each budget (r_q, r_c) and task, every query is scored against the whole corpus (or its own candidate
list for MMEB) with :func:`metaembed.maxsim` on the first r_q / r_c vectors, ranked, and judged with
:mod:`metaembed.evaluation.metrics` (retrieval tasks: :mod:`metaembed.evaluation.retrieval`). The cost of a
budget is reported next to its quality: index bytes per document (r_c * D * 2, a bf16 index) and measured
search latency (batched, per query; and one query at a time), median and p90 over repeats, with the machine's
load average. With ``SweepSettings.out_dir`` every ranking and per-query metric is written there as well
(:mod:`metaembed.evaluation.runs`).

Baselines: any single-vector sentence-transformers model (``SweepSettings.baselines``; by default in the
quickstart, the backbone as users already have it: mean pooling, cosine) is scored on the same queries,
and the headline metric of every budget is compared, query by query, with (1,1) and with each baseline
(paired bootstrap, :mod:`metaembed.evaluation.stats`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metaembed.budgets import Budget
from metaembed.data.tasks import CandidateTask, DataIssues, Task
from metaembed.evaluation.cache import EncodingCache, model_fingerprint
from metaembed.evaluation.encoding import DOCUMENT, QUERY, encode_items
from metaembed.evaluation.metrics import DEFAULT_METRICS
from metaembed.evaluation.mmeb_groups import MMEB_SUBSETS, mmeb_group_means
from metaembed.evaluation.retrieval import evaluate_retrieval_task, load_average, spread
from metaembed.evaluation.runs import RunWriter
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
    """Queries timed one at a time (each ``latency_repeats`` times) for the single-query latency."""
    latency_repeats: int = 3
    """Timed passes over all queries for the batched latency; retrieval tasks time searches through a bf16
    MultiVectorIndex of their documents (:mod:`metaembed.evaluation.latency`); 0: no latency (no index built)."""
    progress: bool = True
    baselines: dict[str, Any] = field(default_factory=dict)
    """Name -> a single-vector model with sentence-transformers' ``encode`` (text tasks only), scored beside the budgets."""
    bootstrap_resamples: int = 2000
    out_dir: str | Path | None = None
    """Where TREC runs (``runs/``) and ``per_query.jsonl`` are written as the sweep goes (None: not written)."""
    extra: dict[str, Any] = field(default_factory=dict)


def model_budget_limits(model: Any) -> Budget:
    """The largest budget a model can give: (R_q, R_c)."""
    return Budget(int(model.num_query_meta_tokens), int(model.num_document_meta_tokens))


def check_budgets(budgets: Iterable[Budget | str | tuple[int, int]], model: Any, model_name: str = "the model") -> list[Budget]:
    """Parse budgets and stop, before any encoding, on one that the model cannot give."""
    return check_budget_limits(budgets, model_budget_limits(model), model_name)


def check_budget_limits(budgets: Iterable[Budget | str | tuple[int, int]], limits: Budget, model_name: str = "the model") -> list[Budget]:
    """Parse budgets and stop on one larger than ``limits`` (R_q, R_c); the distinct budgets, in order."""
    parsed = [Budget.parse(budget) for budget in budgets]
    if not parsed:
        raise ValueError("no budgets given: pass at least one r_q,r_c pair, e.g. --budget 1,1 16,64")
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


def paired_differences(task_results: dict[str, dict[str, Any]], budgets: Sequence[Budget], resamples: int) -> dict[str, Any]:
    """The headline metric of every budget minus the first budget's and minus each baseline's, paired over
    every query of every retrieval task (ids prefixed by task), with 95% bootstrap intervals. A baseline run on
    some of the tasks only is paired over the queries of those."""
    pooled: dict[str, dict[str, float]] = {}
    for task_name, result in task_results.items():
        for system, values in result.get("per_query_headline", {}).items():
            pooled.setdefault(system, {}).update({f"{task_name}/{q}": v for q, v in values.items()})
    return _compare_systems(pooled, budgets, resamples)


def paired_differences_by_task(task_results: dict[str, dict[str, Any]], budgets: Sequence[Budget],
                               resamples: int) -> dict[str, dict[str, Any]]:
    """:func:`paired_differences` within each task of a run of several (task -> comparisons); {} for one task."""
    if len(task_results) < 2:
        return {}
    return {name: comparisons for name, result in task_results.items()
            if (comparisons := _compare_systems(result.get("per_query_headline", {}), budgets, resamples))}


def _compare_systems(pooled: dict[str, dict[str, float]], budgets: Sequence[Budget], resamples: int) -> dict[str, Any]:
    """Every budget minus the first budget and minus each other system (a baseline), over their shared queries."""
    if not pooled:
        return {}
    keys = [str(budget) for budget in budgets]
    baselines = [system for system in pooled if system not in keys]
    comparisons = {}
    for key in keys:
        if key not in pooled:
            continue
        if key != keys[0] and keys[0] in pooled:
            comparisons[f"({key}) - ({keys[0]})"] = paired_bootstrap(pooled[key], pooled[keys[0]], resamples)
        for baseline in baselines:
            comparisons[f"({key}) - {baseline}"] = paired_bootstrap(pooled[key], pooled[baseline], resamples)
    return comparisons


def evaluate_candidate_task(model: Any, task: CandidateTask, budgets: Sequence[Budget], settings: SweepSettings,
                            cache: EncodingCache | None, writer: RunWriter | None = None) -> dict[str, Any]:
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
        load = load_average()
        by_query: dict[str, dict[str, float]] = {}
        timings = []
        for query_row, usable in rows:
            start = time.perf_counter()
            scores = maxsim(queries.vectors[query_row : query_row + 1], documents.vectors[usable], budget.query, budget.document, dtype=settings.score_dtype)[0]
            hit = float(not bool((scores[1:] > scores[0]).any()))
            timings.append((time.perf_counter() - start) * 1000.0)
            by_query[queries.ids[query_row]] = {"p@1": hit}
        if writer is not None:
            writer.write_per_query(task.name, str(budget), by_query)
        median, p90 = spread(timings)
        per_budget[str(budget)] = {
            "metrics": {"p@1": sum(v["p@1"] for v in by_query.values()) / len(rows)},
            "latency_ms_per_query": sum(timings) / len(timings), "latency_ms_per_query_p90": None,
            "latency_ms_single_query": median, "latency_ms_single_query_p90": p90,
            "latency_repeats": {"batched": 1, "single": len(timings)}, "load_average": load,
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
    writer = RunWriter(settings.out_dir, several_tasks=len(tasks) > 1) if settings.out_dir is not None else None
    dimension = int(getattr(model, "embedding_dim"))
    task_results: dict[str, dict[str, Any]] = {}
    issues = DataIssues(quiet=True)
    load_at_start = load_average()
    for task in tqdm(tasks, desc="tasks", disable=not settings.progress or len(tasks) == 1):
        if task.name in task_results:
            raise ValueError(f"two tasks are named {task.name!r} ({task_results[task.name]['source']} and {task.source})")
        if isinstance(task, CandidateTask):
            result = evaluate_candidate_task(model, task, budgets, settings, cache, writer)
        else:
            result = evaluate_retrieval_task(model, task, budgets, settings, cache, writer)
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
        runs = [r["budgets"][key] for r in task_results.values()]
        entry: dict[str, Any] = {
            **_pooled(runs),
            "tasks": {name: r["budgets"][key]["metrics"] for name, r in task_results.items()},
            "index_bytes_per_document": budget.document * dimension * BF16_BYTES,
            "score_flops_per_query_document": 2 * budget.query * budget.document * dimension,
        }
        if is_mmeb and any(name in MMEB_SUBSETS for name in task_results):
            entry["groups"] = mmeb_group_means({n: r["budgets"][key]["metrics"]["p@1"] for n, r in task_results.items()})
        summary[key] = entry
    baselines: dict[str, Any] = {}
    for name in settings.baselines:
        runs = [r["baselines"][name] for r in task_results.values() if name in r.get("baselines", {})]
        if runs:
            baselines[name] = {**_pooled(runs), "index_bytes_per_document": runs[0]["embedding_dim"] * BF16_BYTES,
                               "tasks": {task: r["baselines"][name]["metrics"] for task, r in task_results.items()
                                         if name in r.get("baselines", {})}}
    paired = paired_differences(task_results, budgets, settings.bootstrap_resamples)
    by_task = paired_differences_by_task(task_results, budgets, settings.bootstrap_resamples)
    return {
        "model": {
            "name": model_name, "fingerprint": model_fingerprint(model), "embedding_dim": dimension,
            "num_query_meta_tokens": model_budget_limits(model).query,
            "num_document_meta_tokens": model_budget_limits(model).document,
            "backbone": getattr(model, "backbone_name_or_path", None),
        },
        "settings": {
            "metrics": list(settings.metrics), "batch_size": settings.batch_size,
            "storage_dtype": str(settings.storage_dtype).removeprefix("torch."),
            "score_dtype": str(settings.score_dtype).removeprefix("torch."),
            "cache_dir": str(cache.root) if cache else None, "latency_queries": settings.latency_queries,
            "latency_repeats": settings.latency_repeats, "torch_threads": torch.get_num_threads(), **settings.extra,
        },
        "machine": {"cpu_count": os.cpu_count(), "load_average_start": load_at_start, "load_average_end": load_average()},
        "headline": headline,
        "budget_list": [str(b) for b in budgets],
        "budgets": summary,
        "baselines": baselines,
        "paired": ({"metric": headline, "comparisons": paired, **({"by_task": by_task} if by_task else {})}
                   if paired else {}),
        "tasks": {name: {k: v for k, v in r.items() if k not in ("budgets", "baselines", "per_query_headline")}
                  for name, r in task_results.items()},
        "runs": writer.files if writer is not None else {},
        "skipped": issues.as_dict(),
    }


_LATENCY_KEYS = ("latency_ms_per_query", "latency_ms_per_query_p90", "latency_ms_single_query", "latency_ms_single_query_p90")


def _pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One system's results over the tasks: mean metrics, mean latency figures, every task's load average."""
    metric_names = sorted({m for run in runs for m in run["metrics"]})
    return {
        "overall": {m: _mean([run["metrics"].get(m) for run in runs]) for m in metric_names},
        **{key: _mean([run.get(key) for run in runs]) for key in _LATENCY_KEYS},
        "latency_repeats": runs[0].get("latency_repeats"),
        "load_average_1m": _mean([(run.get("load_average") or [None])[0] for run in runs]),
    }
