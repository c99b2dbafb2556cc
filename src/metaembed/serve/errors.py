"""Error answers that say what is wrong without giving anything away.

Every 4xx body is ``{"detail": ...}``, at most :data:`MAX_DETAIL_CHARS` long, with no Python object reprs
(``<_io.BytesIO object at 0x7f...>``) and no absolute server paths (a path is cut to its last part); a
validation error lists where and what, never the input it got (a 5 MB body does not come back).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from metaembed.inputs import InvalidInputError, TooLargeError

MAX_DETAIL_CHARS = 400
MAX_VALIDATION_ERRORS = 10
MAX_WORD_CHARS = 60
"""A longer run without spaces (an echoed value) is cut to this many characters."""
_LONG_WORD = re.compile(rf"(\S{{{MAX_WORD_CHARS}}})\S+")
_OBJECT_REPR = re.compile(r"<[^<>]{0,200}? at 0x[0-9a-fA-F]+>")
_SYSTEM_ROOTS = ("home", "root", "tmp", "var", "srv", "opt", "usr", "etc", "mnt", "media", "data", "work", "run",
                 "private", "Users", "nix", "proc", "dev", "sys", "lib", "bin", "scratch")
_PATH_TAIL = r"""(?:/[^\s'"<>,;:()\[\]{}]*)*"""


def server_roots(extra: Iterable[Path | str | None] = ()) -> list[str]:
    """Folders whose absolute paths must not appear in answers: the given ones, cwd, home, temp, Python's."""
    roots = {str(Path(root)) for root in extra if root}
    roots |= {str(Path(root).resolve()) for root in extra if root}
    roots |= {os.getcwd(), str(Path.home()), tempfile.gettempdir(), sys.prefix, sys.base_prefix}
    return sorted((root for root in roots if len(root) > 1), key=len, reverse=True)


def path_pattern(roots: Iterable[str]) -> re.Pattern[str]:
    """A pattern matching absolute paths under the given roots or under the usual top-level system folders."""
    known = "|".join(re.escape(root) for root in roots)
    system = "|".join(_SYSTEM_ROOTS)
    return re.compile(rf"(?<![\w.~/-])(?:{known + '|' if known else ''}/(?:{system})(?=/|\b)){_PATH_TAIL}")


def scrub(text: Any, paths: re.Pattern[str]) -> str:
    """``text`` without object reprs and absolute paths (each kept as its last part), echoed values shortened,
    cut to a bounded length."""
    text = _OBJECT_REPR.sub("<object>", str(text))
    text = paths.sub(lambda match: Path(match.group(0)).name or "<path>", text)
    text = _LONG_WORD.sub(lambda match: match.group(1) + "…", text)
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"


def validation_errors(error: RequestValidationError, paths: re.Pattern[str]) -> list[dict[str, Any]]:
    """Where and what for each validation error; the input and its context are left out."""
    return [{"loc": [str(part)[:60] for part in item.get("loc", ())], "msg": scrub(item.get("msg", ""), paths),
             "type": str(item.get("type", ""))} for item in error.errors()[:MAX_VALIDATION_ERRORS]]


def install_error_handlers(app: FastAPI, roots: Iterable[Path | str | None] = ()) -> None:
    """Answer HTTP errors (any), validation errors (422), bad input (400) and too large input (413), scrubbed."""
    paths = path_pattern(server_roots(roots))

    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse(status_code=error.status_code, content={"detail": scrub(error.detail, paths)},
                            headers=getattr(error, "headers", None))

    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": validation_errors(error, paths)})

    async def too_large(_: Request, error: TooLargeError) -> JSONResponse:
        return JSONResponse(status_code=413, content={"detail": scrub(error, paths)})

    async def invalid_value(_: Request, error: ValueError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": scrub(error, paths)})

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(TooLargeError, too_large)
    app.add_exception_handler(InvalidInputError, invalid_value)
    app.add_exception_handler(ValueError, invalid_value)
