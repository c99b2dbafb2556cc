"""Training MetaEmbed models with the Matryoshka Multi-Vector Retrieval (MMR) loss."""

from metaembed.training.config import TrainConfig
from metaembed.training.data import (
    BadRowError,
    ReadReport,
    TrainingExample,
    TrainingItem,
    read_jsonl,
    read_mmeb_subset,
    read_mmeb_train,
    to_dataset,
)
from metaembed.training.mmr_loss import DEFAULT_TEMPERATURE, MMRLoss, mmr_group_losses
from metaembed.training.run import TrainResult, train

__all__ = [
    "DEFAULT_TEMPERATURE",
    "BadRowError",
    "MMRLoss",
    "ReadReport",
    "TrainConfig",
    "TrainResult",
    "TrainingExample",
    "TrainingItem",
    "mmr_group_losses",
    "read_jsonl",
    "read_mmeb_subset",
    "read_mmeb_train",
    "to_dataset",
    "train",
]
