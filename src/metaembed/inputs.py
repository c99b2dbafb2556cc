"""Turn user items (text, images, image paths, text+image dicts) into validated model inputs.

Every problem is reported as an :class:`InvalidInputError` that names the item (its position in the
call and a short preview) and what is wrong with it, before anything reaches the backbone.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
from PIL import Image, ImageFile

Item = Union[str, Path, Image.Image, dict[str, Any]]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
"""A string ending in one of these (and containing no line break) is read as an image path."""

DEFAULT_MAX_IMAGE_SIDE = 2048
"""Images are downscaled so their longer side is at most this before the processor sees them: the
processors resize far below it anyway, and this keeps a 10,000 x 10,000 upload from costing gigabytes."""

DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
"""The most pixels an image file may decode to (width x height as its header declares, or as a JPEG decodes at
its reduced scale): an 8,000 x 6,000 photo fits; a 500 KB PNG that claims 13,000 x 13,000 is refused before
any pixel is decoded. Images already in memory are only downscaled."""

CHARS_PER_TOKEN = 32
"""Text is cut to this many characters per token an item may keep before tokenizing: far more than any real
token needs, and a 50 MB string never reaches the tokenizer."""


class InvalidInputError(ValueError):
    """An item that cannot be encoded; the message names the item and the problem."""


class TooLargeError(InvalidInputError):
    """An item beyond a size limit (an image's pixel budget, a server's query length)."""


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


def too_many_pixels(name: str, max_pixels: int | None, error: Exception | None = None,
                    size: tuple[int, int] | None = None) -> TooLargeError:
    """The error for an image over the pixel budget, from its size or from PIL's own bomb error."""
    if size is not None:
        declared = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels"
    else:  # PIL refused it in Image.open (beyond twice Image.MAX_IMAGE_PIXELS) and names only the pixel count
        found = re.search(r"\((\d+) pixels\)", str(error))
        declared = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    limit = f"the {max_pixels:,}" if max_pixels is not None else "what PIL's Image.MAX_IMAGE_PIXELS allows"
    return TooLargeError(f"image {name!r} is {declared}, more than {limit} an image may decode to "
                         "(the max_image_pixels setting)")


def open_lazily(source: Path | IO[bytes], name: str, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file or buffer from its header only (nothing decoded); errors name it, never the buffer."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(source)
    except Image.DecompressionBombError as error:
        raise too_many_pixels(name, max_pixels, error) from None
    except Exception:  # PIL raises several types, whose messages carry the buffer's repr
        raise InvalidInputError(f"file {name!r} is not a readable image (no image format recognised)") from None


def _open_image_file(path: Path, name: str, max_pixels: int | None) -> Image.Image:
    """Open an image file lazily (its header only); errors name the file."""
    if not path.is_file():
        raise InvalidInputError(f"image file {name!r} does not exist")
    return open_lazily(path, name, max_pixels)


def is_decoded(image: Image.Image) -> bool:
    """Whether an image's pixels are in memory already (not a file opened lazily, header only)."""
    return not getattr(image, "tile", None)


def check_pixel_budget(image: Image.Image, name: str, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
                       max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> None:
    """Refuse, before decoding, an image whose decode would exceed ``max_pixels``.

    A JPEG is first set to decode at the smallest scale that still gives ``max_side`` (libjpeg's draft mode),
    so its budget counts the pixels it will really decode (also when ``max_pixels`` is None: no budget). Costs
    nothing for images already in memory.
    """
    if is_decoded(image):
        return
    if image.format == "JPEG":
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale: a huge JPEG never exists at full size in memory.
        image.draft("RGB", (max_side, max_side))
    if max_pixels is None:
        return
    width, height = image.size
    if width * height > max_pixels:
        raise too_many_pixels(name, max_pixels, size=(width, height))


def load_image(source: str | Path | Image.Image, max_side: int = DEFAULT_MAX_IMAGE_SIDE,
               max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS, name: str | None = None) -> Image.Image:
    """Open (if a path), check the pixel budget, decode, downscale to ``max_side`` and convert to RGB.

    ``max_pixels`` bounds what a file (or a lazily opened PIL image) may decode to, read from its header
    before any pixel is decoded (see :func:`check_pixel_budget`); ``None`` lifts it. ``name`` is how errors
    call the image (default: its path or a short description). Raises :class:`InvalidInputError` for a
    missing file, a file that is not an image, or a truncated one, :class:`TooLargeError` beyond the budget.
    """
    if isinstance(source, Image.Image):
        image = source
        name = name or describe_item(source)
    else:
        path = Path(source).expanduser()
        name = name or str(path)
        image = _open_image_file(path, name, max_pixels)
    check_pixel_budget(image, name, max_pixels, max_side)
    try:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            image.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
    except Image.DecompressionBombError as error:
        raise too_many_pixels(name, max_pixels, error) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidInputError(f"image {name!r} is truncated or corrupt: {error}") from None
    if image.width == 0 or image.height == 0:
        raise InvalidInputError(f"image {name!r} is empty ({image.width}x{image.height})")
    if max(image.size) > max_side:
        image = image.copy() if image is source else image
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return to_rgb(image)


def cut_text(text: str, max_chars: int | None) -> str:
    """``text`` cut to ``max_chars`` characters (``None``: whole), so tokenizing never sees more than a bound."""
    return text if max_chars is None or len(text) <= max_chars else text[:max_chars]


def prepare_item(
    item: Any,
    *,
    accepts_images: bool,
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE,
    base_dir: Path | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    max_text_chars: int | None = None,
) -> str | Image.Image | dict[str, Any]:
    """Validate one item and convert it into a sentence-transformers input (str, RGB image, or text+image dict).

    Text is cut to ``max_text_chars`` (see :data:`CHARS_PER_TOKEN`); an image file must fit ``max_image_pixels``.
    """
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
    if text is not None:
        text = cut_text(text, max_text_chars)
    if image_source is None:
        return text  # type: ignore[return-value]
    if not accepts_images:
        raise InvalidInputError("is an image, but this model's backbone is text-only")
    if isinstance(image_source, (str, Path)) and base_dir is not None and not Path(image_source).is_absolute():
        image_source = base_dir / image_source
    if not isinstance(image_source, (str, Path, Image.Image)):
        raise InvalidInputError(f"has an 'image' of type {type(image_source).__name__}, expected a path or PIL image")
    image = load_image(image_source, max_side=max_image_side, max_pixels=max_image_pixels)
    if text is None:
        return image
    return {"text": text, "image": image}


def prepare_items(
    items: Sequence[Any],
    *,
    accepts_images: bool,
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    max_text_chars: int | None = None,
) -> list[str | Image.Image | dict[str, Any]]:
    """Validate a batch of items; the error names the first bad item by position and preview."""
    if isinstance(items, (str, dict, Path, Image.Image)):
        items = [items]
    prepared = []
    for position, item in enumerate(items):
        try:
            prepared.append(prepare_item(item, accepts_images=accepts_images, max_image_side=max_image_side,
                                         max_image_pixels=max_image_pixels, max_text_chars=max_text_chars))
        except InvalidInputError as error:
            raise type(error)(f"item {position} ({describe_item(item)}) {error}") from None
    return prepared
