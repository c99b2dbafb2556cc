"""Crash safety and damage detection: SIGKILL mid-add, truncated or bit-flipped files, rejected adds, the writer lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from metaembed.index import CorruptIndexError, IndexLockedError, MultiVectorIndex

_WRITER = textwrap.dedent(
    """
    import sys, torch
    from metaembed.index import MultiVectorIndex
    index = MultiVectorIndex.create(sys.argv[1], dim=64, max_document_vectors=8)
    batch = 0
    while True:
        ids = [f"b{batch}-{i}" for i in range(3000)]
        vectors = torch.nn.functional.normalize(torch.randn(3000, 8, 64), dim=-1)
        index.add(ids, vectors, [{"batch": batch}] * 3000)
        print(batch, flush=True)
        batch += 1
    """
)


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_sigkill_during_add_keeps_every_returned_add(tmp_path, extra_delay=0.05):
    """One subprocess (importing torch costs seconds on a loaded machine); the kill lands inside an add."""
    path = tmp_path / "ix"
    process = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    returned = []
    while len(returned) < 2:
        returned.append(int(process.stdout.readline()))
    time.sleep(extra_delay)  # land somewhere inside a later add
    process.send_signal(signal.SIGKILL)
    process.wait()
    returned += [int(line) for line in process.stdout.read().split()]  # adds that returned before the kill

    with MultiVectorIndex.open(path, mode="a") as index:
        batches = {}
        for id_ in index.ids:
            batches.setdefault(int(id_.split("-")[0][1:]), []).append(id_)
        for batch in returned:
            assert len(batches.pop(batch)) == 3000, f"batch {batch} returned from add but is incomplete"
        assert all(len(ids) == 3000 for ids in batches.values())  # at most one more batch, complete (no partial add)
        assert len(batches) <= 1
        assert index.get_metadata(f"b{returned[0]}-5") == {"batch": returned[0]}
        committed = {record["name"] for record in index.manifest["segments"]}
        removed = index.remove_orphan_segments()  # a segment written by the killed add, if the kill came before commit
        assert not set(removed) & committed
        assert {p.name for p in (path / "segments").iterdir()} == committed
        # the index keeps working after the crash
        index.add(["after"], unit(1, 8, 64))
        assert index.search(unit(1, 8, 64)[:, :1] * 0 + index.get_vectors(["after"])[:, :1], k=1)[0].ids == ["after"]
    assert "after" in MultiVectorIndex.open(path)


def _segment_file(path, name):
    manifest = json.loads((path / "manifest.json").read_text())
    return path / "segments" / manifest["segments"][0]["name"] / name


def _small_index(path):
    with MultiVectorIndex.create(path, 16, 4) as index:
        index.add([f"d{i}" for i in range(20)], unit(20, 4, 16), [{"i": i} for i in range(20)])


def _flip_a_bit(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x04
    path.write_bytes(data)


def test_bit_flip_is_reported_with_the_file_before_any_result_uses_it(tmp_path):
    """Opening checks sizes and ids; each rank of the vectors is checked when first read: a search that does not
    read the damaged rank works, every reader of it gets a CorruptIndexError naming the file and the part."""
    _small_index(tmp_path / "ix")  # 20 documents x 4 vectors x 16 dims in bf16: 640 bytes per rank
    queries = unit(2, 4, 16)
    before = [r.ids for r in MultiVectorIndex.open(tmp_path / "ix").search(queries, k=5, budget=(2, 2))]
    vectors = _segment_file(tmp_path / "ix", "vectors.bin")
    _flip_a_bit(vectors, 2 * 640 + 100)  # in rank 2: the third vector of some document
    index = MultiVectorIndex.open(tmp_path / "ix")  # fast: nothing read yet
    assert [r.ids for r in index.search(queries, k=5, budget=(2, 2))] == before
    damaged = f"{vectors} fails its xxh3_128 checksum in part 2"
    for read in (lambda: index.search(queries, k=5, budget=(2, 3)), lambda: index.get_vectors(["d1"], 4),
                 lambda: index.cascade_search(queries, k=5, budget=(2, 4)), index.verify,
                 lambda: MultiVectorIndex.open(tmp_path / "ix").verify()):
        with pytest.raises(CorruptIndexError, match=damaged):
            read()
    trusted = MultiVectorIndex.open(tmp_path / "ix", verify=False)  # what the index command's other ranks do
    assert len(trusted.search(queries, k=5, budget=(2, 4))) == 2


def test_segments_with_whole_file_sha256_records_still_open_and_are_checked(tmp_path):
    """Indexes written before per-rank checksums record one sha256 per file: still read, checked whole on first use."""
    from metaembed.index import manifest as manifest_module
    from metaembed.index.files import file_checksum

    _small_index(tmp_path / "ix")
    manifest_path = tmp_path / "ix" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    folder = tmp_path / "ix" / "segments" / manifest["segments"][0]["name"]
    manifest["segments"][0]["files"] = {name: {"bytes": (folder / name).stat().st_size,
                                               "sha256": file_checksum(folder / name, "sha256")}
                                        for name in manifest["segments"][0]["files"]}
    manifest["checksum"] = manifest_module.manifest_checksum(manifest)
    manifest_path.write_text(json.dumps(manifest))
    queries = unit(2, 4, 16)
    expected = [r.ids for r in MultiVectorIndex.open(tmp_path / "ix").search(queries, k=3)]
    _flip_a_bit(folder / "vectors.bin", 3 * 640 + 7)
    with pytest.raises(CorruptIndexError, match=f"{folder / 'vectors.bin'} fails its sha256 checksum"):
        MultiVectorIndex.open(tmp_path / "ix").search(queries, k=3, budget=(1, 1))  # whole file, even at (1, 1)
    _flip_a_bit(folder / "vectors.bin", 3 * 640 + 7)
    assert [r.ids for r in MultiVectorIndex.open(tmp_path / "ix").search(queries, k=3)] == expected


def test_new_files_record_per_rank_checksums(tmp_path):
    _small_index(tmp_path / "ix")
    record = json.loads((tmp_path / "ix" / "manifest.json").read_text())["segments"][0]["files"]
    assert record["vectors.bin"]["part_bytes"] == 640 and len(record["vectors.bin"]["parts"]) == 4
    assert set(record["ids.json"]) == {"bytes", "xxh3_128"}


def test_truncated_file_is_reported_with_the_file(tmp_path):
    _small_index(tmp_path / "ix")
    vectors = _segment_file(tmp_path / "ix", "vectors.bin")
    os.truncate(vectors, vectors.stat().st_size - 10)
    with pytest.raises(CorruptIndexError, match=f"{vectors}.*truncated"):
        MultiVectorIndex.open(tmp_path / "ix", verify=False)


def test_missing_and_damaged_metadata_or_manifest(tmp_path):
    _small_index(tmp_path / "ix")
    ids_file = _segment_file(tmp_path / "ix", "ids.json")
    ids_file.unlink()
    with pytest.raises(CorruptIndexError, match=f"{ids_file} is missing"):
        MultiVectorIndex.open(tmp_path / "ix")
    (tmp_path / "ix" / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptIndexError, match="manifest.json is not valid JSON"):
        MultiVectorIndex.open(tmp_path / "ix")


@pytest.mark.parametrize(
    ("ids", "vectors", "metadata", "message"),
    [
        (["a", "b"], unit(2, 4, 8), None, "dimension 8, the index stores dimension 16"),
        (["a", "b"], unit(2, 3, 16), None, "3 vectors, the index stores 4"),
        (["a", "b"], torch.tensor([[[float("nan")] * 16] * 4, [[0.25] * 16] * 4]), None, r"NaN or infinite.*\['a'\]"),
        (["a", "b"], torch.full((2, 4, 16), float("inf")), None, r"NaN or infinite.*\['a', 'b'\]"),
        (["a", "a"], unit(2, 4, 16), None, r"duplicate ids in one add: \['a'\]"),
        (["a", ""], unit(2, 4, 16), None, "position 1 must be a non-empty string"),
        (["a"], unit(2, 4, 16), None, "1 ids but 2 documents"),
        (["a", "b"], unit(2, 4, 16), [{"x": object()}, None], "metadata of id 'a' is not JSON"),
    ],
)
def test_bad_adds_are_rejected_and_change_nothing(tmp_path, ids, vectors, metadata, message):
    _small_index(tmp_path / "ix")
    before = (tmp_path / "ix" / "manifest.json").read_bytes()
    with MultiVectorIndex.open(tmp_path / "ix", mode="a") as index:
        with pytest.raises(ValueError, match=message):
            index.add(ids, vectors, metadata)
        assert len(index) == 20 and "a" not in index
    assert (tmp_path / "ix" / "manifest.json").read_bytes() == before
    assert len(list((tmp_path / "ix" / "segments").iterdir())) == 1


def test_one_writer_at_a_time_readers_allowed(tmp_path):
    _small_index(tmp_path / "ix")
    writer = MultiVectorIndex.open(tmp_path / "ix", mode="a")
    with pytest.raises(IndexLockedError, match=f"{os.getpid()}"):  # flock is per open file: holds within a process too
        MultiVectorIndex.open(tmp_path / "ix", mode="a")
    assert len(MultiVectorIndex.open(tmp_path / "ix", mode="r")) == 20
    writer.close()
    MultiVectorIndex.open(tmp_path / "ix", mode="a").close()


def test_create_refuses_existing_index(tmp_path):
    _small_index(tmp_path / "ix")
    with pytest.raises(FileExistsError, match="already exists"):
        MultiVectorIndex.create(tmp_path / "ix", 16, 4)
    with pytest.raises(FileNotFoundError, match="no index at"):
        MultiVectorIndex.open(tmp_path / "nothing")
