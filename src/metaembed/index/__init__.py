"""Multi-vector indexes searched by MaxSim at a budget chosen per query: embedded (on disk) and Qdrant."""

from metaembed.index.embedded import MultiVectorIndex
from metaembed.index.errors import CorruptIndexError, IndexLockedError, MissingIdsError
from metaembed.index.search import SearchResult

__all__ = ["CorruptIndexError", "IndexLockedError", "MissingIdsError", "MultiVectorIndex", "SearchResult",
           "QdrantMultiVectorIndex"]


def __getattr__(name: str):
    if name == "QdrantMultiVectorIndex":  # qdrant-client is imported only when asked for
        from metaembed.index.qdrant import QdrantMultiVectorIndex

        return QdrantMultiVectorIndex
    raise AttributeError(name)
