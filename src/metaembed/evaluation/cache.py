"""On-disk cache of full-budget encodings, keyed by a model fingerprint and a data fingerprint.

The model fingerprint hashes every parameter (tensors above ``_FULL_HASH_LIMIT`` elements are hashed on
a strided sample plus their exact sum, so a 7B model fingerprints in seconds), the module layout, the
prompts and the sequence length; the data fingerprint hashes each item's id, text and image (bytes, or
file path + size + mtime). Change either and the cache misses; nothing is ever served stale by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from metaembed.data.item import Item
from metaembed.user_cache import cache_folder

_MODEL_FOLDER = re.compile(r"[0-9a-f]{32}")
_ENTRY_FILE = re.compile(r"(query|document)-[0-9a-f]{32}.*\.(safetensors|tmp)")
"""What the cache writes; :meth:`EncodingCache.clear` deletes these and nothing else in the folder."""
_FULL_HASH_LIMIT = 1 << 24
_SAMPLE_ELEMENTS = 1 << 20


def default_cache_dir() -> Path:
    """``$METAEMBED_CACHE`` or ``~/.cache/metaembed``, plus ``encodings``."""
    return cache_folder("encodings")


def _tensor_digest(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel() > _FULL_HASH_LIMIT:
        stride = flat.numel() // _SAMPLE_ELEMENTS
        sample = flat[::stride].contiguous()
        extra = repr(float(flat.double().sum())).encode()
        flat = sample
    else:
        extra = b""
    raw = flat.view(torch.uint8) if flat.dtype != torch.bool else flat.to(torch.uint8)
    return hashlib.blake2b(raw.numpy().tobytes() + extra, digest_size=16).digest()


def model_fingerprint(model: Any) -> str:
    """A hex digest of everything that determines a model's encodings (weights, layout, prompts, lengths)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(type(model).__qualname__.encode())
    digest.update(b"max_seq_length counts real tokens only")  # its meaning changed once: never reuse older caches
    for name in ("num_query_meta_tokens", "num_document_meta_tokens", "embedding_dim", "max_seq_length"):
        digest.update(f"{name}={getattr(model, name, None)}".encode())
    digest.update(json.dumps(getattr(model, "prompts", None) or {}, sort_keys=True, default=str).encode())
    if isinstance(model, torch.nn.Module):
        digest.update(repr(model).encode())
        for name, tensor in model.state_dict().items():
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(_tensor_digest(tensor))
    else:  # an encoder that is not a torch module must provide its own identity
        digest.update(repr(getattr(model, "fingerprint", model)).encode())
    return digest.hexdigest()


def data_fingerprint(side: str, ids: Sequence[str], items: Sequence[Item], prompt: str | None = None) -> str:
    """A hex digest of one side's items, in order, and the prompt they are encoded with."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{side}|{prompt}|".encode())
    for item_id, item in zip(ids, items, strict=True):
        digest.update(str(item_id).encode("utf-8") + b"\x00")
        item.update_fingerprint(digest)
    return digest.hexdigest()


@dataclass
class CachedEncoding:
    """Full-budget vectors for the items that encoded, their ids, and the ids that could not be encoded."""

    vectors: torch.Tensor
    ids: list[str]
    failed: dict[str, str]


class EncodingCache:
    """``<root>/<model fingerprint>/<side>-<data fingerprint>.safetensors`` files."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, model_key: str, side: str, data_key: str) -> Path:
        return self.root / model_key[:32] / f"{side}-{data_key[:32]}.safetensors"

    def load(self, model_key: str, side: str, data_key: str) -> CachedEncoding | None:
        path = self.path(model_key, side, data_key)
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
            return CachedEncoding(tensors["vectors"], json.loads(metadata["ids"]), json.loads(metadata.get("failed", "{}")))
        except Exception:  # a half-written or foreign file: encode again rather than fail
            return None

    def save(self, model_key: str, side: str, data_key: str, encoding: CachedEncoding) -> Path:
        path = self.path(model_key, side, data_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        save_file(
            {"vectors": encoding.vectors.contiguous()}, str(temporary),
            metadata={"ids": json.dumps(encoding.ids), "failed": json.dumps(encoding.failed)},
        )
        os.replace(temporary, path)
        return path

    def _entry_files(self) -> dict[Path, list[Path]]:
        """Model folder -> its cache files (only names this cache writes)."""
        found: dict[Path, list[Path]] = {}
        if not self.root.is_dir():
            return found
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and _MODEL_FOLDER.fullmatch(folder.name):
                files = sorted(p for p in folder.iterdir() if p.is_file() and _ENTRY_FILE.fullmatch(p.name))
                if files:
                    found[folder] = files
        return found

    def models(self) -> list[dict[str, Any]]:
        """One row per model fingerprint: ``{"path", "entries", "bytes"}`` (an entry is one side of one data set)."""
        return [{"path": str(folder), "entries": len(files), "bytes": sum(p.stat().st_size for p in files)}
                for folder, files in self._entry_files().items()]

    def summary(self) -> dict[str, Any]:
        """``{"path", "models", "entries", "bytes"}`` for the whole cache."""
        rows = self.models()
        return {"path": str(self.root), "models": len(rows), "entries": sum(r["entries"] for r in rows),
                "bytes": sum(r["bytes"] for r in rows)}

    def clear(self) -> dict[str, Any]:
        """Delete every cache entry (and model folders left empty); other files in the folder are kept. Returns
        what was deleted, as :meth:`summary` counts it."""
        deleted = self.summary()
        for folder, files in self._entry_files().items():
            for path in files:
                path.unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()
        return deleted
