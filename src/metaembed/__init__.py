"""MetaEmbed: multimodal retrieval with meta tokens, Matryoshka multi-vector training and late interaction
at a budget chosen at query time."""

from metaembed.budgets import PAPER_BUDGETS, Budget
from metaembed.inputs import InvalidInputError
from metaembed.model import MetaEmbed
from metaembed.scoring import maxsim

__version__ = "0.1.0"

__all__ = ["PAPER_BUDGETS", "Budget", "InvalidInputError", "MetaEmbed", "maxsim", "__version__"]
