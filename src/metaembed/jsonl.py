"""Reading JSONL data files: one JSON object per line, numbered so that every error can name its line."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any


_UNDECODABLE = re.compile("[\udc80-\udcff]")
"""What ``errors="surrogateescape"`` turns each byte that is not UTF-8 into (valid UTF-8 never decodes to these)."""


class NotUtf8Error(ValueError):
    """A line of a text file that is not valid UTF-8; the message names the file, the line and the column."""


def numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, text) for every non-blank line of a UTF-8 text file.

    Raises :class:`NotUtf8Error` (a ValueError) naming the file, line and column of the first byte that is not
    UTF-8."""
    with Path(path).open(encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            bad = _UNDECODABLE.search(line)
            if bad:
                byte = ord(bad.group()) - 0xDC00
                raise NotUtf8Error(f"{path}, line {number}: not valid UTF-8 (byte 0x{byte:02x} at column "
                                   f"{bad.start() + 1}); save the file as UTF-8")
            if line.strip():
                yield number, line


def parse_json_object(line: str) -> dict[str, Any]:
    """One JSONL line as a dict; ValueError saying what is wrong (bad JSON, or JSON that is not an object)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    return row
