"""The one item type of every layer: a query or a document, as text, an image, or both.

Every reader (BEIR, MMEB, ViDoRe, the index's JSONL rows, training rows) produces :class:`Item`; training
stores it as a ``datasets`` struct column (``text`` string, ``image`` :class:`datasets.Image`), the index and
the evaluation encode it with :meth:`Item.to_model_input`, and the server builds one from a request. It lives in
``metaembed.data``, the lowest package, beside the base modules it needs (:mod:`metaembed.inputs`), so the model,
training, index, evaluation and server layers all import it without importing one another.

Image paths in data files are relative to the file's folder; :func:`resolve_image` is the one place that
resolves them, refuses those leading outside the folder, and checks the file when asked.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Union

from PIL import Image

from metaembed.inputs import InvalidInputError, describe_item, looks_like_image_path, resolve_data_path

ImageSource = Union[Path, bytes, Image.Image]
"""A file (absolute path), the encoded bytes of an image file, or an image in memory."""

ImageCheck = Literal["none", "exists", "readable"]
"""How much :func:`resolve_image` checks a file: nothing, that it exists, or that PIL can read it."""

IMAGE_PLACEHOLDER = re.compile(r"<\|image_\d+\|>")
"""MMEB's (Phi-3-V's) image token in a text; the backbone's processor inserts its own instead."""


@dataclass(frozen=True)
class Item:
    """One query or document: ``text``, an ``image`` (see :data:`ImageSource`), or both."""

    text: str | None = None
    image: ImageSource | None = None

    def __post_init__(self) -> None:
        if self.text is None and self.image is None:
            raise ValueError("an Item needs text, an image, or both")

    def describe(self, limit: int = 60) -> str:
        """A short, printable preview for messages: the text (cut to ``limit``) and the image's file name or size."""
        parts = []
        if self.text is not None:
            parts.append(describe_item(self.text, limit))
        if isinstance(self.image, Path):
            parts.append(f"<image {self.image.name}>")
        elif isinstance(self.image, bytes):
            parts.append(f"<image {len(self.image):,} bytes>")
        elif self.image is not None:
            parts.append(describe_item(self.image))
        return " + ".join(parts)

    @property
    def modality(self) -> str:
        """``"text"``, ``"image"`` or ``"image+text"``: what the item holds."""
        if self.image is None:
            return "text"
        return "image" if self.text is None else "image+text"

    def with_instruction(self, instruction: str | None) -> "Item":
        """This item with ``instruction`` put before its text (an image alone gets the instruction as its text)."""
        return replace(self, text=instruction + (self.text or "")) if instruction else self

    def to_model_input(self) -> str | Path | Image.Image | dict[str, Any]:
        """The item as ``MetaEmbed.encode_*`` takes it. Image bytes are decoded here (InvalidInputError if not an
        image); a text alone that ends like an image file name is wrapped as ``{"text": ...}`` so it stays text."""
        image: Any = self.image
        if isinstance(image, bytes):
            try:
                image = Image.open(io.BytesIO(image))
                image.load()
            except Exception as error:  # PIL raises many types for a corrupt file
                raise InvalidInputError(f"embedded image bytes are not a readable image: {error}") from None
        if image is None:
            text: Any = self.text
            return {"text": text} if looks_like_image_path(text) else text
        if self.text is None:
            return image
        return {"text": self.text, "image": image}

    def to_cell(self) -> dict[str, Any]:
        """The item as a cell of an item column (:func:`dataset_item_feature`): ``{"text", "image"}``, the image
        as a path string or ``{"bytes": ...}``."""
        image: Any = self.image
        if isinstance(image, Path):
            image = str(image)
        elif isinstance(image, bytes):
            image = {"bytes": image, "path": None}
        return {"text": self.text, "image": image}

    @staticmethod
    def from_cell(cell: Mapping[str, Any]) -> "Item":
        """The item of a dataset cell (``datasets`` decodes its image to a PIL image) or of a ``{"text", "image"}``
        dict."""
        image = cell.get("image")
        if isinstance(image, str):
            image = Path(image)
        elif isinstance(image, Mapping):  # an undecoded datasets.Image value
            image = image.get("bytes") or Path(image["path"])
        return Item(text=cell.get("text"), image=image)

    def update_fingerprint(self, digest: "hashlib._Hash") -> None:
        """Feed what determines this item's encoding into ``digest``: text, and the image's bytes, pixels or file
        identity."""
        digest.update(b"T" + (self.text or "").encode("utf-8") + b"\x00")
        if isinstance(self.image, bytes):
            digest.update(b"B" + hashlib.blake2b(self.image, digest_size=16).digest())
        elif isinstance(self.image, Image.Image):
            pixels = hashlib.blake2b(self.image.tobytes(), digest_size=16).digest()
            digest.update(b"I" + f"{self.image.mode}{self.image.size}".encode() + pixels)
        elif self.image is not None:
            path = Path(self.image)
            try:
                stat = path.stat()
                identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
            except OSError:
                identity = f"{path}|missing"
            digest.update(b"P" + identity.encode("utf-8") + b"\x00")


