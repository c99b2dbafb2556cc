"""How a saved MetaEmbed folder loads, and how it refuses to load as something it is not.

The folder is a sentence-transformers ``MultiVectorEncoder`` folder whose ``modules.json`` names MetaEmbed's
module classes (``metaembed.model.meta_transformer.MetaTransformer``, ``metaembed.model.meta_pooling.MetaTokenPooling``)
and sentence-transformers' own (``Dense``, ``Normalize``). The ways to load it:

- ``MetaEmbed.from_pretrained(path)`` (:func:`load_modules`): reads ``modules.json`` and builds each module with
  its class's public ``load``, accepting only MetaEmbed's classes and sentence-transformers' (nothing named by
  the checkpoint is imported), then gives them to the model's ``modules=`` argument. ``trust_remote_code`` is
  passed on untouched: it only decides whether the backbone's own remote code may run.
- ``sentence_transformers.MultiVectorEncoder(path, trust_remote_code=True)`` where metaembed is installed: the
  same modules, so the same vectors (a plain ``MultiVectorEncoder`` without MetaEmbed's budgets and item checks).
  Without the flag, sentence-transformers refuses the metaembed classes and says to pass it; where metaembed is
  not installed, the ``requirements`` in ``config_sentence_transformers.json`` say to install it.
- ``SentenceTransformer(path)``, ``AutoModel.from_pretrained(path)``: refused. The backbone lives in the first
  module's folder, and the folder's top-level ``config.json`` (:func:`write_folder_marker`) declares model type
  ``metaembed``, so nothing can quietly load the bare backbone and mean-pool it into one vector. Where this module
  is imported (any use of ``metaembed.MetaEmbed`` or ``metaembed.model``; ``import metaembed`` alone is lazy and
  imports nothing of the model), that config raises :class:`NotATransformersModelError`, which names the right
  loader; elsewhere transformers says it does not know the model type ``metaembed``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from sentence_transformers.util import check_version_requirements, import_from_string, load_file_path
from torch import nn
from transformers import AutoConfig, PretrainedConfig

from metaembed.model.meta_pooling import MetaTokenPooling
from metaembed.model.meta_transformer import MetaTransformer
from metaembed.model.query_weights import QueryVectorWeights
from metaembed.model.saved_config import METAEMBED_CONFIG_FILE, is_metaembed_type

MODEL_TYPE = "metaembed"
"""The ``model_type`` of a MetaEmbed folder's top-level ``config.json``."""

LOAD_HINT = (
    "Load it with metaembed.MetaEmbed.from_pretrained(path) (pip install metaembed), or in sentence-transformers "
    "with MultiVectorEncoder(path, trust_remote_code=True) where metaembed is installed."
)

OWN_MODULE_CLASSES: dict[str, type[nn.Module]] = {
    f"{cls.__module__}.{cls.__name__}": cls for cls in (MetaTransformer, MetaTokenPooling, QueryVectorWeights)
}
"""The ``modules.json`` types that are MetaEmbed's own, resolved to the classes already imported here."""


LOAD_OPTIONS = ("trust_remote_code", "token", "cache_folder", "revision", "local_files_only", "model_kwargs",
                "processor_kwargs", "config_kwargs", "backend")
"""The keyword arguments of ``MultiVectorEncoder`` that :func:`load_modules` takes too."""


class NotATransformersModelError(ValueError):
    """A MetaEmbed folder was opened as a plain transformers or single-vector sentence-transformers model."""


class MetaEmbedFolderConfig(PretrainedConfig):
    """The top-level ``config.json`` of a MetaEmbed folder: it marks the folder, it is not a model to build.

    Registered with ``AutoConfig`` for the model type ``metaembed``, so that transformers' Auto classes (and
    sentence-transformers' ``SentenceTransformer``, which builds on them) get a clear error instead of a backbone
    without its meta tokens."""

    model_type = MODEL_TYPE

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> "MetaEmbedFolderConfig":
        raise NotATransformersModelError(
            "This folder is a MetaEmbed model (several meta-token vectors per item, scored by late interaction), not "
            "a transformers model: loading it as one, or as a SentenceTransformer, would drop its meta tokens and "
            f"give one pooled vector. {LOAD_HINT}"
        )


