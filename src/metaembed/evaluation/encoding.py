"""Encode one side (queries or documents) of a task once, at the model's full budget, through the cache.

Items that cannot be encoded (an unreadable image, empty text) are skipped, counted and named; the
rest are encoded in chunks with a progress bar. A chunk that fails is retried item by item, so one bad
file costs one chunk's re-encode, not the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from metaembed.data.item import Item
from metaembed.data.tasks import DataIssues
from metaembed.evaluation.cache import CachedEncoding, EncodingCache, data_fingerprint, model_fingerprint
from metaembed.inputs import InvalidInputError

QUERY, DOCUMENT = "query", "document"


def _encode(model: Any, side: str, inputs: list[Any], batch_size: int, prompt: str | None) -> torch.Tensor:
    encode = model.encode_query if side == QUERY else model.encode_document
    kwargs: dict[str, Any] = {"batch_size": batch_size, "show_progress_bar": False}
    if prompt is not None:
        kwargs["prompt"] = prompt
    return encode(inputs, **kwargs)


def encode_items(
    model: Any,
    side: str,
    ids: Sequence[str],
    items: Sequence[Item],
    *,
    batch_size: int = 32,
    chunk_size: int | None = None,
    prompt: str | None = None,
    cache: EncodingCache | None = None,
    storage_dtype: torch.dtype = torch.bfloat16,
    issues: DataIssues | None = None,
    where: str = "",
    progress: bool = True,
) -> tuple[CachedEncoding, bool]:
    """Full-budget vectors (n_ok, R, D) for ``items`` and whether they came from the cache.

    Failed items are reported in ``issues`` as ``unreadable_<side>`` with their id and the reason.
    """
    issues = issues if issues is not None else DataIssues()
    model_key = model_fingerprint(model)
    data_key = data_fingerprint(side, ids, items, prompt) + f"-{str(storage_dtype).removeprefix('torch.')}"
    if cache is not None:
        cached = cache.load(model_key, side, data_key)
        if cached is not None:
            for item_id, reason in cached.failed.items():
                issues.add(f"unreadable_{side}", f"{where}: {side} {item_id!r} cannot be encoded ({reason}); skipped")
            return cached, True

    chunk_size = chunk_size or max(batch_size * 8, 64)
    # Longest first, across the whole set: batches of similar length waste little on padding. The cache
    # stores ids next to vectors, so the order is free.
    order = sorted(range(len(items)), key=lambda i: -len(items[i].text or ""))
    ids = [ids[i] for i in order]
    items = [items[i] for i in order]
    parts: list[torch.Tensor] = []
    kept_ids: list[str] = []
    failed: dict[str, str] = {}
    bar = tqdm(total=len(items), desc=f"encoding {len(items)} {'queries' if side == QUERY else 'documents'}{f' of {where}' if where else ''}", unit=side, disable=not progress)
    for start in range(0, len(items), chunk_size):
        chunk_ids = list(ids[start : start + chunk_size])
        chunk_items = items[start : start + chunk_size]
        inputs: list[Any] = []
        input_ids: list[str] = []
        for item_id, item in zip(chunk_ids, chunk_items):
            try:
                inputs.append(item.to_model_input())
                input_ids.append(item_id)
            except InvalidInputError as error:
                failed[item_id] = str(error)
        try:
            vectors = _encode(model, side, inputs, batch_size, prompt) if inputs else None
            if vectors is not None:
                parts.append(vectors.to(storage_dtype))
                kept_ids.extend(input_ids)
        except InvalidInputError:
            for item_id, single in zip(input_ids, inputs):
                try:
                    parts.append(_encode(model, side, [single], batch_size, prompt).to(storage_dtype))
                    kept_ids.append(item_id)
                except InvalidInputError as error:
                    failed[item_id] = str(error).removeprefix("item 0 ")
        bar.update(len(chunk_items))
    bar.close()
    for item_id, reason in failed.items():
        issues.add(f"unreadable_{side}", f"{where}: {side} {item_id!r} cannot be encoded ({reason}); skipped")
    if parts:
        all_vectors = torch.cat(parts)
    else:
        all_vectors = torch.empty(0, 0, 0, dtype=storage_dtype)
    encoding = CachedEncoding(all_vectors, kept_ids, failed)
    if cache is not None:
        cache.save(model_key, side, data_key, encoding)
    return encoding, False
