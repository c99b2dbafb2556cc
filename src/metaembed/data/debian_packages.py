"""Fetch and unpack a Debian package's files without installing it (no root): ``apt-get download`` + ``dpkg-deb -x``.

Why: the image sets read the files of ``openclipart-svg`` and the icon themes; installing them would need
root and touch the system. A package is unpacked once into ``cache_dir/unpacked/NAME`` (written to a
temporary folder and renamed when complete, so an interrupted unpack is never taken for a finished one) and
reused afterwards. An already installed copy (``/usr/share/...``) is used when the caller asks for it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from metaembed.user_cache import cache_folder


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
    return cache_folder("debian-packages")


def _reusable(target: Path, members: tuple[str, ...] | None) -> bool:
    """Whether a finished unpack in ``target`` holds ``members`` (all of the package when None)."""
    try:
        text = (target / ".complete").read_text(encoding="utf-8")
    except OSError:
        return False
    try:
        done = json.loads(text)
    except ValueError:
        return True  # the first format (the .deb's name only) was always a whole-package unpack
    return done.get("members") is None or (members is not None and set(members) <= set(done["members"]))


def unpack_package(name: str, cache_dir: str | Path | None = None, members: tuple[str, ...] | None = None) -> UnpackedPackage:
    """Download ``name`` with apt-get (into ``cache_dir/debs``) and unpack it into ``cache_dir/unpacked/NAME``.

    ``members``: only these folders of the package (``usr/share/icons/Papirus/64x64/apps``: 22 MB instead of
    the theme's 270 MB, 3x faster), else all of it. Reuses a finished unpack that holds them; a half-finished
    one (killed mid-way) is removed and done again."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / "unpacked" / name
    if _reusable(target, members):
        return UnpackedPackage(name, target, 0.0, 0.0, reused=True)
    for tool in ("apt-get", "dpkg-deb", "tar"):
        if shutil.which(tool) is None:
            raise PackageFetchError(f"{tool} is not available: the image sets are built from Debian packages (Debian/Ubuntu only)")
    begin = time.perf_counter()
    deb = _download(name, cache / "debs")
    download_s = time.perf_counter() - begin
    begin = time.perf_counter()
    partial = target.with_name(f".{name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        _extract(deb, partial, members)
    except PackageFetchError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    (partial / ".complete").write_text(json.dumps({"deb": deb.name, "members": list(members) if members else None}) + "\n",
                                       encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return UnpackedPackage(name, target, round(download_s, 2), round(time.perf_counter() - begin, 2), reused=False)


def _download(name: str, debs: Path) -> Path:
    """The package's .deb in ``debs``, downloaded with ``apt-get download`` unless already there."""
    debs.mkdir(parents=True, exist_ok=True)
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
    return found[-1]


def _extract(deb: Path, folder: Path, members: tuple[str, ...] | None) -> None:
    """``dpkg-deb -x``, or its file tree piped through ``tar`` keeping only ``members``."""
    if members is None:
        result = subprocess.run(["dpkg-deb", "-x", str(deb), str(folder)], capture_output=True, text=True)
        if result.returncode != 0:
            raise PackageFetchError(f"dpkg-deb -x {deb} failed: {result.stderr.strip()}")
        return
    patterns = [f"./{member.strip('/')}/*" for member in members]
    tree = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    result = subprocess.run(["tar", "-x", "-C", str(folder), "--wildcards", *patterns], stdin=tree.stdout,
                            capture_output=True, text=True)
    tree.stdout.close()  # type: ignore[union-attr]
    tree.wait()
    if result.returncode != 0:
        raise PackageFetchError(f"unpacking {', '.join(members)} from {deb} failed: {result.stderr.strip()}")
