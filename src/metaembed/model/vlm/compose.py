"""Put a vision-language backbone together from a pretrained vision tower and a pretrained language model.

The result is an ordinary transformers folder (config, safetensors, tokenizer, processor) that loads through
the Auto classes once metaembed is imported, so MetaEmbed, LoRA, training and saving treat it like any
backbone. Only the projector is new (seeded); both towers keep their pretrained weights.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, LlavaProcessor, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging
from transformers.models.mobilenet_v2.image_processing_pil_mobilenet_v2 import MobileNetV2ImageProcessorPil

from metaembed.model.vlm.configuration import IMAGE_TOKEN, MetaEmbedVLMConfig
from metaembed.model.vlm.modeling import MetaEmbedVLMModel
from metaembed.user_cache import cache_folder as user_cache_folder
from metaembed.user_cache import write_folder_atomically

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
COMPOSE_FORMAT = 2
"""Bumped when the composed folder's layout changes, so cached compositions are rebuilt."""

# Images first, then text, whatever order an item's parts come in: truncation (on the right) never cuts an image.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}"
    "{%- for part in message['content'] -%}{%- if part['type'] == 'image' -%}" + IMAGE_TOKEN + "{%- endif -%}{%- endfor -%}"
    "{%- for part in message['content'] -%}{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}{%- if not loop.last %}\n{% endif -%}{%- endfor -%}"
)


def _image_processor(vision_tower: str):
    """The vision tower's own image processor, or ImageNet preprocessing (resize 256, crop 224) if it has none."""
    try:
        return AutoImageProcessor.from_pretrained(vision_tower)
    except (OSError, ValueError):
        return MobileNetV2ImageProcessorPil(image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))


def _with_image_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Add the ``<image>`` placeholder (and a pad token, for decoders that have none)."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"extra_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _probe_pixels(image_processor) -> torch.Tensor:
    """A few processed images (random colour fields) to measure the vision tower's grid with."""
    generator = torch.Generator().manual_seed(0)
    fields = [(torch.rand(3, 6, 6, generator=generator) * 255).to(torch.uint8) for _ in range(4)]
    images = [Image.fromarray(field.permute(1, 2, 0).numpy()).resize((300, 300), Image.Resampling.BICUBIC) for field in fields]
    return image_processor(images=images, return_tensors="pt")["pixel_values"]


def _grid_shape(vision: torch.nn.Module, pixels: torch.Tensor) -> tuple[int, int, int, int]:
    """(channels, grid height, grid width, image side) of the tower on processed images."""
    if "pixel_values" not in inspect.signature(vision.forward).parameters:
        raise ValueError(f"{type(vision).__name__} takes no pixel_values: it is not a vision tower with a feature grid")
    with torch.no_grad():
        grid = vision(pixel_values=pixels).last_hidden_state
    if grid.dim() != 4:
        raise ValueError(f"{type(vision).__name__} gives a last_hidden_state of shape {tuple(grid.shape)}, not a feature grid")
    side = pixels.shape[-1]
    if pixels.shape[-2] != side or side % grid.shape[-1] or side % grid.shape[-2] or grid.shape[-1] != grid.shape[-2]:
        raise ValueError(f"images of {tuple(pixels.shape[-2:])} pixels give a {tuple(grid.shape[-2:])} grid: square images "
                         "with a whole number of pixels per cell are needed")
    return grid.shape[1], grid.shape[2], grid.shape[3], side


def _start_image_tokens_among_word_embeddings(model: MetaEmbedVLMModel, pixels: torch.Tensor) -> None:
    """Scale and shift the new projector so its image tokens start with the mean and spread of the language
    model's word embeddings (as meta tokens do): the first layer sees inputs of a familiar scale, and the
    images are not drowned by position embeddings before the projector has learned anything."""
    words = model.get_input_embeddings().weight.detach().float()
    with torch.no_grad():
        for linear in (model.projector.linear_1, model.projector.linear_2):
            torch.nn.init.kaiming_uniform_(linear.weight, a=5 ** 0.5)  # nn.Linear's own init, not std 0.02
            torch.nn.init.zeros_(linear.bias)
        tokens = model.get_image_features(pixels).flatten(0, 1)
        scale = words.std(dim=0) / tokens.std(dim=0).clamp(min=1e-6)
        model.projector.linear_2.weight.mul_(scale[:, None])
        model.projector.linear_2.bias.copy_(words.mean(dim=0) - tokens.mean(dim=0) * scale)


def compose_vlm(vision_tower: str, language_model: str, out: str | Path, *, projector_seed: int = 0) -> str:
    """Write a vision-language backbone made of ``vision_tower`` (a folder or hub id whose model gives a feature
    grid, e.g. MobileNetV2) and ``language_model`` (an encoder or decoder) to ``out``; return its path."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a classification checkpoint's head is left out on purpose: no load report
    try:
        vision = AutoModel.from_pretrained(vision_tower)
    finally:
        hf_logging.set_verbosity(verbosity)
    language = AutoModel.from_pretrained(language_model)
    tokenizer = _with_image_token(AutoTokenizer.from_pretrained(language_model))
    if language.get_input_embeddings().weight.shape[0] < len(tokenizer):
        language.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    image_processor = _image_processor(vision_tower)
    pixels = _probe_pixels(image_processor)
    channels, grid_height, _, side = _grid_shape(vision, pixels)
    config = MetaEmbedVLMConfig(
        vision_config=vision.config.to_dict(), text_config=language.config.to_dict(), vision_channels=channels,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_tower_source=_source(vision_tower), language_model_source=_source(language_model),
    )
    torch.manual_seed(projector_seed)
    model = MetaEmbedVLMModel(config)
    model.vision_tower.load_state_dict(vision.state_dict())
    model.language_model.load_state_dict(language.state_dict())
    model.eval()
    _start_image_tokens_among_word_embeddings(model, pixels)
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=side // grid_height,
        vision_feature_select_strategy="full", chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN,
        num_additional_image_tokens=0,
    )
    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)

    write_folder_atomically(Path(out), write, replace=True)
    return str(out)


def composed_vlm_path(vision_tower: str, language_model: str, *, projector_seed: int = 0,
                      cache_folder: str | Path | None = None) -> str:
    """The composed backbone of these two towers in the cache folder, composed on first use."""
    key = json.dumps([_identity(vision_tower), _identity(language_model), projector_seed, COMPOSE_FORMAT])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = (Path(cache_folder) if cache_folder else user_cache_folder()) / "composed-vlm" / digest
    if not (folder / "config.json").is_file():
        compose_vlm(vision_tower, language_model, folder, projector_seed=projector_seed)
    return str(folder)


def _source(name_or_path: str) -> str:
    """How a composed config records a tower: a local folder by its absolute path, a hub id as given."""
    path = Path(name_or_path)
    return str(path.resolve()) if path.is_dir() else name_or_path


def _identity(name_or_path: str) -> str:
    """A local folder by its absolute path and weights' modification time; a hub id as given."""
    path = Path(name_or_path)
    if not path.is_dir():
        return name_or_path
    stamps = sorted(f"{p.name}:{p.stat().st_mtime_ns}" for p in path.glob("*.safetensors"))
    return f"{path.resolve()}|{'|'.join(stamps)}"
