"""The JSONL row formats with an id, each read by one function used by every layer that reads it.

- BEIR (``corpus.jsonl`` / ``queries.jsonl``): ``{"_id", "title"?, "text"?, "image"?}``; the item's text is the
  title and the text joined by a space. Read by ``metaembed eval`` (:func:`metaembed.data.beir.load_beir`) and
  ``metaembed index`` (:mod:`metaembed.index.corpus`).
- Items: ``{"id", "text"?, "image"?, "metadata"?}``, read by ``metaembed index``.

Image paths are relative to ``base_dir`` (the file's folder). The functions raise ValueError saying what is wrong
(the caller adds the file and line and decides whether the row stops the read or is skipped);
:class:`EmptyItemError` marks a row that is well formed but has neither text nor image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metaembed.data.item import ImageCheck, Item, parse_item, resolve_image


class EmptyItemError(ValueError):
    """A row with neither text nor image: evaluation skips and counts it, the index refuses it."""


def check_id(value: Any, key: str) -> str:
    """An id as a non-empty string (integers are accepted and written as strings); ValueError naming ``key``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} must be a non-empty string, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{key!r} {value!r} is not valid Unicode (a lone surrogate escape?)") from None
    return value


def parse_beir_row(
    row: dict[str, Any], *, base_dir: Path, where: str, use_title: bool = True, allow_outside: bool = False,
    check: ImageCheck = "none",
) -> tuple[str, Item, dict[str, Any]]:
    """(id, item, metadata: the row without ``_id``) of a BEIR row; ``use_title`` puts the title before the text.

    ``where`` (file and line) starts a path-escape message; an image failing ``check`` is a ValueError."""
    if "_id" not in row:
        raise ValueError("missing '_id'")
    item_id = check_id(row["_id"], "_id")
    title, text = row.get("title") or "", row.get("text") or ""
    kind = "document" if use_title else "query"
    if not isinstance(title, str) or not isinstance(text, str):
        raise ValueError(f"BEIR {kind} {item_id!r}: 'title' and 'text' must be strings")
    parts = [title.strip(), text.strip()] if use_title else [text.strip()]
    joined = " ".join(part for part in parts if part) or None
    image = row.get("image") or None
    path = resolve_image(image, base_dir, where=where, owner=f"item {item_id!r}", allow_outside=allow_outside,
                         check=check) if image is not None else None
    if joined is None and path is None:
        raise EmptyItemError(f"BEIR {kind} {item_id!r} needs a non-empty string 'title' or 'text', or an 'image'")
    metadata = {key: value for key, value in row.items() if key != "_id"}
    return item_id, Item(text=joined, image=path), metadata


def parse_item_row(
    row: dict[str, Any], *, base_dir: Path, where: str, allow_outside: bool = False, check: ImageCheck = "exists",
) -> tuple[str, Item, Any]:
    """(id, item, metadata) of an item row ``{"id", "text"?, "image"?, "metadata"?}``; without ``metadata`` the
    row's other fields are the metadata. ``where`` (file and line) starts a path-escape message."""
    if "id" not in row:
        raise ValueError("missing 'id' (items need 'id' and 'text' and/or 'image'; BEIR uses '_id')")
    item_id = check_id(row["id"], "id")
    what = f"item {item_id!r}"
    item = parse_item(row.get("text"), row.get("image"), base_dir=base_dir, what=what, where=where, owner=what,
                      allow_outside=allow_outside, check=check)
    metadata = row["metadata"] if "metadata" in row else {k: v for k, v in row.items() if k != "id"}
    return item_id, item, metadata
