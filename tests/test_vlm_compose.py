"""metaembed's composed vision-language backbone (vision tower grid -> projector -> language model): what
composition keeps and adds, the Auto-class round trip, the frozen vision tower, clear errors, and training
(full and LoRA) that moves the new projector and leaves the vision tower exactly as it was."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor, TrainerCallback

from metaembed import MetaEmbed
from metaembed.inputs import InvalidInputError
from metaembed.model.vlm import IMAGE_TOKEN, MetaEmbedVLMModel, compose_vlm, composed_vlm_path
from metaembed.training import TrainConfig, train
from tests.test_train_vlm import SHAPES, pair_loss, write_image_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_composition_keeps_both_towers_and_adds_an_image_token(tiny_composed_vlm_path, tiny_mobilenet_v2_path,
                                                               tiny_bert_path):
    model = AutoModel.from_pretrained(tiny_composed_vlm_path)  # registered with the Auto classes by metaembed
    assert isinstance(model, MetaEmbedVLMModel) and model.config.model_type == "metaembed_vlm"
    vision = AutoModel.from_pretrained(tiny_mobilenet_v2_path).state_dict()
    for name, value in vision.items():
        torch.testing.assert_close(model.vision_tower.state_dict()[name], value, rtol=0, atol=0, msg=name)
    language = load_file(str(Path(tiny_bert_path) / "model.safetensors"))
    composed_language = model.language_model.state_dict()
    for name, value in language.items():
        if name == "embeddings.word_embeddings.weight":  # one new row: the <image> placeholder
            assert composed_language[name].shape == (value.shape[0] + 1, value.shape[1])
            torch.testing.assert_close(composed_language[name][: value.shape[0]], value, rtol=0, atol=0)
        else:
            torch.testing.assert_close(composed_language[name], value, rtol=0, atol=0, msg=name)
    processor = AutoProcessor.from_pretrained(tiny_composed_vlm_path)
    vocabulary = language["embeddings.word_embeddings.weight"].shape[0]
    assert processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == model.config.image_token_id == vocabulary
    # One placeholder per cell of the grid: a 64-pixel crop through a stride-32 network is 2 x 2.
    batch = processor(images=[Image.new("RGB", (90, 70), (200, 30, 30))], text=[f"{IMAGE_TOKEN}a red square"],
                      return_tensors="pt")
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == 4
    features = model.get_image_features(batch["pixel_values"])
    assert features.shape == (1, 4, model.config.text_config.hidden_size)


def test_vision_tower_stays_in_eval_mode_and_keeps_its_statistics(tiny_composed_vlm_path):
    model = AutoModel.from_pretrained(tiny_composed_vlm_path).train()
    assert model.training and model.language_model.training and not model.vision_tower.training
    statistics = {name: value.clone() for name, value in model.vision_tower.state_dict().items() if "running" in name}
    model.vision_tower(pixel_values=torch.randn(4, 3, 64, 64) * 5 + 3)
    for name, value in model.vision_tower.state_dict().items():
        if "running" in name:
            torch.testing.assert_close(value, statistics[name], rtol=0, atol=0, msg=name)


def test_placeholder_mismatch_is_a_clear_error(tiny_composed_vlm_path):
    model = AutoModel.from_pretrained(tiny_composed_vlm_path).eval()
    ids = torch.tensor([[101, model.config.image_token_id, 102]])  # one placeholder for a 4-cell image
    with pytest.raises(ValueError, match=r"1 <image> placeholder tokens for 1 image\(s\) of 4 cells"):
        model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.zeros(1, 3, 64, 64))


def test_a_tower_without_a_feature_grid_is_refused(tiny_bert_path, tmp_path):
    with pytest.raises(Exception, match="feature grid|pixel_values"):
        compose_vlm(tiny_bert_path, tiny_bert_path, tmp_path / "vlm")
    assert not (tmp_path / "vlm").exists()


def test_from_backbone_composes_once_into_the_cache(tiny_mobilenet_v2_path, tiny_bert_path, tmp_path, monkeypatch):
    monkeypatch.setenv("METAEMBED_CACHE", str(tmp_path / "cache"))
    first = MetaEmbed.from_backbone(tiny_bert_path, 2, 4, vision_tower=tiny_mobilenet_v2_path)
    path = composed_vlm_path(tiny_mobilenet_v2_path, tiny_bert_path)
    assert Path(path).is_relative_to(tmp_path / "cache")
    stamp = (Path(path) / "model.safetensors").stat().st_mtime_ns
    second = MetaEmbed.from_backbone(tiny_bert_path, 2, 4, vision_tower=tiny_mobilenet_v2_path)
    assert (Path(path) / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not composed again
    image = Image.new("RGB", (64, 64), (30, 200, 40))
    assert first.accepts_images
    assert torch.equal(first.encode_document([image]), second.encode_document([image]))


def test_bad_images_name_the_item(tiny_composed_vlm_path, tmp_path):
    model = MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(InvalidInputError, match=r"item 1 .*broken\.png"):
        model.encode_document(["fine text", {"text": "caption", "image": str(broken)}])


def _projector(model: MetaEmbed) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items() if ".projector." in name}


def _vision(model: MetaEmbed) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items() if ".vision_tower." in name}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_training_moves_projector_and_language_model_never_the_vision_tower(tiny_composed_decoder_vlm_path, tmp_path,
                                                                          lora):
    # Over a decoder: a random 2-layer post-norm BERT passes almost nothing of its inputs to the meta tokens.
    data = write_image_pairs(tmp_path / "data")
    initial = MetaEmbed.from_backbone(tiny_composed_decoder_vlm_path, 2, 4, meta_token_init_seed=0)
    before = pair_loss(initial, tmp_path / "data")
    result = train(TrainConfig(
        model=tiny_composed_decoder_vlm_path, train_jsonl=[str(data)], output_dir=str(tmp_path / "run"), batch_size=8,
        max_steps=25, learning_rate=3e-3, warmup_ratio=0.0, logging_steps=5, save_steps=100, lora=lora,
        lora_rank=4, lora_alpha=8, merge_lora=False, num_query_meta_tokens=2, num_document_meta_tokens=4,
        num_negatives=1,
    ))
    trained = MetaEmbed.from_pretrained(result.model_path)
    after = pair_loss(trained, tmp_path / "data")
    assert after < 0.6 * before and after < 0.75 * math.log(len(SHAPES)), (before, after)
    projector_before, projector_after = _projector(initial), _projector(trained)
    if not lora:  # merged or not, the projector trained in full (with LoRA it lives in the adapter, checked below)
        assert projector_after.keys() == projector_before.keys()
        assert all(not torch.allclose(projector_after[name], value) for name, value in projector_before.items())
    for name, value in _vision(initial).items():  # frozen by default, batch-norm statistics included
        torch.testing.assert_close(_vision(trained)[name], value, rtol=0, atol=0, msg=name)
    if lora:  # the unmerged adapter carries the trained projector (peft's modules_to_save)
        saved = load_file(str(Path(result.model_path) / "0_MetaTransformer" / "adapter_model.safetensors"))
        assert any(".projector." in key for key in saved)
        record = json.loads((Path(result.model_path) / "0_MetaTransformer" / "adapter_config.json").read_text())
        assert record["modules_to_save"] == ["projector"]


class RecordLearningRates(TrainerCallback):
    """The learning rate each trainable parameter starts with (its optimizer group's)."""

    def __init__(self) -> None:
        self.rates: dict[str, float] = {}

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        rate_of = {id(p): group.get("initial_lr", group["lr"]) for group in optimizer.param_groups for p in group["params"]}
        self.rates = {name: rate_of[id(p)] for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_projector_learning_rate_reaches_only_the_projector(tiny_composed_decoder_vlm_path, tmp_path, lora):
    record = RecordLearningRates()
    train(TrainConfig(
        model=tiny_composed_decoder_vlm_path, train_jsonl=[str(write_image_pairs(tmp_path / "data"))],
        output_dir=str(tmp_path / "run"), batch_size=4, max_steps=1, learning_rate=1e-4, projector_learning_rate=1e-2,
        warmup_ratio=0.0, save_steps=100, lora=lora, lora_rank=4, num_query_meta_tokens=2, num_document_meta_tokens=4,
    ), callbacks=[record])
    projector = {name: rate for name, rate in record.rates.items() if ".projector." in name}
    assert projector and set(projector.values()) == {1e-2}
    others = {rate for name, rate in record.rates.items() if ".projector." not in name}
    assert others == {1e-4}


def test_learning_rates_must_be_positive():
    with pytest.raises(ValueError, match="projector_learning_rate must be positive, got 0"):
        TrainConfig(model="x", projector_learning_rate=0)
