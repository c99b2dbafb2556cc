"""Turn user items (text, images, image paths, text+image dicts) into validated model inputs.

Every problem is reported as an :class:`InvalidInputError` that names the item (its position in the
call and a short preview) and what is wrong with it, before anything reaches the backbone.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageFile

Item = Union[str, Path, Image.Image, dict[str, Any]]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
"""A string ending in one of these (and containing no line break) is read as an image path."""

DEFAULT_MAX_IMAGE_SIDE = 2048
"""Images are downscaled so their longer side is at most this before the processor sees them: the
processors resize far below it anyway, and this keeps a 10,000 x 10,000 upload from costing gigabytes."""

_MAX_DECODED_PIXELS = 400_000_000


class InvalidInputError(ValueError):
    """An item that cannot be encoded; the message names the item and the problem."""


def describe_item(item: Any, limit: int = 60) -> str:
    """A short, printable preview of an item for error messages."""
    if isinstance(item, Image.Image):
        return f"<image {item.mode} {item.width}x{item.height}>"
    text = repr(item)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def looks_like_image_path(value: str | Path) -> bool:
    """Whether a string names an image file by its extension (the same rule sentence-transformers uses)."""
    if isinstance(value, Path):
        return True
    return "\n" not in value and value.strip().lower().endswith(IMAGE_EXTENSIONS)


class PathOutsideFolderError(InvalidInputError):
    """A data file names an image outside its own folder (``../..`` or an absolute path elsewhere)."""


def resolve_data_path(value: str | Path, base: Path, where: str, *, allow_outside: bool = False) -> Path:
    """The file a data row names, relative to ``base`` (the data file's folder).

    Paths that escape ``base`` are refused unless ``allow_outside``: a corpus or training file must not make
    the tool read (or a server show) arbitrary files of the machine.
    """
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not allow_outside:
        resolved, root = path.resolve(), base.resolve()
        if not resolved.is_relative_to(root):
            raise PathOutsideFolderError(
                f"{where}: image path {str(value)!r} leads outside the data folder {str(root)!r}; "
                "refused (the allow-outside-paths setting of the command or function accepts it)"
            )
    return path


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (CMYK, RGBA, LA, P, 1, L, I;16, I, F) to 8-bit RGB; alpha is composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        scaled = np.clip(array / peak * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def load_image(source: str | Path | Image.Image, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> Image.Image:
    """Open (if a path), fully decode, downscale to ``max_side`` and convert to RGB.

    Raises :class:`InvalidInputError` for a missing file, a file that is not an image, or a truncated one.
    """
    if isinstance(source, Image.Image):
        image = source
        name = describe_item(source)
    else:
        path = Path(source).expanduser()
        name = str(path)
        if not path.is_file():
            raise InvalidInputError(f"image file {name!r} does not exist")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                previous_limit = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = _MAX_DECODED_PIXELS // 2
                try:
                    image = Image.open(path)
                finally:
                    Image.MAX_IMAGE_PIXELS = previous_limit
        except Image.DecompressionBombError as error:
            raise InvalidInputError(f"image file {name!r} is too large to decode safely: {error}") from None
        except (OSError, SyntaxError, ValueError) as error:
            raise InvalidInputError(f"file {name!r} is not a readable image: {error}") from None
    try:
        if image.format == "JPEG":
            # Let libjpeg decode at a reduced scale: a huge JPEG never exists at full size in memory.
            image.draft("RGB", (max_side, max_side))
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            image.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidInputError(f"image {name!r} is truncated or corrupt: {error}") from None
    if image.width == 0 or image.height == 0:
        raise InvalidInputError(f"image {name!r} is empty ({image.width}x{image.height})")
    if max(image.size) > max_side:
        image = image.copy() if image is source else image
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return to_rgb(image)


def prepare_item(
    item: Any,
    *,
    accepts_images: bool,
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE,
    base_dir: Path | None = None,
) -> str | Image.Image | dict[str, Any]:
    """Validate one item and convert it into a sentence-transformers input (str, RGB image, or text+image dict)."""
    text: str | None = None
    image_source: Any = None
    if isinstance(item, dict):
        unknown = set(item) - {"text", "image"}
        if unknown:
            raise InvalidInputError(f"has unknown keys {sorted(unknown)}; an item dict takes 'text' and/or 'image'")
        text = item.get("text")
        image_source = item.get("image")
        if text is None and image_source is None:
            raise InvalidInputError("is an empty dict: give 'text', 'image' or both")
        if text is not None and not isinstance(text, str):
            raise InvalidInputError(f"has a 'text' of type {type(text).__name__}, expected str")
    elif isinstance(item, Image.Image) or isinstance(item, Path):
        image_source = item
    elif isinstance(item, str):
        if looks_like_image_path(item):
            image_source = item
        else:
            text = item
    else:
        raise InvalidInputError(
            f"has unsupported type {type(item).__name__}; give a str, a PIL image, an image path or a dict"
        )

    if text is not None and not text.strip():
        raise InvalidInputError("has empty text")
    if image_source is None:
        return text  # type: ignore[return-value]
    if not accepts_images:
        raise InvalidInputError("is an image, but this model's backbone is text-only")
    if isinstance(image_source, (str, Path)) and base_dir is not None and not Path(image_source).is_absolute():
        image_source = base_dir / image_source
    if not isinstance(image_source, (str, Path, Image.Image)):
        raise InvalidInputError(f"has an 'image' of type {type(image_source).__name__}, expected a path or PIL image")
    image = load_image(image_source, max_side=max_image_side)
    if text is None:
        return image
    return {"text": text, "image": image}


def prepare_items(
    items: Sequence[Any], *, accepts_images: bool, max_image_side: int = DEFAULT_MAX_IMAGE_SIDE
) -> list[str | Image.Image | dict[str, Any]]:
    """Validate a batch of items; the error names the first bad item by position and preview."""
    if isinstance(items, (str, dict, Path, Image.Image)):
        items = [items]
    prepared = []
    for position, item in enumerate(items):
        try:
            prepared.append(prepare_item(item, accepts_images=accepts_images, max_image_side=max_image_side))
        except InvalidInputError as error:
            raise InvalidInputError(f"item {position} ({describe_item(item)}) {error}") from None
    return prepared
