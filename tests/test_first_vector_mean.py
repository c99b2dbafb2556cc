"""``first_vector="mean"``: an item's first vector is the backbone's own mean pooling (its tokens never read the meta
tokens), so the (1,1) budget starts exactly where the backbone stands; the meta tokens give vectors 2..R."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw
from sentence_transformers import SentenceTransformer

from metaembed import MetaEmbed
from metaembed.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["a red bicycle leaning on a wall", "compiler for the rust programming language, with cargo",
         "short"]


def test_untrained_first_vector_is_the_plain_minilm_embedding(minilm_path):
    model = MetaEmbed.from_backbone(minilm_path, 4, 8, first_vector="mean", max_seq_length=128)
    plain = SentenceTransformer(minilm_path, device="cpu")  # mean pooling + normalisation, as users have it
    expected = plain.encode(TEXTS, convert_to_tensor=True, normalize_embeddings=True)
    queries, documents = model.encode_query(TEXTS), model.encode_document(TEXTS)
    assert queries.shape == (3, 4, 384) and documents.shape == (3, 8, 384)
    torch.testing.assert_close(queries[:, 0], expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(documents[:, 0], expected, atol=2e-5, rtol=0)
    # the meta tokens add other vectors (not copies of the first)
    assert float((documents[:, 1:] @ documents[:, :1].transpose(1, 2)).max()) < 0.99
    paper = MetaEmbed.from_backbone(minilm_path, 4, 8, max_seq_length=128).encode_query(TEXTS)
    assert float((paper[:, 0] * expected).sum(-1).max()) < 0.99  # the paper's first vector is a fresh meta token


@pytest.mark.parametrize("backbone", ["tiny_bert_path", "tiny_qwen2_path"])
def test_first_vector_never_reads_the_meta_tokens_and_ignores_padding(backbone, request, tmp_path):
    model = MetaEmbed.from_backbone(request.getfixturevalue(backbone), 3, 5, first_vector="mean")
    before = model.encode_document(TEXTS)
    assert before.shape == (3, 5, model.get_embedding_dimension())
    with torch.no_grad():  # other meta tokens: the first vector must not move, the others must
        model.backbone.document_meta_tokens.add_(torch.randn_like(model.backbone.document_meta_tokens))
    after = model.encode_document(TEXTS)
    torch.testing.assert_close(after[:, 0], before[:, 0], atol=1e-5, rtol=0)
    assert float((after[:, 1:] - before[:, 1:]).abs().max()) > 1e-2
    alone = model.encode_document(TEXTS[2:])  # a lone short item and the same item padded in a batch
    torch.testing.assert_close(alone[0], after[2], atol=1e-5, rtol=0)

    model.save_pretrained(str(tmp_path / "saved"))
    loaded = MetaEmbed.from_pretrained(str(tmp_path / "saved"))
    assert loaded.backbone.first_vector == "mean"
    torch.testing.assert_close(loaded.encode_document(TEXTS), after, atol=1e-5, rtol=0)


def test_a_single_vector_model_with_a_mean_first_vector_is_mean_pooling(tiny_bert_path):
    model = MetaEmbed.from_backbone(tiny_bert_path, 1, 1, first_vector="mean")
    assert model.encode_query(TEXTS).shape == (3, 1, model.get_embedding_dimension())
    assert model.backbone.num_appended_meta_tokens("query") == 0


def test_a_composed_vlm_over_an_encoder_averages_its_own_tokens_images_included(tiny_composed_vlm_path, tmp_path):
    """metaembed's composed VLM hands the explicit mask to its language model: over a bidirectional encoder the
    first vector is the mean of the item's own tokens (image tokens included), computed here without any meta token
    in the sequence."""
    image = Image.new("RGB", (56, 56), (128, 128, 128))
    ImageDraw.Draw(image).ellipse([8, 8, 48, 48], fill=(220, 30, 30))
    image.save(tmp_path / "disc.png")
    items = [{"image": str(tmp_path / "disc.png")}, {"text": "a red disc on grey", "image": str(tmp_path / "disc.png")},
             "a red disc"]
    model = MetaEmbed.from_backbone(tiny_composed_vlm_path, 3, 5, first_vector="mean").eval()
    before = model.encode_document(items)
    for index, item in enumerate(items):
        features = model.backbone.preprocess([item])
        own = torch.ones_like(features["input_ids"], dtype=torch.bool)
        own[0, features["meta_positions"][0]] = False
        own &= features["attention_mask"].bool()
        ids = features["input_ids"][own].unsqueeze(0)
        extra = {"pixel_values": features["pixel_values"]} if "pixel_values" in features else {}
        with torch.no_grad():
            states = model.backbone.model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).last_hidden_state
        expected = torch.nn.functional.normalize(states[0].mean(dim=0), dim=-1)
        torch.testing.assert_close(before[index, 0], expected, atol=2e-5, rtol=0)
    with torch.no_grad():
        model.backbone.document_meta_tokens.add_(torch.randn_like(model.backbone.document_meta_tokens))
    after = model.encode_document(items)
    torch.testing.assert_close(after[:, 0], before[:, 0], atol=1e-5, rtol=0)
    assert float((after[:, 1:] - before[:, 1:]).abs().max()) > 1e-2
    torch.testing.assert_close(model.encode_document(items[:1])[0], after[0], atol=1e-5, rtol=0)  # alone == in a batch


def test_bad_settings_are_named(tiny_bert_path):
    with pytest.raises(ValueError, match="first_vector must be one of meta, mean, auto, got 'first'"):
        MetaEmbed.from_backbone(tiny_bert_path, 2, 2, first_vector="first")
    with pytest.raises(ValueError, match="first_vector must be meta, mean or auto"):
        TrainConfig(model=tiny_bert_path, train_jsonl=["x.jsonl"], first_vector="avg").validate()


def test_training_keeps_the_setting(tiny_bert_path, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(f'{{"query": "question {i}", "positive": "answer {i} about topic {i % 3}"}}\n'
                            for i in range(12)))
    result = train(TrainConfig(model=tiny_bert_path, train_jsonl=[str(data)], output_dir=str(tmp_path / "run"),
                               first_vector="mean", num_query_meta_tokens=2, num_document_meta_tokens=4,
                               groups=["1,1", "2,4"], batch_size=4, max_steps=2, save_steps=100))
    trained = MetaEmbed.from_pretrained(result.model_path)
    assert trained.backbone.first_vector == "mean"
    assert trained.encode_document(["answer 1"]).shape == (1, 4, trained.get_embedding_dimension())
