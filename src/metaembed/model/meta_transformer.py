"""The backbone with Meta Tokens: a sentence-transformers ``Transformer`` module that appends learnable
meta tokens after every real token of each item.

How meta tokens enter the sequence (one mechanism for encoders, decoder LLMs and VLMs):

1. After the backbone's own tokenizer / processor has built the batch (chat template, image
   placeholders, truncation), each row is re-packed as ``[real tokens..., meta_1, ..., meta_R]`` and
   re-padded on the tokenizer's own padding side. The meta tokens therefore come after every real
   token of the item, whatever the padding side, so causal attention lets them see all of it.
2. Meta tokens are *reserved token ids* just past the vocabulary. A hook on the backbone's input
   embedding layer looks them up in this module's own parameters (``query_meta_tokens``,
   ``document_meta_tokens``) instead of the vocabulary table.

Why not ``inputs_embeds``: VLMs (Qwen2-VL, Idefics3, LLaVA) need ``input_ids`` to place image features
and to compute multimodal rotary positions, and refuse ``input_ids`` together with ``inputs_embeds``.
Why not new vocabulary rows: with LoRA or a frozen backbone, the embedding matrix is frozen, and
resizing it changes the backbone's checkpoint. Reserved ids + an embedding hook keep the processor,
positions and image handling of every family intact, keep the backbone checkpoint untouched, and make
the meta tokens ordinary parameters that are trained in full and saved in ``meta_tokens.safetensors``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from sentence_transformers.base.modules import Transformer
from sentence_transformers.util import load_dir_path
from torch import Tensor, nn
from transformers.utils import logging

from metaembed.model.vlm import MetaEmbedVLMModel  # also registers the composed vision-language backbone (Auto classes)
from metaembed.model.vlm.configuration import COMPOSED_VLM_OPTIONAL_LAYERS
from metaembed.model.meta_regions import region_attention
from metaembed.model.meta_segments import line_segment_ids, segment_attention
from metaembed.model.meta_windows import (AUTO_FIRST_VECTOR, AUTO_META_ATTENTION, DOCUMENT_LINES, DOCUMENT_SEGMENTS,
                                         FIRST_VECTORS, FULL, check_meta_attention, meta_blind_attention,
                                         nested_window_attention, region_sides, segmented_sides, windowed_sides)
from metaembed.model.saved_config import (METAEMBED_CONFIG_FILE, read_backbone_record, recorded_backbone_name,
                                          write_backbone_record)

logger = logging.get_logger(__name__)

META_TOKENS_FILE = "meta_tokens.safetensors"
QUERY_SIDE, DOCUMENT_SIDE = "query", "document"

# Features computed here for our own pooling; they must never reach the backbone's forward.
_PRIVATE_FEATURES = ("meta_positions", "segment_ids")


def side_of_task(task: str | None) -> str:
    """Queries use the query meta tokens; documents (and untyped inputs) the document meta tokens."""
    return QUERY_SIDE if task == QUERY_SIDE else DOCUMENT_SIDE


class MetaTransformer(Transformer):
    """A Hugging Face backbone (encoder, decoder LLM or VLM) with separate query and document meta tokens.

    Its output keeps the backbone's ``token_embeddings`` and adds ``meta_positions`` (batch, R): where the
    R meta tokens of each row sit, for :class:`~metaembed.model.meta_pooling.MetaTokenPooling`.
    """

    config_keys: list[str] = [*Transformer.config_keys, "num_query_meta_tokens", "num_document_meta_tokens", "meta_attention",
                              "first_vector", "composed_vlm_layers", "mixed_image_weight"]
    save_in_root: bool = False
    """Saved in its own folder (``0_MetaTransformer``), not at the top of the model's folder: see metaembed.model.loading."""

    def __init__(
        self,
        model_name_or_path: str,
        *,
        num_query_meta_tokens: int = 16,
        num_document_meta_tokens: int = 64,
        meta_token_init_seed: int = 0,
        meta_attention: str = FULL,
        first_vector: str = "meta",
        composed_vlm_layers: dict[str, bool] | None = None,
        mixed_image_weight: float | None = None,
        **kwargs: Any,
    ) -> None:
        if composed_vlm_layers:  # see the property of that name
            kwargs["config_kwargs"] = {**(kwargs.get("config_kwargs") or {}), **composed_vlm_layers}
        if first_vector not in (*FIRST_VECTORS, AUTO_FIRST_VECTOR):
            raise ValueError(f"first_vector must be one of {', '.join((*FIRST_VECTORS, AUTO_FIRST_VECTOR))}, "
                             f"got {first_vector!r}")
        if mixed_image_weight is not None and not 0.0 < mixed_image_weight < 1.0:
            raise ValueError(f"mixed_image_weight must lie strictly between 0 and 1, got {mixed_image_weight!r}")
        self.mixed_image_weight = mixed_image_weight
        """The share of an image+text item's mean first vector that its image cells hold (the rest: its text and
        special tokens); None: every own token weighs the same, so a 7 x 7 grid outweighs a short caption ~4 to 1."""
        self.first_vector = first_vector
        """``meta`` (the paper) or ``mean`` (vector 1 is the backbone's mean pooling; see FIRST_VECTORS); ``auto``
        becomes one of them once the backbone is loaded."""
        resolved_later = check_meta_attention(meta_attention) == AUTO_META_ATTENTION
        self._windowed_sides = () if resolved_later else windowed_sides(meta_attention)
        self._segmented_sides = () if resolved_later else segmented_sides(meta_attention)
        self._region_sides = () if resolved_later else region_sides(meta_attention)
        self.meta_attention = meta_attention
        """What meta tokens attend to: ``full`` (the paper), nested windows (see metaembed.model.meta_windows), a
        document's lines (metaembed.model.meta_segments) or a document image's grid regions (metaembed.model.meta_regions);
        ``auto`` becomes one of them once the backbone is loaded."""
        for name, value in (("num_query_meta_tokens", num_query_meta_tokens), ("num_document_meta_tokens", num_document_meta_tokens)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        # Meta positions are gathered from a padded (batch, seq) layout: never flatten the batch.
        kwargs["unpad_inputs"] = False
        self.num_query_meta_tokens = num_query_meta_tokens
        self.num_document_meta_tokens = num_document_meta_tokens
        self.backbone_name_or_path: str | None = recorded_backbone_name(model_name_or_path)
        """The backbone this model was built from (saved in ``metaembed_config.json``; None for older checkpoints)."""
        super().__init__(model_name_or_path, **kwargs)
        if self.first_vector == AUTO_FIRST_VECTOR:
            self.first_vector = "mean" if self._supports_mean_first_vector() else "meta"
        if self.meta_attention == AUTO_META_ATTENTION:
            self.meta_attention = DOCUMENT_LINES if self._reads_lines() else FULL
            self._segmented_sides = segmented_sides(self.meta_attention)

        embeddings = self.model.get_input_embeddings()
        hidden_size = embeddings.weight.shape[1]
        vocabulary = embeddings.weight.shape[0]
        if self.tokenizer is not None:
            vocabulary = max(vocabulary, len(self.tokenizer))
        self.meta_token_id_base = vocabulary
        # Start the meta tokens where real token embeddings live (same mean and spread), so the
        # backbone's first layer sees inputs of a familiar scale.
        with torch.no_grad():
            reference = embeddings.weight.detach().float()
            mean, std = reference.mean(dim=0), reference.std(dim=0)
        generator = torch.Generator().manual_seed(meta_token_init_seed)
        self.query_meta_tokens = nn.Parameter(
            mean + std * torch.randn(num_query_meta_tokens, hidden_size, generator=generator)
        )
        self.document_meta_tokens = nn.Parameter(
            mean + std * torch.randn(num_document_meta_tokens, hidden_size, generator=generator)
        )
        self._pending_meta_lookup: tuple[Tensor, Tensor] | None = None
        if kwargs.get("max_seq_length") is not None:
            self._check_room_for_meta_tokens(kwargs["max_seq_length"])
        if hasattr(self.config, "vision_config") and getattr(self.processor, "image_processor", None) is None:
            logger.warning(
                f"{model_name_or_path!r} is a vision-language model but only its tokenizer could be loaded, so "
                "images will be refused. (transformers 5 builds some VLM processors, e.g. Qwen2-VL's, with a "
                "video processor that needs torchvision.)"
            )
        if self._region_sides and not (self._is_composed_vlm() and self.first_vector == "mean"):
            raise ValueError(f"meta_attention='document_regions' reads the feature grid of metaembed's composed "
                             f"vision-language backbone, with first_vector='mean'; {model_name_or_path!r} with "
                             f"first_vector={self.first_vector!r} is not one")
        if self._windowed_sides or self._segmented_sides or (first_vector == "mean" and not self._is_causal()):
            self._check_windows_supported(model_name_or_path)
        if mixed_image_weight is not None and not (self._is_composed_vlm() and self.first_vector == "mean"):
            raise ValueError("mixed_image_weight weighs the image cells in the mean first vector of a composed "
                             f"vision-language backbone; {model_name_or_path!r} with first_vector={self.first_vector!r} "
                             "has none")
        embeddings.register_forward_pre_hook(self._swap_meta_ids_for_lookup)
        embeddings.register_forward_hook(self._write_meta_embeddings)

    # ----------------------------------------------------------------------------------------- ids
    def meta_token_ids(self, side: str) -> Tensor:
        """The reserved ids of one side's meta tokens, in order."""
        if side == QUERY_SIDE:
            start, count = self.meta_token_id_base, self.num_query_meta_tokens
        else:
            start, count = self.meta_token_id_base + self.num_query_meta_tokens, self.num_document_meta_tokens
        return torch.arange(start, start + count, dtype=torch.long)

    def num_meta_tokens(self, side: str) -> int:
        """This side's vectors: its meta tokens (one fewer appended with ``first_vector="mean"``)."""
        return self.num_query_meta_tokens if side == QUERY_SIDE else self.num_document_meta_tokens

    def num_appended_meta_tokens(self, side: str) -> int:
        """Meta tokens appended to an item of this side: one per vector, less the mean vector when it is first."""
        return self.num_meta_tokens(side) - (self.first_vector == "mean")

    # ------------------------------------------------------------------------------ embedding hook
    def _swap_meta_ids_for_lookup(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        input_ids = args[0] if args else None
        if not isinstance(input_ids, Tensor):
            return None
        is_meta = input_ids >= self.meta_token_id_base
        if not bool(is_meta.any()):
            self._pending_meta_lookup = None
            return None
        self._pending_meta_lookup = (is_meta, input_ids[is_meta] - self.meta_token_id_base)
        return (input_ids.masked_fill(is_meta, 0), *args[1:])

    def _write_meta_embeddings(self, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor | None:
        pending, self._pending_meta_lookup = self._pending_meta_lookup, None
        if pending is None:
            return None
        is_meta, table_rows = pending
        table = torch.cat([self.query_meta_tokens, self.document_meta_tokens], dim=0)
        output = output.clone()
        output[is_meta] = table[table_rows.to(table.device)].to(output.dtype)
        return output

    # ------------------------------------------------------------------------------ preprocessing
    @property
    def position_limit(self) -> int | None:
        """The most tokens the backbone can take in one sequence (real and meta tokens together), if it says."""
        max_positions = getattr(self.config.get_text_config(), "max_position_embeddings", None)
        return max_positions if isinstance(max_positions, int) and 0 < max_positions < 10**9 else None

    @property
    def max_seq_length(self) -> int | None:
        """The most tokens an item keeps of its *own* (text, image placeholders); meta tokens come on top."""
        return Transformer.max_seq_length.fget(self)

    @max_seq_length.setter
    def max_seq_length(self, value: int | None) -> None:
        if value is not None:
            self._check_room_for_meta_tokens(value)
        Transformer.max_seq_length.fset(self, value)

    def _check_room_for_meta_tokens(self, max_seq_length: int) -> None:
        """Refuse a length whose items plus meta tokens would not fit the backbone's positions."""
        if not isinstance(max_seq_length, int) or max_seq_length < 1:
            raise ValueError(f"max_seq_length must be a positive integer, got {max_seq_length!r}")
        limit, num_meta = self.position_limit, max(self.num_query_meta_tokens, self.num_document_meta_tokens)
        if limit is not None and max_seq_length + num_meta > limit:
            raise ValueError(
                f"max_seq_length {max_seq_length} counts an item's own tokens, and {num_meta} meta tokens are "
                f"appended after them: the backbone takes at most {limit} positions, so max_seq_length can be at "
                f"most {limit - num_meta}"
            )

    def _max_real_tokens(self, requested: int | None, num_meta: int) -> int | None:
        """How many of an item's own tokens to keep: ``requested`` (or max_seq_length), within the room the
        backbone's positions leave after the meta tokens."""
        wanted = requested or self.max_seq_length
        wanted = wanted if wanted and wanted < 10**9 else None
        limit = self.position_limit
        if limit is None:
            return wanted
        room = limit - num_meta
        if room < 2:
            raise ValueError(f"the backbone takes at most {limit} tokens, too few for {num_meta} meta tokens and any content")
        return min(wanted, room) if wanted else room

    def preprocess(self, inputs, prompt: str | None = None, processing_kwargs=None, **kwargs) -> dict[str, Any]:
        """Tokenize/process like the backbone does, then append this side's meta tokens to every row."""
        side = side_of_task(kwargs.get("task"))
        num_meta = self.num_appended_meta_tokens(side)
        kwargs["max_length"] = self._max_real_tokens(kwargs.get("max_length"), num_meta)
        texts = self._segmented_texts(inputs, prompt) if side in self._segmented_sides else None
        if texts is not None:
            processing_kwargs = dict(processing_kwargs or {})
            processing_kwargs["text"] = {**processing_kwargs.get("text", {}), "return_offsets_mapping": True}
        features = super().preprocess(inputs, prompt=prompt, processing_kwargs=processing_kwargs, **kwargs)
        if not features:
            return features
        if "input_ids" not in features or "attention_mask" not in features:
            raise ValueError(
                "meta tokens need a token sequence: this backbone's processor returned no input_ids/attention_mask"
            )
        if texts is not None:
            if "offset_mapping" not in features:
                raise ValueError(f"meta_attention={self.meta_attention!r} finds a document's lines from the tokenizer's "
                                 "character offsets, but this backbone's processor returned none (it renders text "
                                 "through a chat template or a processor): use a plain text backbone")
            features["segment_ids"] = line_segment_ids(texts, features.pop("offset_mapping"))
        return self._append_meta_tokens(features, self.meta_token_ids(side)[:num_meta])

    def _segmented_texts(self, inputs, prompt: str | None) -> list[str] | None:
        """The strings a segmented side's batch tokenizes (prompt first), or None when the batch is not plain text
        (images, messages: one segment each)."""
        if not isinstance(inputs, (list, tuple)) or not all(isinstance(item, str) for item in inputs):
            return None
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"meta_attention={self.meta_attention!r} finds a document's lines from a fast tokenizer's "
                             f"character offsets, but this backbone's tokenizer ({type(self.tokenizer).__name__}) is not fast")
        return [f"{prompt}{item}" if prompt else item for item in inputs]

    def _append_meta_tokens(self, features: dict[str, Any], meta_ids: Tensor) -> dict[str, Any]:
        input_ids: Tensor = features["input_ids"]
        attention_mask: Tensor = features["attention_mask"].bool()
        batch, width = input_ids.shape
        num_meta = meta_ids.numel()
        lengths = attention_mask.sum(dim=1)
        new_width = int(lengths.max()) + num_meta
        left_padding = getattr(self.tokenizer, "padding_side", "right") == "left"
        pad_id = getattr(self.tokenizer, "pad_token_id", None)
        pad_id = 0 if pad_id is None else pad_id

        # Every other per-token feature (token_type_ids, mm_token_type_ids, ...) is re-packed alike,
        # with 0 at the meta positions.
        per_token_keys = [
            key
            for key, value in features.items()
            if isinstance(value, Tensor) and value.shape[:2] == (batch, width) and key not in ("input_ids", "attention_mask")
        ]
        new_ids = torch.full((batch, new_width), pad_id, dtype=input_ids.dtype)
        new_mask = torch.zeros((batch, new_width), dtype=features["attention_mask"].dtype)
        new_other = {key: torch.zeros((batch, new_width), dtype=features[key].dtype) for key in per_token_keys}
        meta_positions = torch.empty((batch, num_meta), dtype=torch.long)
        for row in range(batch):
            real = attention_mask[row].nonzero(as_tuple=True)[0]
            length = real.numel()
            start = new_width - length - num_meta if left_padding else 0
            content = slice(start, start + length)
            meta = slice(start + length, start + length + num_meta)
            new_ids[row, content] = input_ids[row, real]
            new_ids[row, meta] = meta_ids
            new_mask[row, start : start + length + num_meta] = 1
            for key in per_token_keys:
                new_other[key][row, content] = features[key][row, real]
            meta_positions[row] = torch.arange(meta.start, meta.stop)

        features.update(new_other)
        features["input_ids"] = new_ids
        features["attention_mask"] = new_mask
        features["meta_positions"] = meta_positions
        if self._uses_plain_positions(features):
            # Positions counted over real tokens only: a row gets the same positions alone or padded.
            features["position_ids"] = (new_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        return features

    def _uses_plain_positions(self, features: dict[str, Any]) -> bool:
        """Text backbones and metaembed's composed VLM take 1-D position ids; other VLMs compute their own
        (multimodal rotary) positions."""
        if (hasattr(self.config, "vision_config") or "pixel_values" in features) and not self._is_composed_vlm():
            return False
        params = self.model_forward_params if self.model_forward_params is not None else self._declared_forward_params
        return "position_ids" in params

    # ----------------------------------------------------------------------------- nested windows
    def _attention_implementation(self) -> str:
        return getattr(self.model.config, "_attn_implementation", None) or "eager"

    def _is_composed_vlm(self) -> bool:
        """Whether the backbone is metaembed's own composed VLM (metaembed.model.vlm), which hands 1-D positions and
        an explicit attention mask to its language model as a text backbone takes them."""
        return isinstance(self.model, MetaEmbedVLMModel)

    def _weigh_image_cells(self, own: Tensor, input_ids: Tensor) -> Tensor:
        """(batch, seq) float weights of the own tokens for the mean: in a row holding image cells and text (a token
        neither a cell nor special), the cells share ``mixed_image_weight`` of the row's total and the other own tokens
        the rest, each group evenly; any other row keeps weight 1 per own token. The total stays the own-token count."""
        cells = own & (input_ids == self.model.config.image_token_id)
        special = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), device=input_ids.device)
        text = own & ~cells & ~torch.isin(input_ids, special)
        weights = own.float()
        mixed = cells.any(dim=1) & text.any(dim=1)
        if not bool(mixed.any()):
            return weights
        total, cell_count = own.sum(dim=1, keepdim=True).float(), cells.sum(dim=1, keepdim=True).float()
        rest = own & ~cells
        cell_weight = self.mixed_image_weight * total / cell_count.clamp(min=1)
        rest_weight = (1 - self.mixed_image_weight) * total / (total - cell_count).clamp(min=1)
        weighted = torch.where(cells, cell_weight, torch.where(rest, rest_weight, torch.zeros_like(weights)))
        return torch.where(mixed.unsqueeze(1), weighted, weights)

    @property
    def composed_vlm_layers(self) -> dict[str, bool] | None:
        """A composed VLM's optional layers (added by the training warm start), saved with the module and applied to
        the backbone's config on load: a LoRA adapter saves only its own weights and names the base it was made on,
        so without them the base would be rebuilt without those layers and their trained weights dropped."""
        if not self._is_composed_vlm():
            return None
        return {name: bool(getattr(self.model.config, name, False)) for name in COMPOSED_VLM_OPTIONAL_LAYERS}

    def _takes_explicit_mask(self) -> bool:
        """Whether this backbone takes the explicit 4-D attention mask that nested windows (and a mean first vector
        over a bidirectional backbone) need: a text backbone or a composed VLM with ``sdpa`` or ``eager`` attention."""
        text_like = not hasattr(self.config, "vision_config") or self._is_composed_vlm()
        return text_like and self._attention_implementation() in ("sdpa", "eager")

    def _check_windows_supported(self, model_name_or_path: str) -> None:
        """Nested windows, and a mean first vector over a bidirectional backbone, need :meth:`_takes_explicit_mask`;
        windows and lines are for text backbones only."""
        by_attention = bool(self._windowed_sides or self._segmented_sides)
        if self._takes_explicit_mask() and not (by_attention and hasattr(self.config, "vision_config")):
            return
        setting = f"meta_attention={self.meta_attention!r}" if by_attention else "first_vector='mean'"
        if hasattr(self.config, "vision_config"):
            raise ValueError(
                f"{setting}: {model_name_or_path!r} is a vision-language model, whose attention masks and positions "
                "are built inside the model; this works with text backbones only"
                + ("" if by_attention else " (or a decoder, whose meta tokens come last)")
            )
        raise ValueError(
            f"{setting} needs attn_implementation 'sdpa' or 'eager' (an explicit "
            f"attention mask), but {model_name_or_path!r} uses {self._attention_implementation()!r}"
        )

    def _reads_lines(self) -> bool:
        """Whether ``document_lines`` works here: a text backbone taking an explicit mask, with a fast tokenizer
        (whose character offsets find the lines)."""
        text = not hasattr(self.config, "vision_config")
        return text and self._takes_explicit_mask() and bool(getattr(self.tokenizer, "is_fast", False))

    def _supports_mean_first_vector(self) -> bool:
        """Whether ``first_vector="mean"`` works here: a decoder (its meta tokens come last) or a backbone that
        takes the explicit mask keeping its own tokens blind to the meta tokens."""
        return self._is_causal() or self._takes_explicit_mask()

    def reads_windows(self, side: str) -> bool:
        """Whether this side's meta tokens read nested windows of the item (rather than all of it)."""
        return side in self._windowed_sides

    def _is_causal(self) -> bool:
        """Whether the backbone's own tokens attend causally (a decoder LLM) rather than both ways."""
        if getattr(self, "_causal", None) is None:  # found once: walking every module is not for each batch
            self._causal = any(getattr(module, "is_causal", False) is True for module in self.model.modules())
        return self._causal

    def _attention_mask(self, features: dict[str, Any], meta_positions: Tensor,
                        segment_ids: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """The 4-D attention mask this batch needs: lines read apart or nested windows where its side reads them,
        else (first_vector 'mean', bidirectional backbone) the item's own tokens blind to the meta tokens; None for
        the plain mask. Second, with lines, what each meta vector averages (``reads`` of segment_attention)."""
        reads = None
        if meta_positions.shape[1] == 0:
            return None, None
        first_meta_id = features["input_ids"].gather(1, meta_positions[:, :1].to(features["input_ids"].device))
        side = QUERY_SIDE if bool((first_meta_id < self.meta_token_id_base + self.num_query_meta_tokens).all()) else DOCUMENT_SIDE
        if side in self._region_sides:
            cells = features["input_ids"] == self.model.config.image_token_id
            allowed, reads = region_attention(features["attention_mask"], meta_positions, cells,
                                              causal=self._is_causal(), first_ordinal=1 + (self.first_vector == "mean"))
        elif side in self._segmented_sides and segment_ids is not None:
            allowed, reads = segment_attention(features["attention_mask"], meta_positions, segment_ids,
                                               causal=self._is_causal(), first_ordinal=1 + (self.first_vector == "mean"),
                                               apart=self.meta_attention == DOCUMENT_SEGMENTS)
        elif self.reads_windows(side):
            allowed = nested_window_attention(features["attention_mask"], meta_positions, causal=self._is_causal())
        elif self.first_vector == "mean" and not self._is_causal():
            allowed = meta_blind_attention(features["attention_mask"], meta_positions)
        else:
            return None, None
        if self._attention_implementation() == "sdpa":
            return allowed, reads
        dtype = self.model.dtype
        additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
        return additive, reads

    # ----------------------------------------------------------------------------------- forward
    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        private = {key: features.pop(key) for key in _PRIVATE_FEATURES if key in features}
        segment_ids = private.pop("segment_ids", None)
        special_mask = self._windowed_sides or self._segmented_sides or self._region_sides or self.first_vector == "mean"
        if special_mask and "meta_positions" in private and "attention_mask" not in kwargs:
            mask, reads = self._attention_mask(features, private["meta_positions"], segment_ids)
            if mask is not None:
                kwargs["attention_mask"] = mask
            if reads is not None:
                private["meta_reads"] = reads
        if self.first_vector == "mean" and "meta_positions" in private:
            own = features["attention_mask"].bool().clone()
            own.scatter_(1, private["meta_positions"].to(own.device), False)
            private["own_token_mask"] = own if self.mixed_image_weight is None else self._weigh_image_cells(
                own, features["input_ids"])
        try:
            features = super().forward(features, **kwargs)
        finally:
            self._pending_meta_lookup = None
        features.update(private)
        return features

    # ----------------------------------------------------------------------------------- save / load
    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        super().save(output_path, *args, safe_serialization=safe_serialization, **kwargs)
        save_file(
            {
                "query_meta_tokens": self.query_meta_tokens.detach().contiguous().cpu(),
                "document_meta_tokens": self.document_meta_tokens.detach().contiguous().cpu(),
            },
            os.path.join(output_path, META_TOKENS_FILE),
        )
        write_backbone_record(output_path, self.backbone_name_or_path)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None, revision=None,
             local_files_only: bool = False, **kwargs):
        # Load from the module's own folder: transformers would apply ``subfolder`` to a LoRA adapter's base model too.
        folder = load_dir_path(model_name_or_path, subfolder, token=token, cache_folder=cache_folder, revision=revision,
                               local_files_only=local_files_only) if subfolder not in ("", ".") else None
        if folder is not None:
            model_name_or_path, subfolder = folder, ""
        module = super().load(
            model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder, revision=revision,
            local_files_only=local_files_only, **kwargs,
        )
        weights_path = cls.load_file_path(
            model_name_or_path, filename=META_TOKENS_FILE, subfolder=subfolder, token=token,
            cache_folder=cache_folder, revision=revision, local_files_only=local_files_only,
        )
        if weights_path is None:
            raise FileNotFoundError(f"{model_name_or_path!r} has no {META_TOKENS_FILE}: it is not a MetaEmbed checkpoint")
        module.load_meta_tokens(weights_path)
        # The backbone it was built from, not the checkpoint's own folder (unknown for checkpoints saved before it was recorded).
        try:
            record_path = cls.load_file_path(
                model_name_or_path, filename=METAEMBED_CONFIG_FILE, subfolder=subfolder, token=token,
                cache_folder=cache_folder, revision=revision, local_files_only=local_files_only,
            )
        except OSError:
            record_path = None
        module.backbone_name_or_path = read_backbone_record(record_path)
        return module

    def load_meta_tokens(self, path: str) -> None:
        """Load trained meta tokens, checking they match this module's counts and hidden size."""
        weights = load_file(path)
        for name in ("query_meta_tokens", "document_meta_tokens"):
            parameter: nn.Parameter = getattr(self, name)
            if name not in weights:
                raise ValueError(f"{path} lacks {name!r}")
            if weights[name].shape != parameter.shape:
                raise ValueError(f"{path}: {name} has shape {tuple(weights[name].shape)}, expected {tuple(parameter.shape)}")
            with torch.no_grad():
                parameter.copy_(weights[name])
