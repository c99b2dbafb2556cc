"""The writing half of :class:`~metaembed.index.embedded.MultiVectorIndex`: add, stage, commit, delete and the
one atomic commit they all end in (see that module for the folder layout and the crash-safety rules)."""

from __future__ import annotations

import copy
import shutil
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from metaembed.index.errors import CorruptIndexError, MissingIdsError
from metaembed.index.codebook import ProductCodebook, anchored_residuals
from metaembed.index.merging import live_bytes, renamed_keys, tail_to_merge, write_merged_segment
from metaembed.index.manifest import CODEBOOK, manifest_segment_files, segment_record_problem, write_manifest
from metaembed.index.segment import Segment, Storage, write_codebook, write_segment
from metaembed.index.validation import check_properties, validate_documents

if TYPE_CHECKING:
    from metaembed.index.files import WriterLock
    from metaembed.index.hnsw import FirstVectorGraph

SEGMENTS = "segments"


class IndexWriting:
    """Mixin: what a writer (the holder of the index's lock) does. Every change is one :meth:`_commit`. The class it
    is mixed into provides the attributes below and ``_load(manifest)`` / ``_stored_float_dtype()``."""

    path: Path
    manifest: dict[str, Any]
    dim: int
    max_document_vectors: int
    dtype: str
    _storage: Storage
    _lock: WriterLock | None
    _graph: FirstVectorGraph
    _segments: list[Segment]
    _where: dict[str, tuple[int, int]]
    _live: list[Tensor]
    _offsets: Tensor

    auto_merge: bool = True
    """Whether commits that add segments merge small ones by the tiered policy (:mod:`metaembed.index.merging`).
    A bulk load may turn it off and :meth:`compact` once at the end: each document is then rewritten once, not
    once per tier."""

    def _open_segment(self, record: dict[str, Any], verify: bool = False, storage: Storage | None = None) -> Segment:
        """A committed or staged segment of this index, opened for reading."""
        return Segment.open(self.path / SEGMENTS / record["name"], record, self.dim, self.max_document_vectors,
                            storage or self._storage, verify)

    def set_properties(self, **updates: Any) -> None:
        """Merge ``updates`` into the manifest's properties in one atomic commit (e.g. a calibrated ``auto_margin``)."""
        self._require_writer()
        check_properties(updates)
        manifest = copy.deepcopy(self.manifest)
        manifest["properties"] = {**manifest.get("properties", {}), **updates}
        self._commit(manifest)

    def add(self, ids: Sequence[str], vectors: Tensor, metadata: Sequence[Any] | None = None) -> None:
        """Store documents (n, R, D) under ``ids`` (R >= max_document_vectors; the prefix is kept), durably.

        Existing ids are replaced. Raises ValueError (and changes nothing) on bad shapes, NaN/inf values,
        empty or duplicate ids, or metadata that is not JSON.
        """
        ids, vectors, metadata = self._validate_add(ids, vectors, metadata)
        if not ids:
            return
        storage, codebook_record = self._storage, None
        if storage.dtype == "pq" and storage.codebook is None:  # the first add of a pq index trains its codebook
            codebook = ProductCodebook.train(anchored_residuals(vectors)[1], self.manifest["pq"]["subquantizers"],
                                             by_rank=True, basis=storage.basis)
            codebook_record = write_codebook(self.path / CODEBOOK, codebook)
            storage = Storage("pq", codebook, storage.full_precision, storage.basis, storage.nested_basis)
        record = write_segment(self.path / SEGMENTS, ids, vectors, metadata, storage)
        self.commit_segments([record], codebook_record=codebook_record, storage=storage)

    def stage(self, ids: Sequence[str], vectors: Tensor, metadata: Sequence[Any] | None = None) -> dict[str, Any]:
        """Write a segment without committing it (any process may stage, e.g. each rank of a distributed run);
        the writer's :meth:`commit_segments` then makes staged segments visible in one commit. A pq index must
        have its codebook first (the writer's first :meth:`add` trains it)."""
        ids, vectors, metadata = self._validate_add(ids, vectors, metadata, require_writer=False)
        if self._storage.dtype == "pq" and self._storage.codebook is None:
            raise ValueError(f"pq index {self.path} has no codebook yet: the writer's first add() trains it, "
                             "before any process stages segments")
        return write_segment(self.path / SEGMENTS, ids, vectors, metadata, self._storage)

    def commit_segments(self, records: Iterable[dict[str, Any]], *, codebook_record: dict[str, Any] | None = None,
                        storage: Storage | None = None) -> None:
        """Commit already written segments in one atomic manifest update (later segments win on repeated ids);
        :meth:`add` also names the codebook it just trained (``codebook_record``, ``storage``)."""
        self._require_writer()
        records = list(records)
        manifest = copy.deepcopy(self.manifest)
        if codebook_record is not None:
            manifest["codebook"] = codebook_record
        files = manifest_segment_files(manifest)
        where = dict(self._where)
        names = [seg["name"] for seg in manifest["segments"]]
        for record in records:
            problem = segment_record_problem(record, files)
            if problem or record["name"] in names:
                raise CorruptIndexError(f"staged segment record {str(record)[:200]} is damaged: "
                                        f"{problem or 'its segment is already committed'}")
            # a staged segment must be intact (and readable as this index's) before it is named
            staged = self._open_segment(record, verify=True, storage=storage)
            staged.require_ranks(self.max_document_vectors)
            if staged.codes is not None and staged.vectors is not None:
                staged.require_full_ranks(self.max_document_vectors)
            ids = staged.ids
            segment_index = len(names)
            names.append(record["name"])
            for row, id_ in enumerate(ids):
                if id_ in where:
                    old_segment, old_row = where[id_]
                    manifest["deleted"].setdefault(names[old_segment], []).append(old_row)
                where[id_] = (segment_index, row)
            manifest["segments"].append(record)
        self._commit(manifest)
        self._merge_by_policy()

    def compact(self) -> int:
        """Merge every segment into one, dropping deleted documents (their bytes are freed), in one atomic commit;
        returns how many segments were merged (0: nothing to do). Searches then read one large segment instead of
        many small ones. Every stored byte is checked first; the documents' keys change (their ids do not)."""
        self._require_writer()
        if not self._segments or (len(self._segments) == 1 and bool(self._live[0].all())):
            return 0
        merged = len(self._segments)
        self._merge_tail(0)
        return merged

    def _merge_by_policy(self) -> None:
        """Merge trailing segments while the tiered policy asks for it (:func:`~metaembed.index.merging.tail_to_merge`).
        The commit before is done: a merge that fails (a full disk, a damaged source) is a warning, not a failed add."""
        if not self.auto_merge:
            return
        try:
            while run := tail_to_merge([live_bytes(segment, alive) for segment, alive in zip(self._segments, self._live)]):
                self._merge_tail(len(self._segments) - run)
        except Exception as error:  # noqa: BLE001 - the documents are committed; merging can wait for compact()
            warnings.warn(f"index {self.path}: merging small segments failed, they stay as they are ({error})",
                          RuntimeWarning, stacklevel=3)

    def _merge_tail(self, first: int) -> None:
        """Replace segments ``first:`` with one segment of their live documents in one commit, then remove their
        folders (a reader that opened them keeps its memory maps; one opening meanwhile retries with the new
        manifest)."""
        merged = self._segments[first:]
        record = write_merged_segment(self.path / SEGMENTS, merged, self._live[first:])
        manifest = copy.deepcopy(self.manifest)
        names = [segment["name"] for segment in manifest["segments"][first:]]
        manifest["segments"][first:] = [record] if record is not None else []
        for name in names:
            manifest["deleted"].pop(name, None)
        renamed = renamed_keys(self._offsets, self._live, first)
        # a failure from here leaves the new folder as an orphan (remove_orphan_segments sweeps it): whether the
        # manifest on disk already names it is not known here, so it is not deleted
        self._commit(manifest, merged=(record["name"] if record else None, renamed))
        for name in names:
            shutil.rmtree(self.path / SEGMENTS / name, ignore_errors=True)

    def remove_orphan_segments(self, keep: Iterable[str] = ()) -> list[str]:
        """Delete segment folders no manifest names (left by a crash mid-add), except ``keep``; returns their names."""
        self._require_writer()
        named = {record["name"] for record in self.manifest["segments"]} | set(keep)
        orphans = sorted(p.name for p in (self.path / SEGMENTS).iterdir() if p.is_dir() and p.name not in named)
        for name in orphans:
            shutil.rmtree(self.path / SEGMENTS / name)
        return orphans

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id; raises MissingIdsError naming any id that is not present (nothing is deleted)."""
        self._require_writer()
        ids = list(ids)
        missing = [i for i in dict.fromkeys(ids) if i not in self._where]
        if missing:
            raise MissingIdsError(missing)
        manifest = copy.deepcopy(self.manifest)
        for id_ in dict.fromkeys(ids):
            s, row = self._where[id_]
            manifest["deleted"].setdefault(self._segments[s].record["name"], []).append(row)
        self._commit(manifest)

    def _commit(self, manifest: dict[str, Any], merged: tuple[str | None, tuple[Any, Any]] | None = None) -> None:
        """Seal and write ``manifest`` atomically (the saved HNSW graph brought in line first), then load it.
        ``merged``: the segment a merge wrote (None if none was live) and its (old keys, new keys)."""
        manifest["generation"] += 1
        manifest["updated"] = time.time()
        for name in manifest["deleted"]:
            manifest["deleted"][name] = sorted(set(manifest["deleted"][name]))
        previous = self.manifest
        self._graph.update_for_commit(previous, manifest, self._open_segment, merged)
        write_manifest(self.path, manifest)
        self._load(manifest)
        self._graph.committed(previous.get("hnsw"), manifest.get("hnsw"))

    def _require_writer(self) -> None:
        if self._lock is None:
            raise PermissionError(f"index {self.path} is open read-only; open it with mode='a' to change it")

    def _validate_add(
        self, ids: Sequence[str], vectors: Tensor, metadata: Sequence[Any] | None, require_writer: bool = True
    ) -> tuple[list[str], Tensor, list[Any]]:
        if require_writer:
            self._require_writer()
        return validate_documents(ids, vectors, metadata, self.dim, self.max_document_vectors,
                                  storage_dtype=self._stored_float_dtype())
