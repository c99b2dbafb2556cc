"""What an evaluation reader produces: items (text, image or both), retrieval tasks over a shared corpus,
candidate-list tasks (MMEB), and the record of everything that was skipped and why."""

from __future__ import annotations

import hashlib
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from PIL import Image

from metaembed.inputs import InvalidInputError

ImageSource = Union[Path, bytes]


@dataclass(frozen=True)
class EvalItem:
    """One query or document: text, an image (a file path or the encoded bytes of an image file), or both."""

    text: str | None = None
    image: ImageSource | None = None

    def __post_init__(self) -> None:
        if self.text is None and self.image is None:
            raise ValueError("an EvalItem needs text, an image, or both")

    def to_model_input(self) -> str | Path | Image.Image | dict[str, Any]:
        """The item as ``MetaEmbed.encode_*`` takes it; image bytes are decoded here (InvalidInputError if not an image)."""
        image: Any = self.image
        if isinstance(image, bytes):
            try:
                image = Image.open(io.BytesIO(image))
                image.load()
            except Exception as error:  # PIL raises many types for a corrupt file
                raise InvalidInputError(f"embedded image bytes are not a readable image: {error}") from None
        if image is None:
            return self.text  # type: ignore[return-value]
        if self.text is None:
            return image
        return {"text": self.text, "image": image}

    def update_fingerprint(self, digest: "hashlib._Hash") -> None:
        """Feed what determines this item's encoding into ``digest``: text, and the image's bytes or file identity."""
        digest.update(b"T" + (self.text or "").encode("utf-8") + b"\x00")
        if isinstance(self.image, bytes):
            digest.update(b"B" + hashlib.blake2b(self.image, digest_size=16).digest())
        elif self.image is not None:
            path = Path(self.image)
            try:
                stat = path.stat()
                identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
            except OSError:
                identity = f"{path}|missing"
            digest.update(b"P" + identity.encode("utf-8") + b"\x00")


@dataclass
class DataIssues:
    """Problems found in the data, each counted by kind with a message naming the file and line or id.

    Nothing is dropped silently: every skip is counted here, printed once as a warning (up to
    ``print_limit`` per kind), and written to results.json.
    """

    counts: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    print_limit: int = 5
    quiet: bool = False

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.messages) < 1000:
            self.messages.append(message)
        if not self.quiet and self.counts[kind] <= self.print_limit:
            print(f"warning: {message}", file=sys.stderr)
            if self.counts[kind] == self.print_limit:
                print(f"warning: further '{kind}' problems are counted but not printed", file=sys.stderr)

    def merge(self, other: "DataIssues") -> None:
        for kind, count in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + count
        self.messages.extend(other.messages[: max(0, 1000 - len(self.messages))])

    def as_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "messages": list(self.messages)}


@dataclass
class RetrievalTask:
    """Queries searched against one shared corpus, judged by graded qrels (BEIR and ViDoRe)."""

    name: str
    corpus: dict[str, EvalItem]
    queries: dict[str, EvalItem]
    qrels: dict[str, dict[str, int]]
    source: str
    headline: str = "ndcg@10"
    issues: DataIssues = field(default_factory=DataIssues)
    query_prompt: str | None = None
    document_prompt: str | None = None

    @property
    def kind(self) -> str:
        return "retrieval"


@dataclass
class CandidateTask:
    """Each query ranks its own candidate list whose first entry is the positive (MMEB); metric: precision@1."""

    name: str
    queries: list[EvalItem]
    candidates: list[list[EvalItem]]
    source: str
    headline: str = "p@1"
    issues: DataIssues = field(default_factory=DataIssues)

    @property
    def kind(self) -> str:
        return "candidates"


Task = Union[RetrievalTask, CandidateTask]
