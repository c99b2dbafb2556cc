"""Multi-vector indexes searched by MaxSim at a budget chosen per query: embedded (on disk) and Qdrant, both
:class:`MultiVectorStore`s; :func:`build_index` encodes a corpus into an embedded one (resumable, sharded under torchrun).

Names are imported on first use (PEP 562): ``metaembed.index.errors`` and ``metaembed.index.provenance`` load
without torch (the command line's ``--help`` and error handling use them); qdrant-client only when asked for.
"""

from typing import TYPE_CHECKING

from metaembed._lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "BuiltIndex": "metaembed.index.build",
    "build_index": "metaembed.index.build",
    "MultiVectorIndex": "metaembed.index.embedded",
    "CorruptIndexError": "metaembed.index.errors",
    "IndexLockedError": "metaembed.index.errors",
    "IndexSettingsError": "metaembed.index.errors",
    "MissingIdsError": "metaembed.index.errors",
    "MultiVectorStore": "metaembed.index.protocol",
    "recorded_model": "metaembed.index.provenance",
    "SearchArrays": "metaembed.index.search",
    "SearchResult": "metaembed.index.search",
    "QdrantMultiVectorIndex": "metaembed.index.qdrant",
}
"""Each public name and the module it lives in."""

__all__ = ["BuiltIndex", "CorruptIndexError", "IndexLockedError", "IndexSettingsError", "MissingIdsError",
           "MultiVectorIndex", "MultiVectorStore", "SearchArrays", "SearchResult", "QdrantMultiVectorIndex", "build_index", "recorded_model"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from metaembed.index.build import BuiltIndex, build_index
    from metaembed.index.embedded import MultiVectorIndex
    from metaembed.index.errors import CorruptIndexError, IndexLockedError, IndexSettingsError, MissingIdsError
    from metaembed.index.protocol import MultiVectorStore
    from metaembed.index.provenance import recorded_model
    from metaembed.index.qdrant import QdrantMultiVectorIndex
    from metaembed.index.search import SearchArrays, SearchResult


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
