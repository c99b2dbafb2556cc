"""Statistics the MMR benchmark reports beside its means: paired confidence intervals and vector spread.

A difference of 0.005 nDCG@10 on 2,000 queries may be noise; a paired bootstrap over the queries says
whether it is. The spread of an item's vectors (mean cosine between them) says whether later meta
tokens carry anything the first does not: near 1, a multi-vector embedding is one vector repeated.
"""

from __future__ import annotations

import torch

from metaembed.evaluation.stats import paired_bootstrap

__all__ = ["mean_vector_cosine", "paired_bootstrap"]


def mean_vector_cosine(vectors: torch.Tensor) -> float:
    """Mean cosine between distinct vectors of the same item; ``vectors`` is (items, R, D), unit rows.

    1.0 means every item's R vectors are one vector repeated; lower means later vectors add directions.
    """
    items, count, _ = vectors.shape
    if count < 2:
        raise ValueError("an item needs at least two vectors to have a spread")
    vectors = vectors.float()
    gram = torch.einsum("nid,njd->nij", vectors, vectors)
    off_diagonal = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)
    return round(float(off_diagonal.sum() / (items * count * (count - 1))), 4)
