"""Fetch and unpack a Debian package's files without installing it (no root): ``apt-get download`` + ``dpkg-deb -x``.

Why: the image sets read the files of ``openclipart-svg`` and the icon themes; installing them would need
root and touch the system. A package is unpacked once into ``cache_dir/unpacked/NAME`` (written to a
temporary folder and renamed when complete, so an interrupted unpack is never taken for a finished one) and
reused afterwards. An already installed copy (``/usr/share/...``) is used when the caller asks for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


class PackageFetchError(RuntimeError):
    """A package could not be downloaded or unpacked; the message says what to do."""


@dataclass(frozen=True)
class UnpackedPackage:
    """A package's files under ``root`` (the ``/`` of the package), and what getting them cost."""

    name: str
    root: Path
    download_s: float
    unpack_s: float
    reused: bool


def default_cache_dir() -> Path:
    """``$METAEMBED_CACHE/debian-packages`` or ``~/.cache/metaembed/debian-packages``."""
    return Path(os.environ.get("METAEMBED_CACHE") or Path.home() / ".cache" / "metaembed") / "debian-packages"


def unpack_package(name: str, cache_dir: str | Path | None = None) -> UnpackedPackage:
    """Download ``name`` with apt-get (into ``cache_dir/debs``) and unpack it into ``cache_dir/unpacked/NAME``.

    Reuses a finished unpack; a half-finished one (killed mid-way) is removed and done again."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / "unpacked" / name
    if (target / ".complete").is_file():
        return UnpackedPackage(name, target, 0.0, 0.0, reused=True)
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise PackageFetchError(f"{tool} is not available: the image sets are built from Debian packages (Debian/Ubuntu only)")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        print(f"downloading Debian package {name} (apt-get download)", file=sys.stderr)
        result = subprocess.run(["apt-get", "download", name], cwd=debs, capture_output=True, text=True)
        found = sorted(debs.glob(f"{name}_*.deb"))
        if result.returncode != 0 or not found:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise PackageFetchError(
                f"apt-get download {name} failed ({detail[-1] if detail else 'no output'}); "
                "run `sudo apt-get update` first if the package lists are missing"
            )
    download_s = time.perf_counter() - begin
    begin = time.perf_counter()
    partial = target.with_name(f".{name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    result = subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(partial)], capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise PackageFetchError(f"dpkg-deb -x {found[-1]} failed: {result.stderr.strip()}")
    (partial / ".complete").write_text(found[-1].name + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return UnpackedPackage(name, target, round(download_s, 2), round(time.perf_counter() - begin, 2), reused=False)
