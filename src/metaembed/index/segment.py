"""Immutable segments: the vectors of one ``add``, stored rank-major so a document budget r_c reads a prefix.

A segment folder holds ``vectors.bin`` (shape (R, n, D): every document's vector 1, then every document's
vector 2, ...; raw bf16 bits as uint16, or int8), ``scales.bin`` (int8 only: fp32 (R, n), one scale per
vector), ``ids.json`` and ``metadata.json``. Files are written and fsync'd before the manifest names them.

Verification: the manifest records a checksum of every file and, for ``vectors.bin`` and ``scales.bin``, one per
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

from metaembed.index.errors import CorruptIndexError
from metaembed.index.files import describe_file, fsync_directory, verify_file, verify_part, write_bytes_durably

STORAGE_DTYPES = ("bfloat16", "int8")
_NUMPY_STORAGE = {"bfloat16": np.uint16, "int8": np.int8}


def quantize_int8(vectors: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-vector int8: ``vectors ~= codes * scales[..., None]`` with |codes| <= 127."""
    scales = vectors.abs().amax(dim=-1).clamp_min(1e-12) / 127.0
    codes = torch.round(vectors / scales.unsqueeze(-1)).clamp_(-127, 127).to(torch.int8)
    return codes, scales.float()


def encode_rank_major(vectors: Tensor, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, R, D) float vectors -> the on-disk (R, n, D) array (and (R, n) scales for int8)."""
    rank_major = vectors.detach().float().transpose(0, 1).contiguous()
    if dtype == "bfloat16":
        return rank_major.to(torch.bfloat16).view(torch.uint16).numpy(), None
    codes, scales = quantize_int8(rank_major)
    return codes.numpy(), scales.numpy()


def write_segment(
    segments_dir: Path, ids: list[str], vectors: Tensor, metadata: list[Any], dtype: str
) -> dict[str, Any]:
    """Write a new segment folder durably and return its manifest record (name, count, file checksums).

    Everything is encoded before the folder is made, and a write that fails anyway removes the folder, so a
    failed add leaves no orphan segment behind."""
    data, scales = encode_rank_major(vectors, dtype)
    files = {"vectors.bin": memoryview(np.ascontiguousarray(data)).cast("B")}
    if scales is not None:
        files["scales.bin"] = memoryview(np.ascontiguousarray(scales)).cast("B")
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
        per_rank = {"vectors.bin": data[0].nbytes if len(data) else None,
                    "scales.bin": scales[0].nbytes if scales is not None and len(scales) else None}
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
    vectors: Tensor  # (R, n, D), torch.bfloat16 or torch.int8, memory-mapped
    scales: Tensor | None  # (R, n) fp32 for int8
    ids: list[str]
    _metadata: list[Any] | None = None
    verified_ranks: int = 0
    """Ranks whose bytes have been checked against the manifest (all of them when opened without ``verify``)."""

    def __post_init__(self) -> None:
        self._verifying = threading.Lock()

    @property
    def count(self) -> int:
        return self.record["count"]

    @classmethod
    def open(cls, folder: Path, record: dict[str, Any], dim: int, stored: int, dtype: str, verify: bool) -> "Segment":
        """Open a segment, checking every file's size against the manifest and the checksum of ids.json (it is read
        whole anyway); with ``verify``, each rank of the vectors is checked on first read (:meth:`require_ranks`),
        metadata.json when first loaded."""
        for file_name, expected in record["files"].items():
            verify_file(folder / file_name, expected, full=file_name == "ids.json")
        count = record["count"]
        item_size = np.dtype(_NUMPY_STORAGE[dtype]).itemsize
        _check_size(folder / "vectors.bin", record, stored * count * dim * item_size)
        vectors = _memmap(folder / "vectors.bin", _NUMPY_STORAGE[dtype], (stored, count, dim))
        if dtype == "bfloat16":
            vectors = vectors.view(torch.bfloat16)
        scales = None
        if dtype == "int8":
            _check_size(folder / "scales.bin", record, stored * count * 4)
            scales = _memmap(folder / "scales.bin", np.float32, (stored, count))
        ids = _read_json(folder / "ids.json")
        if not isinstance(ids, list) or len(ids) != count or not all(isinstance(i, str) for i in ids):
            raise CorruptIndexError(f"{folder / 'ids.json'} is not a list of {count} ids as the manifest says")
        return cls(folder, record, vectors, scales, ids, verified_ranks=0 if verify else stored)

    def require_ranks(self, r_c: int) -> None:
        """Check the first ``r_c`` ranks of the vectors (and scales) against the manifest, once each; a
        CorruptIndexError names the file and the damaged part. Cheap when already checked."""
        if r_c <= self.verified_ranks:
            return
        with self._verifying:
            if r_c <= self.verified_ranks:  # another thread checked them meanwhile
                return
            files = [(name, tensor) for name, tensor in (("vectors.bin", self.vectors), ("scales.bin", self.scales))
                     if tensor is not None]
            records = {name: self.record["files"][name] for name, _ in files}
            if any("parts" not in record for record in records.values()):  # no per-rank checksums: whole files, once
                for name, _ in files:
                    verify_file(self.folder / name, records[name])
                self.verified_ranks = self.vectors.shape[0]
                return
            for name, tensor in files:
                for rank in range(self.verified_ranks, r_c):
                    verify_part(self.folder / name, records[name], rank, _raw_bytes(tensor[rank]))
            self.verified_ranks = r_c

    def metadata(self, row: int) -> Any:
        """The JSON metadata stored with the document at ``row`` (loaded and checksummed on first use)."""
        if self._metadata is None:
            path = self.folder / "metadata.json"
            verify_file(path, self.record["files"]["metadata.json"])
            metadata = _read_json(path)
            if not isinstance(metadata, list) or len(metadata) != self.count:
                raise CorruptIndexError(f"{path} is not a list of {self.count} entries as the manifest says")
            self._metadata = metadata
        return self._metadata[row]

    def rank_block(self, rank: int, start: int, stop: int, dtype: torch.dtype) -> Tensor:
        """Vector number ``rank`` of documents ``start:stop`` as (n, D) in ``dtype``: a contiguous slice of the
        rank-major file (no copy when ``dtype`` is the bf16 storage type)."""
        self.require_ranks(rank + 1)
        view = self.vectors[rank, start:stop]
        if self.scales is None:
            return view if view.dtype == dtype else view.to(dtype)
        return (view.float() * self.scales[rank, start:stop].unsqueeze(-1)).to(dtype)

    def gather(self, rows: Tensor, r_c: int, dtype: torch.dtype) -> Tensor:
        """Selected documents (by row) at budget r_c as (len(rows), r_c, D)."""
        self.require_ranks(r_c)
        picked = self.vectors[:r_c].index_select(1, rows)
        if self.scales is not None:
            scales = self.scales[:r_c].index_select(1, rows)
            return (picked.float() * scales.unsqueeze(-1)).transpose(0, 1).to(dtype).contiguous()
        return picked.transpose(0, 1).to(dtype).contiguous()

    def bytes_per_document(self) -> float:
        return sum(f["bytes"] for f in self.record["files"].values()) / max(1, self.count)


def _check_size(path: Path, record: dict[str, Any], size: int) -> None:
    recorded = record["files"][path.name]["bytes"]
    if recorded != size:
        raise CorruptIndexError(
            f"index file {path} is recorded as {recorded} bytes, but {record['count']} documents need {size}"
        )


def _raw_bytes(tensor: Tensor) -> memoryview:
    """The bytes of a contiguous slice of a memory-mapped file, as stored (no conversion)."""
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
