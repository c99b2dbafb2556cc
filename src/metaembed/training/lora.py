"""LoRA on the backbone through peft: adapters on the attention and MLP projections, the rest frozen,
except what MetaEmbed adds (meta tokens, projection), which lives outside the backbone and trains in full."""

from __future__ import annotations

import re

from torch import nn

_PROJECTION_NAMES = {
    # Llama / Qwen2(-VL) / Mistral / Gemma / Idefics3 text model
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    # BERT-style encoders
    "query", "key", "value",
    # CLIP/SigLIP-style and OPT-style
    "out_proj", "fc1", "fc2",
}
_BERT_DENSE = re.compile(r"(attention\.output\.dense|intermediate\.dense|layer\.\d+\.output\.dense)$")
_VISION_PART = re.compile(r"(^|\.)(visual|vision_tower|vision_model|vision)(\.|$)")


def default_lora_targets(backbone: nn.Module) -> list[str]:
    """Full names of the language model's attention and MLP projection layers (vision towers excluded)."""
    targets = []
    for name, module in backbone.named_modules():
        if not isinstance(module, nn.Linear) or _VISION_PART.search(name):
            continue
        if name.rsplit(".", 1)[-1] in _PROJECTION_NAMES or _BERT_DENSE.search(name):
            targets.append(name)
    if not targets:
        raise ValueError(
            f"found no attention/MLP projection layers to put LoRA on in {type(backbone).__name__}; "
            "name them with lora_target_modules"
        )
    return targets


def apply_lora(
    backbone: nn.Module,
    rank: int = 32,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: list[str] | None = None,
) -> list[str]:
    """Inject LoRA adapters into ``backbone`` in place and freeze its other weights; returns the targets.

    Through transformers' PEFT integration (``add_adapter``) on Hugging Face models, so that an unmerged model
    saves its adapter (``adapter_config.json`` naming the base model) and loads back through the Auto classes.
    """
    from peft import LoraConfig, inject_adapter_in_model

    targets = target_modules or default_lora_targets(backbone)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    if hasattr(backbone, "add_adapter"):
        backbone.add_adapter(config)
    else:
        inject_adapter_in_model(config, backbone)
    for name, parameter in backbone.named_parameters():
        parameter.requires_grad = "lora_" in name
    return targets


def merge_lora(backbone: nn.Module) -> int:
    """Fold every LoRA adapter into its base layer and put the plain layer back; returns how many."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = 0
    for name, module in list(backbone.named_modules()):
        if not isinstance(module, BaseTunerLayer):
            continue
        module.merge()
        parent_name, _, child_name = name.rpartition(".")
        parent = backbone.get_submodule(parent_name) if parent_name else backbone
        setattr(parent, child_name, module.get_base_layer())
        merged += 1
    if getattr(backbone, "_hf_peft_config_loaded", False):  # now a plain model: save it whole, not as an adapter
        backbone._hf_peft_config_loaded = False
        backbone.__dict__.pop("peft_config", None)
    return merged


def has_lora(backbone: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(module, BaseTunerLayer) for module in backbone.modules())
