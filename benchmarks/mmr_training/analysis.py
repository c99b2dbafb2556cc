"""Statistics the MMR benchmark reports beside its means: paired confidence intervals and vector spread.

A difference of 0.005 nDCG@10 on 2,000 queries may be noise; a paired bootstrap over the queries says
whether it is. The spread of an item's vectors (mean cosine between them) says whether later meta
tokens carry anything the first does not: near 1, a multi-vector embedding is one vector repeated.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


def paired_bootstrap(
    first: Mapping[str, float], second: Mapping[str, float], resamples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Mean of ``first - second`` over the shared queries, with a 95% percentile bootstrap interval.

    ``first`` and ``second`` map query id -> the metric of one system; resampling queries keeps the
    pairing, so the interval is for the difference, not for either mean.
    """
    shared = sorted(set(first) & set(second))
    if not shared:
        raise ValueError("the two runs share no query")
    differences = np.array([first[q] - second[q] for q in shared], dtype=np.float64)
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[samples].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "difference": round(float(differences.mean()), 4),
        "ci95_low": round(float(low), 4),
        "ci95_high": round(float(high), 4),
        "queries": len(shared),
    }


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
