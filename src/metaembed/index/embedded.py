"""MultiVectorIndex: an embedded, on-disk multi-vector index searched by MaxSim at a budget chosen per query.

Layout of the index folder::

    manifest.json        the committed state: settings, segments (with file sizes and checksums), deletions,
                         the saved HNSW graph, sealed by its own sha256 (see :mod:`metaembed.index.manifest`)
    segments/seg-*/      immutable segments written by ``add`` (see :mod:`metaembed.index.segment`)
    hnsw/                the cascade's first-stage graph, once a writer built it (see :mod:`metaembed.index.hnsw`)
    write.lock           flock held by the one writer; ``create`` takes it before it writes anything

Every ``add`` writes a new segment, fsyncs it, then replaces the manifest atomically: a crash at any moment
leaves the last committed state, and an ``add`` that returned is never lost. Re-adding an id replaces it
(the old row is marked deleted in the manifest); deleting an id that is not there raises
:class:`MissingIdsError` and deletes nothing. Writing lives in :mod:`metaembed.index.writing`; scoring in
:mod:`metaembed.index.search`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metaembed.budgets import Budget, is_auto, parse_budget_or_auto
from metaembed.index.calibration import CASCADE_CANDIDATES_PROPERTY
from metaembed.index.errors import CorruptIndexError, MissingIdsError
from metaembed.index.files import WriterLock
from metaembed.index.hnsw import FirstVectorGraph, hnsw_candidates
from metaembed.index.manifest import (CODEBOOK, MANIFEST, create_manifest_locked, new_manifest, read_manifest,
                                      read_manifest_locked)
from metaembed.index.search import (SearchArrays, SearchResult, default_compute_dtype, deleted_masks, document_id, exact_search,
                                    gather_documents, ids_of_keys, ranked_by_id_on_ties, ranked_results, rerank, some,
                                    resolve_threads, search_method, searching_threads)
from metaembed.index.codebook import check_subquantizers, default_subquantizers
from metaembed.index.document_basis import check_basis, default_basis
from metaembed.index.segment import STORAGE_DTYPES, Segment, Storage, read_codebook
from metaembed.index.validation import check_positive_int, check_properties, check_query_budget, parse_query_vectors
from metaembed.index.writing import SEGMENTS, IndexWriting


def _opened_current(load: Callable[[dict[str, Any]], Any], path: Path, attempts: int = 5) -> Any:
    """``load(manifest)`` of the index's current manifest; when a segment it names has gone meanwhile (a writer
    merged it away and committed a newer manifest), again with the newer one."""
    for attempt in range(attempts):
        manifest = read_manifest(path)
        try:
            return load(manifest)
        except CorruptIndexError:
            if attempt == attempts - 1 or read_manifest(path)["generation"] == manifest["generation"]:
                raise


class MultiVectorIndex(IndexWriting):
    """A folder of rank-major multi-vector segments (a ``MultiVectorStore``); ``search`` runs exact MaxSim at any budget up to what is stored."""

    def __init__(self, path: Path, manifest: dict[str, Any], mode: str, verify: bool,
                 lock: WriterLock | None = None, threads: int | None = None) -> None:
        """Use :meth:`create` or :meth:`open`; a writer passes the lock it read ``manifest`` under (without: read-only)."""
        self.path = path
        self.mode = mode
        self._verify = verify
        self._lock = lock
        self._graph = FirstVectorGraph(path)
        try:
            self.threads = threads  # checked here, so a bad value still releases the lock below
            self._load(manifest)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls,
        path: str | Path,
        dim: int,
        max_document_vectors: int,
        dtype: str = "bfloat16",
        properties: dict[str, Any] | None = None,
        threads: int | None = None,
        *,
        subquantizers: int | None = None,
        full_precision: bool = False,
        basis: int | None = None,
    ) -> "MultiVectorIndex":
        """Create an empty index at ``path`` storing up to ``max_document_vectors`` vectors of size ``dim`` per document
        (``threads``: as for :meth:`open`).

        ``dtype``: ``"bfloat16"`` (2 D bytes a vector), ``"float32"`` (4 D: searches score in fp32, for rankings
        exactly as fp32 MaxSim ranks; ~2x the bytes and time of bf16), ``"int8"`` (D + 4: per-vector scales) or ``"pq"`` (product
        quantization, :mod:`metaembed.index.codebook`: ``subquantizers`` bytes a vector, default D / 8, with a bf16
        anchor per document and ``basis`` int8 directions per document, :mod:`metaembed.index.document_basis`,
        default :func:`~metaembed.index.document_basis.default_basis`: 5 at 64 vectors of 384, 1/8 of bf16's bytes;
        the codebook is trained on the first add, which needs at least 256 vectors; searches score the codes).
        ``full_precision`` (pq only) also keeps bf16 copies on disk, read only to rescore each search's best
        candidates exactly (see :meth:`search`'s ``rescore``)."""
        path = Path(path)
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
        check_positive_int(dim, "dim")
        check_positive_int(max_document_vectors, "max_document_vectors")
        pq = None
        if dtype == "pq":
            subquantizers = default_subquantizers(dim) if subquantizers is None else check_subquantizers(dim, subquantizers)
            basis = (default_basis(dim, max_document_vectors, subquantizers) if basis is None
                     else check_basis(basis, max_document_vectors))
            pq = {"subquantizers": subquantizers, "full_precision": bool(full_precision), "basis": basis}
            if basis:
                pq["nested_basis"] = True  # DocumentBases.fit nests them; indexes written before may not be
        elif subquantizers is not None or full_precision or basis is not None:
            raise ValueError(f"subquantizers, full_precision and basis apply to dtype='pq' only, not {dtype!r}")
        properties = check_properties(properties or {})
        if (path / MANIFEST).exists():
            raise FileExistsError(f"an index already exists at {path}; open it with MultiVectorIndex.open")
        (path / SEGMENTS).mkdir(parents=True, exist_ok=True)
        manifest = new_manifest(dim, max_document_vectors, dtype, properties, pq)
        return cls(path, manifest, "a", verify=False, lock=create_manifest_locked(path, manifest), threads=threads)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r", verify: bool = True, threads: int | None = None) -> "MultiVectorIndex":
        """Open an index to search (``mode="r"``) or to add and delete (``"a"``, takes the writer lock).

        ``threads``: how many threads a search uses (default: torch's thread count); each works on its own blocks of
        documents. Settable later as ``index.threads``.

        Opening takes about as long as reading the ids: the manifest's own checksum, every file's size and the
        checksum of each ids.json are always checked (also with ``verify=False``, what the index command's other
        ranks open with). With ``verify`` (the default) the vectors are checked too, each rank of each segment the
        first time a search or gather reads it (a (1, 1) search checks only the first vectors), so no result is ever
        computed from unchecked bytes; :meth:`verify` checks everything now. metadata.json is checked when first
        read. A writer takes the lock before reading the manifest.
        """
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        path = Path(path)
        if mode == "r":
            return _opened_current(lambda manifest: cls(path, manifest, mode, verify, threads=threads), path)
        lock, manifest = read_manifest_locked(path)
        return cls(path, manifest, mode, verify, lock=lock, threads=threads)

    @staticmethod
    def exists(path: str | Path) -> bool:
        return (Path(path) / MANIFEST).is_file()

    def _load(self, manifest: dict[str, Any]) -> None:
        """Take ``manifest`` as the index's state; its segments are opened first, so a failure changes nothing."""
        storage = self._storage_of(manifest)
        segments_dir = self.path / SEGMENTS
        # segments never change once written: keep those already open (and what of them is already checked)
        opened = {segment.record["name"]: segment for segment in getattr(self, "_segments", [])}
        segments = [
            opened[record["name"]] if record["name"] in opened and opened[record["name"]].record == record
            else Segment.open(segments_dir / record["name"], record, manifest["dim"], manifest["max_document_vectors"],
                              storage, self._verify)
            for record in manifest["segments"]
        ]
        self.manifest = manifest
        self.dim: int = manifest["dim"]
        self.max_document_vectors: int = manifest["max_document_vectors"]
        self.dtype: str = manifest["dtype"]
        self._storage = storage
        self._segments = segments
        self._live: list[Tensor] = []
        self._where: dict[str, tuple[int, int]] = {}
        for s, segment in enumerate(self._segments):
            alive = torch.ones(segment.count, dtype=torch.bool)
            deleted = manifest["deleted"].get(segment.record["name"], [])
            if deleted:
                alive[torch.tensor(deleted, dtype=torch.long)] = False
            self._live.append(alive)
            for row in torch.nonzero(alive).flatten().tolist():
                self._where[segment.ids[row]] = (s, row)
        counts = [segment.count for segment in self._segments]
        self._offsets = torch.tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]) if counts else [], dtype=torch.long)
        self._starts: list[int] = self._offsets.tolist()
        self._deleted = deleted_masks(self._live)

    def _storage_of(self, manifest: dict[str, Any]) -> Storage:
        """How ``manifest``'s segments store vectors; a pq codebook is checked and read once (it never changes)."""
        if manifest["dtype"] != "pq":
            return Storage(manifest["dtype"])
        current = getattr(self, "_storage", None)
        record = manifest.get("codebook")
        codebook = None
        if record is not None:
            if current is not None and current.codebook is not None and self._codebook_record == record:
                codebook = current.codebook
            else:
                codebook = read_codebook(self.path / CODEBOOK, record)
        self._codebook_record = record
        return Storage("pq", codebook, manifest["pq"]["full_precision"], manifest["pq"].get("basis", 0),
                       manifest["pq"].get("nested_basis", False))

    def verify(self) -> None:
        """Check every stored byte against the manifest now (what searches otherwise check on first read), e.g.
        after copying an index; CorruptIndexError names the first damaged file."""
        for segment in self._segments:
            segment.require_ranks(self.max_document_vectors)
            if segment.codes is not None and segment.vectors is not None:
                segment.require_full_ranks(self.max_document_vectors)
            if segment.count:
                segment.metadata(0)

    def refresh(self) -> bool:
        """Reload the manifest if a writer committed since; returns whether anything changed."""
        if read_manifest(self.path)["generation"] == self.manifest["generation"]:
            return False
        _opened_current(self._load, self.path)
        return True

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "MultiVectorIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._where

    @property
    def ids(self) -> list[str]:
        """Every live id, in storage order."""
        return list(self._where)

    @property
    def threads(self) -> int | None:
        """Threads a search uses (None: torch's thread count at search time)."""
        return self._threads

    @threads.setter
    def threads(self, threads: int | None) -> None:
        self._threads = None if threads is None else resolve_threads(threads)

    def search_threads(self) -> int:
        """The thread count the next search runs on."""
        return searching_threads(self._threads)

    def ids_of(self, keys: Any) -> list[list[str | None]]:
        """String ids of a :class:`SearchArrays`' keys, or of a (n_queries, k) array of document keys, None for key
        -1. Keys hold for the index's state the search ran on: a merge renumbers them, so keys from a
        :class:`SearchArrays` of an earlier state (another ``generation``) are refused rather than misread."""
        if isinstance(keys, SearchArrays):
            if keys.generation is not None and keys.generation != self.manifest["generation"]:
                raise ValueError(f"these keys come from index state {keys.generation}, and the index has committed "
                                 f"state {self.manifest['generation']} since (a merge renumbers keys): search again")
            keys = keys.keys
        return ids_of_keys(self._segments, self._starts, keys)

    def key_of(self, id_: str) -> int:
        """The integer key of a stored document id (what :class:`SearchArrays` reports); MissingIdsError if absent."""
        s, row = self._locate(id_)
        return int(self._offsets[s]) + row

    @property
    def properties(self) -> dict[str, Any]:
        """Free-form settings stored in the manifest (the ``index`` command records its model here)."""
        return self.manifest.get("properties", {})

    def get_metadata(self, id_: str) -> Any:
        s, row = self._locate(id_)
        return self._segments[s].metadata(row)

    def get_vectors(self, ids: Sequence[str], document_budget: int | None = None) -> Tensor:
        """The stored vectors of ``ids`` as fp32 (n, r_c, D) (dequantized for int8)."""
        r_c = self._check_document_budget(document_budget)
        keys = torch.tensor([int(self._offsets[s]) + row for s, row in map(self._locate, ids)], dtype=torch.long)
        return gather_documents(self._segments, self._offsets, keys, r_c, torch.float32)

    def bytes_per_document(self) -> float:
        """Bytes on disk per stored document (vectors, scales, ids and metadata)."""
        return self.stored_bytes() / max(1, sum(seg.count for seg in self._segments))

    def stored_bytes(self) -> int:
        """Bytes of every file of the index's segments (deleted documents' included until a merge drops them)."""
        return sum(f["bytes"] for seg in self._segments for f in seg.record["files"].values())

    def scored_bytes_per_document(self, document_budget: int | None = None) -> int:
        """Bytes of vector data a search at ``document_budget`` (default: all stored) reads per document: 2 D per
        vector in bf16, 4 D in fp32, D + 4 in int8 (a scale per vector), M codes per vector plus one 2 D anchor in
        pq, and with k directions per document k (D + 4) more (nested directions: min(r_c, k)) and k coefficients
        per vector (its bf16 copies are read only to rescore)."""
        r_c = self._check_document_budget(document_budget)
        if self.dtype == "pq":
            basis = self.manifest["pq"].get("basis", 0)
            read = min(r_c, basis) if self.manifest["pq"].get("nested_basis", False) else basis
            return 2 * self.dim + read * (self.dim + 4) + r_c * (self.manifest["pq"]["subquantizers"] + basis)
        return r_c * {"bfloat16": 2 * self.dim, "float32": 4 * self.dim, "int8": self.dim + 4}[self.dtype]

    def _document_id(self, key: int) -> str:
        """The id stored under a key of the current state."""
        return document_id(self._segments, self._starts, key)

    def _locate(self, id_: str) -> tuple[int, int]:
        try:
            return self._where[id_]
        except KeyError:
            raise MissingIdsError([id_]) from None

    # ------------------------------------------------------------------ searching
    def _check_document_budget(self, r_c: int | None) -> int:
        if r_c is None:
            return self.max_document_vectors
        if r_c < 1:
            raise ValueError(f"document budget must be at least 1, got {r_c}")
        if r_c > self.max_document_vectors:
            raise ValueError(
                f"document budget r_c={r_c} is larger than the {self.max_document_vectors} vectors per document "
                f"this index stores ({self.path})"
            )
        return r_c

    def _prepare_queries(self, query_vectors: Tensor, budget: Any, compute_dtype: torch.dtype) -> tuple[Tensor, int]:
        query_vectors = parse_query_vectors(query_vectors, self.dim, self.query_finite_dtypes(compute_dtype))
        if budget is None:
            r_q, r_c = query_vectors.shape[1], self.max_document_vectors
        else:
            parsed = parse_budget_or_auto(budget)
            if not isinstance(parsed, Budget):
                raise ValueError("budget 'auto' is a search() budget; cascade_search reranks at a fixed budget")
            r_q, r_c = parsed
        check_query_budget(r_q, query_vectors.shape[1])
        return query_vectors[:, :r_q], self._check_document_budget(r_c)

    @search_method
    def search(
        self,
        query_vectors: Tensor,
        k: int = 10,
        budget: Budget | tuple[int, int] | str | None = None,
        *,
        compute_dtype: torch.dtype | None = None,
        normalize_by_query: bool = False,
        max_budget: Budget | tuple[int, int] | str | None = None,
        auto_margin: float | None = None,
        candidates: int | None = None,
        ladder: Sequence[tuple[int, int]] | None = None,
        arrays: bool = False,
        rescore: int | None = None,
    ) -> list[SearchResult] | SearchArrays:
        """Exact top-k by MaxSim for each query (n_q, R_q, D) at ``budget=(r_q, r_c)`` (default: all vectors).
        A list of per-query :class:`SearchResult`, or with ``arrays=True`` one :class:`SearchArrays` (integer keys
        and scores, no id or metadata look-ups).

        A pq index scores every document on its codes (MaxSim of the reconstructed vectors). When it keeps full
        precision, the best ``rescore`` of them (default max(100, 10 k); 0: none) are then rescored exactly from
        the bf16 copies (at least k of them), and those exact scores rank the top-k.

        ``budget="auto"``: per-query test-time scaling up to ``max_budget`` (default: all vectors), escalating
        while the rank-1/rank-2 gap of score / r_q is below ``auto_margin`` (default: the index's calibrated
        ``auto_margin`` property, else 0.09), reranking ``candidates`` (default: the calibrated ``auto_candidates``
        property, else max(100, 10 k)) found at the first rung of ``ladder`` (default: the paper's budgets); see :mod:`metaembed.index.adaptive`.
        Every result records the budget it used and its cost in dot products."""
        if is_auto(budget):
            from metaembed.index.adaptive import auto_search

            return auto_search(self, query_vectors, k, max_budget=max_budget, auto_margin=auto_margin,
                               candidates=candidates, ladder=ladder, compute_dtype=compute_dtype,
                               normalize_by_query=normalize_by_query, arrays=arrays)
        named = [name for name, value in (("max_budget", max_budget), ("auto_margin", auto_margin),
                                          ("candidates", candidates), ("ladder", ladder)) if value is not None]
        if named:
            raise ValueError(f"{', '.join(named)} only apply to budget='auto' (use cascade_search for a fixed-budget rerank)")
        k = check_positive_int(k, "k")
        rescore = self._rescore_width(rescore, k)
        dtype = compute_dtype or default_compute_dtype(self._storage_torch_dtype())
        queries, r_c = self._prepare_queries(query_vectors, budget, dtype)
        threads = self.search_threads()
        if rescore:
            found_scores, found = exact_search(self._segments, self._deleted, queries, r_c, max(rescore, k), dtype,
                                               normalize_by_query, threads)
            found = found.masked_fill(torch.isinf(found_scores), -1)
            search = lambda width, rows: rerank(self._segments, self._offsets, some(queries, rows),  # noqa: E731
                                                some(found, rows), r_c, width, dtype, normalize_by_query,
                                                full_precision=True)
            total = found.shape[1]
        else:
            search = lambda width, rows: exact_search(self._segments, self._deleted, some(queries, rows),  # noqa: E731
                                                      r_c, width, dtype, normalize_by_query, threads)
            total = sum(segment.count for segment in self._segments)
        scores, keys = ranked_by_id_on_ties(search, k, total, self._document_id)
        used = Budget(queries.shape[1], r_c)
        return self._results(scores, keys, budgets=[used] * len(queries), costs=[len(self) * used.query * r_c] * len(queries),
                             arrays=arrays, k=k)

    @search_method
    def cascade_search(
        self,
        query_vectors: Tensor,
        k: int = 10,
        budget: Budget | tuple[int, int] | str | None = None,
        *,
        candidates: int | None = None,
        first_stage_budget: Budget | tuple[int, int] | str = (1, 1),
        first_stage: str = "exact",
        compute_dtype: torch.dtype | None = None,
        normalize_by_query: bool = False,
        arrays: bool = False,
    ) -> list[SearchResult] | SearchArrays:
        """Two-stage search: the top ``candidates`` at ``first_stage_budget`` (exact, or ``first_stage="hnsw"``:
        usearch HNSW over each document's first vector), then exact MaxSim rerank at ``budget``
        (``arrays``: as for :meth:`search`). A pq index reranks on its codes, or on its bf16 copies when it keeps
        full precision. ``candidates`` defaults to the index's calibrated ``cascade_candidates`` property (see
        :func:`~metaembed.index.calibration.calibrate_cascade`), at least k, else 100."""
        k = check_positive_int(k, "k")
        if candidates is None:
            candidates = max(k, int(self.properties.get(CASCADE_CANDIDATES_PROPERTY, 100)))
        candidates = check_positive_int(candidates, "candidates")
        dtype = compute_dtype or default_compute_dtype(self._storage_torch_dtype())
        queries, r_c = self._prepare_queries(query_vectors, budget, dtype)
        first = self._first_stage(first_stage_budget, queries.shape[1])
        if first_stage not in ("exact", "hnsw"):
            raise ValueError(f"first_stage must be 'exact' or 'hnsw', got {first_stage!r}")
        if first_stage == "hnsw" and first != Budget(1, 1):
            raise ValueError("the HNSW first stage indexes each document's first vector: use first_stage_budget=(1,1)")
        exact_first = first_stage == "exact" or candidates >= len(self)
        if exact_first:
            # exact first stage, or every document a candidate (an approximate HNSW walk could only miss some)
            first_scores, keys = exact_search(self._segments, self._deleted, queries[:, : first.query], first.document,
                                              candidates, dtype, normalize_by_query, self.search_threads())
            keys = keys.masked_fill(torch.isinf(first_scores), -1)  # deleted rows fill the list when few are live
        else:
            keys = hnsw_candidates(self.build_hnsw(), queries[:, 0], candidates)
        used = Budget(queries.shape[1], r_c)
        costs = ((keys >= 0).sum(dim=1) * used.query * r_c + len(self) * first.query * first.document).tolist()
        scores, keys = ranked_by_id_on_ties(
            lambda width, rows, found=keys: rerank(self._segments, self._offsets, some(queries, rows), some(found, rows),
                                                   r_c, width, dtype, normalize_by_query,
                                                   full_precision=self._storage.full_precision),
            k, keys.shape[1], self._document_id)
        return self._results(scores, keys, budgets=[used] * len(queries), costs=costs if exact_first else None,
                             arrays=arrays, k=k)

    def _first_stage(self, first_stage_budget: Any, query_vectors: int) -> Budget:
        """A cascade's first-stage budget, checked against the stored vectors and the ``query_vectors`` given."""
        first = Budget.parse(first_stage_budget)
        self._check_document_budget(first.document)
        if first.query > query_vectors:
            raise ValueError(f"first-stage query budget {first.query} exceeds the query budget {query_vectors}")
        return first

    def _rescore_width(self, rescore: int | None, k: int) -> int:
        """How many code-scored candidates a search rescores exactly: 0 unless this pq index keeps full precision."""
        if rescore is not None and (isinstance(rescore, bool) or not isinstance(rescore, int) or rescore < 0):
            raise ValueError(f"rescore must be an integer >= 0, got {rescore!r}")
        if not self._storage.full_precision:
            if rescore:
                raise ValueError(f"rescore needs a pq index that keeps full precision; {self.path} stores "
                                 f"{self.dtype}{' codes only' if self.dtype == 'pq' else ''}")
            return 0
        return max(100, 10 * k) if rescore is None else rescore

    def build_hnsw(self, connectivity: int | None = None, expansion_add: int | None = None,
                   expansion_search: int | None = None) -> Any:
        """The usearch HNSW graph over every live document's first vector (the cascade's ``first_stage="hnsw"``).

        The graph the manifest names when there is one (saved by a writer; checked before use), else built now: by a
        writer, saved with the index in the same crash-safe way as a segment, so other processes open it instead of
        rebuilding it and every later add or delete updates it; by a read-only opener, in memory for this process.
        Settings (HNSW M, ef_construction, ef_search; default 16, 128, 256) that differ from the saved graph's make a
        writer rebuild it and a reader build its own."""
        asked = {name: value for name, value in (("connectivity", connectivity), ("expansion_add", expansion_add),
                                                 ("expansion_search", expansion_search)) if value is not None}
        graph, record = self._graph.get(self.manifest, self._segments, self._live, self._offsets, asked,
                                        writer=self._lock is not None)
        if record is not None:
            manifest = copy.deepcopy(self.manifest)
            manifest["hnsw"] = record
            self._commit(manifest)
        return graph

    def _storage_torch_dtype(self) -> torch.dtype:
        """What scoring reads: bf16 (also pq, whose blocks decode to bf16 where the CPU multiplies it natively), fp32,
        int8."""
        return {"int8": torch.int8, "float32": torch.float32}.get(self.dtype, torch.bfloat16)

    def _stored_float_dtype(self) -> torch.dtype:
        """The float type stored values must be finite in: bf16 (also a pq index's kept copies), or fp32 for fp32
        and int8 (its scales and dequantized values)."""
        return torch.float32 if self.dtype in ("int8", "float32") else torch.bfloat16

    def query_finite_dtypes(self, compute_dtype: torch.dtype) -> tuple[torch.dtype, ...]:
        """The dtypes query vectors must be finite in: the stored values' and ``compute_dtype``."""
        return (self._stored_float_dtype(), compute_dtype)

    def _results(self, scores: Tensor, keys: Tensor, budgets: Sequence[Budget] | None = None,
                 costs: Sequence[int] | None = None, arrays: bool = False, k: int = 0) -> list[SearchResult] | SearchArrays:
        """Ranked (n_q, <= k) scores and keys as per-query results (ids and metadata), or as :class:`SearchArrays`."""
        found = ranked_results(self._segments, self._starts, scores, keys, budgets, costs, arrays, k)
        if isinstance(found, SearchArrays):
            found.generation = self.manifest["generation"]
        return found
