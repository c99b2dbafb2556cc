"""A small vision-language backbone composed from a pretrained vision tower and a pretrained language model.

Importing this package registers it with transformers' Auto classes (``model_type`` ``metaembed_vlm``), so a
composed or trained folder loads like any checkpoint wherever metaembed is imported.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor, LlavaProcessor

from metaembed.model.vlm.compose import compose_vlm, composed_vlm_path
from metaembed.model.vlm.configuration import IMAGE_TOKEN, MODEL_TYPE, MetaEmbedVLMConfig
from metaembed.model.vlm.modeling import MetaEmbedVLMModel

AutoConfig.register(MODEL_TYPE, MetaEmbedVLMConfig, exist_ok=True)
AutoModel.register(MetaEmbedVLMConfig, MetaEmbedVLMModel, exist_ok=True)
AutoProcessor.register(MetaEmbedVLMConfig, LlavaProcessor, exist_ok=True)

__all__ = ["IMAGE_TOKEN", "MetaEmbedVLMConfig", "MetaEmbedVLMModel", "compose_vlm", "composed_vlm_path"]
