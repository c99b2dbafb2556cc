"""How the command line reports a user's mistake: one line ``error: ...`` on stderr and exit status 2, never a
traceback (``metaembed --debug ...`` re-raises, to see where it came from).

Commands raise :class:`CommandError` naming the flag at fault, or let the library's own errors through:
an index that is missing, corrupt or locked, a bad input item, a file that cannot be read. The command group
:class:`ErrorReportingGroup` turns all of those into the one line; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperGroup

from metaembed.index.errors import IndexError_

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
"""What a Hugging Face hub id looks like (``name`` or ``owner/name``); anything else is a local path."""

EXIT_USER_ERROR = 2
"""The exit status of a usage error (click's own, and ``eval``/``train``'s ``error:`` lines)."""


class CommandError(Exception):
    """A mistake in a command's arguments or files; the message names the flag at fault."""

    def __init__(self, message: str, flag: str | None = None) -> None:
        self.flag = flag
        self.message = message
        super().__init__(f"{flag}: {message}" if flag else message)


USER_ERRORS: tuple[type[BaseException], ...] = (CommandError, IndexError_, ValueError, OSError)
"""What a user can cause: our messages, the index's errors, validation (``ValueError``, which includes bad input
items and corpus or data-format errors) and files that are missing, unreadable or not what they should be."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (multi-line library messages are joined), or its type when it has none."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines) or type(error).__name__


class ErrorReportingGroup(TyperGroup):
    """The ``metaembed`` command group: every subcommand's user errors become ``error: ...`` with exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # the reader left (`metaembed eval --help | head`): click's own quiet exit
            raise
        except USER_ERRORS as error:
            if ctx.params.get("debug"):
                raise
            typer.echo(f"error: {one_line(error)}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None


def open_index(path: Path, mode: str = "r", threads: int | None = None) -> Any:
    """``MultiVectorIndex.open`` whose missing, corrupt or locked index is a :class:`CommandError` naming ``--index``
    (a bad ``threads`` names ``--threads``)."""
    from metaembed.index import MultiVectorIndex

    if threads is not None and threads < 1:
        raise CommandError(f"--threads must be at least 1, got {threads}", "--threads")
    try:
        return MultiVectorIndex.open(path, mode=mode, threads=threads)
    except (IndexError_, OSError, ValueError) as error:
        raise CommandError(one_line(error), "--index") from None


def index_model(model: str | None, opened: Any, index_path: Path) -> tuple[str, bool]:
    """The model to use with an opened index: ``--model`` when given, else the one the index records (the model
    that built it); and whether it is the recorded one. An index that records none needs ``--model``."""
    if model:
        return model, False
    from metaembed.index.provenance import recorded_model

    recorded = recorded_model(getattr(opened, "properties", {}), index_path)
    if not recorded:
        raise CommandError("the index records no model: pass --model", "--model")
    return recorded, True


def load_model(model_path: str) -> Any:
    """``MetaEmbed.from_pretrained`` whose failure (no such folder, not a model) is a :class:`CommandError` naming
    ``--model``."""
    from metaembed.model import MetaEmbed

    if not Path(model_path).exists() and not _HUB_ID.fullmatch(model_path):
        raise CommandError(f"no such model folder: {model_path}", "--model")
    try:
        return MetaEmbed.from_pretrained(model_path)
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot load {model_path!r}: {one_line(error)}", "--model") from None
