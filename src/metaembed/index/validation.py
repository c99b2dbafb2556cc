"""Checks shared by every backend's ``add``: ids, shapes, finite values and JSON metadata, named in each error."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def validate_documents(
    ids: Sequence[str], vectors: Any, metadata: Sequence[Any] | None, dim: int, max_document_vectors: int
) -> tuple[list[str], Tensor, list[Any]]:
    """Return (ids, vectors cut to max_document_vectors, metadata) or raise ValueError naming the problem."""
    if isinstance(ids, str):
        raise ValueError("ids must be a sequence of strings, got a single string")
    ids = list(ids)
    for position, id_ in enumerate(ids):
        if not isinstance(id_, str) or not id_:
            raise ValueError(f"id at position {position} must be a non-empty string, got {id_!r}")
    duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise ValueError(f"duplicate ids in one add: {duplicates[:10]}")
    if not isinstance(vectors, Tensor):
        vectors = torch.as_tensor(np.asarray(vectors))
    if vectors.ndim != 3:
        raise ValueError(f"vectors must have shape (n, R, D), got {tuple(vectors.shape)}")
    n, r, d = vectors.shape
    if n != len(ids):
        raise ValueError(f"{len(ids)} ids but {n} documents of vectors")
    if d != dim:
        raise ValueError(f"vectors have dimension {d}, the index stores dimension {dim}")
    if r < max_document_vectors:
        raise ValueError(f"documents have {r} vectors, the index stores {max_document_vectors} per document")
    vectors = vectors[:, :max_document_vectors]
    finite = torch.isfinite(vectors.float()).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = [ids[i] for i in torch.nonzero(~finite).flatten().tolist()]
        raise ValueError(f"NaN or infinite values in the vectors of ids {bad[:10]}")
    if metadata is None:
        return ids, vectors, [None] * n
    metadata = list(metadata)
    if len(metadata) != n:
        raise ValueError(f"{len(metadata)} metadata entries for {n} ids")
    for id_, value in zip(ids, metadata):
        try:
            json.dumps(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"metadata of id {id_!r} is not JSON-serialisable: {error}") from None
    return ids, vectors, metadata


def parse_query_vectors(query_vectors: Any, dim: int) -> Tensor:
    """(n_q, R_q, D) (or one query (R_q, D)) finite query vectors, or a ValueError."""
    if not isinstance(query_vectors, Tensor):
        query_vectors = torch.as_tensor(np.asarray(query_vectors))
    if query_vectors.ndim == 2:
        query_vectors = query_vectors.unsqueeze(0)
    if query_vectors.ndim != 3:
        raise ValueError(f"query_vectors must have shape (n_queries, R_q, D), got {tuple(query_vectors.shape)}")
    if query_vectors.shape[-1] != dim:
        raise ValueError(f"query vectors have dimension {query_vectors.shape[-1]}, the index has {dim}")
    if not bool(torch.isfinite(query_vectors).all()):
        raise ValueError("query vectors contain NaN or infinite values")
    return query_vectors


def check_query_budget(r_q: int, available: int) -> None:
    if r_q > available:
        raise ValueError(f"query budget r_q={r_q} is larger than the {available} query vectors given")
