"""``query_tail_weight``: a query's vectors 2..R_q carry fixed weights, so a larger budget adds to vector 1's score
instead of averaging it away; the weights live in the query vectors, so every MaxSim scorer applies them."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from metaembed import MetaEmbed
from metaembed.budgets import Budget
from metaembed.model.query_weights import QueryVectorWeights, query_vector_weights
from metaembed.scoring import maxsim, query_prefix_weights
from metaembed.training import TrainConfig, train
from metaembed.training.mmr_loss import mmr_group_scores

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["a red bicycle leaning on a wall", "compiler for the rust programming language, with cargo", "short"]


def test_weights_give_vector_one_weight_one_and_split_the_tail_equally():
    torch.testing.assert_close(query_vector_weights(5, 2.0), torch.tensor([1.0, 0.5, 0.5, 0.5, 0.5]))
    torch.testing.assert_close(query_vector_weights(1, 2.0), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="tail_weight must be positive"):
        QueryVectorWeights(0.0)


def test_query_vectors_carry_the_weights_and_documents_stay_unit(tiny_bert_path, tmp_path):
    plain = MetaEmbed.from_backbone(tiny_bert_path, 4, 3, first_vector="mean")
    weighted = MetaEmbed.from_backbone(tiny_bert_path, 4, 3, first_vector="mean", query_tail_weight=1.5)
    queries, unit = weighted.encode_query(TEXTS), plain.encode_query(TEXTS)
    assert queries.shape == unit.shape == (3, 4, plain.get_embedding_dimension())
    torch.testing.assert_close(queries, unit * torch.tensor([1.0, 0.5, 0.5, 0.5])[:, None], atol=1e-6, rtol=0)
    torch.testing.assert_close(weighted.encode_document(TEXTS), plain.encode_document(TEXTS), atol=1e-6, rtol=0)
    alone = weighted.encode_query(TEXTS[2:])  # a lone short query and the same query padded in a batch
    torch.testing.assert_close(alone[0], queries[2], atol=1e-5, rtol=0)

    # MaxSim over the weighted prefix = vector 1's MaxSim + the weighted later ones; normalising divides by the weight
    documents = weighted.encode_document(TEXTS)
    unit_scores = torch.einsum("qid,cjd->qicj", unit, documents).amax(-1)  # (n_q, R_q, n_c)
    expected = unit_scores[:, 0] + 0.5 * unit_scores[:, 1:3].sum(1)
    torch.testing.assert_close(maxsim(queries, documents, 3, 3), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(maxsim(queries, documents, 3, 3, normalize_by_query=True), expected / 2.0,
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(query_prefix_weights(queries)[0], torch.tensor([1.0, 1.5, 2.0, 2.5]), atol=1e-5, rtol=0)

    weighted.save_pretrained(str(tmp_path / "saved"))
    modules = json.loads((tmp_path / "saved" / "modules.json").read_text())
    assert modules[-1]["type"] == "metaembed.model.query_weights.QueryVectorWeights"
    loaded = MetaEmbed.from_pretrained(str(tmp_path / "saved"))
    assert loaded[-1].tail_weight == 1.5
    torch.testing.assert_close(loaded.encode_query(TEXTS), queries, atol=1e-5, rtol=0)


def test_the_loss_averages_by_the_query_weights():
    torch.manual_seed(0)
    queries = F.normalize(torch.randn(3, 4, 8), dim=-1)
    documents = F.normalize(torch.randn(5, 6, 8), dim=-1)
    groups = [Budget(1, 1), Budget(2, 3), Budget(4, 6)]
    unit = mmr_group_scores(queries, documents, groups)
    weighted = mmr_group_scores(queries * query_vector_weights(4, 1.5)[:, None], documents, groups)
    torch.testing.assert_close(weighted[0], unit[0])  # vector 1 alone: unchanged
    best = torch.einsum("qid,cjd->qicj", queries, documents)  # (n_q, R_q, n_c, R_c)
    two = (best[:, 0, :, :3].amax(-1) + 0.5 * best[:, 1, :, :3].amax(-1)) / 1.5  # weights 1, 0.5
    torch.testing.assert_close(weighted[1], two)
    four = (best[:, 0].amax(-1) + 0.5 * best[:, 1:].amax(-1).sum(1)) / 2.5  # weights 1, 0.5, 0.5, 0.5
    torch.testing.assert_close(weighted[2], four)
    assert not torch.allclose(weighted[2], unit[2])
    equal = mmr_group_scores(queries * query_vector_weights(4, 3.0)[:, None], documents, groups)
    torch.testing.assert_close(equal[2], unit[2])  # a tail weight of R_q - 1 is the paper's equal weights


def test_training_keeps_the_weights_and_refuses_a_bad_one(tiny_bert_path, tmp_path):
    rows = [{"query": f"query {i} about topic {i}", "positive": f"document {i} all about topic {i}"} for i in range(8)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(ValueError, match="query_tail_weight must be positive"):
        TrainConfig(model=tiny_bert_path, train_jsonl=[str(data)], query_tail_weight=-1.0).validate()
    config = TrainConfig(model=tiny_bert_path, train_jsonl=[str(data)], output_dir=str(tmp_path / "run"),
                         num_query_meta_tokens=3, num_document_meta_tokens=3, groups=["1,1", "3,3"],
                         batch_size=4, max_steps=2, first_vector="mean", query_tail_weight=1.0, seed=0)
    trained = MetaEmbed.from_pretrained(train(config).model_path)
    assert isinstance(trained[-1], QueryVectorWeights) and trained[-1].tail_weight == 1.0
    norms = trained.encode_query(TEXTS).norm(dim=-1)
    torch.testing.assert_close(norms, torch.tensor([1.0, 0.5, 0.5]).expand(3, 3), atol=1e-5, rtol=0)
