"""``MetaEmbed``: a sentence-transformers ``MultiVectorEncoder`` whose vectors are its meta tokens.

Every query becomes R_q vectors and every document R_c vectors, L2-normalised; a budget keeps a prefix.
Because it *is* a ``MultiVectorEncoder`` (modules.json, safetensors, hub loading, trainer, losses,
evaluators), it works wherever that ecosystem does; what is ours is the meta tokens and budgets, the saved
folder's layout and loading (metaembed.model.loading) and its model card (metaembed.model.card).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import MultiVectorEncoder
from sentence_transformers.base.modules import Dense, Normalize
from torch import Tensor

from metaembed.budgets import check_vector_budget
from metaembed.inputs import CHARS_PER_TOKEN, DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_IMAGE_SIDE, prepare_items
from metaembed.model.card import BudgetCurve, render_model_card
from metaembed.model.loading import LOAD_OPTIONS, add_requirement, load_modules, write_folder_marker
from metaembed.model.meta_pooling import MetaTokenPooling
from metaembed.model.meta_transformer import DOCUMENT_SIDE, QUERY_SIDE, MetaTransformer
from metaembed.model.query_weights import QueryVectorWeights
from metaembed.model.saved_config import (TrainingRecord, module_folder, read_metaembed_config, read_training_record,
                                          write_metaembed_config)
from metaembed.model.vlm import composed_vlm_path


def saved_by_version() -> str:
    """The installed metaembed version (what a saved folder requires at least)."""
    try:
        return version("metaembed")
    except PackageNotFoundError:
        return "0.1.0"


class MetaEmbed(MultiVectorEncoder):
    """A MetaEmbed model. Build one with :meth:`from_backbone`, load one with :meth:`from_pretrained`.

    Example::

        model = MetaEmbed.from_backbone("Qwen/Qwen2.5-VL-3B-Instruct", 16, 64)
        queries = model.encode_query(["a red bicycle"], budget=4)          # (1, 4, D)
        documents = model.encode_document(["bike.png", {"text": "...", "image": "a.jpg"}])  # (2, 64, D)
        scores = metaembed.maxsim(queries, documents, document_budget=8)   # (1, 2)
    """

    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    """The most pixels an image file may decode to (``None``: no limit); see ``metaembed.inputs``."""
    training_record: TrainingRecord | None = None
    """How ``metaembed train`` trained this model (MMR groups, temperature, ...); saved in its config, None if untrained."""
    budget_curve: BudgetCurve | None = None
    """An evaluation run's budget curve, saved in its config and shown in its model card (see :meth:`attach_budget_curve`)."""

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(
        cls,
        name_or_path: str,
        num_query_meta_tokens: int = 16,
        num_document_meta_tokens: int = 64,
        projection_dim: int | None = None,
        *,
        prompts: dict[str, str] | None = None,
        device: str | None = None,
        max_seq_length: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        processing_kwargs: dict[str, Any] | None = None,
        meta_token_init_seed: int = 0,
        meta_attention: str = "full",
        first_vector: str = "meta",
        meta_residual: bool | None = False,
        vision_tower: str | None = None,
        query_tail_weight: float | None = None,
        mixed_image_weight: float | None = None,
        **kwargs: Any,
    ) -> "MetaEmbed":
        """A new MetaEmbed model over a Hugging Face backbone (hub id or local folder).

        The query and document meta tokens are separate, freshly initialised parameters; ``projection_dim``
        adds a linear projection (no bias, no activation) before the L2 normalisation. ``prompts`` maps
        task names (``"query"``, ``"document"`` or your own) to instructions prepended to the text.
        ``meta_attention`` is ``"full"`` (the paper: every meta token reads the whole item), nested windows
        (``"document_windows"``, ``"windows"``: later vectors read ever finer parts; see model/meta_windows.py) or
        ``"document_lines"`` (vector v >= 2 reads the document's line v - 1) or ``"document_segments"`` (the same, the
        lines' own tokens also read apart; model/meta_segments.py) or ``"document_regions"`` (a composed VLM's
        document image: vector v >= 2 reads a region of its feature grid, quadrants first; model/meta_regions.py).
        ``first_vector="mean"`` makes each item's first vector the backbone's own mean pooling (the item's tokens
        never read the meta tokens), so the (1,1) budget starts exactly where the backbone stands and the meta
        tokens add vectors 2..R; ``"meta"`` (default) is the paper's; ``"auto"`` is ``"mean"`` where the backbone
        supports it (what training uses by default). ``meta_residual=True`` (with ``"mean"``) makes each meta vector
        that mean plus a zero-initialised linear map of its meta token's state, so every budget starts at the
        backbone's mean pooling (see MetaTokenPooling); ``None``: on exactly when the first vector is the mean.
        ``vision_tower`` (a folder or hub id of a model with a feature grid, e.g. MobileNetV2) makes a
        vision-language backbone of it and the language model ``name_or_path`` (see metaembed.model.vlm),
        composed once into the cache folder. ``query_tail_weight`` weighs a query's vectors 2..R_q together that many
        times vector 1 (see QueryVectorWeights: a larger budget adds to vector 1's score rather than averaging it
        away); None: every vector weighs the same (the paper). ``mixed_image_weight`` (a composed VLM with a mean first
        vector) is the share of an image+text item's mean that its image cells hold (None: one share per token).
        Other keyword arguments go to ``MultiVectorEncoder``.
        """
        if meta_residual and first_vector == "meta":
            raise ValueError("meta_residual=True adds to the item's mean: it needs first_vector='mean'")
        if vision_tower is not None:
            name_or_path = composed_vlm_path(vision_tower, name_or_path)
        backbone = MetaTransformer(
            name_or_path,
            num_query_meta_tokens=num_query_meta_tokens,
            num_document_meta_tokens=num_document_meta_tokens,
            meta_token_init_seed=meta_token_init_seed,
            meta_attention=meta_attention,
            first_vector=first_vector,
            mixed_image_weight=mixed_image_weight,
            max_seq_length=max_seq_length,
            model_kwargs=model_kwargs,
            processor_kwargs=processor_kwargs,
            config_kwargs=config_kwargs,
            processing_kwargs=processing_kwargs,
        )
        if meta_residual is None:
            meta_residual = backbone.first_vector == "mean"
        elif meta_residual and backbone.first_vector != "mean":  # "auto" chose the paper's layout for this backbone
            raise ValueError(f"meta_residual=True adds to the item's mean, but {name_or_path!r} cannot have a mean "
                             "first vector (first_vector='auto' chose 'meta')")
        hidden = backbone.query_meta_tokens.shape[1]
        modules: list[torch.nn.Module] = [backbone, MetaTokenPooling(residual_dim=hidden if meta_residual else None)]
        if projection_dim is not None:
            if projection_dim < 1:
                raise ValueError(f"projection_dim must be positive, got {projection_dim}")
            modules.append(
                Dense(hidden, projection_dim, bias=False, activation_function=None, module_input_name="token_embeddings")
            )
        modules.append(Normalize(module_input_name="token_embeddings"))
        if query_tail_weight is not None:
            modules.append(QueryVectorWeights(query_tail_weight))
        return cls(modules=modules, device=device, prompts=prompts, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str,
        *,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        similarity_fn_name: str | None = None,
        **kwargs: Any,
    ) -> "MetaEmbed":
        """Load a saved MetaEmbed model (a folder written by :meth:`save_pretrained`, or a hub id).

        Only MetaEmbed's and sentence-transformers' module classes are built (see metaembed.model.loading).
        The loading options of ``MultiVectorEncoder`` apply (``trust_remote_code``, which lets the *backbone's* own
        remote code run, as in transformers; ``token``, ``cache_folder``, ``revision``, ``local_files_only``,
        ``model_kwargs``, ``processor_kwargs``, ``config_kwargs``, ``backend``), as do its other arguments
        (``device``, ...); ``prompts`` and the other settings override the saved ones.
        ``FileNotFoundError`` if there is no saved model there, ``ValueError`` if it is another kind of model.
        """
        modules, settings, config_file = load_modules(
            path_or_hub_id, **{name: kwargs[name] for name in LOAD_OPTIONS if name in kwargs}
        )
        model = cls(
            modules=modules, prompts={**(settings.get("prompts") or {}), **(prompts or {})},
            default_prompt_name=default_prompt_name or settings.get("default_prompt_name"),
            similarity_fn_name=similarity_fn_name or settings.get("similarity_fn_name"), **kwargs,
        )
        model.training_record = read_training_record(config_file)
        evaluation = read_metaembed_config(config_file).get("evaluation")
        model.budget_curve = BudgetCurve.from_dict(evaluation) if isinstance(evaluation, dict) else None
        return model

    # ------------------------------------------------------------------------------ saving
    def save(
        self,
        path: str,
        model_name: str | None = None,
        create_model_card: bool = True,
        train_datasets: list[str] | None = None,
        safe_serialization: bool = True,
    ) -> None:
        """Save as a sentence-transformers folder (what ``save_pretrained`` calls), plus MetaEmbed's own files: the
        model's config (backbone, training record, budget curve), the top-level ``config.json`` that keeps it from
        loading as a plain model, and a MetaEmbed model card (README.md; ``model_name``: the id its usage lines load)."""
        if path is None:
            return
        super().save(path, model_name=model_name, create_model_card=False, train_datasets=train_datasets,
                     safe_serialization=safe_serialization)
        folder = module_folder(path)
        if folder is None:
            raise ValueError(f"{path}: the saved modules.json does not start with MetaEmbed's module")
        self._write_config(folder)
        if folder.resolve() != Path(path).resolve():
            write_folder_marker(path)
        add_requirement(path, saved_by_version())
        if create_model_card:
            self.write_model_card(path, model_name)

    def attach_budget_curve(self, path: str, curve: BudgetCurve) -> None:
        """Attach an evaluation run's budget curve to this model, saved in ``path`` (this model's saved folder):
        its config records the curve and its model card shows it. No weights are written."""
        folder = module_folder(path)
        if folder is None:
            raise ValueError(f"{path}: not a saved MetaEmbed folder")
        self.budget_curve = curve
        self._write_config(folder)
        self.write_model_card(path)

    def write_model_card(self, path: str, model_name: str | None = None) -> Path:
        """(Re)write ``README.md`` in ``path``; its usage lines load the model by ``model_name`` (default: ``path``)."""
        card = Path(path, "README.md")
        card.write_text(render_model_card(self, model_name or str(path), self.training_record, self.budget_curve),
                        encoding="utf-8")
        return card

    def _write_config(self, folder: Path) -> None:
        write_metaembed_config(folder, self.backbone_name_or_path, self.training_record,
                               self.budget_curve.to_dict() if self.budget_curve else None)

    # ------------------------------------------------------------------------------ properties
    @property
    def backbone(self) -> MetaTransformer:
        """The first module: the Hugging Face backbone with the meta tokens."""
        return self[0]

    @property
    def backbone_name_or_path(self) -> str | None:
        """The backbone this model was built from (hub id or absolute folder), saved with it; None if unrecorded."""
        return self.backbone.backbone_name_or_path

    @property
    def num_query_meta_tokens(self) -> int:
        return self.backbone.num_query_meta_tokens

    @property
    def num_document_meta_tokens(self) -> int:
        return self.backbone.num_document_meta_tokens

    @property
    def embedding_dim(self) -> int:
        """D: the size of every vector (the projection size, or the backbone's hidden size)."""
        dense = [module for module in self if isinstance(module, Dense)]
        return dense[-1].out_features if dense else self.backbone.query_meta_tokens.shape[1]

    @property
    def accepts_images(self) -> bool:
        return self.supports("image") or self.supports("message") and self._processor_has_images()

    def _processor_has_images(self) -> bool:
        return getattr(self.backbone.processor, "image_processor", None) is not None

    def max_text_chars(self, side: str) -> int | None:
        """Characters of an item's text kept before tokenizing: :data:`CHARS_PER_TOKEN` per token it may keep."""
        tokens = self.backbone._max_real_tokens(None, self.backbone.num_appended_meta_tokens(side))
        return None if tokens is None else max(tokens, 1) * CHARS_PER_TOKEN

    # ------------------------------------------------------------------------------ training
    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict[str, Any] | None = None, every_n_layers: int = 1, offload: bool = False
    ) -> None:
        """Recompute the backbone's activations in backward (what the HF Trainer calls for ``activation_checkpointing``)."""
        backbone = self.backbone.model
        if hasattr(backbone, "activation_checkpointing_enable"):
            backbone.activation_checkpointing_enable(
                activation_checkpointing_kwargs=activation_checkpointing_kwargs, every_n_layers=every_n_layers, offload=offload
            )
        else:  # transformers releases before the rename
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=activation_checkpointing_kwargs)

    # ------------------------------------------------------------------------------ encoding
    def encode_query(  # type: ignore[override]
        self,
        items: Any,
        budget: int | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        *,
        prompt: str | None = None,
        prompt_name: str | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Encode queries: a float tensor (n, r, D) of unit vectors, r = ``budget`` or R_q.

        An item is a string, a PIL image, an image path, or ``{"text": ..., "image": ...}``. ``prompt``
        (or ``prompt_name``, a key of ``model.prompts``) is an instruction prepended to the text.
        """
        return self._encode_side(QUERY_SIDE, items, budget, batch_size, show_progress_bar, prompt, prompt_name, kwargs)

    def encode_document(  # type: ignore[override]
        self,
        items: Any,
        budget: int | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        *,
        prompt: str | None = None,
        prompt_name: str | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Encode documents (candidates): a float tensor (n, r, D) of unit vectors, r = ``budget`` or R_c."""
        return self._encode_side(DOCUMENT_SIDE, items, budget, batch_size, show_progress_bar, prompt, prompt_name, kwargs)

    def _encode_side(
        self,
        side: str,
        items: Any,
        budget: int | None,
        batch_size: int,
        show_progress_bar: bool | None,
        prompt: str | None,
        prompt_name: str | None,
        extra: dict[str, Any],
    ) -> Tensor:
        available = self.backbone.num_meta_tokens(side)
        r = check_vector_budget(budget, available, side)
        if isinstance(items, (str, dict)) or not isinstance(items, Sequence):
            items = [items]
        prepared = prepare_items(items, accepts_images=self.accepts_images, max_image_side=self.max_image_side,
                                 max_image_pixels=self.max_image_pixels, max_text_chars=self.max_text_chars(side))
        if not prepared:
            return torch.empty(0, r, self.embedding_dim)
        if prompt is None and prompt_name is None and side in self.prompts:
            prompt_name = side
        encode = super().encode_query if side == QUERY_SIDE else super().encode_document
        vectors = encode(
            prepared,
            prompt_name=prompt_name,
            prompt=prompt,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            **extra,
        )
        return torch.stack(vectors)[:, :r]
