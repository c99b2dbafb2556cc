"""MTEB's own retrieval evaluation, run on a locally built task through our adapter, agrees with our sweep."""

from __future__ import annotations

import pytest
import torch

from metaembed import MetaEmbed
from metaembed.evaluation import SweepSettings, evaluate
from tests.test_eval_sweep import write_beir

mteb = pytest.importorskip("mteb")

from metaembed.evaluation.mteb_adapter import MetaEmbedMTEBEncoder, local_retrieval_task  # noqa: E402


@pytest.fixture(scope="module")
def model(tiny_bert_path) -> MetaEmbed:
    return MetaEmbed.from_backbone(tiny_bert_path, 4, 8)


@pytest.mark.parametrize("budget", ["1,1", "4,8"])
def test_mteb_scores_equal_ours_on_a_local_task(model, tmp_path, budget):
    root = write_beir(tmp_path / "set")
    task = local_retrieval_task(root)
    assert task.metadata.main_score == "ndcg_at_10"
    result = mteb.evaluate(MetaEmbedMTEBEncoder(model, budget), task, cache=None, show_progress_bar=False)
    theirs = result.task_results[0].scores["test"][0]
    ours = evaluate(model, root, [budget], settings=SweepSettings(use_cache=False, storage_dtype=torch.float32, progress=False))
    ours = ours["budgets"][budget]["overall"]
    for our_name, their_name in (("ndcg@10", "ndcg_at_10"), ("recall@10", "recall_at_10"), ("mrr@10", "mrr_at_10"), ("map@100", "map_at_100"), ("p@1", "precision_at_1")):
        assert theirs[their_name] == pytest.approx(ours[our_name], abs=1e-5), our_name
    assert result.task_results[0].get_score() == pytest.approx(ours["ndcg@10"], abs=1e-5)


def test_adapter_encodes_at_its_budget_and_refuses_impossible_ones(model):
    encoder = MetaEmbedMTEBEncoder(model, "2,4")
    assert encoder.mteb_model_meta.name.endswith("-budget-2x4")
    queries = torch.nn.functional.normalize(torch.randn(3, 2, model.embedding_dim), dim=-1)
    documents = torch.nn.functional.normalize(torch.randn(5, 4, model.embedding_dim), dim=-1)
    expected = (queries @ documents.reshape(-1, model.embedding_dim).T).view(3, 2, 5, 4).amax(-1).sum(1)
    assert torch.allclose(encoder.similarity(list(queries), list(documents)), expected, atol=1e-5)
    with pytest.raises(ValueError, match="document budget 16 is larger than the 8 document meta tokens"):
        MetaEmbedMTEBEncoder(model, "2,16")
