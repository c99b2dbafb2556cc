"""Merging segments: every ``add`` writes a segment (a server adds one request at a time, ``metaembed index`` one
chunk of 512 documents), and a search pays per segment (a matmul call, a merge into the top-k: ~0.1 ms each), so
the writer merges them. A tiered policy after every commit (Lucene's log merge policy, on the segments' bytes) keeps
the count logarithmic in the index's size while rewriting each document a few times at most; ``compact`` merges
everything into one segment.

A merge writes one new segment holding the live documents of a trailing run of segments, in order, copied as
stored (no re-encoding: bf16, int8 and pq codes alike), after checking every source byte against the manifest (a
merge never turns damaged bytes into a segment with fresh checksums); one manifest commit then names it in their
place. Deleted documents are dropped, so the keys of the merged documents change (a document's id does not).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metaembed.index.files import describe_file, fsync_directory, write_bytes_durably
from metaembed.index.segment import DOCUMENT_MAJOR_FILES, Segment, raw_bytes

MERGE_FACTOR = 4
"""Trailing segments of one size tier that are merged into one (tiers grow by this factor)."""
AUTO_MERGE_MAX_BYTES = 2 << 30
"""The automatic policy makes no segment larger than this (a merge reads and writes it whole: seconds, not the
minutes a merge of a 49 GB index would take inside an ``add``); :meth:`compact` has no limit."""
_SMALLEST_TIER_BYTES = 1 << 20
"""Segments under this size share the lowest tier, so tiny adds are merged in groups as soon as there are a few."""


def size_tier(stored_bytes: int) -> int:
    """A segment's size tier: 0 below ~1 MB, then one more for each MERGE_FACTOR times as many bytes."""
    return int(math.log(max(stored_bytes, _SMALLEST_TIER_BYTES) / _SMALLEST_TIER_BYTES, MERGE_FACTOR) + 1e-9)


def tail_to_merge(sizes: Sequence[int], factor: int = MERGE_FACTOR, max_bytes: int = AUTO_MERGE_MAX_BYTES) -> int:
    """How many trailing segments (by their live bytes, oldest first) the automatic policy merges now: the last
    ``factor`` when they are of one tier and their sum stays within ``max_bytes``, else 0. New segments only ever
    join the end and merges make the tail's last tier one larger, so the tiers fall from first to last segment."""
    if len(sizes) < factor:
        return 0
    tail = sizes[-factor:]
    if len({size_tier(size) for size in tail}) == 1 and sum(tail) <= max_bytes:
        return factor
    return 0


def live_bytes(segment: Segment, alive: Tensor) -> int:
    """Bytes of a segment's live documents (its files' bytes, shared among its documents)."""
    return int(segment.bytes_per_document() * int(alive.sum()))


def write_merged_segment(segments_dir: Path, sources: Sequence[Segment], live: Sequence[Tensor]) -> dict[str, Any] | None:
    """Write one segment holding the live documents of ``sources`` in order (their files copied rank by rank, as
    stored) and return its manifest record; None when no document is live. Every source byte is checked against
    its manifest record first. A write that fails removes the new folder (nothing is committed here)."""
    for segment in sources:
        segment.require_ranks(segment.stored)
        if segment.codes is not None and segment.vectors is not None:
            segment.require_full_ranks(segment.stored)
    rows = [torch.nonzero(alive).flatten() for alive in live]
    count = sum(len(picked) for picked in rows)
    if count == 0:
        return None
    ids = [segment.ids[row] for segment, picked in zip(sources, rows) for row in picked.tolist()]
    metadata = [segment.metadata(row) for segment, picked in zip(sources, rows) for row in picked.tolist()]
    name = f"seg-{uuid.uuid4().hex[:16]}"
    folder = segments_dir / name
    folder.mkdir(parents=True)
    try:
        part_bytes = {}
        for file_name, arrays in _stored_arrays(sources).items():
            part_bytes[file_name] = _write_rows(folder / file_name, arrays, rows, rank_major=file_name not in DOCUMENT_MAJOR_FILES)
        write_bytes_durably(folder / "ids.json", json.dumps(ids, ensure_ascii=False).encode())
        write_bytes_durably(folder / "metadata.json", json.dumps(metadata, ensure_ascii=False).encode())
        fsync_directory(folder)
        fsync_directory(segments_dir)
        files = sorted(path.name for path in folder.iterdir())
        return {"name": name, "count": count, "files": {f: describe_file(folder / f, part_bytes.get(f)) for f in files}}
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _stored_arrays(sources: Sequence[Segment]) -> dict[str, list[Tensor]]:
    """The memory-mapped arrays of each stored vector file, per source segment."""
    first = sources[0]
    names = {"vectors.bin": "vectors", "scales.bin": "scales", "codes.bin": "codes", "anchors.bin": "anchors",
             "basis.bin": "basis", "basis_scales.bin": "basis_scales", "coefficients.bin": "coefficients"}
    return {file_name: [getattr(segment, attribute) for segment in sources]
            for file_name, attribute in names.items() if getattr(first, attribute) is not None}


def _write_rows(path: Path, arrays: Sequence[Tensor], rows: Sequence[Tensor], rank_major: bool) -> int | None:
    """Write the picked rows of each array to a new file, fsync'd: rank-major (R, n, ...) arrays one rank at a time
    (all sources' rows of rank 0, then of rank 1, ...), others (n, ...) once; returns the bytes of one rank."""
    ranks = arrays[0].shape[0] if rank_major else 1
    with open(path, "wb") as handle:
        for rank in range(ranks):
            for array, picked in zip(arrays, rows):
                part = array[rank] if rank_major else array
                if len(picked) < len(part):
                    part = part.index_select(0, picked)
                handle.write(raw_bytes(part.contiguous()))
        handle.flush()
        os.fsync(handle.fileno())
    rank_bytes = path.stat().st_size // ranks if rank_major else None
    return rank_bytes or None


def renamed_keys(offsets: Tensor, live: Sequence[Tensor], first: int) -> tuple[np.ndarray, np.ndarray]:
    """(old keys, new keys) of the live documents of segments ``first:`` (first keys ``offsets``) when they are
    merged into one segment at the same place: the keys of earlier segments stay; only keys that change are listed."""
    old = np.concatenate([np.zeros(0, dtype=np.int64)] + [
        torch.nonzero(live[s]).flatten().numpy() + int(offsets[s]) for s in range(first, len(live))])
    start = int(offsets[first]) if first < len(offsets) else 0
    new = np.arange(start, start + len(old), dtype=np.int64)
    moved = old != new
    return old[moved], new[moved]
