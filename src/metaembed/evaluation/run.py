"""``evaluate``: the function behind ``metaembed eval`` — read the data, sweep the budgets, write the outputs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from metaembed.budgets import PAPER_BUDGETS, Budget, clip_budgets
from metaembed.data.detect import load_tasks
from metaembed.evaluation.report import write_results
from metaembed.evaluation.sweep import SweepSettings, check_budgets, model_budget_limits, run_budget_sweep


def load_model(model: Any) -> tuple[Any, str]:
    """A MetaEmbed model from a folder or hub id (or the model object itself), and a name for reports."""
    if isinstance(model, (str, Path)):
        from metaembed.model import MetaEmbed

        return MetaEmbed.from_pretrained(str(model)), str(model)
    return model, type(model).__name__


def load_baselines(baselines: dict[str, Any] | None) -> dict[str, Any]:
    """Name -> single-vector model; a string value is loaded as a sentence-transformers model (mean pooling
    when the folder is a plain transformers backbone: the model a user of that backbone already has)."""
    loaded = {}
    for name, model in (baselines or {}).items():
        if isinstance(model, (str, Path)):
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(model), device="cpu")
        loaded[name] = model
    return loaded


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

    Budgets are checked against the model before anything is read or encoded; without ``budgets``, the
    paper's budgets clipped to what the model has. ``baselines`` maps a name to a single-vector model
    (or its path/hub id) scored on the same queries, with paired intervals against every budget.
    """
    model, default_name = load_model(model)
    name = model_name or default_name
    if budgets is None:
        limits = model_budget_limits(model)
        budgets = clip_budgets(PAPER_BUDGETS, limits.query, limits.document)
    budgets = check_budgets(budgets, model, name)
    detected, tasks = load_tasks(data, format, split=split, image_root=image_root, subsets=subsets)
    if baselines:
        settings = settings or SweepSettings()
        settings.baselines = {**settings.baselines, **load_baselines(baselines)}
    results = run_budget_sweep(model, tasks, budgets, settings, model_name=name)
    results["data"] = {"path": str(data), "format": detected, "split": split or "test", "image_root": str(image_root) if image_root else None}
    if out_dir is not None:
        results["outputs"] = {kind: str(path) for kind, path in write_results(results, out_dir).items()}
    return results
