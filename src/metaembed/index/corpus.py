"""Corpus readers for ``metaembed index``: a JSONL of items, a BEIR corpus.jsonl, or a folder of images.

Each reader yields :class:`CorpusRecord` (id, the :class:`~metaembed.data.item.Item` to encode, the metadata to
store; the JSONL rows are parsed by :mod:`metaembed.data.rows`, as ``metaembed eval`` parses BEIR) and reports bad
input with the file and line (or path) at fault. Image paths -- named in a JSONL file, or symlinks in an image
folder -- may not lead outside the corpus's folder unless ``allow_outside_paths``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaembed.data.item import Item
from metaembed.data.rows import parse_beir_row, parse_item_row
from metaembed.inputs import IMAGE_EXTENSIONS, PathOutsideFolderError, resolve_data_path
from metaembed.jsonl import NotUtf8Error, numbered_lines, parse_json_object


class CorpusError(ValueError):
    """A corpus file or folder that cannot be read; the message names the file and line."""


@dataclass
class CorpusRecord:
    """A document of the index: its id, the :class:`~metaembed.data.item.Item` to encode and the metadata to store."""

    id: str
    item: Item
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
        records.append(CorpusRecord(relative, Item(image=file.resolve()), {"path": relative}))
    return records


def read_jsonl(path: Path, *, allow_outside_paths: bool = False) -> list[CorpusRecord]:
    """One JSON object per line: BEIR (``_id``, ``title``, ``text``, ``image``) or items (``id``, ``text`` and/or
    ``image``, optional ``metadata``), read by :mod:`metaembed.data.rows`; image paths are relative to the file and
    must exist."""
    records: list[CorpusRecord] = []
    first_line: dict[str, int] = {}
    for number, line in _lines(path):
        where = f"{path}, line {number}"
        try:
            row = parse_json_object(line)
            parse = parse_beir_row if "_id" in row else parse_item_row
            id_, item, metadata = parse(row, base_dir=path.parent, where=where, allow_outside=allow_outside_paths,
                                        check="exists")
        except PathOutsideFolderError as error:
            raise CorpusError(str(error)) from None
        except ValueError as error:
            raise CorpusError(f"{where}: {error}") from None
        if id_ in first_line:
            raise CorpusError(f"{where}: id {id_!r} repeats line {first_line[id_]}")
        first_line[id_] = number
        records.append(CorpusRecord(id_, item, metadata))
    return records


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """:func:`numbered_lines`, with bytes that are not UTF-8 reported as a CorpusError naming the line."""
    try:
        yield from numbered_lines(path)
    except NotUtf8Error as error:
        raise CorpusError(str(error)) from None
