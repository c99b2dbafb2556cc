"""The approximate first stage of ``cascade_search(first_stage="hnsw")``: a usearch HNSW graph over each live
document's first vector, searched by inner product, keyed by the index's integer document keys.

A writer saves the graph in the index folder (``hnsw/first-vector-*.usearch``) and names it in the manifest, so it
is built once, not per process; every later commit that adds or deletes documents updates it (new first vectors
added, deleted keys removed) and names the new file in the same atomic manifest commit. The file is written and
fsync'd before the manifest names it, and checked against its recorded size and xxh3-128 before it is used.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metaembed.index.errors import CorruptIndexError
from metaembed.index.files import describe_file, fsync_directory, verify_file
from metaembed.index.segment import Segment

GRAPH_FOLDER = "hnsw"
DEFAULT_SETTINGS = {"connectivity": 16, "expansion_add": 128, "expansion_search": 256}
"""usearch's HNSW settings when none are given: M, ef_construction, ef_search."""
_RENAMING = np.uint64(1 << 62)
"""Added to keys while they are renamed (document keys stay far below it)."""


def new_graph(dim: int, settings: dict[str, int]) -> Any:
    """An empty usearch index over bf16 vectors of size ``dim``, inner product."""
    from usearch.index import Index

    return Index(ndim=dim, metric="ip", dtype="bf16", connectivity=settings["connectivity"],
                 expansion_add=settings["expansion_add"], expansion_search=settings["expansion_search"])


def add_first_vectors(graph: Any, segment: Segment, rows: Tensor, offset: int) -> None:
    """Add the first vectors of ``rows`` of a segment under keys ``offset + row``."""
    if len(rows):
        first = segment.gather(rows, 1, torch.float32)[:, 0].numpy()
        graph.add((rows + offset).numpy().astype(np.uint64), first, threads=0)


def build_first_vector_hnsw(segments: Sequence[Segment], live: Sequence[Tensor], offsets: Tensor, dim: int,
                            settings: dict[str, int]) -> Any:
    """A usearch index over every live document's first vector, keyed by global key (segment offset + row)."""
    graph = new_graph(dim, settings)
    for s, segment in enumerate(segments):
        add_first_vectors(graph, segment, torch.nonzero(live[s]).flatten(), int(offsets[s]))
    return graph


def remove_keys(graph: Any, keys: Sequence[int]) -> None:
    """Remove documents (by key) from the graph; keys it does not hold are ignored."""
    present = [key for key in keys if key in graph]
    if present:
        graph.remove(np.asarray(present, dtype=np.uint64))


def rename_keys(graph: Any, old: Sequence[int], new: Sequence[int]) -> None:
    """Give the documents under keys ``old`` the keys ``new`` (which may overlap ``old``): through keys above any
    index key first, so no rename lands on a key still in use."""
    if len(old):
        old, new = np.asarray(old, dtype=np.uint64), np.asarray(new, dtype=np.uint64)
        graph.rename(old, old + _RENAMING)
        graph.rename(old + _RENAMING, new)


def save_graph(graph: Any, index_folder: Path, settings: dict[str, int]) -> dict[str, Any]:
    """Write the graph to a new file durably; returns the manifest record naming it (file, size, checksum, settings)."""
    folder = index_folder / GRAPH_FOLDER
    folder.mkdir(exist_ok=True)
    name = f"first-vector-{uuid.uuid4().hex[:16]}.usearch"
    path = folder / name
    try:
        graph.save(str(path))
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())
        fsync_directory(folder)
        return {"file": name, **describe_file(path), "documents": len(graph), "settings": dict(settings)}
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def load_graph(index_folder: Path, record: dict[str, Any], view: bool) -> Any:
    """The saved graph a manifest names, checked against its record first (memory-mapped when ``view``)."""
    from usearch.index import Index

    path = index_folder / GRAPH_FOLDER / record["file"]
    verify_file(path, record)
    graph = Index.restore(str(path), view=view)
    if graph is None or len(graph) != record["documents"]:
        raise CorruptIndexError(f"HNSW graph {path} does not hold the {record['documents']} documents the manifest says")
    graph.expansion_search = record["settings"]["expansion_search"]
    return graph


def remove_stale_graphs(index_folder: Path, keep: Sequence[str]) -> None:
    """Delete graph files other than ``keep`` (the current and the previous one, which readers may still open)."""
    folder = index_folder / GRAPH_FOLDER
    if folder.is_dir():
        for path in folder.glob("first-vector-*.usearch"):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def graph_record_problem(record: Any) -> str | None:
    """What is wrong with the manifest's ``"hnsw"`` record, or None."""
    if not isinstance(record, dict) or not isinstance(record.get("file"), str) \
            or not record["file"].startswith("first-vector-") or "/" in record["file"]:
        return "'hnsw' must name a first-vector-*.usearch file"
    if not isinstance(record.get("documents"), int) or record["documents"] < 0:
        return "'hnsw' needs 'documents' (an integer >= 0)"
    settings = record.get("settings")
    if not isinstance(settings, dict) or set(settings) != set(DEFAULT_SETTINGS) \
            or not all(isinstance(v, int) and v > 0 for v in settings.values()):
        return f"'hnsw' settings must give positive integers for {sorted(DEFAULT_SETTINGS)}"
    return None


