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


# ------------------------------------------------------------------------------------ the HNSW graph, saved
def _graph_files(path):
    return sorted(p.name for p in (path / "hnsw").glob("*.usearch"))


def test_a_writer_saves_the_graph_and_readers_open_it_instead_of_rebuilding(setup, monkeypatch):
    index, _, queries = setup
    graph = index.build_hnsw()
    record = index.manifest["hnsw"]
    assert record["documents"] == len(graph) == 200 and record["settings"]["connectivity"] == 16
    assert _graph_files(index.path) == [record["file"]]
    expected = [r.ids for r in index.cascade_search(queries, k=10, budget=(4, 8), candidates=60, first_stage="hnsw")]

    import metaembed.index.hnsw as hnsw

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a reader rebuilt the graph the manifest names")

    monkeypatch.setattr(hnsw, "build_first_vector_hnsw", no_rebuild)
    with MultiVectorIndex.open(index.path) as reader:
        found = reader.cascade_search(queries, k=10, budget=(4, 8), candidates=60, first_stage="hnsw")
        assert [r.ids for r in found] == expected


def test_adds_and_deletes_update_the_saved_graph_in_the_same_commit(setup):
    index, _, queries = setup
    index.build_hnsw()
    first_file = index.manifest["hnsw"]["file"]
    near = queries[:1].repeat(1, 2, 1)  # a document made of query 0's own vectors: its best match at every budget
    index.add(["new", "d5"], torch.cat([near, unit(1, 8, 32, seed=9)]))  # one new id, one replaced
    index.delete(["d7"])
    record = index.manifest["hnsw"]
    assert record["file"] != first_file and record["documents"] == len(index) == 200
    assert len(_graph_files(index.path)) == 2  # the current graph and the previous one (a reader may still open it)
    with MultiVectorIndex.open(index.path) as reader:
        graph = reader.build_hnsw()
        assert len(graph) == len(reader) and reader.key_of("new") in graph
        assert reader.key_of("d5") in graph and 7 not in graph  # d7's key is gone; d5's old key (5) replaced
        assert 5 not in graph
        hits = reader.cascade_search(queries[:1], k=5, budget=(4, 8), candidates=20, first_stage="hnsw")[0]
        assert hits.ids[0] == "new"
        every = reader.cascade_search(queries, k=200, budget=(1, 1), candidates=200, first_stage="hnsw")
        assert all("d7" not in r.ids for r in every)


def test_a_damaged_graph_is_named_and_a_failed_commit_loses_nothing(setup, monkeypatch):
    index, _, queries = setup
    index.build_hnsw()
    record = index.manifest["hnsw"]
    import metaembed.index.writing as writing

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(writing, "write_manifest", crash)
    with pytest.raises(OSError, match="disk full"):
        index.add(["lost"], unit(1, 8, 32, seed=4))
    monkeypatch.undo()
    with MultiVectorIndex.open(index.path) as reader:
        assert "lost" not in reader and reader.manifest["hnsw"] == record
        assert len(reader.build_hnsw()) == 200
    path = index.path / "hnsw" / record["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(data)
    with MultiVectorIndex.open(index.path) as reader:
        with pytest.raises(metaembed.index.CorruptIndexError, match=f"{path} fails its xxh3_128 checksum"):
            reader.cascade_search(queries, k=5, budget=(2, 4), candidates=20, first_stage="hnsw")


def test_other_settings_rebuild_for_a_writer_and_stay_in_memory_for_a_reader(setup):
    index, _, queries = setup
    index.build_hnsw()
    with MultiVectorIndex.open(index.path) as reader:
        reader.build_hnsw(connectivity=8)
        assert reader.manifest["hnsw"]["settings"]["connectivity"] == 16  # a reader never writes
    index.build_hnsw(connectivity=8)
    assert index.manifest["hnsw"]["settings"] == {"connectivity": 8, "expansion_add": 128, "expansion_search": 256}


@pytest.mark.parametrize("values", [1, 2 * 8 * 32, 1 << 22])  # one query a step, two, all at once
def test_rerank_in_steps_scores_every_candidate_exactly(setup, monkeypatch, values):
    from metaembed.index import search

    index, documents, _ = setup
    queries = unit(5, 4, 32, seed=7)
    # candidates from both segments, out of order, repeated across queries; -1 = no candidate (one row has none)
    keys = torch.tensor([[150, 3, 119, 120], [7, -1, 199, 7], [-1, -1, -1, -1], [0, 60, -1, 180], [121, 5, 9, 88]])
    monkeypatch.setattr(search, "_RERANK_VALUES", values)
    scores, found = search.rerank(index._segments, index._offsets, queries, keys, 8, 3, torch.float32)
    full = metaembed.maxsim(queries, documents, 4, 8, dtype=torch.float32)
    for q in range(5):
        live = [key for key in keys[q].tolist() if key >= 0]
        expected = sorted(((full[q, key].item(), key) for key in live), reverse=True)[:3]  # a repeat scores twice
        got = [(s, key) for s, key in zip(scores[q].tolist(), found[q].tolist()) if s != float("-inf")]
        assert [s for s, _ in got] == pytest.approx([s for s, _ in expected], abs=1e-5)
        assert {key for _, key in got} <= set(live) and len(got) == min(3, len(live))
