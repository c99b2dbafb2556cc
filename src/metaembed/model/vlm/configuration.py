"""The configuration of a composed vision-language backbone: a pretrained vision tower's feature grid,
a trained projector, and a pretrained language model (the LLaVA recipe, with any grid-shaped vision tower)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

MODEL_TYPE = "metaembed_vlm"
COMPOSED_VLM_OPTIONAL_LAYERS = ("projector_linear_skip", "image_readout")
"""The config flags that add layers to a composed VLM after it is composed (the training warm start adds them)."""
IMAGE_TOKEN = "<image>"


@strict
class MetaEmbedVLMConfig(PreTrainedConfig):
    """``vision_config``: a model whose ``last_hidden_state`` is a (batch, channels, h, w) feature grid (e.g.
    MobileNetV2); each of its h*w cells becomes one token of the language model (``text_config``), placed
    where the processor put the ``<image>`` placeholders.

    ``vision_channels``: the grid's channel count (the projector's input); ``image_token_id``: the
    placeholder's id in the language model's (extended) vocabulary; ``projector_linear_skip``: the projector
    also has a linear path beside its MLP (added by :func:`metaembed.training.projector_warm_start`, which
    fits it in closed form before training); ``image_readout``: a linear map of each grid cell is added to the
    language model's output state at that cell's token (a skip past the language model; fitted by the same warm
    start); ``vision_tower_source`` / ``language_model_source``: the two pretrained towers it was composed from (a
    folder's absolute path or a hub id; None in folders composed before they were recorded), so their frozen-towers
    yardstick can be rebuilt (metaembed.evaluation.frozen_towers).
    """

    model_type = MODEL_TYPE
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="mobilenet_v2"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    vision_channels: int = 1280
    image_token_id: int = 0
    projector_hidden_act: str = "gelu"
    projector_linear_skip: bool = False
    image_readout: bool = False
    vision_tower_source: str | None = None
    language_model_source: str | None = None
    tie_word_embeddings: bool = False
