"""MTEB's own retrieval evaluation, run on a locally built task through our adapter, agrees with our sweep
(same settings, and the defaults), and encodes each corpus once for every budget."""

from __future__ import annotations

import pytest
import torch

from metaembed import Budget, MetaEmbed
from metaembed.evaluation import SweepSettings, evaluate
from tests.test_eval_sweep import count_encodes, write_beir

mteb = pytest.importorskip("mteb")

from metaembed.evaluation.mteb_adapter import MetaEmbedMTEBEncoder, evaluate_budgets, local_retrieval_task  # noqa: E402

BUDGETS = ["1,1", "2,4", "4,8"]


@pytest.fixture(scope="module")
def model(tiny_bert_path) -> MetaEmbed:
    return MetaEmbed.from_backbone(tiny_bert_path, 4, 8)


@pytest.mark.parametrize("budget", ["1,1", "4,8"])
def test_mteb_scores_equal_ours_on_a_local_task(model, tmp_path, budget):
    root = write_beir(tmp_path / "set")
    task = local_retrieval_task(root)
    assert task.metadata.main_score == "ndcg_at_10"
    settings = SweepSettings(use_cache=False, storage_dtype=torch.float32, progress=False)
    result = mteb.evaluate(MetaEmbedMTEBEncoder(model, budget, settings=settings), task, cache=None, show_progress_bar=False)
    theirs = result.task_results[0].scores["test"][0]
    ours = evaluate(model, root, [budget], settings=settings)
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


def test_mteb_equals_eval_under_defaults_at_every_budget(model, tmp_path):
    """Default settings on both sides (bf16 storage, fp32 scores, ties by id); only the cache folders differ."""
    root = write_beir(tmp_path / "set")
    theirs = evaluate_budgets(model, local_retrieval_task(root), BUDGETS, settings=SweepSettings(cache_dir=tmp_path / "mteb", progress=False), cache=None)
    ours = evaluate(model, root, BUDGETS, settings=SweepSettings(cache_dir=tmp_path / "eval", out_dir=tmp_path / "out", progress=False))
    assert list(theirs) == BUDGETS
    for budget in BUDGETS:
        assert theirs[budget].task_results[0].get_score() == pytest.approx(ours["budgets"][budget]["overall"]["ndcg@10"], abs=1e-5), budget  # MTEB rounds to 5 places
    # Not just the metric: the adapter's search gives eval's ranking and its exact (bf16-stored, fp32-scored) scores.
    task = local_retrieval_task(root)
    task.load_data()
    split = task.dataset["default"]["test"]
    encoder = MetaEmbedMTEBEncoder(model, "2,4", settings=SweepSettings(cache_dir=tmp_path / "mteb", progress=False))
    where = dict(task_metadata=task.metadata, hf_split="test", hf_subset="default", encode_kwargs={"batch_size": 32}, num_proc=None)
    encoder.index(split["corpus"], **where)
    found = encoder.search(split["queries"], top_k=10, **where)
    run = [line.split() for line in next((tmp_path / "out" / "runs").glob("*2x4*")).read_text().splitlines()]
    ranked: dict[str, list[tuple[str, float]]] = {}
    for query_id, _, doc_id, _, score, _ in run:
        ranked.setdefault(query_id, []).append((doc_id, float(score)))
    assert ranked == {query_id: list(hits.items()) for query_id, hits in found.items()}


def test_mteb_ties_rank_by_document_id_like_eval(model, tmp_path):
    """Every document is the same text, so every score ties: both harnesses rank by id and agree."""
    root = write_beir(tmp_path / "set", documents=["the same text"] * 6)
    settings = SweepSettings(use_cache=False, progress=False)
    theirs = evaluate_budgets(model, local_retrieval_task(root), ["1,1"], settings=settings, cache=None)
    ours = evaluate(model, root, ["1,1"], settings=settings)
    assert theirs["1,1"].task_results[0].get_score() == pytest.approx(ours["budgets"]["1,1"]["overall"]["ndcg@10"], abs=1e-5)


def test_corpus_is_encoded_once_for_every_budget(model, tmp_path, monkeypatch):
    root = write_beir(tmp_path / "set")
    counts = count_encodes(model, monkeypatch)
    encoders = MetaEmbedMTEBEncoder.for_budgets(model, BUDGETS, settings=SweepSettings(use_cache=False, progress=False))
    assert {encoder.encodings for encoder in encoders} == {encoders[0].encodings}
    assert encoders[0].encodings.largest == Budget(4, 8)
    for encoder in encoders:
        mteb.evaluate(encoder, local_retrieval_task(root), cache=None, show_progress_bar=False)
    assert counts == {"query": 1, "document": 1}
