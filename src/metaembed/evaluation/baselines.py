"""Single-vector baselines scored beside the budgets: above all the model's own backbone, as its users already
have it (an ordinary sentence-transformers model: mean pooling for a plain backbone, cosine, the backbone's own
maximum length), so a report says what the meta tokens buy over it.

``BACKBONE`` as a baseline's source means "the backbone recorded in the MetaEmbed model's saved config"; when it
cannot be loaded (not recorded, a folder that is gone, the hub unreachable) the evaluation says so in one line on
stderr and goes on without it. Any other source that cannot be loaded is an error: the user asked for it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

BACKBONE = "backbone"
"""The baseline source (and default name) that stands for the model's recorded backbone."""


class BaselineError(ValueError):
    """A baseline the user named cannot be loaded."""


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def load_single_vector_model(name_or_path: str | Path) -> Any:
    """A sentence-transformers model on the CPU; a plain transformers folder gets mean pooling. Local files
    (and the hub cache) are tried first, so an offline machine fails fast instead of retrying the hub."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(name_or_path), device="cpu", local_files_only=True)
    except OSError:
        if Path(str(name_or_path)).exists():
            raise
        return SentenceTransformer(str(name_or_path), device="cpu")


def describe_single_vector_model(model: Any) -> str:
    """What a single-vector model does, in words: ``"mean pooling, cosine, 256 tokens"``."""
    pooling = next((getattr(module, "pooling_mode", None) for module in model if hasattr(module, "pooling_mode")), None)
    parts = [f"{pooling} pooling" if pooling else "its own pooling", str(getattr(model, "similarity_fn_name", None) or "cosine")]
    if getattr(model, "max_seq_length", None):
        parts.append(f"{model.max_seq_length} tokens")
    return ", ".join(parts)


def resolve_baselines(model: Any, baselines: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Load every baseline: name -> model object, and name -> {"source", "description"} for the report.

    A ``BACKBONE`` source is the model's recorded backbone; when that cannot be loaded it is left out with one
    line on stderr (and ``{"source", "skipped": reason}`` in the returned descriptions)."""
    loaded: dict[str, Any] = {}
    described: dict[str, dict[str, str]] = {}
    for name, source in (baselines or {}).items():
        if isinstance(source, (str, Path)) and str(source) == BACKBONE:
            backbone = getattr(model, "backbone_name_or_path", None)
            if not backbone:
                _skip(described, name, None, "the model does not record the backbone it was built from")
                continue
            try:
                source = load_single_vector_model(backbone)
            except Exception as error:  # noqa: BLE001 - any failure to load the default baseline is reported, not fatal
                _skip(described, name, backbone, _reason(error))
                continue
            described[name] = {"source": backbone}
        elif isinstance(source, (str, Path)):
            described[name] = {"source": str(source)}
            try:
                source = load_single_vector_model(source)
            except (OSError, ValueError) as error:
                raise BaselineError(f"baseline {str(described[name]['source'])!r} cannot be loaded: {_reason(error)}") from None
        else:
            described[name] = {"source": type(source).__name__}
        described[name]["description"] = (source.describe() if hasattr(source, "describe") else
                                          describe_single_vector_model(source) if _is_iterable(source) else "single vector")
        loaded[name] = source
    return loaded, described


def _skip(described: dict[str, dict[str, str]], name: str, source: str | None, reason: str) -> None:
    described[name] = {"source": source or "", "skipped": reason}
    where = f" ({source})" if source else ""
    print(f"note: no '{name}' baseline{where}: {reason}; evaluating without it (--no-baseline hides this)", file=sys.stderr)


def _is_iterable(model: Any) -> bool:
    try:
        iter(model)
        return True
    except TypeError:
        return False


def has_images(items: Iterable[Any]) -> bool:
    """Whether any evaluation item carries an image (a text baseline cannot encode it)."""
    return any(getattr(item, "image", None) is not None for item in items)


def accepts_images(baseline: Any) -> bool:
    """Whether a baseline encodes images too (e.g. :class:`~metaembed.evaluation.frozen_towers.FrozenTowers`)."""
    return bool(getattr(baseline, "accepts_images", False)) and hasattr(baseline, "encode_items")


def encode_single_vector(model: Any, items: Sequence[Any], batch_size: int, progress: bool) -> torch.Tensor:
    """(n, 1, D) unit vectors from a single-vector model: an image-capable baseline's own ``encode_items``, else a
    sentence-transformers model on the items' text."""
    if accepts_images(model):
        return model.encode_items(items, batch_size, progress).float().cpu().unsqueeze(1)
    texts = [getattr(item, "text", None) or "" for item in items]
    vectors = model.encode(texts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
                           show_progress_bar=progress)
    return vectors.float().cpu().unsqueeze(1)
