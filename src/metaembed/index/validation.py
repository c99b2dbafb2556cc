"""Checks shared by every backend's ``add``: ids, shapes, finite values and JSON metadata, named in each error."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metaembed.hardware import torch_threads


def validate_documents(
    ids: Sequence[str], vectors: Any, metadata: Sequence[Any] | None, dim: int, max_document_vectors: int,
    storage_dtype: torch.dtype = torch.float32,
) -> tuple[list[str], Tensor, list[Any]]:
    """Return (ids, vectors cut to max_document_vectors, metadata) or raise ValueError naming the problem.

    Vectors must be finite in ``storage_dtype`` (3.39e38 is a float32 but overflows bf16); ids and metadata
    must be encodable as UTF-8 JSON, so nothing fails once writing has begun."""
    if isinstance(ids, str):
        raise ValueError("ids must be a sequence of strings, got a single string")
    ids = list(ids)
    for position, id_ in enumerate(ids):
        if not isinstance(id_, str) or not id_:
            raise ValueError(f"id at position {position} must be a non-empty string, got {id_!r}")
        if not _encodable(id_):
            raise ValueError(f"id at position {position} is not valid Unicode (a lone surrogate?): {id_!r}")
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
    if not all_finite_in(vectors, storage_dtype):  # one reduction; the offending documents are found only then
        finite = finite_in(vectors, storage_dtype).flatten(1).all(dim=1)
        bad = [ids[i] for i in torch.nonzero(~finite).flatten().tolist()]
        raise ValueError(f"NaN or infinite values (in {_name(storage_dtype)}) in the vectors of ids {bad[:10]}")
    if metadata is None:
        return ids, vectors, [None] * n
    metadata = list(metadata)
    if len(metadata) != n:
        raise ValueError(f"{len(metadata)} metadata entries for {n} ids")
    for id_, value in zip(ids, metadata):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as error:  # UnicodeEncodeError is a ValueError
            raise ValueError(f"metadata of id {id_!r} is not JSON-serialisable as UTF-8: {error}") from None
    return ids, vectors, metadata


def finite_in(values: Tensor, dtype: torch.dtype) -> Tensor:
    """Elementwise: is each value finite once stored as ``dtype`` (only float dtypes narrow the range)."""
    if dtype.is_floating_point and values.dtype != dtype:
        values = values.to(dtype)
    return torch.isfinite(values)


def all_finite_in(values: Tensor, dtype: torch.dtype) -> bool:
    """Whether every value is finite once stored as ``dtype``, in one reduction: NaN survives the maximum and rounding
    is monotonic, so the largest magnitude alone decides (cheap enough for every query: fp32 CPU tensors go through
    numpy, ~5x less per-call cost than torch's reduction, and only a magnitude above ``dtype``'s largest finite value
    is rounded to find out)."""
    if values.numel() == 0:
        return True
    if values.dtype == torch.float32 and values.is_cpu:
        array = values.detach().numpy()
        smallest, largest = float(array.min()), float(array.max())  # no |values| copy: ~4x faster on an add's GB
        if not (math.isfinite(smallest) and math.isfinite(largest)):
            return False
        largest = max(-smallest, largest)
        if not dtype.is_floating_point or largest <= torch.finfo(dtype).max:
            return True
        return bool(torch.isfinite(torch.tensor(largest).to(dtype)))
    if not values.is_floating_point():
        return True
    with torch_threads(1):
        smallest, largest_value = torch.aminmax(values.detach())  # NaN survives both; no |values| copy
        largest_value = torch.maximum(-smallest, largest_value)
    if dtype.is_floating_point and largest_value.dtype != dtype:
        largest_value = largest_value.to(dtype)
    return bool(torch.isfinite(largest_value))


def check_properties(properties: Any) -> dict[str, Any]:
    """``properties`` if it is a dict that can be written as UTF-8 JSON, else a ValueError."""
    if not isinstance(properties, dict):
        raise ValueError(f"properties must be a dict, got {type(properties).__name__}")
    try:
        json.dumps(properties, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as error:
        raise ValueError(f"properties must be JSON-serialisable as UTF-8: {error}") from None
    return properties


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1, or a ValueError naming the argument (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def parse_query_vectors(query_vectors: Any, dim: int, finite_dtypes: Sequence[torch.dtype] = (torch.float32,)) -> Tensor:
    """(n_q, R_q, D) (or one query (R_q, D)) query vectors finite in every dtype of ``finite_dtypes`` (the
    index's storage and compute dtypes), or a ValueError."""
    if not isinstance(query_vectors, Tensor):
        query_vectors = torch.as_tensor(np.asarray(query_vectors))
    if query_vectors.ndim == 2:
        query_vectors = query_vectors.unsqueeze(0)
    if query_vectors.ndim != 3:
        raise ValueError(f"query_vectors must have shape (n_queries, R_q, D), got {tuple(query_vectors.shape)}")
    if query_vectors.shape[-1] != dim:
        raise ValueError(f"query vectors have dimension {query_vectors.shape[-1]}, the index has {dim}")
    for dtype in dict.fromkeys(finite_dtypes):
        if not all_finite_in(query_vectors, dtype):
            raise ValueError(f"query vectors contain NaN or infinite values (in {_name(dtype)})")
    return query_vectors


def check_query_budget(r_q: int, available: int) -> None:
    if r_q > available:
        raise ValueError(f"query budget r_q={r_q} is larger than the {available} query vectors given")
