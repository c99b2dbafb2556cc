"""MetaEmbed: multimodal retrieval with meta tokens, Matryoshka multi-vector training and late interaction
at a budget chosen at query time.

The public API is what this module exports; heavier parts (training, evaluation, Qdrant) are imported on
first use so that ``import metaembed`` stays quick.
"""

from importlib import import_module
from typing import Any

from metaembed.budgets import PAPER_BUDGETS, Budget
from metaembed.index import MultiVectorIndex, SearchResult
from metaembed.inputs import InvalidInputError
from metaembed.model import MetaEmbed
from metaembed.scoring import maxsim

__version__ = "0.1.0"

_LAZY = {
    "QdrantMultiVectorIndex": "metaembed.index.qdrant",
    "MMRLoss": "metaembed.training.mmr_loss",
    "TrainConfig": "metaembed.training.config",
    "train": "metaembed.training.run",
    "evaluate": "metaembed.evaluation.run",
    "calibrate_auto_margin": "metaembed.index.calibration",
}

__all__ = [
    "PAPER_BUDGETS", "Budget", "InvalidInputError", "MetaEmbed", "MultiVectorIndex", "SearchResult", "maxsim",
    "__version__", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metaembed' has no attribute {name!r}")
