"""Merging segments: the tiered policy after adds, compact(), what a merge keeps (vectors as stored, ids, metadata,
the saved HNSW graph under renamed keys) and drops (deleted documents), damaged sources, and readers meanwhile."""

from __future__ import annotations

import json

import pytest
import torch

import metaembed
import metaembed.index.embedded as embedded_module
import metaembed.index.merging as merging
import metaembed.index.writing as writing_module
from metaembed.index import CorruptIndexError, MultiVectorIndex
from metaembed.index.merging import MERGE_FACTOR, size_tier, tail_to_merge

MB = 1 << 20


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)


def folders(path):
    return sorted(p.name for p in (path / "segments").iterdir())


def test_size_tiers_and_the_tail_the_policy_merges():
    assert [size_tier(size) for size in (0, MB - 1, MB, 4 * MB - 1, 4 * MB, 16 * MB, 70 * MB)] == [0, 0, 0, 0, 1, 2, 3]
    assert tail_to_merge([10, 10, 10]) == 0  # fewer than MERGE_FACTOR
    assert tail_to_merge([10, 10, 10, 10]) == MERGE_FACTOR == 4
    assert tail_to_merge([100 * MB, 10, 10, 10, 10]) == 4  # only the trailing run of one tier
    assert tail_to_merge([10, 10, 10, 5 * MB]) == 0  # tiers differ
    assert tail_to_merge([600 * MB] * 4) == 0  # the merged segment would pass AUTO_MERGE_MAX_BYTES (2 GiB)
    assert tail_to_merge([300 * MB] * 4) == 4


@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "int8", "pq"])
def test_compact_keeps_every_live_document_as_stored_and_drops_deleted_ones(tmp_path, dtype):
    documents = unit(300, 8, 32, seed=1)
    settings = {"subquantizers": 8, "full_precision": True} if dtype == "pq" else {}
    index = MultiVectorIndex.create(tmp_path / "ix", dim=32, max_document_vectors=8, dtype=dtype, **settings)
    for first, stop in ((0, 280), (280, 290), (290, 300)):
        index.add([f"d{i}" for i in range(first, stop)], documents[first:stop], [{"n": i} for i in range(first, stop)])
    index.delete([f"d{i}" for i in range(0, 300, 7)])
    live = [f"d{i}" for i in range(300) if i % 7]
    queries = unit(4, 4, 32, seed=2)
    before = index.search(queries, k=10, budget=(4, 8))
    vectors = index.get_vectors(live)
    full = index.search(queries, k=10, budget=(2, 4), rescore=50) if dtype == "pq" else None
    old_bytes = sum(f["bytes"] for record in index.manifest["segments"] for f in record["files"].values())

    assert len(index.manifest["segments"]) == 3 and index.compact() == 3
    assert [record["count"] for record in index.manifest["segments"]] == [len(live)] and not index.manifest["deleted"]
    assert folders(tmp_path / "ix") == [index.manifest["segments"][0]["name"]]  # the merged folders are gone
    after = index.search(queries, k=10, budget=(4, 8))
    assert [r.ids for r in after] == [r.ids for r in before] and [r.scores for r in after] == [r.scores for r in before]
    assert torch.equal(index.get_vectors(live), vectors)  # copied as stored: not one bit changed
    if dtype == "pq":
        assert [r.ids for r in index.search(queries, k=10, budget=(2, 4), rescore=50)] == [r.ids for r in full]
    new_bytes = sum(f["bytes"] for f in index.manifest["segments"][0]["files"].values())
    assert new_bytes < old_bytes  # the 43 deleted documents' bytes are freed
    assert index.compact() == 0  # one segment, nothing deleted: nothing to do
    index.close()

    with MultiVectorIndex.open(tmp_path / "ix") as reader:
        reader.verify()  # every byte matches the checksums recorded for the merged segment
        assert reader.ids == live and reader.get_metadata("d299") == {"n": 299}
        assert "d7" not in reader and len(reader) == len(live)


