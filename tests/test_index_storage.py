"""The embedded index: round trips, replace/delete, metadata, budgets, exact search == brute-force maxsim."""

from __future__ import annotations

import json

import pytest
import torch

import metaembed
from metaembed.index import MissingIdsError, MultiVectorIndex
from metaembed.index.int8 import int8_products
from metaembed.index.segment import INT8_PRODUCTS_MAX_QUERY_VECTORS, int8_times_queries


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)


@pytest.fixture
def documents() -> torch.Tensor:
    return unit(120, 8, 16, seed=1)


@pytest.fixture
def index(tmp_path, documents):
    index = MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=8)
    index.add([f"a{i}" for i in range(70)], documents[:70], [{"n": i} for i in range(70)])
    index.add([f"a{i}" for i in range(70, 120)], documents[70:], [{"n": i} for i in range(70, 120)])
    yield index
    index.close()


def test_rank_major_layout_on_disk(tmp_path, documents):
    with MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=8) as index:
        index.add([f"d{i}" for i in range(5)], documents[:5])
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    segment = tmp_path / "ix" / "segments" / manifest["segments"][0]["name"]
    raw = torch.frombuffer(bytearray((segment / "vectors.bin").read_bytes()), dtype=torch.bfloat16)
    assert raw.numel() == 8 * 5 * 16
    # the first 5*16 values are every document's first vector: budget r_c reads a prefix
    assert torch.equal(raw[: 5 * 16].view(5, 16), documents[:5, 0].bfloat16())
    assert torch.equal(raw.view(8, 5, 16)[3], documents[:5, 3].bfloat16())


def test_round_trip_and_metadata(index, documents, tmp_path):
    assert len(index) == 120
    assert torch.equal(index.get_vectors(["a3", "a100"]), documents[[3, 100]].bfloat16().float())
    assert index.get_vectors(["a5"], document_budget=2).shape == (1, 2, 16)
    assert index.get_metadata("a77") == {"n": 77}
    reopened = MultiVectorIndex.open(tmp_path / "ix")
    assert reopened.ids == [f"a{i}" for i in range(120)]
    assert reopened.get_metadata("a0") == {"n": 0}


@pytest.mark.parametrize("budget", [(1, 1), (2, 4), (4, 8), (3, 5)])
def test_exact_search_equals_brute_force_maxsim(index, documents, budget):
    queries = unit(5, 4, 16, seed=2)
    results = index.search(queries, k=7, budget=budget, compute_dtype=torch.float32)
    expected = metaembed.maxsim(queries, documents.bfloat16().float(), *budget)
    top = expected.topk(7, dim=1)
    for query, result in enumerate(results):
        assert result.ids == [f"a{i}" for i in top.indices[query].tolist()]
        assert result.scores == pytest.approx(top.values[query].tolist(), abs=1e-5)
        assert result.metadata == [{"n": i} for i in top.indices[query].tolist()]


def test_search_in_bf16_compute_matches_within_rounding(index, documents):
    queries = unit(3, 2, 16, seed=3)
    fp32 = index.search(queries, k=5, budget=(2, 8), compute_dtype=torch.float32)
    bf16 = index.search(queries, k=5, budget=(2, 8), compute_dtype=torch.bfloat16)
    for a, b in zip(fp32, bf16):
        assert a.scores == pytest.approx(b.scores, abs=0.05)


def test_replace_and_delete(index, documents):
    queries = documents[7:8, :2]  # the query is document a7's own first two vectors
    assert index.search(queries, k=1, budget=(2, 8))[0].ids == ["a7"]
    index.add(["a7"], unit(1, 8, 16, seed=9), [{"n": "new"}])
    assert len(index) == 120
    assert index.get_metadata("a7") == {"n": "new"}
    assert index.search(queries, k=120, budget=(2, 8))[0].ids.count("a7") == 1
    index.delete(["a7", "a8"])
    assert len(index) == 118 and "a7" not in index
    hits = index.search(documents[8:9], k=200)[0]
    assert len(hits) == 118 and "a8" not in hits.ids
    with pytest.raises(MissingIdsError, match="'nope'") as error:
        index.delete(["a9", "nope"])
    assert error.value.ids == ["nope"]
    assert "a9" in index and len(index) == 118  # nothing deleted


def test_k_larger_than_index_returns_all(tmp_path):
    with MultiVectorIndex.create(tmp_path / "ix", 4, 2) as index:
        assert index.search(unit(1, 1, 4), k=3)[0].ids == []
        index.add(["x", "y"], unit(2, 2, 4))
        result = index.search(unit(1, 1, 4), k=10)[0]
        assert sorted(result.ids) == ["x", "y"] and len(result.scores) == 2


def test_budget_errors(index):
    with pytest.raises(ValueError, match="document budget r_c=9 is larger than the 8"):
        index.search(unit(1, 4, 16), budget=(1, 9))
    with pytest.raises(ValueError, match="query budget r_q=5 is larger than the 4 query vectors"):
        index.search(unit(1, 4, 16), budget=(5, 8))
    with pytest.raises(ValueError, match="dimension 8"):
        index.search(unit(1, 4, 8), budget=(1, 1))


