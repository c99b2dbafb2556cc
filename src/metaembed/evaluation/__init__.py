"""Evaluation across budgets: standard metrics, benchmark readers, the budget sweep and its reports."""

from metaembed.evaluation.baselines import BACKBONE
from metaembed.evaluation.cache import EncodingCache, data_fingerprint, model_fingerprint
from metaembed.evaluation.metrics import DEFAULT_METRICS, evaluate_run, query_metrics
from metaembed.evaluation.mmeb_groups import MMEB_META_TASKS, MMEB_SUBSETS, mmeb_group_means
from metaembed.evaluation.report import results_table, terminal_table, write_results
from metaembed.evaluation.run import evaluate
from metaembed.evaluation.sweep import SweepSettings, check_budgets, run_budget_sweep

__all__ = [
    "BACKBONE", "DEFAULT_METRICS", "MMEB_META_TASKS", "MMEB_SUBSETS", "EncodingCache", "SweepSettings", "check_budgets",
    "data_fingerprint", "evaluate", "evaluate_run", "mmeb_group_means", "model_fingerprint", "query_metrics",
    "results_table", "run_budget_sweep", "terminal_table", "write_results",
]
