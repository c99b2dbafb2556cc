"""Evaluate during training: ``metaembed eval``'s budget sweep on a dev split, as a sentence-transformers evaluator.

:class:`BudgetSweepEvaluator` is a ``BaseEvaluator`` (the base of every sentence-transformers evaluator), so the
trainer calls it every ``eval_steps`` and logs what it returns (``eval_dev_ndcg@10_16x64``, ...: metrics.jsonl,
the progress bar's lines, TensorBoard or W&B with ``report_to``), and ``load_best_model_at_end`` can pick a
checkpoint by its primary metric (the headline metric at the largest budget). It scores through
:func:`metaembed.evaluation.sweep.run_budget_sweep`, the function behind ``metaembed eval``: the same encoding
(stored in bf16, scored in fp32), ranking (ties by document id) and metrics, so its numbers are the ones
``metaembed eval --split dev`` prints for the same model and data. sentence-transformers'
``MultiVectorInformationRetrievalEvaluator`` does not fit: it scores one budget with its own metric code.

Each evaluation also leaves its budget curve on the model (``model.budget_curve``), so the model card saved next
(a checkpoint, the final model) shows the dev curve of the weights it holds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sentence_transformers.base.evaluation import BaseEvaluator

from metaembed.budgets import Budget
from metaembed.data.detect import load_tasks
from metaembed.evaluation.report import budget_curve
from metaembed.evaluation.sweep import SweepSettings, run_budget_sweep

logger = logging.getLogger(__name__)

EVAL_METRICS: tuple[str, ...] = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
"""What each budget reports during training (the task's headline metric is added when it is another)."""


def metric_key(metric: str, budget: Budget) -> str:
    """The name a budget's metric is logged under: ``ndcg@10_16x64`` (as the loss of a group is ``loss_16x64``)."""
    return f"{metric}_{budget.query}x{budget.document}"


class BudgetSweepEvaluator(BaseEvaluator):
    """Every budget's retrieval metrics on the dev split of ``data`` (any layout ``metaembed eval`` reads; the
    Debian and pydocs builders write BEIR folders with ``qrels/dev.tsv``). The data is read once, here."""

    def __init__(self, data: str | Path, budgets: Sequence[Budget | str], *, split: str = "dev", batch_size: int = 32,
                 metrics: Sequence[str] = EVAL_METRICS, name: str = "dev") -> None:
        super().__init__()
        self.data, self.split, self.name = str(data), split, name
        self.format, self.tasks = load_tasks(data, split=split)
        self.budgets = [Budget.parse(budget) for budget in budgets]
        if not self.budgets:
            raise ValueError("the dev evaluator needs at least one budget")
        headlines = {task.headline for task in self.tasks}
        self.headline = headlines.pop() if len(headlines) == 1 else "ndcg@10"
        self.settings = SweepSettings(metrics=tuple(dict.fromkeys([*metrics, self.headline])), batch_size=batch_size,
                                      use_cache=False, progress=False, latency_queries=0, latency_repeats=0,
                                      bootstrap_resamples=200)
        self.primary_metric = metric_key(self.headline, max(self.budgets, key=lambda b: (b.query * b.document, b.query)))
        self.last_results: dict[str, Any] | None = None

    def sweep(self, model: Any) -> dict[str, Any]:
        """``metaembed eval``'s results dictionary for ``model`` on the dev split (what results.json holds)."""
        results = run_budget_sweep(model, self.tasks, self.budgets, self.settings, model_name="the model in training")
        results["data"] = {"path": self.data, "format": self.format, "split": self.split, "image_root": None}
        return results

    def __call__(self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
        results = self.sweep(model)
        self.last_results = results
        metrics = {metric_key(metric, Budget.parse(budget)): value
                   for budget, entry in results["budgets"].items() for metric, value in entry["overall"].items()
                   if value is not None}
        curve = budget_curve(results)
        curve.notes.insert(0, f"Evaluated during training, at step {steps}." if steps >= 0 else "Evaluated after training.")
        model.budget_curve = curve  # the next save (a checkpoint, the final model) shows it in its card
        if output_path is not None:
            Path(output_path).mkdir(parents=True, exist_ok=True)
            name = f"{self.name}_results_step{steps}.json" if steps >= 0 else f"{self.name}_results.json"
            Path(output_path, name).write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        logger.info("dev evaluation at step %s: %s = %.4f", steps, self.primary_metric, metrics[self.primary_metric])
        return metrics

    def get_config_dict(self) -> dict[str, Any]:
        return {"data": self.data, "split": self.split, "budgets": [str(budget) for budget in self.budgets]}
