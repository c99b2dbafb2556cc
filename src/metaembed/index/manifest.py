"""The index manifest: the committed state of a MultiVectorIndex, sealed with a sha256 of its own content.

Format version 2 stores ``"checksum"``: the sha256 of the manifest's canonical JSON without that key. Reading
checks it, then the manifest's structure, so a damaged manifest is a :class:`CorruptIndexError` naming the
file -- never documents silently brought back from the deleted list, nor a raw ``KeyError``. Version 1
manifests (written before checksums) are still read, with the structure check only; the next commit by a
writer rewrites them as version 2.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

from metaembed.index.errors import CorruptIndexError, IndexLockedError
from metaembed.index.files import WriterLock, take_writer_lock, write_json_atomically
from metaembed.index.hnsw import graph_record_problem
from metaembed.index.segment import STORAGE_DTYPES, segment_files

FORMAT = "metaembed-multivector-index"
VERSION = 2
LEGACY_VERSIONS = (1,)
MANIFEST = "manifest.json"
CODEBOOK = "codebook.safetensors"
"""A pq index's codebook, in the index folder; written once (the first add), before the manifest names it."""
CHECKSUM = "checksum"
SEGMENT_NAME = re.compile(r"seg-[0-9a-f]{16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_XXH3 = re.compile(r"[0-9a-f]{32}")
_CHECKSUMS = {"xxh3_128": _XXH3, "sha256": _SHA256}


def new_manifest(dim: int, max_document_vectors: int, dtype: str, properties: dict[str, Any],
                 pq: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of an empty index (generation 0); ``pq``: a pq index's settings (``subquantizers``,
    ``full_precision``, ``basis``: directions per document, absent from indexes written before them; ``nested_basis``:
    true where the directions are nested by rank, absent before 2026-11-29). The pq
    codebook's record (``"codebook"``) joins with the first add."""
    manifest = {
        "format": FORMAT, "version": VERSION, "dim": dim, "max_document_vectors": max_document_vectors,
        "dtype": dtype, "generation": 0, "segments": [], "deleted": {}, "properties": properties,
        "updated": time.time(),
    }
    if pq is not None:
        manifest["pq"] = pq
    return manifest


def manifest_segment_files(manifest: dict[str, Any]) -> set[str]:
    """The files each segment of the index a manifest describes must hold."""
    pq = manifest.get("pq", {})
    return segment_files(manifest["dtype"], bool(pq.get("full_precision")), pq.get("basis", 0))


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no spaces), ``"checksum"`` itself left out."""
    body = {key: value for key, value in manifest.items() if key != CHECKSUM}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Seal ``manifest`` (version and checksum, set in place) and replace the folder's manifest atomically."""
    manifest["version"] = VERSION
    manifest[CHECKSUM] = manifest_checksum(manifest)
    write_json_atomically(folder / MANIFEST, manifest)


def create_manifest_locked(folder: Path, manifest: dict[str, Any]) -> WriterLock:
    """Take the writer lock of a new index folder, then write its first manifest; returns the lock, held.

    The existence check happens under the lock, so of two racing creates exactly one writes a manifest and
    the other gets IndexLockedError (the winner still holds the lock) or FileExistsError (it has let go)."""
    try:
        lock = take_writer_lock(folder)
    except IndexLockedError as error:
        raise IndexLockedError(f"cannot create an index at {folder}: {error}") from None
    try:
        if (folder / MANIFEST).exists():
            raise FileExistsError(f"an index already exists at {folder} (created just now by another process)")
        write_manifest(folder, manifest)
    except BaseException:
        lock.release()
        raise
    return lock


def read_manifest_locked(folder: Path) -> tuple[WriterLock, dict[str, Any]]:
    """Take the writer lock, then read the manifest: a writer never starts from a state older than the last commit."""
    require_manifest(folder)
    lock = take_writer_lock(folder)
    try:
        return lock, read_manifest(folder)
    except BaseException:
        lock.release()
        raise


