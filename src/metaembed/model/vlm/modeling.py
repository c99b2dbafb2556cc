"""A composed vision-language backbone: vision tower -> feature grid -> projector -> tokens of a language model.

The LLaVA recipe with any grid-shaped vision tower (a CNN such as MobileNetV2): each cell of the tower's last
feature map becomes one token, written where the processor put the ``<image>`` placeholders, and the
language model (an encoder such as MiniLM or a decoder such as SmolLM2) reads image tokens and text together.
Its output is the language model's ``last_hidden_state``, so MetaEmbed appends meta tokens as for any backbone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoModel, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput

from metaembed.model.vlm.configuration import MetaEmbedVLMConfig


class GridProjector(nn.Module):
    """Two-layer MLP from the vision grid's channels to the language model's hidden size (LLaVA-1.5's shape),
    plus, with ``projector_linear_skip``, a linear path beside it (a warm start fits that path in closed form)."""

    def __init__(self, config: MetaEmbedVLMConfig) -> None:
        super().__init__()
        hidden = config.text_config.hidden_size
        self.linear_1 = nn.Linear(config.vision_channels, hidden)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(hidden, hidden)
        self.linear_skip = nn.Linear(config.vision_channels, hidden) if config.projector_linear_skip else None

    def add_linear_skip(self) -> nn.Linear:
        """Add the linear path (or reset it) at zero, where it adds nothing yet, and return it."""
        if self.linear_skip is None:
            weight = self.linear_1.weight
            self.linear_skip = nn.Linear(weight.shape[1], self.linear_2.out_features, device=weight.device,
                                         dtype=weight.dtype)
        nn.init.zeros_(self.linear_skip.weight)
        nn.init.zeros_(self.linear_skip.bias)
        return self.linear_skip

    def forward(self, cells: Tensor) -> Tensor:
        tokens = self.linear_2(self.act(self.linear_1(cells)))
        return tokens if self.linear_skip is None else tokens + self.linear_skip(cells)


class MetaEmbedVLMPreTrainedModel(PreTrainedModel):
    config_class = MetaEmbedVLMConfig
    base_model_prefix = ""
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules: list[str] = []


class MetaEmbedVLMModel(MetaEmbedVLMPreTrainedModel):
    """Vision tower + projector + language model; see the module docstring.

    The vision tower always runs in eval mode: its batch-norm statistics are ImageNet's, and a training
    batch of a few clip-art images must not overwrite them (the usual frozen-BN practice when fine-tuning CNNs).
    """

    @property
    def trained_in_full_with_lora(self) -> tuple[str, ...]:
        """New layers (untrained when composed, or fitted by the warm start): LoRA training trains them in full
        (see metaembed.training.lora)."""
        return ("projector",) if self.image_readout is None else ("projector", "image_readout")

    def __init__(self, config: MetaEmbedVLMConfig) -> None:
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.projector = GridProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.image_readout = (nn.Linear(config.vision_channels, config.text_config.hidden_size)
                              if config.image_readout else None)
        """With ``image_readout``: a linear map of each grid cell added to the language model's *output* state at that
        cell's token, a skip past the language model (a warm start fits it in closed form)."""
        self.post_init()

    def add_image_readout(self) -> nn.Linear:
        """Add the output-side readout (or reset it) at zero, where it changes no output yet, and return it."""
        if self.image_readout is None:
            weight = self.projector.linear_1.weight
            self.image_readout = nn.Linear(weight.shape[1], self.config.text_config.hidden_size, device=weight.device,
                                           dtype=weight.dtype)
        nn.init.zeros_(self.image_readout.weight)
        nn.init.zeros_(self.image_readout.bias)
        self.config.image_readout = True
        return self.image_readout

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def train(self, mode: bool = True) -> "MetaEmbedVLMModel":
        super().train(mode)
        self.vision_tower.eval()
        return self

    def get_image_features(self, pixel_values: Tensor) -> Tensor:
        """(images, cells, hidden): one projected token per cell of the vision tower's last feature grid."""
        return self.projector(self.get_image_cells(pixel_values))

    def get_image_cells(self, pixel_values: Tensor) -> Tensor:
        """(images, cells, channels): the vision tower's last feature grid, one row per cell, in the projector's dtype.

        The pixels go in channels-last: MobileNetV2's depthwise convolutions run 1.5x faster so on a 2-core CPU
        (64 images: 2.6 s instead of 4.0 s; the same features within 3e-5)."""
        pixels = pixel_values.to(self.vision_tower.dtype, memory_format=torch.channels_last)
        grid = self.vision_tower(pixel_values=pixels).last_hidden_state
        if grid.dim() != 4:
            raise ValueError(
                f"the vision tower ({type(self.vision_tower).__name__}) returned a last_hidden_state of shape "
                f"{tuple(grid.shape)}; a (batch, channels, height, width) feature grid is expected"
            )
        return grid.flatten(2).transpose(1, 2).to(self.projector.linear_1.weight.dtype)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        pixel_values: Tensor | None = None,
        position_ids: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        cells = placeholders = None
        if pixel_values is not None:
            if input_ids is None:
                raise ValueError("images need input_ids, to find their <image> placeholders")
            cells = self.get_image_cells(pixel_values)
            features = self.projector(cells)
            placeholders = input_ids == self.config.image_token_id
            if int(placeholders.sum()) != features.shape[0] * features.shape[1]:
                raise ValueError(
                    f"{int(placeholders.sum())} <image> placeholder tokens for {features.shape[0]} image(s) of "
                    f"{features.shape[1]} cells each: the processor and the vision tower disagree on the grid size "
                    "(or truncation cut an image)"
                )
            inputs_embeds = inputs_embeds.masked_scatter(
                placeholders.unsqueeze(-1).to(inputs_embeds.device), features.to(inputs_embeds.dtype)
            )
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            # Positions count an item's own tokens, so an item gets the same positions alone or left-padded.
            position_ids = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        outputs = self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, return_dict=True, **extra
        )
        hidden = outputs.last_hidden_state
        if self.image_readout is not None and cells is not None:
            readout = self.image_readout(cells).to(hidden.dtype)
            at_cells = placeholders.unsqueeze(-1).to(hidden.device)
            hidden = hidden + torch.zeros_like(hidden).masked_scatter(at_cells, readout)
        return BaseModelOutput(last_hidden_state=hidden)