def dataset_item_feature() -> Any:
    """The ``datasets`` feature of an item column: a struct of ``text`` (string) and ``image`` (:class:`datasets.Image`).

    Not decoded by ``datasets``: the training collator opens each image through :func:`metaembed.inputs.load_image`,
    so the pixel budget holds and a corrupt file is an error naming the column and the item, as everywhere else."""
    from datasets import Image as ImageFeature
    from datasets import Value

    return {"text": Value("string"), "image": ImageFeature(decode=False)}


def strip_image_placeholder(text: str | None) -> str | None:
    """Remove ``<|image_N|>`` placeholders and the blank space around them; None when nothing is left."""
    if text is None:
        return None
    cleaned = IMAGE_PLACEHOLDER.sub("", text).strip()
    return cleaned or None


def check_image(path: Path, owner: str | None = None) -> None:
    """Raise ValueError unless ``path`` is an image PIL can read (header and data checked, not decoded)."""
    of = f" of {owner}" if owner else ""
    if not path.is_file():
        raise ValueError(f"image {str(path)!r}{of} does not exist")
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # PIL raises many types for bad files
        raise ValueError(f"image {str(path)!r}{of} is not a readable image: {error}") from None


def resolve_image(
    value: Any, base_dir: Path, *, where: str, owner: str | None = None, allow_outside: bool = False,
    check: ImageCheck = "none",
) -> Path:
    """The absolute path of the image a data row names (``value``, relative to ``base_dir``, the data file's folder).

    Refused with :class:`~metaembed.inputs.PathOutsideFolderError` (its message starts with ``where``) when it leads
    outside ``base_dir`` and not ``allow_outside``; ValueError naming ``owner`` (e.g. ``item 'x'``) when ``value``
    is not a path string or the file fails ``check``."""
    if not isinstance(value, str):
        raise ValueError(f"'image' of {owner or 'the item'} must be a path string, got {type(value).__name__}")
    path = resolve_data_path(value, base_dir, where, allow_outside=allow_outside).resolve()
    if check == "exists" and not path.is_file():
        raise ValueError(f"image {str(path)!r}{f' of {owner}' if owner else ''} does not exist")
    if check == "readable":
        check_image(path, owner)
    return path


def parse_item(
    text: Any, image: Any, *, base_dir: Path, what: str, allow_outside: bool = False, check: ImageCheck = "none",
    where: str | None = None, owner: str | None = None,
) -> Item:
    """One item from a data row's ``text`` and ``image`` fields; ValueError saying what is wrong with ``what``.

    Text must be a string; blank text is dropped when there is an image, and an error without one. The image is
    resolved by :func:`resolve_image` with ``where`` (default ``what``) and ``owner``."""
    if text is not None and not isinstance(text, str):
        raise ValueError(f"'text' of {what} must be a string, got {type(text).__name__}")
    if image is not None and not isinstance(image, str):
        raise ValueError(f"'image' of {what} must be a path string, got {type(image).__name__}")
    if image is not None and not image.strip():
        image = None
    if text is None and image is None:
        raise ValueError(f"{what} has neither 'text' nor 'image'")
    if text is not None and not text.strip():
        if image is None:
            raise ValueError(f"'text' of {what} is empty")
        text = None
    path = resolve_image(image, base_dir, where=where or what, owner=owner, allow_outside=allow_outside,
                         check=check) if image else None
    return Item(text=text, image=path)


def parse_json_item(value: Any, **kwargs: Any) -> Item:
    """An item written in JSON: a string (text) or ``{"text": ..., "image": ...}``; ``kwargs`` as :func:`parse_item`."""
    what = kwargs["what"]
    if isinstance(value, str):
        return parse_item(value, None, **kwargs)
    if isinstance(value, Mapping):
        unknown = set(value) - {"text", "image"}
        if unknown:
            raise ValueError(f"{what} has unknown keys {sorted(unknown)}; an item takes 'text' and/or 'image'")
        return parse_item(value.get("text"), value.get("image"), **kwargs)
    if value is None:
        raise ValueError(f"{what} is missing")
    raise ValueError(f"{what} must be a string or an object with 'text'/'image', got {type(value).__name__}")
