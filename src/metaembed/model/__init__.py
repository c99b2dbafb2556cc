"""The MetaEmbed model: a backbone with meta tokens, meta-token pooling, optional projection, L2 norm."""

from metaembed.model.meta_pooling import MetaTokenPooling
from metaembed.model.meta_transformer import MetaTransformer
from metaembed.model.metaembed import MetaEmbed

__all__ = ["MetaEmbed", "MetaTokenPooling", "MetaTransformer"]
