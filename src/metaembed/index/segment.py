"""Immutable segments: the vectors of one ``add``, stored rank-major so a document budget r_c reads a prefix.

A segment folder holds ``vectors.bin`` (shape (R, n, D): every document's vector 1, then every document's
vector 2, ...; raw bf16 bits as uint16, or int8), ``scales.bin`` (int8 only: fp32 (R, n), one scale per
vector), ``ids.json`` and ``metadata.json``. A ``pq`` segment holds ``anchors.bin`` ((n, D) bf16: each document's
mean vector) and ``codes.bin`` ((R, n, M) uint8 codes of each vector's residual from its anchor, in the index's
codebook; :mod:`metaembed.index.codebook`) instead, with ``basis.bin`` ((n, k, D) int8), ``basis_scales.bin``
((n, k) fp32) and ``coefficients.bin`` ((R, n, k) int8) when the index keeps k directions per document
(:mod:`metaembed.index.document_basis`; the codes then describe what they leave), and ``vectors.bin`` in bf16 only
when the index keeps full precision for exact rescoring. Files are written and fsync'd before the manifest names them.

Verification: the manifest records a checksum of every file and, for the vector files, one per
rank (the first vectors of every document, then the second, ...). Opening checks sizes and ``ids.json`` only; the
vectors of rank r are checked the first time anything reads them (a search at r_c > r, a gather), so opening costs
no more than reading the ids, a search at (1, 1) checks only the first rank, and no score is computed from bytes
that were not checked. Segments written before per-rank checksums are checked whole on first use.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metaembed.index.codebook import PreparedQueries, ProductCodebook, encode_documents
from metaembed.index.document_basis import (BlockDirections, add_low_rank, folds_into_decoded_blocks,
                                            low_rank, rotated_low_rank, scaled_products)
from metaembed.index.errors import CorruptIndexError
from metaembed.index.files import describe_file, fsync_directory, verify_file, verify_part, write_bytes_durably
from metaembed.index.int8 import int8_products, symmetric_int8

STORAGE_DTYPES = ("bfloat16", "float32", "int8", "pq")
_NUMPY_STORAGE = {"bfloat16": np.uint16, "float32": np.float32, "int8": np.int8}
DOCUMENT_MAJOR_FILES = ("anchors.bin", "basis.bin", "basis_scales.bin")
"""pq files with one entry per document (read whole by every search); every other vector file is rank-major."""


@dataclass(frozen=True)
class Storage:
    """How an index stores vectors: ``dtype`` (bfloat16, float32, int8 or pq), and for pq its codebook, whether bf16
    copies are kept beside the codes for exact rescoring and how many directions each document keeps (``basis``)."""

    dtype: str
    codebook: ProductCodebook | None = None
    full_precision: bool = False
    basis: int = 0
    nested_basis: bool = False
    """Whether the directions are nested by rank (:meth:`DocumentBases.fit` since 2026-11-29, recorded in the
    manifest): a search at r_c then reads only the first min(r_c, k); older indexes read all k."""


def segment_files(dtype: str, full_precision: bool = False, basis: int = 0) -> set[str]:
    """The files every segment of an index storing ``dtype`` holds (pq: with bf16 copies when ``full_precision``,
    with documents' directions when ``basis``)."""
    vectors = {"bfloat16": {"vectors.bin"}, "float32": {"vectors.bin"}, "int8": {"vectors.bin", "scales.bin"},
               "pq": {"anchors.bin", "codes.bin"} | ({"vectors.bin"} if full_precision else set())
               | ({"basis.bin", "basis_scales.bin", "coefficients.bin"} if basis else set())}[dtype]
    return vectors | {"ids.json", "metadata.json"}

def read_codebook(path: Path, record: dict[str, Any]) -> ProductCodebook:
    """A pq index's codebook file, checked against its manifest record first."""
    verify_file(path, record)
    try:
        return ProductCodebook.from_bytes(path.read_bytes())
    except Exception as error:  # a file that passed its checksum yet does not parse was written wrong
        raise CorruptIndexError(f"codebook {path} cannot be read: {error}") from None

def write_codebook(path: Path, codebook: ProductCodebook) -> dict[str, Any]:
    """Write a codebook durably (replacing a file no manifest names yet); returns its manifest record."""
    tmp = path.with_name(f".{path.name}.tmp")
    write_bytes_durably(tmp, codebook.to_bytes())
    tmp.replace(path)
    fsync_directory(path.parent)
    return {"file": path.name, **describe_file(path)}

def encode_rank_major(vectors: Tensor, storage: Storage) -> dict[str, np.ndarray]:
    """(n, R, D) float vectors -> the on-disk arrays by file name: rank-major (R, n, D) vectors, (R, n) int8 scales,
    (R, n, M) pq codes, (R, n, k) pq coefficients; (n, D) pq anchors, (n, k, D) directions and (n, k) their scales."""
    if storage.dtype == "int8":
        codes, scales = symmetric_int8(vectors.detach().transpose(0, 1).contiguous())  # one scale per vector
        return {"vectors.bin": codes.numpy(), "scales.bin": scales.squeeze(-1).numpy()}
    if storage.dtype == "float32":
        return {"vectors.bin": vectors.detach().float().transpose(0, 1).contiguous().numpy()}
    arrays = {}
    if storage.dtype == "pq":
        if storage.codebook is None:
            raise ValueError("a pq segment needs the index's codebook")
        encoded = encode_documents(vectors.detach(), storage.codebook, storage.basis)
        arrays["anchors.bin"] = encoded.anchors.view(torch.uint16).numpy()
        if encoded.bases is not None:
            arrays |= {"basis.bin": encoded.bases.basis.numpy(), "basis_scales.bin": encoded.bases.scales.numpy(),
                       "coefficients.bin": encoded.bases.coefficients.numpy()}
        arrays["codes.bin"] = encoded.codes.numpy()
    if storage.dtype == "bfloat16" or storage.full_precision:
        # straight to bf16: no fp32 copy of the chunk (10,000 x 64 x 384 would be ~1 GB)
        arrays["vectors.bin"] = vectors.detach().to(torch.bfloat16).transpose(0, 1).contiguous().view(torch.uint16).numpy()
    return arrays

def write_segment(
    segments_dir: Path, ids: list[str], vectors: Tensor, metadata: list[Any], storage: Storage
) -> dict[str, Any]:
    """Write a new segment folder durably and return its manifest record (name, count, file checksums).

    Everything is encoded before the folder is made, and a write that fails anyway removes the folder, so a
    failed add leaves no orphan segment behind."""
    arrays = encode_rank_major(vectors, storage)
    files: dict[str, Any] = {name: memoryview(np.ascontiguousarray(array)).cast("B") for name, array in arrays.items()}
    files["ids.json"] = json.dumps(ids, ensure_ascii=False).encode()
    files["metadata.json"] = json.dumps(metadata, ensure_ascii=False).encode()
    name = f"seg-{uuid.uuid4().hex[:16]}"
    folder = segments_dir / name
    folder.mkdir(parents=True)
    try:
        for file_name, payload in files.items():
            write_bytes_durably(folder / file_name, payload)
        fsync_directory(folder)
        fsync_directory(segments_dir)
        per_rank = {name: array[0].nbytes if len(array) and array[0].nbytes and name not in DOCUMENT_MAJOR_FILES else None
                    for name, array in arrays.items()}
        return {"name": name, "count": len(ids),
                "files": {f: describe_file(folder / f, per_rank.get(f)) for f in files}}
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise

@dataclass
class Segment:
    """A committed segment opened for reading: memory-mapped vectors plus its ids and metadata."""

    folder: Path
    record: dict[str, Any]
    vectors: Tensor | None  # (R, n, D), torch.bfloat16, float32 or int8, memory-mapped (pq: the bf16 copies, if kept)
    scales: Tensor | None  # (R, n) fp32 for int8
    ids: list[str]
    codes: Tensor | None = None  # (R, n, M) uint8 for pq: residuals from the anchors
    anchors: Tensor | None = None  # (n, D) bf16 for pq
    codebook: ProductCodebook | None = None
    basis: Tensor | None = None  # (n, k, D) int8 for pq with directions: each document's
    basis_scales: Tensor | None = None  # (n, k) fp32
    coefficients: Tensor | None = None  # (R, n, k) int8: each vector's weights on its document's directions
    nested_basis: bool = False  # vector r < k needs only its document's first r + 1 directions (Storage.nested_basis)
    _metadata: list[Any] | None = None
    verified_ranks: int = 0
    """Ranks of the scored files (vectors, scales or codes) checked against the manifest (all of them when
    opened without ``verify``)."""
    verified_full_ranks: int = 0
    """Ranks of a pq segment's bf16 copies checked (read only to rescore)."""

    def __post_init__(self) -> None:
        self._verifying = threading.Lock()

    @property
    def stored(self) -> int:
        """Vectors stored per document (R)."""
        return (self.codes if self.codes is not None else self.vectors).shape[0]

    @property
    def dim(self) -> int:
        """Size of each stored vector (D)."""
        return self.codebook.dim if self.codes is not None else self.vectors.shape[-1]

    @property
    def stores_plain_vectors(self) -> bool:
        """Whether the scored vectors are stored as they are (bf16 or fp32), not as int8 with scales or pq codes."""
        return self.codes is None and self.scales is None

    @property
    def has_full_precision(self) -> bool:
        """Whether a pq segment keeps bf16 copies of its vectors (always true of bf16 and int8 segments' own)."""
        return self.codes is None or self.vectors is not None

    @property
    def count(self) -> int:
        return self.record["count"]

    @classmethod
    def open(cls, folder: Path, record: dict[str, Any], dim: int, stored: int, storage: Storage,
             verify: bool) -> "Segment":
        """Open a segment, checking every file's size against the manifest and the checksum of ids.json (it is read
        whole anyway); with ``verify``, each rank of the vectors is checked on first read (:meth:`require_ranks`),
        metadata.json when first loaded."""
        for file_name, expected in record["files"].items():
            verify_file(folder / file_name, expected, full=file_name == "ids.json")
        count = record["count"]
        vectors = scales = codes = anchors = None
        if "vectors.bin" in record["files"]:
            numpy_dtype = _NUMPY_STORAGE.get(storage.dtype, np.uint16)  # pq keeps bf16 copies
            _check_size(folder / "vectors.bin", record, stored * count * dim * np.dtype(numpy_dtype).itemsize)
            vectors = _memmap(folder / "vectors.bin", numpy_dtype, (stored, count, dim))
            if numpy_dtype == np.uint16:
                vectors = vectors.view(torch.bfloat16)
        if storage.dtype == "int8":
            _check_size(folder / "scales.bin", record, stored * count * 4)
            scales = _memmap(folder / "scales.bin", np.float32, (stored, count))
        if storage.dtype == "pq":
            if storage.codebook is None:
                raise CorruptIndexError(f"segment {folder} stores pq codes, but the index has no codebook")
            subquantizers = storage.codebook.subquantizers
            _check_size(folder / "codes.bin", record, stored * count * subquantizers)
            codes = _memmap(folder / "codes.bin", np.uint8, (stored, count, subquantizers))
            _check_size(folder / "anchors.bin", record, count * dim * 2)
            anchors = _memmap(folder / "anchors.bin", np.uint16, (count, dim)).view(torch.bfloat16)
        basis = basis_scales = coefficients = None
        if storage.dtype == "pq" and storage.basis:
            k = storage.basis
            _check_size(folder / "basis.bin", record, count * k * dim)
            basis = _memmap(folder / "basis.bin", np.int8, (count, k, dim))
            _check_size(folder / "basis_scales.bin", record, count * k * 4)
            basis_scales = _memmap(folder / "basis_scales.bin", np.float32, (count, k))
            _check_size(folder / "coefficients.bin", record, stored * count * k)
            coefficients = _memmap(folder / "coefficients.bin", np.int8, (stored, count, k))
        ids = _read_json(folder / "ids.json")
        if not isinstance(ids, list) or len(ids) != count or not all(isinstance(i, str) for i in ids):
            raise CorruptIndexError(f"{folder / 'ids.json'} is not a list of {count} ids as the manifest says")
        checked = 0 if verify else stored
        return cls(folder, record, vectors, scales, ids, codes=codes, anchors=anchors, codebook=storage.codebook,
                   basis=basis, basis_scales=basis_scales, coefficients=coefficients,
                   nested_basis=storage.nested_basis and basis is not None, verified_ranks=checked,
                   verified_full_ranks=checked)

    def require_ranks(self, r_c: int) -> None:
        """Check the first ``r_c`` ranks of the vectors (and scales) against the manifest, once each; a
        CorruptIndexError names the file and the damaged part. Cheap when already checked."""
        if r_c <= self.verified_ranks:
            return
        scored = [("codes.bin", self.codes), ("coefficients.bin", self.coefficients)] if self.codes is not None else [
            ("vectors.bin", self.vectors), ("scales.bin", self.scales)]
        with self._verifying:
            if r_c > self.verified_ranks:  # else another thread checked them meanwhile
                if self.anchors is not None and self.verified_ranks == 0:  # read by every search: checked whole, first
                    for name in DOCUMENT_MAJOR_FILES:
                        if name in self.record["files"]:
                            verify_file(self.folder / name, self.record["files"][name])
                self.verified_ranks = self._verify_ranks(scored, self.verified_ranks, r_c)

    def require_full_ranks(self, r_c: int) -> None:
        """For a pq segment that keeps bf16 copies: check their first ``r_c`` ranks, once each (as :meth:`require_ranks`)."""
        if r_c <= self.verified_full_ranks:
            return
        with self._verifying:
            if r_c > self.verified_full_ranks:
                self.verified_full_ranks = self._verify_ranks([("vectors.bin", self.vectors)], self.verified_full_ranks, r_c)

    def _verify_ranks(self, files: list[tuple[str, Tensor | None]], done: int, r_c: int) -> int:
        """Check ranks ``done:r_c`` of ``files``; returns the ranks now checked (all of them for whole-file records)."""
        files = [(name, tensor) for name, tensor in files if tensor is not None]
        records = {name: self.record["files"][name] for name, _ in files}
        if any("parts" not in record for record in records.values()):  # no per-rank checksums: whole files, once
            for name, _ in files:
                verify_file(self.folder / name, records[name])
            return self.stored
        for name, tensor in files:
            for rank in range(done, r_c):
                verify_part(self.folder / name, records[name], rank, raw_bytes(tensor[rank]))
        return r_c

    def metadata(self, row: int) -> Any:
        """The JSON metadata stored with the document at ``row`` (loaded and checksummed on first use)."""
        if self._metadata is None:
            path = self.folder / "metadata.json"
            if not self.folder.is_dir():
                raise CorruptIndexError(f"segment {self.folder} is gone: a writer merged it into another after this "
                                        "index was opened; refresh() the index (or open it again) and search again")
            verify_file(path, self.record["files"]["metadata.json"])
            metadata = _read_json(path)
            if not isinstance(metadata, list) or len(metadata) != self.count:
                raise CorruptIndexError(f"{path} is not a list of {self.count} entries as the manifest says")
            self._metadata = metadata
        return self._metadata[row]

    def rank_scores(self, rank: int, start: int, stop: int, queries: Tensor | PreparedQueries,
                    directions: BlockDirections | None = None, out: Tensor | None = None) -> Tensor:
        """Dot products of query vectors with vector number ``rank`` of documents ``start:stop``: (n_qv, n), less
        :meth:`anchor_scores` for pq (the same for every rank, added once after the maximum over ranks).
        ``queries``: (n_qv, D) in the compute dtype, or for pq what :meth:`prepare_queries` made;
        ``directions``: for pq with directions, :meth:`basis_scores` of the same documents; ``out``: a block an
        earlier call returned for the same documents and queries, overwritten for plain vectors (no fresh pages)."""
        self.require_ranks(rank + 1)
        if self.codes is None:
            # documents @ queries^T, returned transposed: with the many rows on the left, oneDNN's bf16 matmul runs
            # ~1.5-2x faster for the few query vectors of a lone query (62 vs 96 us for 64 x 1000 x 384) and about
            # as fast for batches (benchmarks/results/kernel.md, last table); plain vectors go as stored (converted
            # block by block in documents_times_queries), int8 codes are multiplied as codes and scaled after
            stored = self.vectors[rank, start:stop]  # a contiguous slice of the rank-major file
            if self.scales is None:
                return documents_times_queries(stored, queries, None if out is None else out.T).T
            scaled = int8_times_queries(stored, queries) * self.scales[rank, start:stop].unsqueeze(-1)
            return scaled.to(queries.dtype).T
        if self.basis is None:
            return self.codebook.scores(queries, self.codes[rank, start:stop], rank)
        if directions is None:
            directions = self.basis_scores(start, stop, queries, range(rank, rank + 1))
        coefficients = self.coefficients[rank, start:stop, : directions.count]
        if directions.rotated is not None:
            offsets = rotated_low_rank(directions.rotated, coefficients)
            return self.codebook.scores(queries, self.codes[rank, start:stop], rank, offsets=offsets)
        scores = self.codebook.scores(queries, self.codes[rank, start:stop], rank)
        return add_low_rank(scores, directions.products, coefficients)

    def rank_group_scores(self, first: int, stop: int, queries: Tensor, out: Tensor | None = None) -> Tensor:
        """Dot products of query vectors (n_qv, D, compute dtype) with vectors ``first:stop`` of every document of
        the segment, as one matmul over that contiguous part of the rank-major file: (stop - first, n, n_qv), written
        into the front of ``out`` when given (a reused buffer: no fresh pages to fault in). One large matmul streams
        memory faster than many per-rank ones (~11.5 against ~9 GB/s on one core). Only for plain vectors
        (:attr:`stores_plain_vectors`); int8 and pq are scored one rank at a time (:meth:`rank_scores`)."""
        self.require_ranks(stop)
        stacked = self.vectors[first:stop].reshape((stop - first) * self.count, -1)  # a view: ranks are contiguous
        if out is not None:
            out = out.view(-1)[: len(stacked) * len(queries)].view(len(stacked), len(queries))
        return documents_times_queries(stacked, queries, out).view(stop - first, self.count, -1)

    def anchor_scores(self, start: int, stop: int, queries: Tensor | PreparedQueries) -> Tensor | None:
        """pq: dot products of the query vectors with the anchors of documents ``start:stop`` (n_qv, n); else None."""
        if self.anchors is None:
            return None
        self.require_ranks(1)
        anchors = self.anchors[start:stop]
        if queries.table is None:  # many query vectors: a (n_qv, n) product, laid out as the scores it is added to
            return queries.vectors @ anchors.to(queries.vectors.dtype).T
        return documents_times_queries(anchors, queries.vectors).T  # few: documents on the left stream faster

    def basis_scores(self, start: int, stop: int, queries: Tensor | PreparedQueries,
                     ranks: range = range(1)) -> BlockDirections | None:
        """pq with directions: the directions of documents ``start:stop`` made ready for ranks ``ranks`` of
        :meth:`rank_scores` (once per block): products with the query vectors, or rotated for decoded blocks where
        that is cheaper (:func:`~metaembed.index.document_basis.folds_into_decoded_blocks`); else None. A nested
        basis reads only the directions those ranks use (the first min(ranks.stop, k))."""
        if self.basis is None:
            return None
        self.require_ranks(1)
        used = min(ranks.stop, self.basis.shape[1]) if self.nested_basis else self.basis.shape[1]
        basis, scales = self.basis[start:stop, :used], self.basis_scales[start:stop, :used]
        if queries.table is None and folds_into_decoded_blocks(queries.count, len(ranks), self.dim):
            directions = basis.float() * scales.unsqueeze(-1)  # (n, k, D)
            rotated = directions @ self.codebook.rotation.T
            return BlockDirections(rotated=rotated.to(queries.rotated.dtype))
        dtype = torch.float32 if queries.table is not None else queries.rotated.dtype
        # one direction at a time: a strided (n, D) view of the rows, so a nested prefix is read without a copy
        products = torch.stack([int8_times_queries(basis[:, j], queries.vectors) for j in range(used)], dim=1)
        # lookup-table scores come as a transposed (n, n_qv) block: the products are laid out to match
        return BlockDirections(products=scaled_products(products, scales, dtype, documents_first=queries.table is not None))

    def prepare_queries(self, queries: Tensor, compute_dtype: torch.dtype) -> Tensor | PreparedQueries:
        """Query vectors (n_qv, D) as :meth:`rank_scores` takes them; made once per search (pq: lookup tables)."""
        if self.codes is None:
            return queries.to(compute_dtype).contiguous()
        return self.codebook.prepare(queries, compute_dtype)

    def gather(self, rows: Tensor, r_c: int, dtype: torch.dtype, full_precision: bool = False) -> Tensor:
        """Selected documents (by row) at budget r_c as (len(rows), r_c, D); for pq the decoded codes, or with
        ``full_precision`` the bf16 copies kept beside them."""
        if self.codes is not None and full_precision and self.vectors is not None:
            self.require_full_ranks(r_c)
            return _document_major(self.vectors, rows, range(r_c)).to(dtype)
        scored = self.scored_vectors(rows, range(r_c), dtype if self.codes is None else torch.float32)
        if self.codes is None:
            return scored
        return (self.anchors.index_select(0, rows).float().unsqueeze(1) + scored).to(dtype).contiguous()

    def scored_vectors(self, rows: Tensor, ranks: range, dtype: torch.dtype) -> Tensor:
        """What :meth:`rank_scores` multiplies the query vectors with, for documents ``rows`` and vectors ``ranks``:
        (len(rows), len(ranks), D) in ``dtype``: the stored vectors, int8 codes times their scales, or for pq the
        decoded residuals from the anchors."""
        self.require_ranks(ranks.stop)
        if self.codes is not None:
            return self._residuals(slice(ranks.start, ranks.stop), rows).transpose(0, 1).to(dtype)
        picked = _document_major(self.vectors, rows, ranks)
        if self.scales is not None:
            scales = _document_major(self.scales.unsqueeze(-1), rows, ranks)
            return (picked.float() * scales).to(dtype)
        return picked.to(dtype)

    def _residuals(self, ranks: slice, rows: Tensor) -> Tensor:
        """pq: the decoded residuals (from the anchors) of ``ranks`` of documents ``rows``, (ranks, len(rows), D) fp32:
        codes plus rank centres, plus each document's low-rank part when it keeps directions."""
        residuals = self.codebook.decode_ranks(self.codes[ranks].index_select(1, rows), first_rank=ranks.start)
        if self.basis is not None:
            residuals += low_rank(self.basis.index_select(0, rows), self.basis_scales.index_select(0, rows),
                                  self.coefficients[ranks].index_select(1, rows))
        return residuals

    def bytes_per_document(self) -> float:
        return sum(f["bytes"] for f in self.record["files"].values()) / max(1, self.count)

def _document_major(stored: Tensor, rows: Tensor, ranks: range) -> Tensor:
    """Rank-major (R, n, D) ``stored`` vectors ``ranks`` of ``rows`` as (len(rows), len(ranks), D), read in one
    gather: a document's vectors sit one rank apart, so each row of the result is picked from the (R * n, D) view
    directly (an index_select along n and a transpose would copy every value twice: a cascade's rerank spent most of
    its time there)."""
    count, dim = stored.shape[1], stored.shape[2]
    where = rows.unsqueeze(1) + torch.arange(ranks.start, ranks.stop).unsqueeze(0) * count  # rows of the flat view
    return stored.reshape(-1, dim).index_select(0, where.reshape(-1)).view(len(rows), len(ranks), dim)


_CONVERTED_BLOCK_ELEMENTS = 1 << 20
"""Stored vectors in another dtype than the queries' (bf16 scored in fp32 on a CPU without native bf16) are converted
this many values at a time (4 MB of fp32), each block multiplied while it is still in cache: converting a whole
10,000 x 384 rank first took a lone (16,64) query's 64 ranks ~1.7x longer (330-400 against ~200 ms, AMD EPYC, one
core, blocks of 1,536-3,072 rows all alike)."""


def documents_times_queries(documents: Tensor, queries: Tensor, out: Tensor | None = None) -> Tensor:
    """(n, D) documents @ (n_qv, D) queries^T as (n, n_qv) in the queries' dtype, into ``out`` when given;
    documents stored in another dtype are converted a cache-sized block at a time (:data:`_CONVERTED_BLOCK_ELEMENTS`).
    One query vector goes through a matrix-vector product: oneDNN's bf16 matmul with a single column streams memory
    ~1.3-1.6x slower than ``torch.mv`` (10,000 x 384: 656 against 516 us; 128,000 x 384: 37 against 23 ms, on one
    core)."""
    rows = max(1, _CONVERTED_BLOCK_ELEMENTS // documents.shape[1])
    if documents.dtype != queries.dtype and len(documents) > rows:
        products = torch.empty(len(documents), len(queries), dtype=queries.dtype) if out is None else out
        converted = torch.empty(rows, documents.shape[1], dtype=queries.dtype)
        for start in range(0, len(documents), rows):
            block = converted[: min(rows, len(documents) - start)]
            block.copy_(documents[start : start + len(block)])
            _times_queries(block, queries, out=products[start : start + len(block)])
        return products
    return _times_queries(documents.to(queries.dtype), queries, out)


INT8_PRODUCTS_MAX_QUERY_VECTORS = 32
"""Up to this many query vectors, int8 rows (int8 storage, pq's directions) are multiplied in int8 arithmetic
(:func:`~metaembed.index.int8.int8_products`); past it, converted block by block and multiplied in the queries' dtype
(10,000 x 384 on one AMX core: int8 ~0.4-1.0 ms up to 32 vectors against 1.3-2.2 ms converted; 6.8 against 3.1 ms at
128 vectors)."""


def int8_times_queries(rows: Tensor, queries: Tensor) -> Tensor:
    """(n, D) int8 ``rows`` @ (n_qv, D) ``queries``^T as (n, n_qv) fp32: in int8 arithmetic for few query vectors,
    else through :func:`documents_times_queries`."""
    if len(queries) <= INT8_PRODUCTS_MAX_QUERY_VECTORS:
        return int8_products(rows, queries)
    return documents_times_queries(rows, queries).float()


def _times_queries(documents: Tensor, queries: Tensor, out: Tensor | None = None) -> Tensor:
    """(n, D) @ (n_qv, D)^T in one dtype, into ``out`` (n, n_qv) when given."""
    if len(queries) == 1:
        if out is None:
            return torch.mv(documents, queries[0]).unsqueeze(1)
        torch.mv(documents, queries[0], out=out.view(-1))
        return out
    return torch.mm(documents, queries.T, out=out) if out is not None else documents @ queries.T


def _check_size(path: Path, record: dict[str, Any], size: int) -> None:
    recorded = record["files"][path.name]["bytes"]
    if recorded != size:
        raise CorruptIndexError(
            f"index file {path} is recorded as {recorded} bytes, but {record['count']} documents need {size}"
        )

def raw_bytes(tensor: Tensor) -> memoryview:
    """The bytes of a contiguous tensor (e.g. a slice of a memory-mapped file) as stored: bf16 as its bits."""
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.uint16)
    return memoryview(tensor.numpy()).cast("B")

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as error:  # bad JSON or bad UTF-8
        raise CorruptIndexError(f"index file {path} is not valid JSON: {error}") from None

def _memmap(path: Path, np_dtype: Any, shape: tuple[int, ...]) -> Tensor:
    if 0 in shape:
        return torch.from_numpy(np.zeros(shape, dtype=np_dtype))
    # copy-on-write mapping: writable for torch, never written back to the file
    array = np.memmap(path, dtype=np_dtype, mode="c", shape=shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.from_numpy(array)