@pytest.mark.parametrize("smallest_tier", [1, MB])
def test_the_policy_merges_small_adds_as_they_come(tmp_path, monkeypatch, smallest_tier):
    monkeypatch.setattr(merging, "_SMALLEST_TIER_BYTES", smallest_tier)  # 1: every size has its own tier
    documents = unit(40, 4, 16, seed=3)
    index = MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=4)
    counts = []
    for i in range(10):  # a server adding one request at a time
        index.add([f"d{i * 4 + j}" for j in range(4)], documents[i * 4 : i * 4 + 4], [{"i": i}] * 4)
        counts.append([record["count"] for record in index.manifest["segments"]])
    assert counts[2] == [4, 4, 4] and counts[3] == [16]  # the fourth small segment triggers a merge
    # tiers by size: four 16-document segments would merge next; under 1 MB every segment is of the lowest tier
    assert counts[-1] == ([16, 16, 4, 4] if smallest_tier == 1 else [40])
    assert len(folders(tmp_path / "ix")) == len(counts[-1])
    queries = unit(3, 2, 16, seed=4)
    found = index.search(queries, k=5, budget=(2, 4), compute_dtype=torch.float32)
    expected = metaembed.maxsim(queries, documents.bfloat16().float(), 2, 4).topk(5, dim=1)
    assert [r.ids for r in found] == [[f"d{i}" for i in row] for row in expected.indices.tolist()]
    assert index.get_metadata("d37") == {"i": 9}
    index.close()


def test_a_damaged_source_stops_the_merge_and_changes_nothing(tmp_path):
    index = MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=4)
    index.add(["a", "b"], unit(2, 4, 16, seed=5))
    index.add(["c"], unit(1, 4, 16, seed=6))
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    damaged = tmp_path / "ix" / "segments" / manifest["segments"][0]["name"] / "vectors.bin"
    raw = bytearray(damaged.read_bytes())
    raw[-1] ^= 0x40  # the last rank: a merge must read (and check) every rank, not only what searches read
    damaged.write_bytes(bytes(raw))
    index.close()
    with MultiVectorIndex.open(tmp_path / "ix", mode="a") as writer:
        with pytest.raises(CorruptIndexError, match="vectors.bin fails its xxh3_128 checksum in part 3"):
            writer.compact()
        assert writer.manifest == manifest and len(writer.manifest["segments"]) == 2
    assert folders(tmp_path / "ix") == sorted(record["name"] for record in manifest["segments"])  # no half merge left


def test_a_merge_renames_the_keys_of_the_saved_graph(tmp_path):
    documents = unit(120, 8, 32, seed=7)
    index = MultiVectorIndex.create(tmp_path / "ix", dim=32, max_document_vectors=8)
    index.add([f"d{i}" for i in range(60)], documents[:60])
    index.add([f"d{i}" for i in range(60, 120)], documents[60:])
    index.build_hnsw()
    index.delete([f"d{i}" for i in range(0, 120, 5)])
    queries = unit(5, 4, 32, seed=8)
    before = index.cascade_search(queries, k=10, budget=(4, 8), candidates=40, first_stage="hnsw")
    index.compact()
    record = index.manifest["hnsw"]
    assert record["documents"] == len(index) == 96
    after = index.cascade_search(queries, k=10, budget=(4, 8), candidates=40, first_stage="hnsw")
    assert [r.ids for r in after] == [r.ids for r in before]
    with MultiVectorIndex.open(tmp_path / "ix") as reader:
        graph = reader.build_hnsw()
        assert sorted(int(key) for key in graph.keys) == list(range(96))  # keys 0..95, no hole, no stale key
        first_vectors = reader.get_vectors(["d61"], document_budget=1)[0, 0]
        assert torch.allclose(torch.from_numpy(graph.get(reader.key_of("d61"))).float(), first_vectors, atol=1e-2)