def test_int8_storage_quality(tmp_path, documents):
    with MultiVectorIndex.create(tmp_path / "q", 16, 8, dtype="int8") as index:
        index.add([f"a{i}" for i in range(120)], documents)
        restored = index.get_vectors([f"a{i}" for i in range(120)])
        assert (restored - documents).abs().max() < 0.01  # per-vector scale: error <= max|x|/254
        queries = unit(4, 4, 16, seed=5)
        expected = metaembed.maxsim(queries, documents, 4, 8)
        results = index.search(queries, k=5, budget=(4, 8))
        for q, result in enumerate(results):
            assert result.ids[0] == f"a{int(expected[q].argmax())}"
            assert result.scores[0] == pytest.approx(float(expected[q].max()), abs=0.02)
        assert index.bytes_per_document() < 8 * 16 * 2  # smaller than bf16 vectors alone


def test_int8_products_are_finer_than_bf16_and_read_strided_rows():
    """int8 rows times float query vectors in int8 arithmetic (each vector as two int8 parts): within ~1e-4 of the
    exact products where converting to bf16 is off by ~1e-2, equal for a strided view of the rows and a copy, zero
    for a zero vector, and empty for no rows."""
    generator = torch.Generator().manual_seed(3)
    rows = torch.randint(-127, 128, (300, 3, 64), dtype=torch.int8, generator=generator)
    vectors = torch.randn(5, 64, generator=generator)
    vectors[2] = 0
    exact = rows[:, 1].double() @ vectors.double().T
    products = int8_products(rows[:, 1], vectors)  # a strided view: rows 3 x 64 bytes apart
    assert products.shape == (300, 5) and products.dtype == torch.float32
    error = (products.double() - exact).abs().max() / exact.abs().max()
    bf16_error = ((rows[:, 1].bfloat16() @ vectors.bfloat16().T).double() - exact).abs().max() / exact.abs().max()
    assert error < 1e-4 < 1e-3 < bf16_error
    assert torch.equal(products, int8_products(rows[:, 1].contiguous(), vectors))
    assert torch.equal(products[:, 2], torch.zeros(300))
    assert int8_products(rows[:0, 1], vectors).shape == (0, 5)
    # past INT8_PRODUCTS_MAX_QUERY_VECTORS the rows are converted instead: the same products to bf16's precision
    many = torch.randn(INT8_PRODUCTS_MAX_QUERY_VECTORS + 1, 64, generator=generator)
    torch.testing.assert_close(int8_times_queries(rows[:, 0], many)[:, :5], int8_times_queries(rows[:, 0], many[:5]),
                               rtol=1e-2, atol=0.5)


def test_int8_storage_scores_a_lone_query_as_in_a_batch(tmp_path, documents):
    """A lone query's few vectors are multiplied with int8 codes in int8 arithmetic, a batch's many after converting
    the codes: the same documents, scores within bf16 rounding, and both near MaxSim over the restored vectors."""
    with MultiVectorIndex.create(tmp_path / "q", 16, 8, dtype="int8") as index:
        index.add([f"a{i}" for i in range(120)], documents)
        restored = index.get_vectors([f"a{i}" for i in range(120)])
        queries = unit(12, 4, 16, seed=6)  # 12 x 4 = 48 query vectors in a batch: past the int8 products' limit
        assert 4 <= INT8_PRODUCTS_MAX_QUERY_VECTORS < 48
        batched = index.search(queries, k=5, budget=(4, 8), compute_dtype=torch.float32)
        expected = metaembed.maxsim(queries, restored, 4, 8, dtype=torch.float32)
        for q in range(len(queries)):
            alone = index.search(queries[q : q + 1], k=5, budget=(4, 8), compute_dtype=torch.float32)[0]
            assert alone.ids == batched[q].ids
            assert alone.scores == pytest.approx(batched[q].scores, abs=1e-4)
            assert alone.scores == pytest.approx(expected[q].topk(5).values.tolist(), abs=1e-4)


