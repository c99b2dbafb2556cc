"""What a saved MetaEmbed folder declares about itself, read from its small JSON files without loading weights.

``metaembed_config.json`` (in the folder of the model's first module, next to the backbone's own files) is the
model's own config:

- ``backbone``: what the model was built from (``MetaEmbed.from_backbone``'s name or path); evaluation scores
  that backbone as a plain single-vector model beside the budgets;
- ``training``: how ``metaembed train`` trained it (the MMR groups, the temperature, a few settings, the data
  and example items), so ``metaembed serve`` offers the trained budgets and the model card shows them;
- ``evaluation``: the budget curve of an evaluation run, shown in the model card.

``sentence_bert_config.json`` holds the meta-token counts, so a budget larger than the model's meta tokens can be
refused before gigabytes of weights load. Checkpoints saved before a key existed simply lack it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaembed.budgets import Budget

METAEMBED_CONFIG_FILE = "metaembed_config.json"
"""The model's own config: ``{"backbone": ..., "training": {...}, "evaluation": {...}}`` (every key optional)."""

Item = str | dict[str, str]
"""An example item as the card shows it: plain text, or ``{"text": ..., "image": file name}``."""


@dataclass
class TrainingRecord:
    """How a model was trained, as saved in its config: what ``serve`` offers and the model card shows."""

    groups: list[Budget]
    """The MMR budget groups (r_q, r_c) the loss trained, in the configured order."""
    temperature: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    """Other settings worth showing (steps, batch size, learning rate, loss terms): readable name -> value."""
    data: list[str] = field(default_factory=list)
    """What it was trained on (file names, MMEB subsets)."""
    example_queries: list[Item] = field(default_factory=list)
    example_documents: list[Item] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [str(group) for group in self.groups], "temperature": self.temperature, "settings": self.settings,
            "data": self.data, "examples": {"queries": self.example_queries, "documents": self.example_documents},
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "TrainingRecord":
        """Read a saved record; a record without valid groups is an error (``ValueError``)."""
        groups = value.get("groups")
        if not isinstance(groups, list) or not groups:
            raise ValueError(f"training record without budget groups: {value!r}")
        examples = value.get("examples") or {}
        temperature = value.get("temperature")
        return cls(
            groups=[Budget.parse(group) for group in groups],
            temperature=None if temperature is None else float(temperature),
            settings=dict(value.get("settings") or {}),
            data=[str(name) for name in value.get("data") or []],
            example_queries=list(examples.get("queries") or []),
            example_documents=list(examples.get("documents") or []),
        )


@dataclass(frozen=True)
class SavedModelInfo:
    """A saved MetaEmbed folder's meta-token counts, the backbone it was built from and how it was trained
    (None where not recorded)."""

    num_query_meta_tokens: int
    num_document_meta_tokens: int
    backbone: str | None
    training: TrainingRecord | None = None


def recorded_backbone_name(name_or_path: str) -> str:
    """How a backbone is recorded: an existing local folder as an absolute path, anything else (a hub id) as given."""
    return os.path.abspath(name_or_path) if os.path.isdir(name_or_path) else str(name_or_path)


def read_metaembed_config(path: str | Path | None) -> dict[str, Any]:
    """The contents of a ``metaembed_config.json`` file ({} when there is no file or it is not a JSON object)."""
    if path is None or not os.path.isfile(path):
        return {}
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_backbone_record(path: str | None) -> str | None:
    """The backbone named in a ``metaembed_config.json`` file (None when there is no file or no name)."""
    value = read_metaembed_config(path).get("backbone")
    return value if isinstance(value, str) and value else None


def read_training_record(path: str | Path | None) -> TrainingRecord | None:
    """The training record of a ``metaembed_config.json`` file (None when absent; ``ValueError`` when malformed)."""
    value = read_metaembed_config(path).get("training")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: 'training' is not an object")
    try:
        return TrainingRecord.from_dict(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: cannot read its training record: {error}") from None


def write_metaembed_config(
    folder: str | Path, backbone: str | None, training: TrainingRecord | None = None,
    evaluation: dict[str, Any] | None = None,
) -> None:
    """Write ``metaembed_config.json`` into ``folder`` with the keys that are known (no file when none is: one left
    from an earlier save in that folder is removed)."""
    config: dict[str, Any] = {}
    if backbone:
        config["backbone"] = backbone
    if training is not None:
        config["training"] = training.to_dict()
    if evaluation:
        config["evaluation"] = evaluation
    path = Path(folder, METAEMBED_CONFIG_FILE)
    if config:
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    else:
        path.unlink(missing_ok=True)


def write_backbone_record(folder: str, backbone: str | None) -> None:
    """Write ``metaembed_config.json`` into ``folder`` naming the backbone (nothing when it is unknown)."""
    write_metaembed_config(folder, backbone)


def first_module_entry(path: str | Path) -> dict[str, Any] | None:
    """The ``modules.json`` entry of a local sentence-transformers folder's first module (None if there is none)."""
    modules_file = Path(path) / "modules.json"
    if not modules_file.is_file():
        return None
    try:
        modules: list[dict[str, Any]] = json.loads(modules_file.read_text(encoding="utf-8"))
        return min(modules, key=lambda module: int(module.get("idx", 0)))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def is_metaembed_type(class_ref: Any) -> bool:
    """Whether a ``modules.json`` type names MetaEmbed's backbone module (any spelling ending in the class name)."""
    return str(class_ref).endswith("MetaTransformer")


def module_folder(path: str | Path) -> Path | None:
    """The folder of a local saved MetaEmbed model's first module: its backbone files, meta tokens and
    ``metaembed_config.json`` (the model's folder itself for checkpoints that kept them at the top)."""
    first = first_module_entry(path)
    if first is None or not is_metaembed_type(first.get("type", "")):
        return None
    return Path(path) / str(first.get("path", ""))


def is_metaembed_folder(path: str | Path) -> bool:
    """Whether ``path`` is a local folder holding a saved MetaEmbed model."""
    return module_folder(path) is not None


def read_saved_model_info(path: str | Path) -> SavedModelInfo | None:
    """The meta-token counts, backbone and training record of a local MetaEmbed folder, from its JSON files alone.

    None when ``path`` is not a local folder of a sentence-transformers model whose first module is MetaEmbed's
    (a hub id, a missing path, another model): the caller then learns what it needs by loading the model. A
    malformed training record reads as None here (:func:`read_training_record` says what is wrong with it)."""
    folder = module_folder(path)
    if folder is None:
        return None
    try:
        config = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
        counts = int(config["num_query_meta_tokens"]), int(config["num_document_meta_tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    record_path = folder / METAEMBED_CONFIG_FILE
    try:
        training = read_training_record(record_path)
    except ValueError:
        training = None
    return SavedModelInfo(*counts, read_backbone_record(str(record_path)), training)


def sentence_transformers_max_length(name_or_path: str) -> int | None:
    """The ``max_seq_length`` a backbone declares as a sentence-transformers model (its ``sentence_bert_config.json``,
    e.g. 256 for all-MiniLM-L6-v2): the length it was trained to embed. None when it declares none or is unreachable."""
    folder = Path(name_or_path)
    if folder.is_dir():
        path: str | Path | None = folder / "sentence_bert_config.json"
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(str(name_or_path), "sentence_bert_config.json")
        except Exception:  # noqa: BLE001 -- offline, no such file or no such repository: nothing declared
            path = None
    try:
        length = json.loads(Path(path).read_text(encoding="utf-8")).get("max_seq_length") if path else None
    except (OSError, ValueError, AttributeError):
        return None
    return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None
