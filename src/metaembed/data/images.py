"""Turn SVG and PNG files into small, normalised RGB images, and find duplicates and near-duplicates by pixels.

Why: a CPU training run must read thousands of images fast, so every image is rendered once to a modest
size (``max_side`` pixels on its longer side, transparency composited on white by
:func:`metaembed.inputs.to_rgb`) and saved as PNG. SVG goes through librsvg's ``rsvg-convert`` (Debian
``librsvg2-bin``, unpacked into the cache when it is not installed): an established renderer, 30-40 ms per
clip-art file on this machine, rendering at the target size directly (crisper than downscaling a pre-rendered
PNG). PNG and other raster files are read with Pillow. A file that does not render (corrupt XML, a truncated
PNG, a renderer error or time-out) or renders blank is reported, not raised: the builder counts it and goes on.

Renders are cached by the source file's bytes and the size (``cache_dir``), so a rebuild with another seed
or split size does not render again. Duplicates: ``pixel_sha`` (exact, of the normalised pixels) and a content
thumbnail whose correlation finds near-duplicates (re-scaled, re-cropped or slightly edited copies).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from metaembed.inputs import to_rgb

RSVG_CONVERT = "rsvg-convert"
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
FLAT_STD = 12.0
"""A thumbnail whose values spread less than this (grey levels, standard deviation) is a colour field."""


class RasteriseError(RuntimeError):
    """A file that could not be turned into an image; the message says why. ``kind``: "failed" (unreadable,
    renderer error), "blank" (renders as one colour) or "timeout" (a busy machine: not remembered in the cache)."""

    def __init__(self, message: str, *, kind: str = "failed") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class RenderedImage:
    """A normalised image: its PNG bytes and the hashes used to deduplicate it."""

    png: bytes
    pixel_sha: str
    """sha256 of the RGB pixels and size: equal only for identical images."""
    thumb: bytes
    """:func:`content_thumbnail`: near-duplicates correlate highly."""
    size: tuple[int, int]


def require_rsvg_convert(cache_dir: str | Path | None = None) -> str:
    """The ``rsvg-convert`` program: the installed one, else the one of Debian's ``librsvg2-bin`` unpacked into
    ``cache_dir`` without root (1.5 MB; it needs only libraries a desktop system has, librsvg2-2 among them),
    else a clear error saying how to install it."""
    installed = shutil.which(RSVG_CONVERT)
    if installed is not None:
        return installed
    from metaembed.data.debian_packages import PackageFetchError, unpack_package

    try:
        program = unpack_package("librsvg2-bin", cache_dir, members=("usr/bin",)).root / "usr/bin" / RSVG_CONVERT
        subprocess.run([str(program), "--version"], check=True, capture_output=True, timeout=30)
        return str(program)
    except (PackageFetchError, OSError, subprocess.SubprocessError) as error:
        raise RasteriseError(
            f"rsvg-convert is not installed and could not be unpacked from Debian's librsvg2-bin ({error}): "
            "`sudo apt-get install librsvg2-bin` (it renders the SVG files)"
        ) from None


def _render_svg(path: Path, max_side: int, timeout: float, program: str) -> Image.Image:
    try:
        result = subprocess.run(
            [program, "--width", str(max_side), "--height", str(max_side), "--keep-aspect-ratio", "--format", "png", str(path)],
            capture_output=True, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired:
        raise RasteriseError(f"{path}: rsvg-convert took over {timeout:.0f} s", kind="timeout") from None
    if result.returncode != 0 or not result.stdout:
        message = result.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise RasteriseError(f"{path}: rsvg-convert failed: {message[-1] if message else 'no output'}")
    image = Image.open(io.BytesIO(result.stdout))
    image.load()
    return image


def _open_raster(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except Exception as error:  # PIL raises many types for corrupt files
        raise RasteriseError(f"{path}: not a readable image: {error}") from None
    return image


def normalise(image: Image.Image, max_side: int) -> Image.Image:
    """RGB on white, longer side at most ``max_side`` (aspect kept, never enlarged)."""
    image = to_rgb(image)
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


THUMB_SIDE = 16
"""Near-duplicates are compared as 16 x 16 RGB thumbnails of the drawing's content."""


def content_thumbnail(image: Image.Image) -> bytes:
    """The drawing's content (white margins cropped: clip art floats on white, and one drawing is often placed
    differently) as a 16 x 16 RGB thumbnail, 768 bytes: correlated (:func:`near_duplicate_pairs`), it finds a
    copy that was re-scaled, re-cropped or slightly edited, while colour keeps two flags of one layout apart."""
    box = Image.eval(image.convert("L"), lambda value: 255 - value).getbbox()
    content = image.crop(box) if box is not None else image
    return content.convert("RGB").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR).tobytes()


