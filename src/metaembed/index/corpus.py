"""Corpus readers for ``metaembed index``: a JSONL of items, a BEIR corpus.jsonl, or a folder of images.

Each reader yields :class:`CorpusRecord` (id, the item to encode, the metadata to store) and reports bad
input with the file and line (or path) at fault.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaembed.inputs import IMAGE_EXTENSIONS


class CorpusError(ValueError):
    """A corpus file or folder that cannot be read; the message names the file and line."""


@dataclass
class CorpusRecord:
    id: str
    item: Any  # str, image path, or {"text": ..., "image": ...}
    metadata: Any


def read_corpus(path: str | Path) -> list[CorpusRecord]:
    """Read a folder of images (ids: relative paths) or a JSONL file (BEIR ``_id/title/text`` or ``id/text/image``)."""
    path = Path(path)
    if path.is_dir():
        records = read_image_folder(path)
    elif path.is_file():
        records = read_jsonl(path)
    else:
        raise CorpusError(f"corpus {path} does not exist")
    if not records:
        raise CorpusError(f"corpus {path} has no documents")
    return records


def read_image_folder(folder: Path) -> list[CorpusRecord]:
    """Every image file under ``folder`` (recursively, sorted), e.g. PDF pages rendered as images."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    return [CorpusRecord(p.relative_to(folder).as_posix(), str(p), {"path": p.relative_to(folder).as_posix()})
            for p in files]


def read_jsonl(path: Path) -> list[CorpusRecord]:
    """One JSON object per line: BEIR (``_id``, ``title``, ``text``) or items (``id``, ``text`` and/or ``image``,
    optional ``metadata``; image paths are relative to the file)."""
    records: list[CorpusRecord] = []
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise CorpusError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise CorpusError(f"{where}: expected a JSON object, got {type(row).__name__}")
            record = _beir_record(row, where) if "_id" in row else _item_record(row, where, path.parent)
            if record.id in first_line:
                raise CorpusError(f"{where}: id {record.id!r} repeats line {first_line[record.id]}")
            first_line[record.id] = number
            records.append(record)
    return records


def _check_id(value: Any, where: str, key: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise CorpusError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _beir_record(row: dict[str, Any], where: str) -> CorpusRecord:
    id_ = _check_id(row["_id"], where, "_id")
    title, text = row.get("title") or "", row.get("text") or ""
    if not isinstance(title, str) or not isinstance(text, str) or not (title or text):
        raise CorpusError(f"{where}: BEIR document {id_!r} needs a string 'title' or 'text'")
    metadata = {key: value for key, value in row.items() if key != "_id"}
    return CorpusRecord(id_, f"{title} {text}".strip(), metadata)


def _item_record(row: dict[str, Any], where: str, base: Path) -> CorpusRecord:
    if "id" not in row:
        raise CorpusError(f"{where}: missing 'id' (items need 'id' and 'text' and/or 'image'; BEIR uses '_id')")
    id_ = _check_id(row["id"], where, "id")
    text, image = row.get("text"), row.get("image")
    if text is None and image is None:
        raise CorpusError(f"{where}: item {id_!r} has neither 'text' nor 'image'")
    if text is not None and not isinstance(text, str):
        raise CorpusError(f"{where}: 'text' of item {id_!r} must be a string")
    if image is not None:
        if not isinstance(image, str):
            raise CorpusError(f"{where}: 'image' of item {id_!r} must be a path")
        image_path = (base / image) if not Path(image).is_absolute() else Path(image)
        if not image_path.is_file():
            raise CorpusError(f"{where}: image {str(image_path)!r} of item {id_!r} does not exist")
        image = str(image_path)
    item: Any = text if image is None else (image if text is None else {"text": text, "image": image})
    metadata = row["metadata"] if "metadata" in row else {k: v for k, v in row.items() if k != "id"}
    return CorpusRecord(id_, item, metadata)
