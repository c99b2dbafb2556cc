"""The backbone anchor and the diversity term added to the MMR loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from metaembed import MetaEmbed
from metaembed.training import MMRLoss, TrainConfig, train
import metaembed
from metaembed.training.regularizers import (
    BackboneTeacher,
    anchor_loss,
    distillation_loss,
    late_interaction_scores,
    self_similarity,
    teacher_best_sentence,
    teacher_late_interaction,
    window_means,
)

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
                           model.backbone.tokenizer.pad_token_id, tokenizer=model.backbone.tokenizer,
                           sentence_batch_size=2)


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


def plain_and_with_terms(model, **terms):
    """The MMR loss of one (query, document) batch without and with ``terms``, and what the latter logged."""
    columns = [model.preprocess(QUERIES, task="query"), model.preprocess(DOCUMENTS, task="document")]
    columns[0]["task"], columns[1]["task"] = "query", "document"
    with_terms = MMRLoss(model, groups=["1,1", "4,8"], **terms)
    base = MMRLoss(model, groups=["1,1", "4,8"])([dict(c) for c in columns])
    total = with_terms([dict(c) for c in columns])
    return base, total, with_terms.last_group_losses


def test_mmr_loss_adds_the_weighted_terms(model, teacher):
    base, total, logged = plain_and_with_terms(model, teacher=teacher, anchor_weight=0.5, diversity_weight=2.0)
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


def test_late_interaction_scores_are_colbert_maxsim_over_real_tokens():
    torch.manual_seed(0)
    queries, documents = torch.randn(2, 4, 8), torch.randn(3, 6, 8)
    query_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    document_mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    scores = late_interaction_scores(queries, query_mask, documents, document_mask)
    assert scores.shape == (2, 3)
    for q in range(2):
        for c in range(3):
            qt = F.normalize(queries[q][query_mask[q]], dim=-1)
            dt = F.normalize(documents[c][document_mask[c]], dim=-1)
            assert scores[q, c].item() == pytest.approx((qt @ dt.T).max(dim=1).values.mean().item(), abs=1e-6)
    # a padded token that would win the max changes nothing
    documents[1, 5] = queries[0, 0] * 10
    torch.testing.assert_close(late_interaction_scores(queries, query_mask, documents, document_mask), scores)


def test_teacher_scores_follow_the_students_document_layout():
    """Row b's document column n sits at b * N + n, as MMRLoss stacks the student's documents."""
    torch.manual_seed(1)
    query = (torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool))
    positives = (torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool))
    negatives = (torch.randn(2, 7, 8), torch.ones(2, 7, dtype=torch.bool))
    scores = teacher_late_interaction([query, positives, negatives])
    assert scores.shape == (2, 4)
    for b in range(2):
        for n, (hidden, mask) in enumerate((positives, negatives)):
            expected = late_interaction_scores(query[0], query[1], hidden[b : b + 1], mask[b : b + 1])[:, 0]
            torch.testing.assert_close(scores[:, b * 2 + n], expected)


def test_distillation_loss_is_zero_only_when_the_rankings_agree():
    teacher_scores = torch.tensor([[0.9, 0.5, 0.4], [0.2, 0.8, 0.3]])
    same = distillation_loss(teacher_scores * 2, teacher_scores, temperature=0.06, teacher_temperature=0.03)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    flipped = distillation_loss(teacher_scores.flip(-1), teacher_scores, temperature=0.03, teacher_temperature=0.03)
    assert flipped.item() > 1.0


def test_mmr_loss_adds_the_weighted_distillation(model, teacher):
    base, total, logged = plain_and_with_terms(model, teacher=teacher, distill_weight=0.5, distill_temperature=0.05)
    assert set(logged) == {"loss_1x1", "loss_4x8", "loss_distill"}
    # the expected term, from the teacher's own token states and the student's encoded vectors
    teacher_scores = teacher_late_interaction(
        [teacher.token_states(model.backbone.preprocess(items, task=task)) for items, task in
         ((QUERIES, "query"), (DOCUMENTS, "document"))])
    student = [metaembed.maxsim(model.encode_query(QUERIES), model.encode_document(DOCUMENTS), r_q, r_c) / r_q
               for r_q, r_c in ((1, 1), (4, 8))]
    expected = sum(distillation_loss(s, teacher_scores, 0.03, 0.05) for s in student) / len(student) / len(QUERIES)
    assert logged["loss_distill"].item() == pytest.approx(expected.item(), rel=1e-3)
    assert total.item() == pytest.approx((base + 0.5 * expected).item(), rel=1e-4)
    with pytest.raises(ValueError, match="distill_weight > 0 needs the frozen backbone"):
        MMRLoss(model, distill_weight=1.0)
    with pytest.raises(ValueError, match="distill_temperature must be positive"):
        TrainConfig(model="x", distill_weight=1.0, distill_temperature=0)


SENTENCE_DOCUMENTS = ["A text editor. It highlights syntax! Does it fold code?", "gzip compresses files",
                      "Parses json.\nWrites yaml"]
SENTENCES = [["A text editor.", "It highlights syntax!", "Does it fold code?"], ["gzip compresses files"],
             ["Parses json.", "Writes yaml"]]


def test_sentence_teacher_encodes_each_sentence_alone(model, teacher, tiny_bert_path):
    """From the MetaEmbed features of a padded batch, each sentence's vector is what SentenceTransformer(backbone)
    gives for that sentence alone (cut after . ! ? and line breaks; special, meta and pad tokens left out)."""
    features = model.backbone.preprocess(SENTENCE_DOCUMENTS, task="document")
    vectors, present = teacher.sentence_vectors(features)
    assert vectors.shape == (3, 3, 32) and present.tolist() == [[True] * 3, [True, False, False], [True, True, False]]
    plain = SentenceTransformer(tiny_bert_path, device="cpu")
    for row, sentences in enumerate(SENTENCES):
        expected = plain.encode(sentences, convert_to_tensor=True, normalize_embeddings=True, batch_size=1)
        torch.testing.assert_close(vectors[row, : len(sentences)], expected, atol=1e-5, rtol=1e-4)
    assert vectors[~present].abs().sum() == 0
    tokenizer = model.backbone.tokenizer
    assert {tokenizer.convert_tokens_to_ids(t) for t in (".", "!", "?")} <= teacher.sentence_end_ids()
    assert tokenizer.convert_tokens_to_ids(",") not in teacher.sentence_end_ids()


def test_best_sentence_scores_follow_the_students_document_layout():
    torch.manual_seed(2)
    queries = F.normalize(torch.randn(2, 8), dim=-1)
    positives = (F.normalize(torch.randn(2, 3, 8), dim=-1), torch.tensor([[True, True, False], [True, False, False]]))
    negatives = (F.normalize(torch.randn(2, 1, 8), dim=-1), torch.tensor([[True], [False]]))  # row 1: no sentence
    scores = teacher_best_sentence(queries, [positives, negatives])
    assert scores.shape == (2, 4)
    for q in range(2):
        for b in range(2):
            torch.testing.assert_close(scores[q, b * 2], (positives[0][b][positives[1][b]] @ queries[q]).max())
        assert scores[q, 1] == pytest.approx((negatives[0][0, 0] @ queries[q]).item(), abs=1e-6)
        assert scores[q, 3] == -1.0


def test_mmr_loss_distils_the_best_sentence_teacher(model, teacher):
    base, total, logged = plain_and_with_terms(model, teacher=teacher, distill_weight=0.5, distill_teacher="sentences")
    teacher_scores = teacher_best_sentence(teacher(model.backbone.preprocess(QUERIES, task="query")),
                                           [teacher.sentence_vectors(model.backbone.preprocess(DOCUMENTS, task="document"))])
    student = [metaembed.maxsim(model.encode_query(QUERIES), model.encode_document(DOCUMENTS), r_q, r_c) / r_q
               for r_q, r_c in ((1, 1), (4, 8))]
    expected = sum(distillation_loss(s, teacher_scores, 0.03, 0.03) for s in student) / len(student) / len(QUERIES)
    assert logged["loss_distill"].item() == pytest.approx(expected.item(), rel=1e-3)
    assert total.item() == pytest.approx((base + 0.5 * expected).item(), rel=1e-4)
    with pytest.raises(ValueError, match="distill_teacher must be one of tokens, sentences, got 'words'"):
        MMRLoss(model, teacher=teacher, distill_weight=1.0, distill_teacher="words")
    with pytest.raises(ValueError, match="distill_teacher must be one of tokens, sentences, got 'words'"):
        TrainConfig(model="x", distill_weight=1.0, distill_teacher="words")


def test_window_means_average_each_nested_window():
    hidden = torch.arange(1.0, 9.0).view(1, 4, 2).repeat(1, 1, 1)  # tokens (1,2) (3,4) (5,6) (7,8)
    mask = torch.tensor([[True, True, True, True]])
    means = window_means(hidden, mask, 3)  # whole, first half, second half
    expected = F.normalize(torch.tensor([[[4.0, 5.0], [2.0, 3.0], [6.0, 7.0]]]), dim=-1)
    torch.testing.assert_close(means, expected)
    left_padded = window_means(torch.cat([torch.zeros(1, 2, 2), hidden], dim=1),
                               torch.tensor([[False, False, True, True, True, True]]), 3)
    torch.testing.assert_close(left_padded, expected)  # padding never counts, wherever it sits


def test_anchor_with_windows_pulls_every_vector_to_its_window(tiny_bert_path, teacher):
    windowed = MetaEmbed.from_backbone(tiny_bert_path, 4, 8, meta_attention="document_windows", device="cpu").eval()
    _, _, logged = plain_and_with_terms(windowed, teacher=teacher, anchor_weight=1.0)
    queries, documents = windowed.encode_query(QUERIES), windowed.encode_document(DOCUMENTS)
    hidden, mask = teacher.token_states(windowed.backbone.preprocess(DOCUMENTS, task="document"))
    references = window_means(hidden, mask, 8)
    assert references.shape == documents.shape
    expected = (anchor_loss(queries, teacher(windowed.backbone.preprocess(QUERIES, task="query")))  # full: first vector
                + anchor_loss(documents, references)) / 2
    assert logged["loss_anchor"].item() == pytest.approx(expected.item(), abs=1e-5)
    assert anchor_loss(references, references).item() == pytest.approx(0.0, abs=1e-6)


def test_a_fine_tuned_teacher_replaces_the_frozen_backbone(model, tiny_bert_path, tmp_path):
    """``distill_teacher_model``: the distillation and anchor terms read that model's token states (e.g. a ColBERT-style
    fine-tune of the backbone), not the backbone as it was; a MetaEmbed folder or an unused teacher is refused."""
    from metaembed.training.run import build_teacher

    tuned = AutoModel.from_pretrained(tiny_bert_path)
    with torch.no_grad():
        for parameter in tuned.parameters():
            parameter.add_(0.01)
    tuned.save_pretrained(tmp_path / "tuned")
    teacher = build_teacher(model, TrainConfig(model=tiny_bert_path, distill_weight=1.0,
                                               distill_teacher_model=str(tmp_path / "tuned")))
    for mine, theirs in zip(teacher.backbone.state_dict().values(), tuned.state_dict().values()):
        assert torch.equal(mine, theirs)
    plain = build_teacher(model, TrainConfig(model=tiny_bert_path, distill_weight=1.0))
    assert not torch.equal(next(iter(plain.backbone.parameters())), next(iter(teacher.backbone.parameters())))
    model.save_pretrained(str(tmp_path / "metaembed"))
    with pytest.raises(ValueError, match="is a MetaEmbed checkpoint"):
        build_teacher(model, TrainConfig(model=tiny_bert_path, distill_weight=1.0,
                                         distill_teacher_model=str(tmp_path / "metaembed")))
    with pytest.raises(ValueError, match="set distill_weight or anchor_weight above 0"):
        TrainConfig(model=tiny_bert_path, distill_teacher_model=str(tmp_path / "tuned"))
