"""Which model built an index: recorded as an absolute folder (or a hub id as given), so the index finds its model
from any working folder; an older index's relative path is looked for where it can have meant."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

MODEL_PROPERTY = "model"
"""The index property that names the model its vectors came from."""


def local_or_as_given(name: str | Path) -> str:
    """A path that exists here as its absolute form; anything else (a hub id) unchanged."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else str(name)


def recorded_model(properties: Mapping[str, Any], index_dir: str | Path) -> str | None:
    """The model an index records, as a path or hub id usable from here (None when it records none).

    An absolute path is returned as recorded. A relative one (older indexes kept the path as typed, relative to
    the folder the index was built from) is found under the index folder, the working folder or a folder above
    the index; when none holds it, it is returned as recorded (it is then a hub id, or a model moved away)."""
    recorded = properties.get(MODEL_PROPERTY)
    if not recorded:
        return None
    path = Path(str(recorded)).expanduser()
    if path.is_absolute():
        return str(path)
    index_dir = Path(index_dir).resolve()
    for base in (index_dir, Path.cwd(), *index_dir.parents):
        if (base / path).is_dir():
            return str((base / path).resolve())
    return str(recorded)