def test_float32_storage_ranks_exactly_as_fp32_maxsim(tmp_path, documents):
    """fp32 storage keeps every value as given and scores in fp32: the ranking and scores of fp32 MaxSim, where a
    bf16 index rounds near-ties apart; rank-major on disk like bf16, 4 D bytes a vector."""
    with MultiVectorIndex.create(tmp_path / "f", 16, 8, dtype="float32") as index:
        index.add([f"a{i}" for i in range(70)], documents[:70])
        index.add([f"a{i}" for i in range(70, 120)], documents[70:])
        assert torch.equal(index.get_vectors([f"a{i}" for i in range(120)]), documents)  # not one bit rounded
        assert index.bytes_per_document() >= 8 * 16 * 4 and index.scored_bytes_per_document(4) == 4 * 16 * 4
        queries = unit(6, 4, 16, seed=5)
        expected = metaembed.maxsim(queries, documents, 4, 8, dtype=torch.float32).topk(10, dim=1)
        for searched in (index.search(queries, k=10, budget=(4, 8)), index.cascade_search(queries, k=10, budget=(4, 8),
                                                                                           candidates=120)):
            assert [r.ids for r in searched] == [[f"a{i}" for i in row] for row in expected.indices.tolist()]
            torch.testing.assert_close(torch.tensor([r.scores for r in searched]), expected.values, rtol=0, atol=1e-6)
        with pytest.raises(ValueError, match=r"NaN or infinite values \(in float32\)"):
            index.add(["bad"], torch.full((1, 8, 16), float("inf")))
        index.add(["huge"], torch.full((1, 8, 16), 1e38))  # finite in fp32, though not in bf16: accepted
        assert index.compact() == 3
        assert torch.equal(index.get_vectors(["a5"]), documents[5:6])
    with MultiVectorIndex.open(tmp_path / "f") as reader:
        reader.verify()
        assert reader.dtype == "float32" and len(reader) == 121
        segment = tmp_path / "f" / "segments" / reader.manifest["segments"][0]["name"]
        raw = torch.frombuffer(bytearray((segment / "vectors.bin").read_bytes()), dtype=torch.float32).view(8, 121, 16)
        assert torch.equal(raw[3, :120], documents[:, 3])  # rank-major: a budget reads a prefix


def test_reader_sees_commits_after_refresh(index, tmp_path):
    reader = MultiVectorIndex.open(tmp_path / "ix", mode="r")
    index.add(["late"], unit(1, 8, 16, seed=4))
    assert "late" not in reader and len(reader) == 120
    assert reader.refresh() and "late" in reader
    assert not reader.refresh()
    with pytest.raises(PermissionError, match="read-only"):
        reader.add(["x"], unit(1, 8, 16))


def test_equal_scores_rank_by_id_descending_where_they_reach_the_top_k():
    from metaembed.index.search import ranked_by_id_on_ties

    ids = {0: "a", 1: "b", 2: "c", 3: "d", 4: "e", 5: "f", 6: "g"}
    looked_up = []

    def id_of_key(key):
        looked_up.append(key)
        return ids[key]

    inf = float("-inf")
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.5, 0.2, 0.1, 0.1], [0.9, 0.8, 0.7, 0.6, 0.3, 0.3, inf],
                           [0.4, 0.4, 0.2, inf, inf, inf, inf]])
    keys = torch.tensor([[6, 0, 5, 2, 1, 3, 4], [0, 1, 2, 3, 4, 5, -1], [1, 3, 2, -1, -1, -1, -1]])
    top_scores, top_keys = ranked_by_id_on_ties(lambda width, rows: (scores[:, :width], keys[:, :width]), 4, 7, id_of_key)
    # row 0: the run 0.5 x3 (keys 0, 5, 2 = ids a, f, c) -> f, c, a; row 1: no tie in the top 4 (the 0.3s are past it)
    # row 2: a tie at the top (b, d) -> d, b; fewer than 4 results end in -1 / -inf
    assert top_keys.tolist() == [[6, 5, 2, 0], [0, 1, 2, 3], [3, 1, 2, -1]]
    assert top_scores[0].tolist() == pytest.approx([0.9, 0.5, 0.5, 0.5])
    assert top_scores[2, 3] == inf
    assert sorted(looked_up) == [0, 1, 2, 3, 5]  # only the runs that reach the top k


def test_ties_past_the_fetched_window_fetch_more_for_those_queries_only(monkeypatch):
    """A batch where one query's run of equal scores reaches past what was fetched: only that query is searched
    again, wider, and the ranking equals fetching everything at once."""
    import metaembed.index.search as search_module

    monkeypatch.setattr(search_module, "TIE_WINDOW", 2)
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0],
                           [0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.2, 0.1, 0.0],
                           [0.8, 0.7, 0.6, 0.6, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1]])
    keys = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [3, 0, 8, 2, 9, 4, 1, 5, 6, 7], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]])
    calls = []

    def search(width, rows):
        calls.append((width, None if rows is None else rows.tolist()))
        picked = slice(None) if rows is None else rows
        return scores[picked, :width], keys[picked, :width]

    top_scores, top_keys = search_module.ranked_by_id_on_ties(search, 2, 10, str)
    assert calls == [(4, None), (10, [1])]  # query 1's 0.5s reach the 4th place: it alone goes to 16 -> all 10
    # query 1: 0.9 (key 3), then the run of 0.5s (keys 0, 8, 2, 9, 4, 1) by id descending: "9" first
    assert top_keys.tolist() == [[0, 1], [3, 9], [9, 8]]
    monkeypatch.setattr(search_module, "TIE_WINDOW", 64)
    whole = search_module.ranked_by_id_on_ties(lambda width, rows: (scores[:, :width], keys[:, :width]), 2, 10, str)
    assert whole[1].tolist() == top_keys.tolist() and torch.equal(whole[0], top_scores)