def require_manifest(folder: Path) -> Path:
    """The manifest's path; FileNotFoundError when there is no index at ``folder``."""
    manifest_path = Path(folder) / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no index at {folder} ({manifest_path} does not exist)")
    return manifest_path


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read an index's manifest and check its checksum and structure, naming the file in every error."""
    manifest_path = require_manifest(folder)
    try:
        manifest = json.loads(manifest_path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise CorruptIndexError(f"index manifest {manifest_path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptIndexError(f"{manifest_path} is not a metaembed index manifest (or its 'format' is damaged)")
    version = manifest.get("version")
    if version == VERSION:
        if manifest.get(CHECKSUM) != manifest_checksum(manifest):
            raise CorruptIndexError(
                f"index manifest {manifest_path} fails its checksum (the file is damaged or was edited by hand); "
                "restore it from a backup or rebuild the index"
            )
    elif version not in LEGACY_VERSIONS:
        raise CorruptIndexError(f"{manifest_path} has format version {version!r}, expected {VERSION}")
    problem = manifest_problem(manifest)
    if problem:
        raise CorruptIndexError(f"index manifest {manifest_path} is damaged: {problem}")
    return manifest


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is structurally wrong with a parsed manifest, or None (settings, segment records, deletions)."""
    for key in ("dim", "max_document_vectors"):
        if not _is_int(manifest.get(key)) or manifest[key] < 1:
            return f"{key!r} must be a positive integer, got {manifest.get(key)!r}"
    if manifest.get("dtype") not in STORAGE_DTYPES:
        return f"'dtype' must be one of {STORAGE_DTYPES}, got {manifest.get('dtype')!r}"
    if not _is_int(manifest.get("generation")) or manifest["generation"] < 0:
        return f"'generation' must be an integer >= 0, got {manifest.get('generation')!r}"
    if not isinstance(manifest.get("properties"), dict):
        return "'properties' must be an object"
    segments = manifest.get("segments")
    if not isinstance(segments, list):
        return "'segments' must be a list"
    problem = _pq_problem(manifest)
    if problem:
        return problem
    counts: dict[str, int] = {}
    files = manifest_segment_files(manifest)
    for position, record in enumerate(segments):
        problem = segment_record_problem(record, files)
        if problem:
            return f"segment {position}: {problem}"
        if record["name"] in counts:
            return f"segment {record['name']!r} is listed twice"
        counts[record["name"]] = record["count"]
    if "hnsw" in manifest:
        problem = graph_record_problem(manifest["hnsw"]) or _file_record_problem(manifest["hnsw"])
        if problem:
            return problem if problem.startswith("'hnsw'") else f"the record of the HNSW graph {problem}"
    return _deleted_problem(manifest.get("deleted"), counts)


def _pq_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with a pq index's settings and codebook record (or with pq records in another index), or None."""
    if manifest["dtype"] != "pq":
        return "'pq' and 'codebook' belong to pq indexes only" if {"pq", "codebook"} & set(manifest) else None
    settings = manifest.get("pq")
    if not isinstance(settings, dict) or not _is_int(settings.get("subquantizers")) or settings["subquantizers"] < 1 \
            or manifest["dim"] % settings["subquantizers"] or not isinstance(settings.get("full_precision"), bool):
        return "'pq' must give 'subquantizers' (a divisor of 'dim') and 'full_precision' (true or false)"
    basis = settings.get("basis", 0)  # indexes written before documents' directions have none
    if not _is_int(basis) or not 0 <= basis < max(1, manifest["max_document_vectors"]):
        return "'pq' 'basis' must be an integer from 0 to 'max_document_vectors' - 1"
    if not isinstance(settings.get("nested_basis", False), bool):
        return "'pq' 'nested_basis' must be true or false"
    if "codebook" in manifest:
        record = manifest["codebook"]
        if not isinstance(record, dict) or record.get("file") != CODEBOOK:
            return f"'codebook' must name {CODEBOOK}"
        problem = _file_record_problem(record)
        if problem:
            return f"the record of the codebook {problem}"
    elif manifest["segments"]:
        return "a pq index with segments needs the 'codebook' record"
    return None


def segment_record_problem(record: Any, expected: set[str]) -> str | None:
    """What is wrong with one segment record (name, count, file sizes and checksums; ``expected``: its file
    names, :func:`manifest_segment_files`), or None."""
    if not isinstance(record, dict):
        return "the record is not an object"
    if not isinstance(record.get("name"), str) or not SEGMENT_NAME.fullmatch(record["name"]):
        return f"bad segment name {record.get('name')!r}"
    if not _is_int(record.get("count")) or record["count"] < 0:
        return f"'count' must be an integer >= 0, got {record.get('count')!r}"
    files = record.get("files")
    if not isinstance(files, dict) or set(files) != expected:
        return f"'files' must describe exactly {sorted(expected)}"
    for file_name, description in files.items():
        problem = _file_record_problem(description)
        if problem:
            return f"the record of {file_name} {problem}"
    return None


def _file_record_problem(description: Any) -> str | None:
    """What is wrong with one file's record (size, checksum, optional per-part checksums), or None."""
    if not isinstance(description, dict) or not _is_int(description.get("bytes")) or description["bytes"] < 0:
        return "needs 'bytes' (an integer >= 0)"
    if not any(isinstance(description.get(name), str) and pattern.fullmatch(description[name])
               for name, pattern in _CHECKSUMS.items()):
        return "needs 'xxh3_128' (32 hex digits) or 'sha256' (64 hex digits)"
    if "parts" in description:
        part_bytes, parts = description.get("part_bytes"), description["parts"]
        if (not _is_int(part_bytes) or part_bytes < 1 or not isinstance(parts, list)
                or len(parts) != -(-description["bytes"] // part_bytes)
                or not all(isinstance(part, str) and _XXH3.fullmatch(part) for part in parts)):
            return "has damaged 'parts' (one 32-hex-digit checksum per 'part_bytes' bytes)"
    return None


def _deleted_problem(deleted: Any, counts: dict[str, int]) -> str | None:
    if not isinstance(deleted, dict):
        return "'deleted' must be an object"
    for name, rows in deleted.items():
        if name not in counts:
            return f"'deleted' names segment {name!r}, which is not in 'segments'"
        if not isinstance(rows, list) or not all(_is_int(row) and 0 <= row < counts[name] for row in rows):
            return f"'deleted' rows of segment {name!r} must be row numbers below its count {counts[name]}"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
