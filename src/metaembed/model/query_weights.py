"""Fixed weights on a query's vectors, so that a larger budget adds to vector 1's score instead of outvoting it."""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.base.modules import Module
from torch import Tensor

from metaembed.model.meta_transformer import QUERY_SIDE


def query_vector_weights(num_vectors: int, tail_weight: float) -> Tensor:
    """(R_q,) weights: 1 for vector 1, ``tail_weight / (R_q - 1)`` for each of vectors 2..R_q.

    A query's MaxSim is the sum over its vectors, so at budget r_q vector 1 keeps weight 1 and vectors 2..r_q
    together add ``tail_weight * (r_q - 1) / (R_q - 1)``: each extra vector adds a fixed share, and at the full
    budget the later vectors together weigh ``tail_weight`` times vector 1.
    """
    if num_vectors == 1:
        return torch.ones(1)
    return torch.cat([torch.ones(1), torch.full((num_vectors - 1,), tail_weight / (num_vectors - 1))])


class QueryVectorWeights(Module):
    """Scales a query's unit vectors by :func:`query_vector_weights` (documents pass unchanged).

    The weights live in the query vectors themselves, so every MaxSim engine (this package's index, a vector
    database's multivector search) scores the weighted sum with no change, and a budget is still a prefix.
    With the paper's equal weights (no such module) vector 1 of 16 has 1/16 of a (16,64) score; when vector 1 is
    the strongest (the backbone's mean pooling, ``first_vector="mean"``), the later vectors then outvote it.
    """

    config_keys: list[str] = ["tail_weight"]
    forward_kwargs = {"task"}

    def __init__(self, tail_weight: float = 1.0) -> None:
        super().__init__()
        if not tail_weight > 0:
            raise ValueError(f"tail_weight must be positive (the later query vectors' total weight), got {tail_weight}")
        self.tail_weight = float(tail_weight)

    def forward(self, features: dict[str, Any], task: str | None = None, **kwargs: Any) -> dict[str, Any]:
        if task != QUERY_SIDE:
            return features
        vectors = features["token_embeddings"]  # (batch, R_q, D), unit vectors
        weights = query_vector_weights(vectors.shape[1], self.tail_weight).to(device=vectors.device, dtype=vectors.dtype)
        features["token_embeddings"] = vectors * weights[:, None]
        return features

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        self.save_config(output_path)
