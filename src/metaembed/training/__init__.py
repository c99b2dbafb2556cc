"""Training MetaEmbed models with the Matryoshka Multi-Vector Retrieval (MMR) loss.

Names are imported on first use (PEP 562): the settings (:class:`TrainConfig`, what ``metaembed train --help``
lists) load without torch; the data readers, the loss, the dev evaluator and :func:`train` bring the model stack
when asked for."""

from typing import TYPE_CHECKING

from metaembed._lazy import lazy_attributes

_DATA = "metaembed.training.data"
_LAZY: dict[str, str] = {
    "TrainConfig": "metaembed.training.config",
    "BudgetSweepEvaluator": "metaembed.training.dev_evaluator",
    "BadRowError": _DATA,
    "ReadReport": _DATA,
    "TrainingExample": _DATA,
    "read_jsonl": _DATA,
    "read_mmeb_subset": _DATA,
    "read_mmeb_train": _DATA,
    "to_dataset": _DATA,
    "to_task_datasets": _DATA,
    "DEFAULT_TEMPERATURE": "metaembed.training.defaults",
    "MMRLoss": "metaembed.training.mmr_loss",
    "mmr_group_losses": "metaembed.training.mmr_loss",
    "TrainResult": "metaembed.training.run",
    "train": "metaembed.training.run",
}
"""Each public name and the module it lives in."""

__all__ = [
    "DEFAULT_TEMPERATURE",
    "BadRowError",
    "BudgetSweepEvaluator",
    "MMRLoss",
    "ReadReport",
    "TrainConfig",
    "TrainResult",
    "TrainingExample",
    "mmr_group_losses",
    "read_jsonl",
    "read_mmeb_subset",
    "read_mmeb_train",
    "to_dataset",
    "to_task_datasets",
    "train",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from metaembed.training.config import TrainConfig
    from metaembed.training.data import (
        BadRowError,
        ReadReport,
        TrainingExample,
        read_jsonl,
        read_mmeb_subset,
        read_mmeb_train,
        to_dataset,
        to_task_datasets,
    )
    from metaembed.training.defaults import DEFAULT_TEMPERATURE
    from metaembed.training.dev_evaluator import BudgetSweepEvaluator
    from metaembed.training.mmr_loss import MMRLoss, mmr_group_losses
    from metaembed.training.run import TrainResult, train


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
