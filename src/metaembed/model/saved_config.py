"""What a saved MetaEmbed folder declares about itself, read from its small JSON files without loading weights.

``metaembed_config.json`` (next to the backbone's own files) records the backbone the model was built from
(``MetaEmbed.from_backbone``'s name or path): evaluation scores that backbone as a plain single-vector model
beside the budgets. ``sentence_bert_config.json`` holds the meta-token counts, so a budget larger than the
model's meta tokens can be refused before gigabytes of weights load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METAEMBED_CONFIG_FILE = "metaembed_config.json"
"""The backbone a MetaEmbed model was built from: ``{"backbone": name_or_path}``."""


@dataclass(frozen=True)
class SavedModelInfo:
    """A saved MetaEmbed folder's meta-token counts and the backbone it was built from (None if not recorded)."""

    num_query_meta_tokens: int
    num_document_meta_tokens: int
    backbone: str | None


def recorded_backbone_name(name_or_path: str) -> str:
    """How a backbone is recorded: an existing local folder as an absolute path, anything else (a hub id) as given."""
    return os.path.abspath(name_or_path) if os.path.isdir(name_or_path) else str(name_or_path)


def read_backbone_record(path: str | None) -> str | None:
    """The backbone named in a ``metaembed_config.json`` file (None when there is no file or no name)."""
    if path is None or not os.path.isfile(path):
        return None
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8")).get("backbone")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def write_backbone_record(folder: str, backbone: str | None) -> None:
    """Write ``metaembed_config.json`` into ``folder`` (nothing when the backbone is unknown)."""
    if backbone:
        Path(folder, METAEMBED_CONFIG_FILE).write_text(json.dumps({"backbone": backbone}, indent=2) + "\n", encoding="utf-8")


def read_saved_model_info(path: str | Path) -> SavedModelInfo | None:
    """The meta-token counts and backbone of a local MetaEmbed folder, from its JSON files alone.

    None when ``path`` is not a local folder of a sentence-transformers model whose first module is MetaEmbed's
    (a hub id, a missing path, another model): the caller then learns what it needs by loading the model."""
    folder = Path(path)
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    try:
        modules: list[dict[str, Any]] = json.loads(modules_file.read_text(encoding="utf-8"))
        first = min(modules, key=lambda module: int(module.get("idx", 0)))
        if not str(first.get("type", "")).endswith("MetaTransformer"):
            return None
        module_folder = folder / first.get("path", "")
        config = json.loads((module_folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
        return SavedModelInfo(
            int(config["num_query_meta_tokens"]), int(config["num_document_meta_tokens"]),
            read_backbone_record(str(module_folder / METAEMBED_CONFIG_FILE)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
