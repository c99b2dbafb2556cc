"""The interface every multi-vector index backend offers: what :class:`MultiVectorIndex` (on disk) and
:class:`QdrantMultiVectorIndex` both implement, and what a third backend implements to be used in their place.

A backend stores documents as (R, D) vector sets under string ids, keeps up to ``max_document_vectors`` of
them per document, and searches by exact MaxSim at a budget (r_q, r_c) chosen per call. Errors are shared:
``add`` raises ValueError on bad shapes, non-finite values or bad ids; ``delete`` raises
:class:`~metaembed.index.errors.MissingIdsError` naming the ids it does not hold (and deletes nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor

    from metaembed.budgets import Budget
    from metaembed.index.search import SearchResult


@runtime_checkable
class MultiVectorStore(Protocol):
    """A multi-vector index searched by MaxSim at a per-call budget (embedded, Qdrant, or another backend)."""

    dim: int
    """Dimension D of every stored vector."""
    max_document_vectors: int
    """Vectors kept per document: the largest document budget r_c a search can use."""

    def __len__(self) -> int:
        """Number of documents stored."""
        ...

    def __contains__(self, id_: object) -> bool:
        """Whether a document with this id is stored."""
        ...

    def add(self, ids: Sequence[str], vectors: Tensor, metadata: Sequence[Any] | None = None) -> None:
        """Store documents (n, R, D) under ``ids`` (R >= max_document_vectors); existing ids are replaced."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id; MissingIdsError (and nothing deleted) when one is not stored."""
        ...

    def search(self, query_vectors: Tensor, k: int = 10, budget: Budget | tuple[int, int] | str | None = None) -> list[SearchResult]:
        """Exact MaxSim top-k per query (n_q, R_q, D) at ``budget=(r_q, r_c)`` (default: every vector)."""
        ...
