"""MetaEmbed: multimodal retrieval with meta tokens, Matryoshka multi-vector training and late interaction
at a budget chosen at query time.

The public API is what this module exports (``__all__``). Every name is imported on first use (PEP 562), so
``import metaembed`` and ``metaembed --help`` load neither torch nor sentence-transformers; ``metaembed.MetaEmbed``
imports the model stack (and with it registers MetaEmbed's folder config with transformers' ``AutoConfig``).
"""

from typing import TYPE_CHECKING

from metaembed._lazy import lazy_attributes

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "PAPER_BUDGETS": "metaembed.budgets",
    "Budget": "metaembed.budgets",
    "InvalidInputError": "metaembed.inputs",
    "MetaEmbed": "metaembed.model",
    "MultiVectorIndex": "metaembed.index",
    "SearchResult": "metaembed.index",
    "maxsim": "metaembed.scoring",
    "QdrantMultiVectorIndex": "metaembed.index.qdrant",
    "MMRLoss": "metaembed.training.mmr_loss",
    "TrainConfig": "metaembed.training.config",
    "train": "metaembed.training.run",
    "evaluate": "metaembed.evaluation.run",
    "calibrate_auto_margin": "metaembed.index.calibration",
    "calibrate_cascade": "metaembed.index.calibration",
}
"""Each public name and the module it lives in."""

__all__ = [
    "PAPER_BUDGETS", "Budget", "InvalidInputError", "MetaEmbed", "MultiVectorIndex", "SearchResult", "maxsim",
    "__version__", "QdrantMultiVectorIndex", "MMRLoss", "TrainConfig", "train", "evaluate", "calibrate_auto_margin",
    "calibrate_cascade",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from metaembed.budgets import PAPER_BUDGETS, Budget
    from metaembed.evaluation.run import evaluate
    from metaembed.index import MultiVectorIndex, SearchResult
    from metaembed.index.calibration import calibrate_auto_margin, calibrate_cascade
    from metaembed.index.qdrant import QdrantMultiVectorIndex
    from metaembed.inputs import InvalidInputError
    from metaembed.model import MetaEmbed
    from metaembed.scoring import maxsim
    from metaembed.training.config import TrainConfig
    from metaembed.training.mmr_loss import MMRLoss
    from metaembed.training.run import train


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
