"""``evaluate``: the function behind ``metaembed eval`` — read the data, sweep the budgets, write the outputs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from metaembed.budgets import PAPER_BUDGETS, Budget, clip_budgets
from metaembed.data.detect import load_tasks
from metaembed.evaluation.baselines import BACKBONE, resolve_baselines
from metaembed.evaluation.report import write_results
from metaembed.evaluation.sweep import (SweepSettings, check_budget_limits, check_budgets, model_budget_limits,
                                        run_budget_sweep)
from metaembed.model.saved_config import read_saved_model_info

__all__ = ["BACKBONE", "evaluate", "load_model"]


def load_model(model: Any) -> tuple[Any, str]:
    """A MetaEmbed model from a folder or hub id (or the model object itself), and a name for reports."""
    if isinstance(model, (str, Path)):
        from metaembed.model import MetaEmbed

        return MetaEmbed.from_pretrained(str(model)), str(model)
    return model, type(model).__name__


def evaluate(
    model: Any,
    data: str | Path,
    budgets: Iterable[Budget | str | tuple[int, int]] | None = None,
    out_dir: str | Path | None = None,
    *,
    format: str | None = None,
    split: str | None = None,
    image_root: str | Path | None = None,
    subsets: list[str] | None = None,
    settings: SweepSettings | None = None,
    model_name: str | None = None,
    baselines: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on the benchmark(s) at ``data`` at every budget; write results.json,
    results.md and budget_curve.png to ``out_dir`` when given. Returns the results dictionary.

    Budgets are checked against the model before anything is read or encoded (for a local model folder,
    against its saved config, before its weights load); without ``budgets``, the paper's budgets clipped to
    what the model has. ``baselines`` maps a name to a single-vector model (or its path/hub id, or
    :data:`BACKBONE`: the backbone the model records, left out with a note when it cannot be loaded) scored
    on the same queries, with paired intervals against every budget. With ``out_dir``, TREC runs and
    per-query metrics are written there too (:mod:`metaembed.evaluation.runs`).
    """
    budgets = list(budgets) if budgets is not None else None
    saved = read_saved_model_info(model) if isinstance(model, (str, Path)) else None
    if saved is not None and budgets is not None:
        check_budget_limits(budgets, Budget(saved.num_query_meta_tokens, saved.num_document_meta_tokens), model_name or str(model))
    model, default_name = load_model(model)
    name = model_name or default_name
    if budgets is None:
        limits = model_budget_limits(model)
        budgets = clip_budgets(PAPER_BUDGETS, limits.query, limits.document)
    budgets = check_budgets(budgets, model, name)
    detected, tasks = load_tasks(data, format, split=split, image_root=image_root, subsets=subsets)
    settings = settings or SweepSettings()
    loaded, described = resolve_baselines(model, baselines)
    settings = replace(settings, baselines={**settings.baselines, **loaded},
                       out_dir=out_dir if out_dir is not None else settings.out_dir)
    results = run_budget_sweep(model, tasks, budgets, settings, model_name=name)
    for baseline, description in described.items():
        if baseline in results["baselines"]:
            results["baselines"][baseline].update(description)
    results["baselines_not_run"] = {n: d for n, d in described.items() if "skipped" in d}
    results["data"] = {"path": str(data), "format": detected, "split": split or "test", "image_root": str(image_root) if image_root else None}
    if out_dir is not None:
        results["outputs"] = {kind: str(path) for kind, path in write_results(results, out_dir).items()}
    return results
