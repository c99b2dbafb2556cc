"""Errors raised by the index: each message names the file, id or budget at fault."""

from __future__ import annotations


class IndexError_(Exception):
    """Base class for index errors (named with a trailing underscore to keep the builtin IndexError)."""


class CorruptIndexError(IndexError_):
    """A file of the index is missing, truncated or fails its checksum; the message names the file."""


class IndexLockedError(IndexError_):
    """Another writer holds the index's write lock."""


class IndexSettingsError(IndexError_, ValueError):
    """A build's settings that the index or the model cannot meet; ``.setting`` names the one at fault
    (``index``: the folder holds an index built otherwise, ``document_budget``, ``dtype``)."""

    def __init__(self, message: str, setting: str) -> None:
        self.setting = setting
        super().__init__(message)


class MissingIdsError(KeyError):
    """``delete`` was given ids that are not in the index; nothing was deleted. ``.ids`` lists them."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = list(ids)
        preview = ", ".join(repr(i) for i in self.ids[:10]) + (" ..." if len(self.ids) > 10 else "")
        super().__init__(f"{len(self.ids)} id(s) not in the index, nothing deleted: {preview}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]
