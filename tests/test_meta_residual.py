"""``meta_residual``: every meta vector is the item's own-token mean plus a zero-initialised linear map of its meta
token's state, so an untrained model scores every budget exactly as the backbone's mean pooling does."""

from __future__ import annotations

import pytest
import torch

from metaembed import MetaEmbed
from metaembed.model.meta_transformer import MetaTransformer
from metaembed.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["a red bicycle leaning on a wall", "compiler for the rust programming language, with cargo", "short"]


@pytest.mark.parametrize("backbone", ["tiny_bert_path", "tiny_qwen2_path"])
def test_untrained_vectors_are_all_the_mean_and_training_moves_only_the_meta_ones(backbone, request, tmp_path):
    model = MetaEmbed.from_backbone(request.getfixturevalue(backbone), 3, 5, first_vector="mean", meta_residual=True)
    plain = MetaEmbed.from_backbone(request.getfixturevalue(backbone), 3, 5, first_vector="mean")
    documents, queries = model.encode_document(TEXTS), model.encode_query(TEXTS)
    assert documents.shape == (3, 5, model.get_embedding_dimension()) and queries.shape[:2] == (3, 3)
    torch.testing.assert_close(documents, documents[:, :1].expand_as(documents), atol=1e-6, rtol=0)
    torch.testing.assert_close(documents[:, 0], plain.encode_document(TEXTS)[:, 0], atol=1e-6, rtol=0)

    pooling = model[1]
    with torch.no_grad():  # a trained map: vector 1 stays the mean, the others move apart from it
        pooling.meta_residual.weight.copy_(torch.randn_like(pooling.meta_residual.weight))
    moved = model.encode_document(TEXTS)
    torch.testing.assert_close(moved[:, 0], documents[:, 0], atol=1e-6, rtol=0)
    assert float((moved[:, 1:] * moved[:, :1]).sum(-1).max()) < 0.99
    alone = model.encode_document(TEXTS[2:])  # a lone short item and the same item padded in a batch
    torch.testing.assert_close(alone[0], moved[2], atol=1e-5, rtol=0)

    model.save_pretrained(str(tmp_path / "saved"))
    loaded = MetaEmbed.from_pretrained(str(tmp_path / "saved"))
    torch.testing.assert_close(loaded[1].meta_residual.weight, pooling.meta_residual.weight)
    torch.testing.assert_close(loaded.encode_document(TEXTS), moved, atol=1e-5, rtol=0)


def test_models_without_the_residual_save_and_load_as_before(tiny_bert_path, tmp_path):
    model = MetaEmbed.from_backbone(tiny_bert_path, 2, 3, first_vector="mean")
    assert model[1].meta_residual is None
    model.save_pretrained(str(tmp_path / "saved"))
    assert not (tmp_path / "saved" / "1_MetaTokenPooling" / "model.safetensors").exists()
    assert MetaEmbed.from_pretrained(str(tmp_path / "saved"))[1].meta_residual is None


def test_the_residual_needs_a_mean_first_vector(tiny_bert_path):
    with pytest.raises(ValueError, match="meta_residual=True adds to the item's mean: it needs first_vector='mean'"):
        MetaEmbed.from_backbone(tiny_bert_path, 2, 2, meta_residual=True)
    with pytest.raises(ValueError, match="meta_residual adds to the item's mean: it needs first_vector: mean"):
        TrainConfig(model=tiny_bert_path, train_jsonl=["x.jsonl"], first_vector="meta", meta_residual=True).validate()


@pytest.mark.parametrize("backbone, attention, layout", [
    ("tiny_bert_path", None, "mean"), ("tiny_qwen2_path", None, "mean"), ("tiny_composed_vlm_path", None, "mean"),
    ("tiny_bert_path", "flash_attention_2", "meta"),  # a bidirectional encoder that cannot take the explicit mask
])
def test_auto_takes_the_mean_and_its_residual_wherever_the_backbone_allows(backbone, attention, layout, request,
                                                                          monkeypatch):
    path = request.getfixturevalue(backbone)
    if attention is not None:
        monkeypatch.setattr(MetaTransformer, "_attention_implementation", lambda self: attention)
    model = MetaEmbed.from_backbone(path, 2, 3, first_vector="auto", meta_residual=None)
    assert model.backbone.first_vector == layout  # metaembed's composed VLM takes the mask a bidirectional encoder needs
    assert (model[1].meta_residual is not None) == (layout == "mean")
    if layout == "meta":
        with pytest.raises(ValueError, match="cannot have a mean first vector .first_vector='auto' chose 'meta'"):
            MetaEmbed.from_backbone(path, 2, 3, first_vector="auto", meta_residual=True)


def test_training_by_default_learns_the_map_at_the_meta_token_learning_rate(tiny_bert_path, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(f'{{"query": "question {i}", "positive": "answer {i} about topic {i % 3}"}}\n'
                            for i in range(12)))
    result = train(TrainConfig(model=tiny_bert_path, train_jsonl=[str(data)], output_dir=str(tmp_path / "run"),
                               num_query_meta_tokens=2,  # first_vector and meta_residual: training's defaults
                               num_document_meta_tokens=4, groups=["1,1", "2,4"], batch_size=4, max_steps=2,
                               save_steps=100, learning_rate=1e-6, meta_token_learning_rate=1e-2))
    trained = MetaEmbed.from_pretrained(result.model_path)
    assert trained.backbone.first_vector == "mean"
    weight = trained[1].meta_residual.weight
    assert float(weight.detach().abs().max()) > 1e-3  # moved off zero: at 1e-6 it could not have
    vectors = trained.encode_document(["answer 1 about topic 1"])
    assert float((vectors[0, 1:] * vectors[0, :1]).sum(-1).min()) < 1 - 1e-4
