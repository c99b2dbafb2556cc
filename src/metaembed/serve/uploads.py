"""Uploaded images and form metadata, checked cheapest first and decoded off the event loop.

An upload passes, in order: the model takes images at all; the bytes fit ``max_upload_bytes``; the header
is an image's; its declared size fits the pixel budget. Only then is it decoded, in a small pool of worker
threads (so ``/health`` and other requests keep being served), with a bounded number of uploads waiting.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import HTTPException, UploadFile
from PIL import Image

from metaembed.inputs import (DEFAULT_MAX_IMAGE_SIDE, InvalidInputError, TooLargeError, check_pixel_budget, load_image,
                              open_lazily)


class ImageDecoder:
    """Decodes images in ``workers`` threads; more than ``max_waiting`` uploads queued get a 503."""

    def __init__(self, workers: int = 2, max_waiting: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="metaembed-decode")
        self._max_pending = max(1, workers) + max(0, max_waiting)
        self._pending = 0
        self._count_lock = threading.Lock()

    async def decode(self, image: Image.Image, name: str, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> Image.Image:
        """``load_image`` of an opened (header-checked) image, in the pool; the event loop only waits."""
        with self._count_lock:
            if self._pending >= self._max_pending:
                raise HTTPException(status_code=503, detail="too many images are being decoded; try again shortly")
            self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, lambda: load_image(image, max_side=max_side, max_pixels=None,
                                                                             name=name))
        finally:
            with self._count_lock:
                self._pending -= 1

    def close(self) -> None:
        """Stop the worker threads (after the queued decodes)."""
        self._pool.shutdown(wait=False)


def open_upload(raw: bytes, name: str, max_pixels: int) -> Image.Image:
    """The image in ``raw``, opened from its header only, refused when its declared size exceeds ``max_pixels``."""
    image = open_lazily(io.BytesIO(raw), name, max_pixels)
    check_pixel_budget(image, name, max_pixels)
    return image


async def read_upload(upload: UploadFile, *, accepts_images: bool, max_bytes: int, max_pixels: int,
                      decoder: ImageDecoder) -> tuple[Image.Image, bytes]:
    """An uploaded image decoded to RGB (downscaled) and its raw bytes, after the cheap checks."""
    name = upload.filename or "image"
    if not accepts_images:
        raise InvalidInputError("this server's model is text-only: it takes no images")
    raw = await upload.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise TooLargeError(f"image {name!r} is larger than {max_bytes:,} bytes (the --max-upload-mb setting)")
    if not raw:
        raise InvalidInputError(f"image {name!r} is empty")
    opened = open_upload(raw, name, max_pixels)
    try:
        return await decoder.decode(opened, name), raw
    except InvalidInputError as error:
        raise type(error)(f"upload {error}") from None


def _refuse_constant(value: str) -> Any:
    raise InvalidInputError(f"metadata must be plain JSON: {value} is not a number JSON allows")


def parse_metadata(text: str | None) -> dict[str, Any]:
    """Form metadata: a JSON object (or nothing); lists, numbers, strings, NaN and Infinity are refused."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"metadata is not valid JSON: {error.msg} at position {error.pos}") from None
    except RecursionError:
        raise InvalidInputError("metadata is nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"metadata must be a JSON object, got a JSON {json_type(value)}")
    return value


def check_finite(value: Any, where: str = "metadata") -> Any:
    """``value`` if no float in it is NaN or infinite (JSON answers could not carry it); else InvalidInputError."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"{where} holds {value}, which JSON cannot carry")
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for position, item in enumerate(value):
            check_finite(item, f"{where}[{position}]")
    return value


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", type(None): "null"}
    return names.get(type(value), type(value).__name__)
