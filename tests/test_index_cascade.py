"""Cascade search: a cheap first stage (exact at a small budget, or HNSW over first vectors), then exact rerank."""

from __future__ import annotations

import pytest
import torch

import metaembed
from metaembed.index import MultiVectorIndex


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture
def setup(tmp_path):
    # documents whose vectors share a per-document topic, so first vectors predict the full score
    topics = unit(200, 1, 32, seed=1)
    documents = torch.nn.functional.normalize(topics + 0.6 * unit(200, 8, 32, seed=2), dim=-1)
    index = MultiVectorIndex.create(tmp_path / "ix", 32, 8)
    index.add([f"d{i}" for i in range(120)], documents[:120])
    index.add([f"d{i}" for i in range(120, 200)], documents[120:])
    queries = torch.nn.functional.normalize(topics[[3, 50, 150]] + 0.6 * unit(3, 4, 32, seed=3), dim=-1)
    yield index, documents.bfloat16().float(), queries
    index.close()


FP32 = {"compute_dtype": torch.float32}  # exact comparisons; bf16 compute (the default on CPUs with native bf16) rounds


@pytest.mark.parametrize("first_stage", ["exact", "hnsw"])
def test_all_candidates_equals_exact(setup, first_stage):
    index, _, queries = setup
    exact = index.search(queries, k=10, budget=(4, 8), **FP32)
    cascade = index.cascade_search(queries, k=10, budget=(4, 8), candidates=200, first_stage=first_stage, **FP32)
    for a, b in zip(exact, cascade):
        assert a.ids == b.ids
        assert a.scores == pytest.approx(b.scores, abs=1e-5)


def test_few_candidates_rerank_exactly(setup):
    index, documents, queries = setup
    first = index.search(queries, k=20, budget=(1, 1), **FP32)
    cascade = index.cascade_search(queries, k=5, budget=(4, 8), candidates=20, **FP32)
    exact = index.search(queries, k=5, budget=(4, 8), **FP32)
    full = metaembed.maxsim(queries, documents, 4, 8)
    for q, (stage1, result, truth) in enumerate(zip(first, cascade, exact)):
        assert set(result.ids) <= set(stage1.ids)  # only first-stage candidates come back
        rows = [int(i[1:]) for i in result.ids]
        assert result.scores == pytest.approx(full[q, rows].tolist(), abs=1e-5)  # exact scores at (4,8)
        assert result.scores == sorted(result.scores, reverse=True)
        assert len(set(result.ids) & set(truth.ids)) >= 4  # the topic structure makes the cascade accurate here


def test_deleted_documents_never_come_back_and_errors(setup):
    index, _, queries = setup
    index.delete(["d3"])
    for first_stage in ("exact", "hnsw"):
        hits = index.cascade_search(queries[:1], k=10, budget=(2, 4), candidates=50, first_stage=first_stage)[0]
        assert "d3" not in hits.ids and len(hits) == 10
    with pytest.raises(ValueError, match="r_c=9 is larger"):
        index.cascade_search(queries, budget=(1, 9))
    with pytest.raises(ValueError, match="first-stage query budget 3 exceeds the query budget 2"):
        index.cascade_search(queries, budget=(2, 8), first_stage_budget=(3, 1))
    with pytest.raises(ValueError, match="first_stage must be"):
        index.cascade_search(queries, budget=(2, 8), first_stage="ivf")


def test_hnsw_first_stage_finds_the_exact_top_hits(setup):
    index, documents, queries = setup
    cascade = index.cascade_search(queries, k=10, budget=(4, 8), candidates=60, first_stage="hnsw", **FP32)
    exact = index.search(queries, k=10, budget=(4, 8), **FP32)
    full = metaembed.maxsim(queries, documents, 4, 8)
    for q, (result, truth) in enumerate(zip(cascade, exact)):
        assert result.scores == pytest.approx(full[q, [int(i[1:]) for i in result.ids]].tolist(), abs=1e-5)
        assert len(set(result.ids) & set(truth.ids)) >= 8  # approximate: 60 of 200 candidates by first vector