def test_keys_of_an_earlier_state_are_refused_after_a_merge(tmp_path):
    index = MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=4)
    index.add(["a", "b", "c"], unit(3, 4, 16, seed=9))
    index.add(["d"], unit(1, 4, 16, seed=10))
    found = index.search(unit(1, 2, 16, seed=11), k=4, arrays=True)
    assert index.ids_of(found)[0] == index.ids_of(found.keys)[0] and sorted(index.ids_of(found)[0]) == list("abcd")
    index.delete(["a"])
    index.compact()
    with pytest.raises(ValueError, match=r"\(a merge renumbers keys\): search again"):
        index.ids_of(found)
    index.close()


def test_a_reader_of_merged_segments_keeps_searching_and_a_new_opener_retries(tmp_path, monkeypatch):
    index = MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=4)
    index.add(["a", "b"], unit(2, 4, 16, seed=12), [{"n": 0}, {"n": 1}])
    index.add(["c"], unit(1, 4, 16, seed=13), [{"n": 2}])
    reader = MultiVectorIndex.open(tmp_path / "ix")
    stale = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    queries = unit(1, 2, 16, seed=14)
    expected = reader.search(queries, k=3, arrays=True)
    index.compact()

    # its memory maps outlive the merged files; metadata not yet read says what to do
    assert reader.search(queries, k=3, arrays=True).keys.tolist() == expected.keys.tolist()
    with pytest.raises(CorruptIndexError, match="merged it into another .* refresh"):
        reader.get_metadata("a")
    assert reader.refresh() and reader.get_metadata("a") == {"n": 0} and len(reader._segments) == 1

    # an opener that read the manifest just before the merge committed finds its segments gone: it reads again
    reads = []
    real = embedded_module.read_manifest

    def first_the_stale_one(path):
        reads.append(path)
        return stale if len(reads) == 1 else real(path)

    monkeypatch.setattr(embedded_module, "read_manifest", first_the_stale_one)
    with MultiVectorIndex.open(tmp_path / "ix") as late:
        assert len(late._segments) == 1 and late.get_metadata("c") == {"n": 2}
    assert len(reads) >= 3
    index.close()


def test_compact_command(tmp_path):
    from typer.testing import CliRunner

    from metaembed.cli import app

    index = MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=4)
    index.add(["a", "b"], unit(2, 4, 16, seed=15))
    index.add(["c"], unit(1, 4, 16, seed=16))
    index.delete(["b"])
    index.close()
    runner = CliRunner()
    result = runner.invoke(app, ["compact", "-i", str(tmp_path / "ix")])
    assert result.exit_code == 0, result.output
    assert "2 segments merged into 1: 2 documents" in result.output
    assert MultiVectorIndex.open(tmp_path / "ix").ids == ["a", "c"]
    again = runner.invoke(app, ["compact", "-i", str(tmp_path / "ix")])
    assert "already one segment with no deleted documents (2 documents)" in again.output
    missing = runner.invoke(app, ["compact", "-i", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "--index" in missing.output and "no index at" in missing.output


def test_a_merge_that_fails_after_an_add_is_a_warning_and_the_add_stands(tmp_path, monkeypatch):
    index = MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=4)
    for i in range(3):
        index.add([f"d{i}"], unit(1, 4, 16, seed=20 + i))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writing_module, "write_merged_segment", full_disk)
    with pytest.warns(RuntimeWarning, match="merging small segments failed.*No space left on device"):
        index.add(["d3"], unit(1, 4, 16, seed=23))  # the fourth small segment: the policy tries to merge
    assert index.ids == ["d0", "d1", "d2", "d3"] and len(index.manifest["segments"]) == 4
    index.close()
    assert MultiVectorIndex.open(tmp_path / "ix").ids == ["d0", "d1", "d2", "d3"]


def test_a_bulk_load_can_turn_merging_off_and_compact_once(tmp_path):
    index = MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=4)
    index.auto_merge = False
    for i in range(6):
        index.add([f"d{i}"], unit(1, 4, 16, seed=30 + i))
    assert [record["count"] for record in index.manifest["segments"]] == [1] * 6
    assert index.compact() == 6 and [record["count"] for record in index.manifest["segments"]] == [6]
    index.close()