AutoConfig.register(MODEL_TYPE, MetaEmbedFolderConfig, exist_ok=True)


def write_folder_marker(folder: str | Path) -> None:
    """Write the top-level ``config.json`` that keeps a MetaEmbed folder from loading as a plain model."""
    marker = {
        "model_type": MODEL_TYPE,
        "architectures": ["MetaEmbed"],
        "note": "A MetaEmbed model; the backbone is in the first module's folder (modules.json). " + LOAD_HINT,
    }
    Path(folder, "config.json").write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def add_requirement(folder: str | Path, version: str) -> None:
    """Declare metaembed in ``config_sentence_transformers.json``'s ``requirements``, so sentence-transformers
    says to install it (before anything else) where it is missing."""
    path = Path(folder, "config_sentence_transformers.json")
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    config.setdefault("requirements", {})["metaembed"] = {
        "specifier": f">={version}", "reason": "This is a MetaEmbed model. " + LOAD_HINT,
    }
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def module_class(class_ref: str, source: str) -> type[nn.Module]:
    """The class of a ``modules.json`` entry: MetaEmbed's own or a sentence-transformers one, nothing else."""
    if class_ref in OWN_MODULE_CLASSES:
        return OWN_MODULE_CLASSES[class_ref]
    if class_ref.startswith("sentence_transformers."):
        return import_from_string(class_ref)
    raise ValueError(
        f"{source!r} names the module class {class_ref!r}, which is neither MetaEmbed's nor sentence-transformers': "
        "MetaEmbed.from_pretrained does not import classes named by a checkpoint"
    )


def load_modules(
    path: str,
    *,
    trust_remote_code: bool = False,
    token: bool | str | None = None,
    cache_folder: str | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    processor_kwargs: dict[str, Any] | None = None,
    config_kwargs: dict[str, Any] | None = None,
    backend: str = "torch",
) -> tuple[OrderedDict[str, nn.Module], dict[str, Any], str | None]:
    """The modules of a saved MetaEmbed model (local folder or hub id), its ``config_sentence_transformers.json``
    settings, and the path of its ``metaembed_config.json`` (None if it has none).

    ``FileNotFoundError`` when there is no ``modules.json``; ``ValueError`` when it is another kind of model."""
    hub = {"token": token, "cache_folder": cache_folder, "revision": revision, "local_files_only": local_files_only}
    modules_file = load_file_path(path, "modules.json", **hub)
    if modules_file is None:
        raise FileNotFoundError(f"{path!r} has no modules.json: not a saved MetaEmbed model (or no such folder or hub id)")
    entries: list[dict[str, Any]] = sorted(json.loads(Path(modules_file).read_text(encoding="utf-8")),
                                           key=lambda entry: int(entry.get("idx", 0)))
    first = entries[0] if entries else {}
    if not is_metaembed_type(first.get("type", "")):
        kind = str(first.get("type", "empty")).rsplit(".", 1)[-1]
        raise ValueError(f"{path!r} is a {kind} model, not a MetaEmbed checkpoint")
    settings_file = load_file_path(path, "config_sentence_transformers.json", **hub)
    settings = json.loads(Path(settings_file).read_text(encoding="utf-8")) if settings_file else {}
    check_version_requirements(settings.get("requirements"), source=path)

    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for entry in entries:
        cls = module_class(str(entry.get("type", "")), path)
        modules[str(entry["name"])] = cls.load(
            path, subfolder=entry.get("path", ""), **hub, trust_remote_code=trust_remote_code,
            model_kwargs=dict(model_kwargs or {}), processor_kwargs=dict(processor_kwargs or {}),
            config_kwargs=dict(config_kwargs or {}), backend=backend,
        )
    try:
        config_file = load_file_path(path, METAEMBED_CONFIG_FILE, subfolder=first.get("path", ""), **hub)
    except OSError:
        config_file = None
    return modules, settings, config_file
