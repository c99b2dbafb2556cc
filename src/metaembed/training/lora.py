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


def is_vision_part(parameter_or_module_name: str) -> bool:
    """Whether a name belongs to a VLM's vision tower (Qwen2-VL's ``visual``, LLaVA's and metaembed's ``vision_tower``...)."""
    return _VISION_PART.search(parameter_or_module_name) is not None


def default_lora_targets(backbone: nn.Module) -> list[str]:
    """Full names of the language model's attention and MLP projection layers (vision towers excluded)."""
    targets = []
    for name, module in backbone.named_modules():
        if not isinstance(module, nn.Linear) or is_vision_part(name):
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
    # New layers the backbone declares (a composed VLM's projector) start untrained: they train in full and
    # are saved with the adapter (peft's modules_to_save).
    trained_in_full = list(getattr(backbone, "trained_in_full_with_lora", ()))
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                        modules_to_save=trained_in_full or None)
    if hasattr(backbone, "add_adapter"):
        backbone.add_adapter(config)
    else:
        inject_adapter_in_model(config, backbone)
    for name, parameter in backbone.named_parameters():
        parameter.requires_grad = "lora_" in name or ".modules_to_save." in name
    return targets


def merge_lora(backbone: nn.Module) -> int:
    """Fold every LoRA adapter into its base layer and put the plain layer back; returns how many."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import ModulesToSaveWrapper

    merged = 0
    for name, module in list(backbone.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            plain = module.get_base_layer()
        elif isinstance(module, ModulesToSaveWrapper):  # a layer trained in full: keep the trained copy
            plain = module.modules_to_save[module.active_adapters[0]]
        else:
            continue
        parent_name, _, child_name = name.rpartition(".")
        parent = backbone.get_submodule(parent_name) if parent_name else backbone
        setattr(parent, child_name, plain)
        merged += 1
    if getattr(backbone, "_hf_peft_config_loaded", False):  # now a plain model: save it whole, not as an adapter
        backbone._hf_peft_config_loaded = False
        backbone.__dict__.pop("peft_config", None)
    return merged


def has_lora(backbone: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(module, BaseTunerLayer) for module in backbone.modules())
