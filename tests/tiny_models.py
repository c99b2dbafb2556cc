"""Tiny backbones built locally from configs (random weights), one per family, saved as normal
Hugging Face model folders so they load through the same Auto classes as real checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from metaembed.model.pretrained import minilm_path

_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a text editor for programmers with syntax highlighting",
    "gzip compresses files using Lempel-Ziv coding",
    "a library for parsing json documents quickly",
    "image of a red bicycle leaning on a wall",
    "what is the capital of france? paris is the capital",
]


def tiny_bert(folder: Path) -> str:
    """A 2-layer, 32-wide BERT with MiniLM's (uncased WordPiece) tokenizer; right padding."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return str(folder)


_CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}"
)


def byte_level_tokenizer(special_tokens: list[str], padding_side: str, vocab_size: int = 400, chat_template=None):
    """A small byte-level BPE tokenizer (the GPT-2/Qwen/Llama-3 style) trained on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(_CORPUS * 5, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=special_tokens[0],
        pad_token=special_tokens[0],
        padding_side=padding_side,
        chat_template=chat_template,
    )


def tiny_qwen2(folder: Path, padding_side: str = "left") -> str:
    """A 2-layer Qwen2 decoder (causal attention) with a byte-level BPE tokenizer that pads on the left."""
    from transformers import Qwen2Config, Qwen2Model

    tokenizer = byte_level_tokenizer(["<|endoftext|>"], padding_side)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    Qwen2Model(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def tiny_llama(folder: Path, padding_side: str = "right") -> str:
    """A 2-layer Llama decoder (causal attention) whose tokenizer pads on the right."""
    from transformers import LlamaConfig, LlamaModel

    tokenizer = byte_level_tokenizer(["</s>"], padding_side)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def register_image_only_qwen2_vl_processor():
    """Qwen2-VL's own processor without its video half.

    transformers 5 builds Qwen2VLProcessor with a video processor that needs torchvision, which has no
    CPU build on these machines; images never touch it (the processor guards videos with hasattr).
    Registered with AutoProcessor so the saved folder loads through the Auto classes like a real one.
    """
    from transformers import AutoProcessor, Qwen2VLConfig, Qwen2VLProcessor

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            super(Qwen2VLProcessor, self).__init__(image_processor, tokenizer, chat_template=chat_template)

    AutoProcessor.register(Qwen2VLConfig, ImageOnlyQwen2VLProcessor, exist_ok=True)
    return ImageOnlyQwen2VLProcessor


def tiny_qwen2_vl(folder: Path) -> str:
    """A tiny Qwen2-VL (the paper's family): 1-block ViT + 2-layer Qwen2 decoder with multimodal RoPE,
    its own PIL image processor (few patches per image), a ChatML template, left padding."""
    from transformers import Qwen2VLConfig, Qwen2VLModel
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    tokenizer = byte_level_tokenizer(specials, "left", chat_template=_CHATML_TEMPLATE)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    processor_class = register_image_only_qwen2_vl_processor()
    image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    processor = processor_class(image_processor=image_processor, tokenizer=tokenizer, chat_template=_CHATML_TEMPLATE)
    torch.manual_seed(0)
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            rope_scaling={"rope_type": "default", "mrope_section": [2, 2, 4]},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        ),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, mlp_ratio=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    Qwen2VLModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def tiny_llava(folder: Path) -> str:
    """A tiny LLaVA: 1-layer CLIP vision tower + projector + 2-layer Llama decoder, its own processor."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaModel, LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    tokenizer = byte_level_tokenizer(["</s>", "<image>"], "left", chat_template=_LLAVA_TEMPLATE)
    image_processor = LlavaImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
        vision_feature_select_strategy="default", chat_template=_LLAVA_TEMPLATE, image_token="<image>",
        num_additional_image_tokens=1,
    )
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=28, patch_size=14, projection_dim=32),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=512, bos_token_id=0, eos_token_id=0, pad_token_id=0),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    LlavaModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def tiny_mobilenet_v2(folder: Path) -> str:
    """A narrow MobileNetV2 (depth multiplier 0.35, random weights, torchvision's padding) with a small
    ImageNet-style image processor (crop 64: a 2x2 feature grid), saved as a transformers folder."""
    from transformers import MobileNetV2Config, MobileNetV2Model
    from transformers.models.mobilenet_v2.image_processing_pil_mobilenet_v2 import MobileNetV2ImageProcessorPil

    torch.manual_seed(0)
    config = MobileNetV2Config(depth_multiplier=0.35, image_size=64, tf_padding=False, finegrained_output=False)
    model = MobileNetV2Model(config)
    # Random weights make the grid vanish (~1e-25) through eval-mode batch norms with unit statistics:
    # calibrate the batch-norm statistics on random images once, so features keep a unit scale.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(pixel_values=torch.randn(8, 3, 64, 64))
    model.eval().save_pretrained(folder)
    MobileNetV2ImageProcessorPil(size={"shortest_edge": 72}, crop_size={"height": 64, "width": 64},
                                 image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return str(folder)
