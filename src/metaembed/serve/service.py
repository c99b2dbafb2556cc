"""The search service behind the HTTP server: one model and one index, used safely from many threads."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from metaembed.budgets import AUTO, PAPER_BUDGETS, Budget, clip_budgets, parse_budget_or_auto
from metaembed.inputs import InvalidInputError


@dataclass
class ServiceSettings:
    """What the server allows: upload size, result count, where uploaded images are kept, the write key."""

    api_key: str | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    max_top_k: int = 100
    media_dir: Path | None = None
    allowed_image_roots: list[Path] = field(default_factory=list)
    budgets: list[Budget] | None = None
    """The budgets offered (the model's training groups); default: the paper's, clipped to model and index."""


class SearchService:
    """Encodes queries and items with the model and searches/updates the index under one lock.

    The lock serialises model and index use: the model's meta-token hook and the index writer are not
    re-entrant, and on 2 cores serial execution loses nothing in throughput.
    """

    def __init__(self, model, index, settings: ServiceSettings | None = None) -> None:
        self.model = model
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
        return int(self.index.max_document_vectors)

    def bytes_per_document(self, document_budget: int) -> int:
        """Vector bytes one document costs at a document budget: what a search at r_c reads per document."""
        per_vector = self.index.dim * 2 if self.index.dtype == "bfloat16" else self.index.dim + 4  # int8 + fp32 scale
        return int(document_budget * per_vector)

    def stats(self) -> dict[str, Any]:
        from metaembed.index.adaptive import AUTO_MARGIN_PROPERTY, DEFAULT_AUTO_MARGIN

        with self._lock:
            count = len(self.index)
            calibrated = getattr(self.index, "properties", {}).get(AUTO_MARGIN_PROPERTY)
        return {
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
        if budget.query > self.model.num_query_meta_tokens:
            raise ValueError(f"{name}r_q={budget.query} exceeds the model's {self.model.num_query_meta_tokens} query meta tokens")
        if budget.document > self.stored_document_vectors:
            raise ValueError(
                f"{name}r_c={budget.document} exceeds the {self.stored_document_vectors} vectors stored per document")
        return budget

    def check_top_k(self, top_k: int) -> int:
        if not 1 <= top_k <= self.settings.max_top_k:
            raise ValueError(f"top_k must be between 1 and {self.settings.max_top_k}, got {top_k}")
        return top_k

    # ------------------------------------------------------------------------------------ search
    def search(self, text: str | None, image: Image.Image | None, budget: Budget | str, top_k: int,
               max_budget: Budget | None = None) -> dict[str, Any]:
        """Encode one query (text, image or both) at r_q and search the index at r_c; or ``budget="auto"`` up to
        ``max_budget``: the response's ``budget`` is then the one this query used."""
        if text is not None and not text.strip():
            text = None
        if text is None and image is None:
            raise InvalidInputError("the query is empty: give a text, an image or both")
        item: Any = {"text": text, "image": image} if image is not None and text else (image or text)
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
        from metaembed.index.adaptive import auto_ladder, default_candidates

        rungs = auto_ladder(top, self.budgets)
        climbed = rungs[1 : rungs.index(used) + 1]
        candidates = min(count, default_candidates(top_k))
        return self.bytes_per_document(rungs[0].document) * count + sum(
            self.bytes_per_document(b.document) * candidates for b in climbed)

    # ------------------------------------------------------------------------------------ writes
    def store_upload(self, image: Image.Image, raw: bytes) -> str:
        """Keep an uploaded image in the media folder (content-addressed) and return its path."""
        if self.settings.media_dir is None:
            raise InvalidInputError("this server keeps no uploaded images (no media folder configured)")
        self.settings.media_dir.mkdir(parents=True, exist_ok=True)
        path = self.settings.media_dir / f"{hashlib.sha256(raw).hexdigest()[:32]}.png"
        if not path.exists():
            image.save(path)
        return str(path)

    def add(self, records: list[dict[str, Any]]) -> list[str]:
        """Encode and index records ``{"id", "text"?, "image"? (PIL), "metadata"?}``; replaces existing ids."""
        if not records:
            raise InvalidInputError("no items to add")
        ids = [str(record["id"]) for record in records]
        if len(set(ids)) != len(ids):
            raise InvalidInputError("duplicate ids in one request")
        items, metadata = [], []
        for record in records:
            text, image = record.get("text"), record.get("image")
            items.append({key: value for key, value in (("text", text), ("image", image)) if value is not None})
            meta = dict(record.get("metadata") or {})
            if text is not None:
                meta.setdefault("text", text)
            if record.get("image_path"):
                meta.setdefault("image", record["image_path"])
            metadata.append(meta)
        with self._lock:
            vectors = self.model.encode_document(items, budget=self.stored_document_vectors)
            self.index.add(ids, vectors, metadata=metadata)
        return ids

    def delete(self, ids: list[str]) -> list[str]:
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
        path = Path(image).resolve()
        roots = [root.resolve() for root in self.settings.allowed_image_roots]
        if self.settings.media_dir is not None:
            roots.append(self.settings.media_dir.resolve())
        if not any(path.is_relative_to(root) for root in roots):
            raise PermissionError(f"image of {item_id!r} lies outside the served folders")
        return path