def describe(image: Image.Image, png: bytes | None = None) -> RenderedImage:
    """Hash a normalised image and encode it as PNG (unless ``png``, its encoding, is given); blank
    (single-colour) images raise RasteriseError."""
    pixels = np.asarray(image)
    if int(pixels.max()) - int(pixels.min()) < 8:
        raise RasteriseError("renders as a blank image", kind="blank")
    if png is None:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=6)
        png = buffer.getvalue()
    digest = hashlib.sha256(f"{image.size}".encode() + pixels.tobytes()).hexdigest()
    return RenderedImage(png, digest, content_thumbnail(image), image.size)


def rasterise(path: str | Path, max_side: int = 224, *, cache_dir: str | Path | None = None, timeout: float = 30.0,
              rsvg_convert: str = RSVG_CONVERT) -> RenderedImage:
    """One SVG or raster file -> :class:`RenderedImage` (cached by file bytes and size); RasteriseError if it fails.
    ``rsvg_convert``: the program that renders SVG (:func:`require_rsvg_convert` finds one)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise RasteriseError(f"{path}: cannot read: {error}") from None
    cached = None
    if cache_dir is not None:
        key = hashlib.sha1(data).hexdigest()
        cached = Path(cache_dir) / f"raster-{max_side}" / key[:2] / f"{key}.png"
        failed = cached.with_suffix(".failed")
        if failed.is_file():
            kind, _, message = failed.read_text(encoding="utf-8", errors="replace").partition("\n")
            if kind in ("failed", "blank"):
                raise RasteriseError(f"{path}: {message}", kind=kind)
            failed.unlink(missing_ok=True)  # not in this format: try the file again
        if cached.is_file():
            try:
                return describe(to_rgb(_open_raster(cached)), png=cached.read_bytes())
            except RasteriseError:
                cached.unlink(missing_ok=True)  # a damaged cache entry: render again
    try:
        rendered = _render(path, max_side, timeout, rsvg_convert)
    except RasteriseError as error:
        if cached is not None and error.kind != "timeout":  # remembered: a rebuild does not try a broken file again
            message = str(error).removeprefix(f"{path}: ")  # another file may have the same bytes
            _write_atomically(cached.with_suffix(".failed"), f"{error.kind}\n{message}".encode("utf-8"))
        raise
    if cached is not None:
        _write_atomically(cached, rendered.png)
    return rendered


def _render(path: Path, max_side: int, timeout: float, rsvg_convert: str) -> RenderedImage:
    if path.suffix.lower() == ".svg":
        image = _render_svg(path, max_side, timeout, rsvg_convert)
    elif path.suffix.lower() in RASTER_SUFFIXES:
        image = _open_raster(path)
    else:
        raise RasteriseError(f"{path}: not an SVG or a raster image file")
    try:
        return describe(normalise(image, max_side))
    except RasteriseError as error:
        raise RasteriseError(f"{path}: {error}", kind=error.kind) from None


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}-{threading.get_ident()}")  # two files may share bytes
    partial.write_bytes(data)
    partial.replace(target)


def rasterise_many(
    paths: Sequence[Path], max_side: int, *, cache_dir: str | Path | None = None, workers: int = 2,
    progress: Callable[[int], None] | None = None, rsvg_convert: str = RSVG_CONVERT,
) -> list[RenderedImage | RasteriseError]:
    """Rasterise files in parallel threads (rsvg-convert runs as its own process); one result or error per path."""
    def one(path: Path) -> RenderedImage | RasteriseError:
        try:
            return rasterise(path, max_side, cache_dir=cache_dir, rsvg_convert=rsvg_convert)
        except RasteriseError as error:
            return error
        finally:
            if progress is not None:
                progress(1)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, paths))


def near_duplicate_pairs(thumbs: Sequence[bytes], min_correlation: float) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose content thumbnails correlate at least ``min_correlation`` (Pearson, over pixels
    and channels: contrast-normalised, so faint line drawings are compared by their lines, not by the white
    around them); all pairs, one matrix product per block. Nearly flat thumbnails (colour fields, whose noise
    the normalisation would blow up) pair with nothing."""
    if len(thumbs) < 2:
        return []
    values = np.stack([np.frombuffer(thumb, dtype=np.uint8) for thumb in thumbs]).astype(np.float32)
    values -= values.mean(axis=1, keepdims=True)
    spread = np.linalg.norm(values, axis=1, keepdims=True)
    flat = spread[:, 0] < FLAT_STD * np.sqrt(values.shape[1])  # std under FLAT_STD grey levels: a colour field
    values /= np.maximum(spread, 1e-6)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(values), 1024):
        similar = (values[start:start + 1024] @ values.T) >= min_correlation
        similar &= ~flat[start:start + 1024, None] & ~flat[None, :]
        rows, cols = np.nonzero(similar)
        pairs.extend((int(r) + start, int(c)) for r, c in zip(rows, cols) if int(r) + start < int(c))
    return pairs
