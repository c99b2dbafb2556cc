"""The backbone anchor and the diversity term added to the MMR loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from metaembed import MetaEmbed
from metaembed.training import MMRLoss, TrainConfig, train
from metaembed.training.regularizers import BackboneTeacher, anchor_loss, self_similarity

QUERIES = ["text editor for programmers", "compress files", "parse json quickly"]
DOCUMENTS = [
    "a text editor for programmers with syntax highlighting",
    "gzip compresses files using Lempel-Ziv coding and is very common",
    "a library for parsing json",
]


@pytest.fixture(scope="module")
def model(tiny_bert_path) -> MetaEmbed:
    model = MetaEmbed.from_backbone(tiny_bert_path, 4, 8, device="cpu")
    model.eval()
    return model


@pytest.fixture(scope="module")
def teacher(model, tiny_bert_path) -> BackboneTeacher:
    return BackboneTeacher(AutoModel.from_pretrained(tiny_bert_path), model.backbone.meta_token_id_base,
                           model.backbone.tokenizer.pad_token_id)


def test_teacher_is_the_plain_backbone_with_mean_pooling(model, teacher, tiny_bert_path):
    """From the MetaEmbed features (meta tokens appended, padded batch) the teacher gives exactly what a user's
    SentenceTransformer(backbone) (mean pooling) gives for each item alone."""
    plain = SentenceTransformer(tiny_bert_path, device="cpu")
    expected = plain.encode(DOCUMENTS, convert_to_tensor=True, normalize_embeddings=True, batch_size=1)
    features = model.backbone.preprocess(DOCUMENTS, task="document")
    assert (features["input_ids"] >= model.backbone.meta_token_id_base).sum() == 8 * len(DOCUMENTS)
    torch.testing.assert_close(teacher(features), expected, atol=1e-5, rtol=1e-4)
    assert not any(parameter.requires_grad for parameter in teacher.parameters())
    teacher.train()
    assert not teacher.backbone.training  # the reference never uses dropout


def test_anchor_and_self_similarity_values():
    a = F.normalize(torch.randn(2, 3, 8), dim=-1)
    assert anchor_loss(a, a[:, 0]).item() == pytest.approx(0.0, abs=1e-6)
    assert anchor_loss(a, -a[:, 0]).item() == pytest.approx(2.0, abs=1e-6)
    repeated = a[:, :1].expand(2, 5, 8)
    assert self_similarity(repeated).item() == pytest.approx(1.0, abs=1e-6)
    orthogonal = torch.eye(4).unsqueeze(0).repeat(3, 1, 1)
    assert self_similarity(orthogonal).item() == pytest.approx(0.0, abs=1e-6)
    assert self_similarity(a[:, :1]).item() == 0.0
    with pytest.raises(ValueError, match="projection_dim None"):
        anchor_loss(a, torch.randn(2, 4))


def test_mmr_loss_adds_the_weighted_terms(model, teacher):
    columns = [model.preprocess(QUERIES, task="query"), model.preprocess(DOCUMENTS, task="document")]
    columns[0]["task"], columns[1]["task"] = "query", "document"
    plain = MMRLoss(model, groups=["1,1", "4,8"])
    with_terms = MMRLoss(model, groups=["1,1", "4,8"], teacher=teacher, anchor_weight=0.5, diversity_weight=2.0)
    base = plain([dict(c) for c in columns])
    total = with_terms([dict(c) for c in columns])
    logged = with_terms.last_group_losses
    assert set(logged) == {"loss_1x1", "loss_4x8", "loss_anchor", "loss_self_similarity"}
    queries = model.encode_query(QUERIES)
    documents = model.encode_document(DOCUMENTS)
    expected_anchor = (anchor_loss(queries, teacher(model.backbone.preprocess(QUERIES, task="query")))
                       + anchor_loss(documents, teacher(model.backbone.preprocess(DOCUMENTS, task="document")))) / 2
    assert logged["loss_anchor"].item() == pytest.approx(expected_anchor.item(), abs=1e-5)
    expected_spread = (self_similarity(queries) + self_similarity(documents)) / 2
    assert logged["loss_self_similarity"].item() == pytest.approx(expected_spread.item(), abs=1e-5)
    assert total.item() == pytest.approx((base + 0.5 * expected_anchor + 2.0 * expected_spread).item(), abs=1e-4)


def test_settings_are_checked(model, teacher):
    with pytest.raises(ValueError, match="needs the frozen backbone"):
        MMRLoss(model, anchor_weight=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        MMRLoss(model, teacher=teacher, diversity_weight=-1)
    with pytest.raises(ValueError, match="loss: plain"):
        TrainConfig(model="x", anchor_weight=1.0, loss="cached")


@pytest.mark.slow
def test_training_with_the_anchor_moves_the_first_vector_towards_the_backbone(tiny_bert_path, tmp_path, one_thread):
    rows = tmp_path / "train.jsonl"
    rows.write_text("".join(f'{{"query": "{q}", "positive": "{d}"}}\n' for q, d in zip(QUERIES * 4, DOCUMENTS * 4)))
    common = dict(model=tiny_bert_path, train_jsonl=[str(rows)], num_query_meta_tokens=4, num_document_meta_tokens=8,
                  groups=["1,1", "4,8"], batch_size=3, max_steps=12, learning_rate=1e-3, num_negatives=0,
                  save_steps=1000, logging_steps=1, bf16="false", no_duplicates=False)
    anchored = MetaEmbed.from_pretrained(train(TrainConfig(output_dir=str(tmp_path / "a"), anchor_weight=5.0, **common)).model_path)
    free = MetaEmbed.from_pretrained(train(TrainConfig(output_dir=str(tmp_path / "f"), **common)).model_path)
    reference = SentenceTransformer(tiny_bert_path, device="cpu").encode(
        DOCUMENTS, convert_to_tensor=True, normalize_embeddings=True)

    def distance(model: MetaEmbed) -> float:
        model.eval()
        with torch.no_grad():
            return anchor_loss(model.encode_document(DOCUMENTS), reference).item()

    assert distance(anchored) < distance(free)
