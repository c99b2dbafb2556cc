"""The search service behind the HTTP server: one model and one index, used safely from many threads."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from metaembed.budgets import AUTO, PAPER_BUDGETS, Budget, clip_budgets, parse_budget_or_auto
from metaembed.data.item import Item
from metaembed.inputs import DEFAULT_MAX_IMAGE_PIXELS, InvalidInputError, TooLargeError

MIB = 1024 * 1024


@dataclass
class ServiceSettings:
    """What the server allows: sizes, result count, where uploaded images are kept, the write key."""

    api_key: str | None = None
    max_upload_bytes: int = 10 * MIB
    max_body_bytes: int | None = None
    """The largest request body, on every route (default: ``max_upload_bytes`` + 1 MiB, room for the form fields)."""
    max_query_chars: int = 10_000
    """The longest query text; longer ones get a 413 before any work."""
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    """The most pixels an uploaded image may declare (width x height in its header) before it is decoded."""
    max_concurrent_decodes: int = 2
    """Uploaded images decoded at once (in worker threads, off the event loop)."""
    max_waiting_decodes: int = 8
    """Uploads that may wait for a decoder; beyond that the server answers 503."""
    max_top_k: int = 100
    media_dir: Path | None = None
    allowed_image_roots: list[Path] = field(default_factory=list)
    budgets: list[Budget] | None = None
    """The budgets offered (the model's training groups); default: the paper's, clipped to model and index."""

    @property
    def body_limit(self) -> int:
        """The largest request body in bytes."""
        return self.max_body_bytes if self.max_body_bytes is not None else self.max_upload_bytes + MIB


class SearchService:
    """Encodes queries and items with the model and searches/updates the index under one lock.

    The lock serialises model and index use: the model's meta-token hook and the index writer are not
    re-entrant, and on 2 cores serial execution loses nothing in throughput.
    """

    def __init__(self, model, index, settings: ServiceSettings | None = None, model_name: str | None = None) -> None:
        self.model = model
        self.model_name = model_name
        """How the model was named when loaded (its folder or hub id), shown by /stats; None: not said."""
        self.index = index
        self.settings = settings or ServiceSettings()
        self._lock = threading.Lock()
        self.budgets: list[Budget] = clip_budgets(
            self.settings.budgets or PAPER_BUDGETS, model.num_query_meta_tokens,
            min(model.num_document_meta_tokens, self.stored_document_vectors),
        )

    # ------------------------------------------------------------------------------------ facts
    @property
    def stored_document_vectors(self) -> int:
        """Vectors the index keeps per document: the largest r_c a search can use."""
        return int(self.index.max_document_vectors)

    def bytes_per_document(self, document_budget: int) -> int:
        """Vector bytes one document costs at a document budget: what a search at r_c reads per document."""
        return self.index.scored_bytes_per_document(document_budget)

    def model_facts(self) -> dict[str, Any]:
        """The model /stats names: as loaded (folder or hub id), its backbone, vector size, meta tokens, the budget
        groups it was trained with (None: untrained or not recorded) and whether it reads images."""
        record = getattr(self.model, "training_record", None)
        return {
            "name": self.model_name,
            "backbone": getattr(self.model, "backbone_name_or_path", None),
            "embedding_dim": int(self.model.embedding_dim),
            "query_meta_tokens": self.model.num_query_meta_tokens,
            "document_meta_tokens": self.model.num_document_meta_tokens,
            "trained_budgets": None if record is None else [list(b) for b in sorted(set(record.groups))],
            "accepts_images": bool(self.model.accepts_images),
        }

    def stats(self) -> dict[str, Any]:
        """What /stats answers: count, dim, dtype, the model serving and the model that built the index, the budgets
        offered with their bytes, the auto setting."""
        from metaembed.index.adaptive import AUTO_MARGIN_PROPERTY, DEFAULT_AUTO_MARGIN, resolve_candidates
        from metaembed.index.provenance import MODEL_PROPERTY

        with self._lock:
            count = len(self.index)
            properties = getattr(self.index, "properties", {})
            calibrated = properties.get(AUTO_MARGIN_PROPERTY)
            candidates = resolve_candidates(self.index, 10)
        return {
            "model": self.model_facts(),
            "index_model": properties.get(MODEL_PROPERTY),
            "count": count,
            "dim": int(self.index.dim),
            "dtype": str(self.index.dtype),
            "stored_document_budget": self.stored_document_vectors,
            "query_meta_tokens": self.model.num_query_meta_tokens,
            "budgets": [
                {
                    "budget": [b.query, b.document],
                    "bytes_per_document": self.bytes_per_document(b.document),
                    "index_bytes": self.bytes_per_document(b.document) * count,
                }
                for b in self.budgets
            ],
            "auto": {"max_budget": list(self.budgets[-1]), "margin": DEFAULT_AUTO_MARGIN if calibrated is None else calibrated,
                     "candidates": candidates,
                     "calibrated": calibrated is not None},
        }

    # ------------------------------------------------------------------------------------ checks
    def parse_budget(self, value: str | list[int] | tuple[int, int] | None) -> Budget | str:
        """A budget from a request (or ``"auto"``), checked against the model's query tokens and the stored vectors."""
        budget = self.budgets[-1] if value in (None, "") else parse_budget_or_auto(value)  # type: ignore[arg-type]
        return budget if budget == AUTO else self._check_budget(budget)  # type: ignore[arg-type]

    def parse_max_budget(self, value: str | list[int] | tuple[int, int] | None, budget: Budget | str) -> Budget | None:
        """The largest budget a ``"auto"`` request may climb to (default: the largest offered), checked like a budget."""
        if value in (None, ""):
            return self.budgets[-1] if budget == AUTO else None
        if budget != AUTO:
            raise ValueError("max_budget applies only to budget 'auto'")
        return self._check_budget(Budget.parse(value), "max_budget ")  # type: ignore[arg-type]

    def _check_budget(self, budget: Budget, name: str = "") -> Budget:
        """``budget`` if the model's query tokens and the stored vectors can serve it."""
        if budget.query > self.model.num_query_meta_tokens:
            raise ValueError(f"{name}r_q={budget.query} exceeds the model's {self.model.num_query_meta_tokens} query meta tokens")
        if budget.document > self.stored_document_vectors:
            raise ValueError(
                f"{name}r_c={budget.document} exceeds the {self.stored_document_vectors} vectors stored per document")
        return budget

    def check_top_k(self, top_k: int) -> int:
        """``top_k`` if it lies between 1 and the server's largest result count."""
        if not 1 <= top_k <= self.settings.max_top_k:
            raise ValueError(f"top_k must be between 1 and {self.settings.max_top_k}, got {top_k}")
        return top_k

    def check_query(self, text: str | None) -> str | None:
        """``text`` if it fits the server's query length; :class:`TooLargeError` (413) before any work otherwise."""
        limit = self.settings.max_query_chars
        if text is not None and len(text) > limit:
            raise TooLargeError(f"the query is {len(text):,} characters long; this server takes at most {limit:,} "
                                "(the --max-query-chars setting)")
        return text

    # ------------------------------------------------------------------------------------ search
    def search(self, text: str | None, image: Image.Image | None, budget: Budget | str, top_k: int,
               max_budget: Budget | None = None) -> dict[str, Any]:
        """Encode one query (text, image or both) at r_q and search the index at r_c; or ``budget="auto"`` up to
        ``max_budget``: the response's ``budget`` is then the one this query used."""
        self.check_query(text)
        if text is not None and not text.strip():
            text = None
        if text is None and image is None:
            raise InvalidInputError("the query is empty: give a text, an image or both")
        item = Item(text=text, image=image).to_model_input()
        auto = budget == AUTO
        top = (max_budget or self.budgets[-1]) if auto else budget
        with self._lock:
            started = time.perf_counter()
            vectors = self.model.encode_query([item], budget=top.query)
            encoded = time.perf_counter()
            if auto:
                result = self.index.search(vectors, k=top_k, budget=AUTO, max_budget=top, ladder=self.budgets)[0]
            else:
                result = self.index.search(vectors, k=top_k, budget=(top.query, top.document))[0]
            finished = time.perf_counter()
            count = len(self.index)
        used = Budget(*result.budget) if result.budget else top
        return {
            "budget": [used.query, used.document],
            "requested_budget": AUTO if auto else [used.query, used.document],
            **({"max_budget": [top.query, top.document]} if auto else {}),
            "results": result.hits(),
            "cost": {
                "bytes_per_document": self.bytes_per_document(used.document),
                "index_bytes_read": self._bytes_read(count, used, top, top_k) if auto
                else self.bytes_per_document(used.document) * count,
                "dot_products": result.cost,
                "encode_ms": round((encoded - started) * 1000, 2),
                "search_ms": round((finished - encoded) * 1000, 2),
                "total_ms": round((finished - started) * 1000, 2),
            },
        }

    def _bytes_read(self, count: int, used: Budget, top: Budget, top_k: int) -> int:
        """Vector bytes an auto search read: every document at the first rung, then its candidates at each rung climbed."""
        from metaembed.index.adaptive import auto_ladder, resolve_candidates

        rungs = auto_ladder(top, self.budgets)
        climbed = rungs[1 : rungs.index(used) + 1]
        candidates = min(count, resolve_candidates(self.index, top_k))
        return self.bytes_per_document(rungs[0].document) * count + sum(
            self.bytes_per_document(b.document) * candidates for b in climbed)

    # ------------------------------------------------------------------------------------ writes
    def upload_path(self, raw: bytes) -> Path:
        """Where an uploaded image is kept: the media folder, named by the content's hash."""
        if self.settings.media_dir is None:
            raise InvalidInputError("this server keeps no uploaded images (no media folder configured)")
        return self.settings.media_dir / f"{hashlib.sha256(raw).hexdigest()[:32]}.png"

    def add(self, records: list[dict[str, Any]]) -> list[str]:
        """Encode and index records ``{"id", "text"?, "image"? (PIL), "metadata"?}``; replaces existing ids."""
        ids, items, metadata = self._prepare(records)
        with self._lock:
            vectors = self.model.encode_document(items, budget=self.stored_document_vectors)
            self.index.add(ids, vectors, metadata=metadata)
        return ids

    def add_upload(self, record: dict[str, Any], image: Image.Image, raw: bytes) -> list[str]:
        """Index one record with an uploaded image, written to the media folder once the item is encoded.

        Nothing stays written when encoding or indexing fails (a file this call created is removed again); the
        file is written whole or not at all (a temporary file renamed into place).
        """
        path = self.upload_path(raw)
        ids, items, metadata = self._prepare([{**record, "image": image, "image_path": str(path)}])
        with self._lock:
            vectors = self.model.encode_document(items, budget=self.stored_document_vectors)
            created = not path.exists()
            if created:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
                image.save(partial, format="PNG")
                os.replace(partial, path)
            try:
                self.index.add(ids, vectors, metadata=metadata)
            except BaseException:
                if created:
                    path.unlink(missing_ok=True)
                raise
        return ids

    @staticmethod
    def _prepare(records: list[dict[str, Any]]) -> tuple[list[str], list[Any], list[dict[str, Any]]]:
        """Ids, model items and metadata of records to add, checked (not empty, no duplicate ids)."""
        if not records:
            raise InvalidInputError("no items to add")
        ids = [str(record["id"]) for record in records]
        if len(set(ids)) != len(ids):
            raise InvalidInputError("duplicate ids in one request")
        items, metadata = [], []
        for record in records:
            text, image = record.get("text"), record.get("image")
            if text is None and image is None:
                raise InvalidInputError(f"item {record['id']!r} has neither 'text' nor 'image'")
            items.append(Item(text=text, image=image).to_model_input())
            meta = dict(record.get("metadata") or {})
            if text is not None:
                meta.setdefault("text", text)
            if record.get("image_path"):
                meta.setdefault("image", record["image_path"])
            metadata.append(meta)
        return ids, items, metadata

    def delete(self, ids: list[str]) -> list[str]:
        """Remove ids from the index (``KeyError`` naming unknown ones)."""
        with self._lock:
            self.index.delete(ids)
        return ids

    def image_path_of(self, item_id: str) -> Path:
        """The image file behind an indexed item, refused unless it lies under an allowed folder."""
        with self._lock:
            metadata = self.index.get_metadata(item_id)
        image = (metadata or {}).get("image")
        if not image:
            raise KeyError(item_id)
        path = Path(image)
        if not path.is_absolute():  # a BEIR or items file names its images relative to its own folder
            corpus = (getattr(self.index, "properties", None) or {}).get("corpus")
            if corpus:
                path = (Path(corpus) if Path(corpus).is_dir() else Path(corpus).parent) / path
        path = path.resolve()
        roots = [root.resolve() for root in self.settings.allowed_image_roots]
        if self.settings.media_dir is not None:
            roots.append(self.settings.media_dir.resolve())
        if not any(path.is_relative_to(root) for root in roots):
            raise PermissionError(f"image of {item_id!r} lies outside the served folders")
        return path
