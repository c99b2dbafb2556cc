"""Multi-vector indexes searched by MaxSim at a budget chosen per query: embedded (on disk) and Qdrant, both
:class:`MultiVectorStore`s; :func:`build_index` encodes a corpus into an embedded one (resumable, sharded under torchrun)."""

from metaembed.index.build import BuiltIndex, build_index
from metaembed.index.embedded import MultiVectorIndex
from metaembed.index.errors import CorruptIndexError, IndexLockedError, IndexSettingsError, MissingIdsError
from metaembed.index.protocol import MultiVectorStore
from metaembed.index.provenance import recorded_model
from metaembed.index.search import SearchResult

__all__ = ["BuiltIndex", "CorruptIndexError", "IndexLockedError", "IndexSettingsError", "MissingIdsError",
           "MultiVectorIndex", "MultiVectorStore", "SearchResult", "QdrantMultiVectorIndex", "build_index", "recorded_model"]


def __getattr__(name: str):
    if name == "QdrantMultiVectorIndex":  # qdrant-client is imported only when asked for
        from metaembed.index.qdrant import QdrantMultiVectorIndex

        return QdrantMultiVectorIndex
    raise AttributeError(name)
