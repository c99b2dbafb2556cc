"""Training settings that change how the backbone is built: attention dropout, bf16 mixed precision."""

from __future__ import annotations

import pytest
import torch

from metaembed import MetaEmbed
from metaembed.hardware import bf16_is_fast, cpu_has_native_bf16
from metaembed.training import TrainConfig
from metaembed.training.run import attention_dropout_kwargs, build_model, use_bf16


def test_attention_dropout_overrides_the_backbone_config(tiny_bert_path, tmp_path):
    kept = build_model(TrainConfig(model=tiny_bert_path)).backbone.model
    assert kept.config.attention_probs_dropout_prob == 0.1  # BertConfig's own default
    model = build_model(TrainConfig(model=tiny_bert_path, attention_dropout=0.0))
    backbone = model.backbone.model
    assert backbone.config.attention_probs_dropout_prob == 0.0
    assert all(layer.attention.self.dropout.p == 0.0 for layer in backbone.encoder.layer)
    assert backbone.config.hidden_dropout_prob == 0.1  # only the attention dropout changes
    # The saved model records it, and continuing from it can change it again.
    model.save_pretrained(str(tmp_path / "saved"))
    assert MetaEmbed.from_pretrained(str(tmp_path / "saved")).backbone.model.config.attention_probs_dropout_prob == 0.0
    again = build_model(TrainConfig(model=str(tmp_path / "saved"), attention_dropout=0.05)).backbone.model
    assert again.encoder.layer[0].attention.self.dropout.p == 0.05


@pytest.mark.parametrize("vlm", ["tiny_qwen2_vl_path", "tiny_composed_vlm_path"])
def test_attention_dropout_of_a_vlm_language_model(vlm, request):
    """A VLM keeps its language model's setting in a sub-config: it is set there."""
    for probability in (0.0, 0.2):
        model = build_model(TrainConfig(model=request.getfixturevalue(vlm), num_query_meta_tokens=2,
                                        num_document_meta_tokens=4, attention_dropout=probability))
        text_config = model.backbone.model.config.get_text_config()
        values = [getattr(text_config, key) for key in ("attention_dropout", "attention_probs_dropout_prob")
                  if hasattr(text_config, key)]
        assert values == [probability]
        assert model.backbone.model.config.vision_config is not None  # the rest of the config is untouched


def test_attention_dropout_without_any_setting_is_a_clear_error(tiny_mobilenet_v2_path):
    with pytest.raises(ValueError, match="no top-level attention-dropout setting"):
        attention_dropout_kwargs(tiny_mobilenet_v2_path, 0.2)


def test_attention_dropout_is_checked():
    with pytest.raises(ValueError, match=r"attention_dropout must be in \[0, 1\), got 1.5"):
        TrainConfig(model="x", attention_dropout=1.5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU's choice")
def test_bf16_setting_resolves_per_device():
    assert use_bf16(TrainConfig(bf16="true")) is True
    assert use_bf16(TrainConfig(bf16="false")) is False
    # 'auto' on this CPU-only machine: exactly when the CPU multiplies bf16 natively.
    assert use_bf16(TrainConfig(bf16="auto")) == cpu_has_native_bf16() == bf16_is_fast("cpu")
    assert bf16_is_fast("meta") is False