class FirstVectorGraph:
    """An index's HNSW graph over first vectors: the saved one its manifest names, or one built in memory for a
    read-only opener; cached, and kept in line with the live documents through every commit."""

    def __init__(self, index_folder: Path) -> None:
        self.folder = index_folder
        self._cached: tuple[Any, Any] | None = None  # (saved file name, or ("memory", generation, settings)), graph
        self._pending: tuple[str, Any] | None = None  # a graph saved for the commit under way

    def get(self, manifest: dict[str, Any], segments: Sequence[Segment], live: Sequence[Tensor], offsets: Tensor,
            asked: dict[str, int], writer: bool) -> tuple[Any, dict[str, Any] | None]:
        """(graph, record): the saved graph when its settings match ``asked``, else a new one; ``record`` is not None
        when a writer built and saved a new graph that the next commit must name."""
        record = manifest.get("hnsw")
        if record and all(record["settings"][name] == value for name, value in asked.items()):
            if self._cached is None or self._cached[0] != record["file"]:
                self._cached = (record["file"], load_graph(self.folder, record, view=not writer))
            return self._cached[1], None
        settings = {**DEFAULT_SETTINGS, **(record["settings"] if record else {}), **asked}
        if not writer:
            key = ("memory", manifest["generation"], tuple(sorted(settings.items())))
            if self._cached is None or self._cached[0] != key:
                self._cached = (key, build_first_vector_hnsw(segments, live, offsets, manifest["dim"], settings))
            return self._cached[1], None
        graph = build_first_vector_hnsw(segments, live, offsets, manifest["dim"], settings)
        saved = save_graph(graph, self.folder, settings)
        self._pending = (saved["file"], graph)
        return graph, saved

    def update_for_commit(self, old: dict[str, Any], new: dict[str, Any],
                          open_segment: Callable[[dict[str, Any]], Segment],
                          merged: tuple[str | None, tuple[Any, Any]] | None = None) -> None:
        """Before ``new`` replaces ``old``: if ``old`` names a saved graph and ``new`` still does, add the first
        vectors of new segments' live rows, remove newly deleted keys, save it as a new file and name that in ``new``.
        ``merged`` = (name of the segment a merge wrote, (old keys, new keys)): its documents are in the graph
        already, under keys that are renamed."""
        record = old.get("hnsw")
        if not record or new.get("hnsw") != record:
            return
        merged_name, (renamed_from, renamed_to) = merged or (None, ((), ()))
        known = {segment["name"] for segment in old["segments"]} | {merged_name}
        additions, removals, offset = [], [], 0
        for segment in new["segments"]:
            deleted = set(new["deleted"].get(segment["name"], []))
            if segment["name"] in known:
                removals += [offset + row for row in deleted - set(old["deleted"].get(segment["name"], []))]
            else:
                additions.append((segment, [row for row in range(segment["count"]) if row not in deleted], offset))
            offset += segment["count"]
        if not additions and not removals and not len(renamed_from):
            return
        graph = self._cached[1] if self._cached and self._cached[0] == record["file"] else load_graph(self.folder, record, view=False)
        self._cached = None  # changed in place below: only a committed state may be cached
        rename_keys(graph, renamed_from, renamed_to)
        for segment, rows, offset in additions:
            add_first_vectors(graph, open_segment(segment), torch.tensor(rows, dtype=torch.long), offset)
        remove_keys(graph, removals)
        new["hnsw"] = save_graph(graph, self.folder, record["settings"])
        self._pending = (new["hnsw"]["file"], graph)

    def committed(self, previous: dict[str, Any] | None, current: dict[str, Any] | None) -> None:
        """After a commit: cache the graph saved for it, and delete graph files older than the previous one (a reader
        that read the previous manifest may still be about to open its file)."""
        if self._pending is not None and current is not None and self._pending[0] == current["file"]:
            self._cached = self._pending
        self._pending = None
        if current != previous:
            remove_stale_graphs(self.folder, [record["file"] for record in (current, previous) if record])


def hnsw_candidates(index: Any, first_query_vectors: Tensor, candidates: int) -> Tensor:
    """(n_q, candidates) global keys found by the HNSW walk for each query's first vector; -1 pads short lists."""
    matches = index.search(first_query_vectors.float().numpy(), candidates, threads=0)
    keys = torch.from_numpy(np.asarray(matches.keys, dtype=np.int64).reshape(len(first_query_vectors), -1))
    counts = np.asarray(matches.counts) if hasattr(matches, "counts") else np.asarray([len(matches.keys)])  # 1 query
    counts = torch.as_tensor(counts).reshape(-1, 1)
    keys[torch.arange(keys.shape[1]).unsqueeze(0) >= counts] = -1
    return keys
