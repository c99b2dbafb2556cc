"""The Qdrant backend in qdrant-client's local mode: same top-k as the embedded index, same errors."""

from __future__ import annotations

import pytest
import torch

from metaembed.index import MissingIdsError, MultiVectorIndex, QdrantMultiVectorIndex
from metaembed.model.query_weights import query_vector_weights
from metaembed.scoring import maxsim

qdrant_client = pytest.importorskip("qdrant_client")


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def documents() -> torch.Tensor:
    return unit(60, 8, 16, seed=1).bfloat16().float()  # bf16-exact values: both backends see the same numbers


@pytest.fixture
def both(tmp_path):
    ids = [f"d{i}" for i in range(60)]
    metadata = [{"n": i} for i in range(60)]
    embedded = MultiVectorIndex.create(tmp_path / "ix", 16, 8)
    embedded.add(ids, documents(), metadata)
    client = qdrant_client.QdrantClient(path=str(tmp_path / "qdrant"))
    qdrant = QdrantMultiVectorIndex.create(client, "docs", dim=16, max_document_vectors=8)
    qdrant.add(ids, documents(), metadata)
    yield embedded, qdrant
    embedded.close()
    client.close()


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("budget", [(1, 1), (2, 4), (4, 8)])
def test_same_top_k_as_embedded(both, budget, weighted):
    embedded, qdrant = both
    assert qdrant.document_budgets == [1, 4, 8] and len(qdrant) == 60
    queries = unit(4, 4, 16, seed=2)
    if weighted:  # a model with query_tail_weight: both engines score the weighted MaxSim sum
        queries = queries * query_vector_weights(4, 1.0)[:, None]
    expected = maxsim(queries, documents(), budget[0], budget[1])
    for row, (a, b) in enumerate(zip(embedded.search(queries, k=5, budget=budget, compute_dtype=torch.float32),
                                     qdrant.search(queries, k=5, budget=budget))):
        assert a.ids == b.ids
        assert a.scores == pytest.approx(b.scores, abs=1e-4)
        assert a.scores == pytest.approx(expected[row].topk(5).values.tolist(), abs=1e-4)
        assert a.metadata == b.metadata


def test_replace_delete_and_errors(both):
    embedded, qdrant = both
    replacement = unit(1, 8, 16, seed=7)
    qdrant.add(["d3"], replacement, [{"n": "new"}])
    assert len(qdrant) == 60
    hit = qdrant.search(replacement[:, :2], k=1, budget=(2, 8))[0]
    assert hit.ids == ["d3"] and hit.metadata == [{"n": "new"}]
    qdrant.delete(["d3"])
    assert "d3" not in qdrant and len(qdrant) == 59
    with pytest.raises(MissingIdsError, match="'d3'"):
        qdrant.delete(["d4", "d3"])
    assert "d4" in qdrant
    with pytest.raises(ValueError, match=r"r_c=2 is not stored.*\[1, 4, 8\]"):
        qdrant.search(unit(1, 2, 16), budget=(1, 2))
    with pytest.raises(ValueError, match="r_c=9 is larger than the 8"):
        qdrant.search(unit(1, 2, 16), budget=(1, 9))
    with pytest.raises(ValueError, match="r_q=3 is larger than the 2 query vectors"):
        qdrant.search(unit(1, 2, 16), budget=(3, 4))
    with pytest.raises(ValueError, match="duplicate ids"):
        qdrant.add(["x", "x"], unit(2, 8, 16))
    reopened = QdrantMultiVectorIndex(qdrant.client, "docs")
    assert reopened.dim == 16 and reopened.max_document_vectors == 8


def test_both_backends_are_one_multi_vector_store(both):
    """Both backends implement MultiVectorStore: isinstance, and every protocol method takes its parameters
    (same names, kinds and defaults; extra keyword-only options allowed)."""
    import inspect

    from metaembed.index import MultiVectorStore

    members = ("__len__", "__contains__", "add", "delete", "search")
    for backend in both:
        assert isinstance(backend, MultiVectorStore)
        assert isinstance(backend.dim, int) and isinstance(backend.max_document_vectors, int)
        for name in members:
            wanted = inspect.signature(getattr(MultiVectorStore, name)).parameters
            have = inspect.signature(getattr(type(backend), name)).parameters
            positional = [p for p in have.values() if p.kind is not p.KEYWORD_ONLY]
            assert [(p.name, p.kind, p.default) for p in positional] == [(p.name, p.kind, p.default) for p in wanted.values()], (type(backend).__name__, name)
            assert all(p.default is not p.empty for p in have.values() if p.kind is p.KEYWORD_ONLY), (type(backend).__name__, name)
    assert not isinstance(object(), MultiVectorStore)
