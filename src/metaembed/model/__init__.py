"""The MetaEmbed model: a backbone with meta tokens, meta-token pooling, optional projection, L2 norm."""

from metaembed.model.card import BudgetCurve
from metaembed.model.loading import NotATransformersModelError
from metaembed.model.meta_pooling import MetaTokenPooling
from metaembed.model.meta_transformer import MetaTransformer
from metaembed.model.metaembed import MetaEmbed
from metaembed.model.saved_config import TrainingRecord

__all__ = ["BudgetCurve", "MetaEmbed", "MetaTokenPooling", "MetaTransformer", "NotATransformersModelError", "TrainingRecord"]
