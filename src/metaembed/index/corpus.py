"""Corpus readers for ``metaembed index``: a JSONL of items, a BEIR corpus.jsonl, or a folder of images.

Each reader yields :class:`CorpusRecord` (id, the item to encode, the metadata to store) and reports bad
input with the file and line (or path) at fault. Image paths -- named in a JSONL file, or symlinks in an image
folder -- may not lead outside the corpus's folder unless ``allow_outside_paths``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaembed.inputs import IMAGE_EXTENSIONS, PathOutsideFolderError, resolve_data_path
from metaembed.jsonl import NotUtf8Error, numbered_lines, parse_json_object


class CorpusError(ValueError):
    """A corpus file or folder that cannot be read; the message names the file and line."""


@dataclass
class CorpusRecord:
    id: str
    item: Any  # str, image path, or {"text": ..., "image": ...}
    metadata: Any


def read_corpus(path: str | Path, *, allow_outside_paths: bool = False) -> list[CorpusRecord]:
    """Read a folder of images (ids: relative paths) or a JSONL file (BEIR ``_id/title/text`` or ``id/text/image``).

    Image paths in a JSONL file are relative to it; those leading outside its folder (and symlinks in an image
    folder leading outside it) are refused unless ``allow_outside_paths``."""
    path = Path(path)
    if path.is_dir():
        records = read_image_folder(path, allow_outside_paths=allow_outside_paths)
    elif path.is_file():
        records = read_jsonl(path, allow_outside_paths=allow_outside_paths)
    else:
        raise CorpusError(f"corpus {path} does not exist")
    if not records:
        raise CorpusError(f"corpus {path} has no documents")
    return records


def read_image_folder(folder: Path, *, allow_outside_paths: bool = False) -> list[CorpusRecord]:
    """Every image file under ``folder`` (recursively, sorted), e.g. PDF pages rendered as images.

    A symlink that leads outside ``folder`` (``evil.png -> /etc/passwd``) is refused, as an image path leading
    outside a JSONL file's folder is, unless ``allow_outside_paths``."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    records = []
    for file in files:
        relative = file.relative_to(folder).as_posix()
        try:
            resolve_data_path(relative, folder, f"{file}", allow_outside=allow_outside_paths)
        except PathOutsideFolderError as error:
            raise CorpusError(f"{error} (it is a symlink)") from None
        records.append(CorpusRecord(relative, str(file), {"path": relative}))
    return records


def read_jsonl(path: Path, *, allow_outside_paths: bool = False) -> list[CorpusRecord]:
    """One JSON object per line: BEIR (``_id``, ``title``, ``text``) or items (``id``, ``text`` and/or ``image``,
    optional ``metadata``; image paths are relative to the file)."""
    records: list[CorpusRecord] = []
    first_line: dict[str, int] = {}
    for number, line in _lines(path):
        where = f"{path}, line {number}"
        try:
            row = parse_json_object(line)
        except ValueError as error:
            raise CorpusError(f"{where}: {error}") from None
        if "_id" in row:
            record = _beir_record(row, where, path.parent, allow_outside_paths)
        else:
            record = _item_record(row, where, path.parent, allow_outside_paths)
        if record.id in first_line:
            raise CorpusError(f"{where}: id {record.id!r} repeats line {first_line[record.id]}")
        first_line[record.id] = number
        records.append(record)
    return records


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """:func:`numbered_lines`, with bytes that are not UTF-8 reported as a CorpusError naming the line."""
    try:
        yield from numbered_lines(path)
    except NotUtf8Error as error:
        raise CorpusError(str(error)) from None


def _check_id(value: Any, where: str, key: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise CorpusError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CorpusError(f"{where}: {key!r} {value!r} is not valid Unicode (a lone surrogate escape?)") from None
    return value


def _beir_record(row: dict[str, Any], where: str, base: Path, allow_outside: bool) -> CorpusRecord:
    id_ = _check_id(row["_id"], where, "_id")
    title, text = row.get("title") or "", row.get("text") or ""
    image = row.get("image") or None
    if not isinstance(title, str) or not isinstance(text, str) or not (title.strip() or text.strip() or image):
        raise CorpusError(f"{where}: BEIR document {id_!r} needs a non-empty string 'title' or 'text', or an 'image'")
    metadata = {key: value for key, value in row.items() if key != "_id"}
    text = f"{title} {text}".strip() or None
    image = _image_path(image, where, id_, base, allow_outside) if image is not None else None
    item: Any = text if image is None else (image if text is None else {"text": text, "image": image})
    return CorpusRecord(id_, item, metadata)


def _image_path(value: Any, where: str, id_: str, base: Path, allow_outside: bool) -> str:
    if not isinstance(value, str):
        raise CorpusError(f"{where}: 'image' of item {id_!r} must be a path")
    try:
        path = resolve_data_path(value, base, where, allow_outside=allow_outside)
    except PathOutsideFolderError as error:
        raise CorpusError(str(error)) from None
    if not path.is_file():
        raise CorpusError(f"{where}: image {str(path)!r} of item {id_!r} does not exist")
    return str(path)


def _item_record(row: dict[str, Any], where: str, base: Path, allow_outside: bool) -> CorpusRecord:
    if "id" not in row:
        raise CorpusError(f"{where}: missing 'id' (items need 'id' and 'text' and/or 'image'; BEIR uses '_id')")
    id_ = _check_id(row["id"], where, "id")
    text, image = row.get("text"), row.get("image")
    if text is None and image is None:
        raise CorpusError(f"{where}: item {id_!r} has neither 'text' nor 'image'")
    if text is not None and not isinstance(text, str):
        raise CorpusError(f"{where}: 'text' of item {id_!r} must be a string")
    if text is not None and not text.strip():
        raise CorpusError(f"{where}: 'text' of item {id_!r} is empty (leave 'text' out for an image alone)")
    if image is not None:
        image = _image_path(image, where, id_, base, allow_outside)
    item: Any = text if image is None else (image if text is None else {"text": text, "image": image})
    metadata = row["metadata"] if "metadata" in row else {k: v for k, v in row.items() if k != "id"}
    return CorpusRecord(id_, item, metadata)
