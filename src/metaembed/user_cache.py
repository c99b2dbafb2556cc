"""The one folder where metaembed keeps what it builds for the user (converted weights, composed backbones,
Debian packages and renders, encodings), and the one way to write a folder there so no reader ever sees it
half-written. Light on purpose: no torch, so every layer and command can use it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_folder(*parts: str) -> Path:
    """``$METAEMBED_CACHE`` (or ``~/.cache/metaembed``), joined with ``parts``."""
    return Path(os.environ.get("METAEMBED_CACHE") or Path.home() / ".cache" / "metaembed").joinpath(*parts)


def write_folder_atomically(out: Path, write: Callable[[Path], None], *, replace: bool = False) -> Path:
    """Run ``write(staging)`` into a fresh staging folder beside ``out``, then rename it to ``out``.

    Readers never see a half-written folder. If ``out`` exists, it is kept (another process finished the same
    work first) unless ``replace``, which swaps the new folder in.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the finished folder from other users
    try:
        write(staging)
        for written in staging.rglob("*"):  # some writers create 0600 files; this is a cache folder like any other
            written.chmod(0o755 if written.is_dir() else 0o644)
        if replace and out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                staging.rename(out)
            except OSError:
                if not out.is_dir():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
