"""QdrantMultiVectorIndex: a :class:`~metaembed.index.protocol.MultiVectorStore` like MultiVectorIndex, stored in Qdrant.

One multivector field per stored document budget (``r1``, ``r4``, ..., ``r64``), each with Qdrant's MaxSim
comparator, so a search at r_c = 8 reads and scores 8 vectors per document. Ids are the user's strings
(Qdrant point ids are their uuid5); metadata is the payload. Works with a server or cluster
(``QdrantClient(url=...)``; ``shard_number`` / ``replication_factor`` at creation) and with qdrant-client's
local mode (``QdrantClient(path=...)`` or ``":memory:"``) for tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from metaembed.budgets import PAPER_BUDGETS, Budget
from metaembed.index.errors import MissingIdsError
from metaembed.index.search import SearchResult
from metaembed.index.validation import check_query_budget, parse_query_vectors, validate_documents

_ID_NAMESPACE = uuid.UUID("8f4f3d1e-2b7a-4c55-9a43-6d2f0c1e7b10")
_UPSERT_BATCH = 256


def point_id(id_: str) -> str:
    """The Qdrant point id (a uuid5) for a user id."""
    return str(uuid.uuid5(_ID_NAMESPACE, id_))


def vector_name(r_c: int) -> str:
    return f"r{r_c}"


class QdrantMultiVectorIndex:
    """A Qdrant collection searched by MaxSim at any stored document budget (a ``MultiVectorStore``)."""

    def __init__(self, client: Any, collection: str) -> None:
        self.client = client
        self.collection = collection
        info = client.get_collection(collection)
        vectors = info.config.params.vectors
        self.document_budgets = sorted(int(name[1:]) for name in vectors)
        self.dim = next(iter(vectors.values())).size
        self.max_document_vectors = max(self.document_budgets)

    @classmethod
    def create(
        cls,
        client: Any,
        collection: str,
        dim: int,
        max_document_vectors: int,
        document_budgets: Sequence[int] | None = None,
        *,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        on_disk: bool = False,
    ) -> "QdrantMultiVectorIndex":
        """Create the collection. ``document_budgets`` (default: the paper's r_c values up to the maximum, and the
        maximum) are the budgets searchable later; each is stored as its own multivector."""
        from qdrant_client import models

        if document_budgets is None:
            document_budgets = [c for _, c in PAPER_BUDGETS if c < max_document_vectors] + [max_document_vectors]
        budgets = sorted(set(document_budgets))
        if budgets[0] < 1 or budgets[-1] > max_document_vectors:
            raise ValueError(f"document_budgets {budgets} must lie in 1..{max_document_vectors}")
        if client.collection_exists(collection):
            raise FileExistsError(f"Qdrant collection {collection!r} already exists; open it with QdrantMultiVectorIndex(client, name)")
        config = {
            vector_name(r): models.VectorParams(
                size=dim, distance=models.Distance.DOT, on_disk=on_disk,
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
                hnsw_config=models.HnswConfigDiff(m=0),  # exact MaxSim: no HNSW graph over multivectors
            )
            for r in budgets
        }
        client.create_collection(collection, vectors_config=config, shard_number=shard_number,
                                 replication_factor=replication_factor)
        return cls(client, collection)

    def __len__(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def __contains__(self, id_: object) -> bool:
        return isinstance(id_, str) and bool(self.client.retrieve(self.collection, [point_id(id_)]))

    def add(self, ids: Sequence[str], vectors: Tensor, metadata: Sequence[Any] | None = None) -> None:
        """Upsert documents (n, R, D); existing ids are replaced. Same checks and errors as MultiVectorIndex.add."""
        from qdrant_client import models

        ids, vectors, metadata = validate_documents(ids, vectors, metadata, self.dim, self.max_document_vectors)
        vectors = vectors.float()
        for start in range(0, len(ids), _UPSERT_BATCH):
            points = [
                models.PointStruct(
                    id=point_id(ids[i]),
                    vector={vector_name(r): vectors[i, :r].tolist() for r in self.document_budgets},
                    payload={"id": ids[i], "metadata": metadata[i]},
                )
                for i in range(start, min(start + _UPSERT_BATCH, len(ids)))
            ]
            self.client.upsert(self.collection, points=points, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete by id; raises MissingIdsError naming ids that are not present (and deletes nothing)."""
        from qdrant_client import models

        ids = list(dict.fromkeys(ids))
        found = {p.payload["id"] for p in self.client.retrieve(self.collection, [point_id(i) for i in ids], with_payload=True)}
        missing = [i for i in ids if i not in found]
        if missing:
            raise MissingIdsError(missing)
        self.client.delete(self.collection, points_selector=models.PointIdsList(points=[point_id(i) for i in ids]), wait=True)

    def search(self, query_vectors: Tensor, k: int = 10, budget: Budget | tuple[int, int] | str | None = None) -> list[SearchResult]:
        """Exact MaxSim top-k per query at ``budget=(r_q, r_c)``; r_c must be one of ``document_budgets``."""
        queries = parse_query_vectors(query_vectors, self.dim)
        r_q, r_c = Budget.parse(budget) if budget is not None else (queries.shape[1], self.max_document_vectors)
        check_query_budget(r_q, queries.shape[1])
        if r_c > self.max_document_vectors:
            raise ValueError(f"document budget r_c={r_c} is larger than the {self.max_document_vectors} vectors per document this collection stores")
        if r_c not in self.document_budgets:
            raise ValueError(f"document budget r_c={r_c} is not stored in collection {self.collection!r}; stored budgets: {self.document_budgets}")
        results = []
        for query in queries[:, :r_q].float():
            response = self.client.query_points(self.collection, query=query.tolist(), using=vector_name(r_c),
                                                limit=k, with_payload=True)
            results.append(SearchResult([p.payload["id"] for p in response.points], [p.score for p in response.points],
                                        [p.payload["metadata"] for p in response.points]))
        return results
