"""Durable file primitives: fsync'd writes, atomic replace, checksums and a single-writer lock.

Checksums: files written now record xxh3-128 (``"xxh3_128"``; ~10 GB/s here against sha256's ~0.9 GB/s), which
detects damage (bit flips, torn or overwritten writes) as well as sha256 does; it is not a defence against someone
forging data on purpose, which a local index does not try to be. Large files also record one digest per part
(``"parts"`` of ``"part_bytes"`` each), so a reader checks only the parts it reads. Records of older indexes
(``"sha256"``, whole files) are still checked as written."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import xxhash

from metaembed.index.errors import CorruptIndexError, IndexLockedError

FAST_HASH = "xxh3_128"
HASHES = ("xxh3_128", "sha256")
"""Checksum algorithms a file record may use, preferred first."""

_CHUNK = 8 << 20
_TMP_MARK = ".tmp-"


def fsync_directory(folder: Path) -> None:
    """Make a rename or file creation in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_durably(path: Path, data: bytes | memoryview) -> None:
    """Write a new file and fsync it before returning."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_json_atomically(path: Path, value: Any) -> None:
    """Replace ``path`` with ``value`` as JSON so a crash leaves either the old or the new file, never a mix.

    The new content goes to ``.NAME.tmp-PID`` first; a writer removes those a killed process left
    (:func:`remove_stale_temp_files`)."""
    data = json.dumps(value, ensure_ascii=False, indent=1).encode()  # fails (on a lone surrogate) before any file
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
    write_bytes_durably(tmp, data)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the ``.NAME.tmp-PID`` files in ``folder`` whose process is gone (killed mid-write); returns them.

    Call it holding the writer lock: only the writer writes such files, and a live PID's file is left alone."""
    removed = []
    for candidate in folder.glob(f".*{_TMP_MARK}*"):
        pid = candidate.name.rpartition(_TMP_MARK)[2]
        if candidate.is_file() and pid.isdigit() and not pid_alive(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _new_digest(algorithm: str) -> Any:
    return xxhash.xxh3_128() if algorithm == FAST_HASH else hashlib.sha256()


def file_checksum(path: Path, algorithm: str = FAST_HASH) -> str:
    """Hex digest of a file's bytes (``"xxh3_128"`` or ``"sha256"``), streamed."""
    digest = _new_digest(algorithm)
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_checksum(data: Any) -> str:
    """xxh3-128 hex digest of a buffer (bytes, memoryview, or a contiguous numpy array)."""
    return xxhash.xxh3_128(data).hexdigest()


def describe_file(path: Path, part_bytes: int | None = None) -> dict[str, Any]:
    """What the manifest records about a data file: its size and checksum, and with ``part_bytes`` one checksum per
    consecutive part of that many bytes (the vectors of one rank), so a reader can check just what it reads."""
    record: dict[str, Any] = {"bytes": path.stat().st_size, FAST_HASH: file_checksum(path)}
    if part_bytes:
        with open(path, "rb", buffering=0) as handle:
            record["part_bytes"] = part_bytes
            record["parts"] = [bytes_checksum(handle.read(part_bytes)) for _ in range(-(-record["bytes"] // part_bytes))]
    return record


def record_algorithm(expected: dict[str, Any]) -> str:
    """The checksum algorithm a file record uses."""
    return next(name for name in HASHES if name in expected)


def verify_file(path: Path, expected: dict[str, Any], full: bool = True) -> None:
    """Check a file against its manifest record (size; with ``full`` its checksum too); raise CorruptIndexError
    naming the file when it differs."""
    if not path.is_file():
        raise CorruptIndexError(f"index file {path} is missing")
    size = path.stat().st_size
    if size != expected["bytes"]:
        raise CorruptIndexError(
            f"index file {path} is {size} bytes, the manifest says {expected['bytes']} (truncated or overwritten)"
        )
    if full:
        algorithm = record_algorithm(expected)
        if file_checksum(path, algorithm) != expected[algorithm]:
            raise CorruptIndexError(f"index file {path} fails its {algorithm} checksum (the data on disk is damaged)")


def verify_part(path: Path, expected: dict[str, Any], part: int, data: Any) -> None:
    """Check part ``part`` of a file, already read as ``data``, against its record's per-part checksum."""
    if bytes_checksum(data) != expected["parts"][part]:
        raise CorruptIndexError(f"index file {path} fails its {FAST_HASH} checksum in part {part} "
                                f"(bytes {part * expected['part_bytes']}-{(part + 1) * expected['part_bytes'] - 1}): "
                                "the data on disk is damaged")


class WriterLock:
    """An exclusive advisory lock (flock) on ``write.lock``: one writer per index, readers never block."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "write.lock"
        self._handle = None

    def acquire(self) -> None:
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise IndexLockedError(
                f"index {self.path.parent} is open for writing by another process (pid {holder}); "
                "open it with mode='r' to search, or wait for the writer to close"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def take_writer_lock(folder: Path) -> WriterLock:
    """The writer lock of the index in ``folder`` (IndexLockedError if held), with killed writers' temp files removed."""
    lock = WriterLock(folder)
    lock.acquire()
    remove_stale_temp_files(folder)
    return lock
