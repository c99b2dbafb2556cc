"""Issue 17 (hardening) for the embedded index: a checksummed manifest, creates and writers under the lock,
no stale temp files or orphan segments, and search arguments checked up front (finite in the storage dtype)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import torch

import metaembed.index.embedded as embedded
import metaembed.index.files as files
import metaembed.index.manifest as manifest_module
from metaembed.index import CorruptIndexError, IndexLockedError, MultiVectorIndex
from metaembed.index.files import WriterLock


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _index_300_with_15_deleted(path) -> set[str]:
    with MultiVectorIndex.create(path, 8, 2, properties={"model": "m", "auto_margin": 0.07}) as index:
        for s in range(3):
            index.add([f"d{s * 100 + i}" for i in range(100)], unit(100, 2, 8, seed=s), [{"n": i} for i in range(100)])
        index.delete([f"d{i}" for i in range(3, 300, 20)])
        return set(index.ids)


# ---------------------------------------------------------------------------------------------- manifest checksum
def test_every_bit_flip_of_the_manifest_is_caught_or_harmless(tmp_path):
    """Each single-bit flip of manifest.json either raises CorruptIndexError or leaves exactly the original live
    set: never deleted documents brought back, never a raw KeyError or ValueError."""
    path = tmp_path / "ix"
    live = _index_300_with_15_deleted(path)
    assert len(live) == 285
    manifest = path / "manifest.json"
    original = manifest.read_bytes()
    outcomes: dict[str, int] = {}
    wrong: list[str] = []
    fd = os.open(manifest, os.O_RDWR)  # flip in place: rewriting the file 15,000 times is what would be slow
    try:
        for bit in range(len(original) * 8):
            at = bit // 8
            os.pwrite(fd, bytes([original[at] ^ (1 << (bit % 8))]), at)
            try:
                outcome = "same" if set(MultiVectorIndex.open(path, verify=False).ids) == live else "different"
            except CorruptIndexError:
                outcome = "corrupt"
            except Exception as error:  # noqa: BLE001 -- any other error is what the test is looking for
                outcome = type(error).__name__
            os.pwrite(fd, original[at : at + 1], at)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome not in ("same", "corrupt") and len(wrong) < 5:
                wrong.append(f"byte {at} bit {bit % 8} ({original[at - 12 : at + 12]!r}): {outcome}")
    finally:
        os.close(fd)
    assert set(outcomes) <= {"same", "corrupt"}, f"{outcomes}; e.g. {wrong}"
    assert outcomes["corrupt"] > 0.99 * len(original) * 8
    assert set(MultiVectorIndex.open(path).ids) == live


def test_a_damaged_manifest_is_named_even_without_verify(tmp_path):
    """verify=False (what the distributed index command's other ranks open with) skips the vectors' checksums,
    never the manifest's or ids.json's."""
    path = tmp_path / "ix"
    _index_300_with_15_deleted(path)
    manifest = path / "manifest.json"
    original = manifest.read_text()
    value = json.loads(original)
    first = value["segments"][0]["name"]
    assert value["deleted"][first][0] == 3
    value["deleted"][first][0] = 2  # d2 deleted instead of d3
    manifest.write_text(json.dumps(value, indent=1))
    with pytest.raises(CorruptIndexError, match=f"{manifest} fails its checksum"):
        MultiVectorIndex.open(path, verify=False)
    manifest.write_text(original)

    record = json.loads(original)["segments"][0]
    ids_file = path / "segments" / record["name"] / "ids.json"
    ids_file.write_text(ids_file.read_text().replace('"d1"', '"x1"'))  # same size: only a checksum sees it
    with pytest.raises(CorruptIndexError, match=f"{ids_file} fails its xxh3_128 checksum"):
        MultiVectorIndex.open(path, verify=False)


def test_manifest_without_checksum_or_structure(tmp_path):
    path = tmp_path / "ix"
    _index_300_with_15_deleted(path)
    manifest = path / "manifest.json"
    value = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({k: v for k, v in value.items() if k != "checksum"}))
    with pytest.raises(CorruptIndexError, match="fails its checksum"):
        MultiVectorIndex.open(path)
    for damage, message in [({"dim": "8"}, "'dim' must be a positive integer"),
                            ({"deleted": {"seg-0123456789abcdef": [1]}}, "not in 'segments'"),
                            ({"version": 7}, "format version 7")]:
        sealed = {**value, **damage}  # a correct checksum over a wrong structure: the structure is still checked
        sealed["checksum"] = manifest_module.manifest_checksum(sealed)
        manifest.write_text(json.dumps(sealed))
        with pytest.raises(CorruptIndexError, match=message):
            MultiVectorIndex.open(path)


def test_version_1_manifest_without_checksum_still_opens_and_is_upgraded(tmp_path):
    path = tmp_path / "ix"
    live = _index_300_with_15_deleted(path)
    manifest = path / "manifest.json"
    legacy = {k: v for k, v in json.loads(manifest.read_text()).items() if k != "checksum"}
    manifest.write_text(json.dumps({**legacy, "version": 1}))
    assert set(MultiVectorIndex.open(path).ids) == live
    legacy["deleted"][legacy["segments"][0]["name"]].append(100)  # a row past the segment's 100 documents
    manifest.write_text(json.dumps({**legacy, "version": 1}))
    with pytest.raises(CorruptIndexError, match="row numbers below its count 100"):
        MultiVectorIndex.open(path)
    legacy["deleted"][legacy["segments"][0]["name"]].pop()
    manifest.write_text(json.dumps({**legacy, "version": 1}))
    with MultiVectorIndex.open(path, mode="a") as index:
        index.add(["new"], unit(1, 2, 8))
    upgraded = json.loads(manifest.read_text())
    assert upgraded["version"] == 2 and upgraded["checksum"] == manifest_module.manifest_checksum(upgraded)
    assert set(MultiVectorIndex.open(path).ids) == live | {"new"}


def test_a_damaged_staged_segment_record_is_refused_before_any_commit(tmp_path):
    path = tmp_path / "ix"
    with MultiVectorIndex.create(path, 8, 2) as index:
        record = index.stage(["a", "b"], unit(2, 2, 8))
        before = (path / "manifest.json").read_bytes()
        for damaged, message in [({**record, "count": 3}, "recorded as 64 bytes, but 3 documents need 96"),
                                 ({**record, "name": "../x"}, "bad segment name"),
                                 ({k: v for k, v in record.items() if k != "files"}, "'files' must describe")]:
            with pytest.raises(CorruptIndexError, match=message):
                index.commit_segments([damaged])
            assert (path / "manifest.json").read_bytes() == before
        index.commit_segments([record])
    assert MultiVectorIndex.open(path).ids == ["a", "b"]


# ---------------------------------------------------------------------------------------------- the write lock
def test_racing_creates_one_wins_and_no_acknowledged_add_is_lost(tmp_path, monkeypatch):
    """B starts creating first and is slowed down just before it writes its manifest; A creates and adds
    meanwhile. One create must fail with a clear error, and whatever the winner added must survive."""
    path = tmp_path / "ix"
    b_writing, a_done = threading.Event(), threading.Event()
    real_write = files.write_json_atomically

    def slow_for_b(target, value):
        if threading.current_thread().name == "B":
            b_writing.set()
            a_done.wait(30)
        real_write(target, value)

    for module in (files, manifest_module, embedded):
        monkeypatch.setattr(module, "write_json_atomically", slow_for_b, raising=False)
    outcome: dict[str, object] = {}

    def create_b():
        try:
            outcome["B"] = MultiVectorIndex.create(path, 8, 2)
        except Exception as error:  # noqa: BLE001
            outcome["B"] = error

    thread = threading.Thread(target=create_b, name="B")
    thread.start()
    assert b_writing.wait(30)
    try:
        a = MultiVectorIndex.create(path, 8, 2)
        a.add(["acknowledged"], unit(1, 2, 8))
        outcome["A"] = a
    except Exception as error:  # noqa: BLE001
        outcome["A"] = error
    a_done.set()
    thread.join(30)
    winners = [name for name, value in outcome.items() if isinstance(value, MultiVectorIndex)]
    assert len(winners) == 1, outcome
    loser = outcome["B" if winners == ["A"] else "A"]
    assert isinstance(loser, (IndexLockedError, FileExistsError)) and str(path) in str(loser)
    outcome[winners[0]].close()
    expected = ["acknowledged"] if winners == ["A"] else []
    assert MultiVectorIndex.open(path).ids == expected


def test_a_writer_reads_the_manifest_after_taking_the_lock(tmp_path, monkeypatch):
    """A writer that opens while another is committing must start from that commit, not overwrite it."""
    path = tmp_path / "ix"
    first = MultiVectorIndex.create(path, 8, 2)
    real_acquire = WriterLock.acquire
    pending = [first]

    def acquire_after_the_other_commits(self):
        if pending:  # the other writer commits and lets go between our manifest read and our lock
            other = pending.pop()
            other.add(["theirs"], unit(1, 2, 8))
            other.close()
        real_acquire(self)

    monkeypatch.setattr(WriterLock, "acquire", acquire_after_the_other_commits)
    with MultiVectorIndex.open(path, mode="a") as second:
        second.add(["mine"], unit(1, 2, 8, seed=1))
    assert sorted(MultiVectorIndex.open(path).ids) == ["mine", "theirs"]


# ---------------------------------------------------------------------------------------------- leftovers
def test_a_writer_removes_temp_files_of_dead_processes(tmp_path):
    path = tmp_path / "ix"
    MultiVectorIndex.create(path, 8, 2).close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale, live = path / f".manifest.json.tmp-{dead.pid}", path / f".manifest.json.tmp-{alive.pid}"
        stale.write_text("{half a manif")
        live.write_text("{being written")
        MultiVectorIndex.open(path).close()  # a reader changes nothing
        assert stale.exists()
        MultiVectorIndex.open(path, mode="a").close()
        assert not stale.exists() and live.exists()
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.parametrize(
    ("ids", "metadata", "message"),
    [(["ok", "\ud800"], None, "position 1 is not valid Unicode"),
     (["ok", "fine"], [None, {"note": "\udcff"}], "metadata of id 'fine' is not JSON-serialisable as UTF-8")],
)
def test_a_failed_add_leaves_no_segment_folder(tmp_path, ids, metadata, message):
    path = tmp_path / "ix"
    with MultiVectorIndex.create(path, 8, 2) as index:
        with pytest.raises(ValueError, match=message):
            index.add(ids, unit(2, 2, 8), metadata)
        assert not list((path / "segments").iterdir())
        index.add(["ok"], unit(1, 2, 8))
    assert MultiVectorIndex.open(path).ids == ["ok"]


def test_a_write_that_fails_midway_removes_its_segment_folder(tmp_path, monkeypatch):
    import metaembed.index.segment as segment_module

    path = tmp_path / "ix"
    real = segment_module.write_bytes_durably
    calls = []

    def disk_full_on_the_second_file(target, data):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(target, data)

    with MultiVectorIndex.create(path, 8, 2) as index:
        monkeypatch.setattr(segment_module, "write_bytes_durably", disk_full_on_the_second_file)
        with pytest.raises(OSError, match="No space left"):
            index.add(["a", "b"], unit(2, 2, 8))
        assert not list((path / "segments").iterdir()) and len(index) == 0


# ---------------------------------------------------------------------------------------------- search arguments
@pytest.fixture
def small(tmp_path):
    index = MultiVectorIndex.create(tmp_path / "ix", 8, 4)
    index.add([f"d{i}" for i in range(30)], unit(30, 4, 8))
    yield index
    index.close()


@pytest.mark.parametrize("method", ["search", "cascade_search"])
@pytest.mark.parametrize(("arguments", "message"), [
    ({"k": 0}, "k must be at least 1, got 0"),
    ({"k": -1}, "k must be at least 1, got -1"),
    ({"k": 2.5}, "k must be an integer, got 2.5"),
    ({"k": True}, "k must be an integer, got True"),
])
def test_search_and_cascade_agree_on_bad_k(small, method, arguments, message):
    with pytest.raises(ValueError, match=message):
        getattr(small, method)(unit(2, 4, 8), **arguments)


@pytest.mark.parametrize("candidates", [0, -5])
def test_cascade_refuses_bad_candidates(small, candidates):
    with pytest.raises(ValueError, match=f"candidates must be at least 1, got {candidates}"):
        small.cascade_search(unit(2, 4, 8), candidates=candidates)
    with pytest.raises(ValueError, match=f"candidates must be at least 1, got {candidates}"):
        small.search(unit(2, 4, 8), budget="auto", candidates=candidates)


def test_values_that_overflow_bf16_are_refused(small, tmp_path):
    huge = unit(2, 4, 8)
    huge[1, 2, 3] = 3.4e38  # a finite float32, infinite once stored as bf16 (its largest is 3.39e38)
    assert torch.isfinite(huge).all() and not torch.isfinite(huge.to(torch.bfloat16)).all()
    with pytest.raises(ValueError, match=r"NaN or infinite values \(in bfloat16\) in the vectors of ids \['b'\]"):
        small.add(["a", "b"], huge)
    assert "a" not in small
    with pytest.raises(ValueError, match=r"\(in bfloat16\) in the vectors of ids \['a'\]"):  # the smallest counts too
        small.add(["a", "b"], torch.cat([-huge[1:], unit(1, 4, 8)]))
    for dtype in (torch.bfloat16, torch.float64):  # other dtypes take torch's path: NaN is found there too
        with pytest.raises(ValueError, match=r"NaN or infinite values \(in bfloat16\) in the vectors of ids \['b'\]"):
            small.add(["a", "b"], torch.cat([unit(1, 4, 8), torch.full((1, 4, 8), float("nan"))]).to(dtype))
    assert "a" not in small
    query = huge[1:]
    for call in (lambda: small.search(query), lambda: small.cascade_search(query),
                 lambda: small.search(query, budget="auto")):
        with pytest.raises(ValueError, match=r"query vectors contain NaN or infinite values \(in bfloat16\)"):
            call()
    scores = [s for hit in small.search(unit(3, 4, 8, seed=5), k=30) for s in hit.scores]
    assert len(scores) == 90 and all(torch.isfinite(torch.tensor(scores)))

    with MultiVectorIndex.create(tmp_path / "int8", 8, 4, dtype="int8") as int8:
        int8.add(["a", "b"], huge)  # int8 codes with fp32 scales hold 3.4e38
        with pytest.raises(ValueError, match=r"infinite values \(in float32\)"):
            int8.add(["c"], huge[1:].double() * 1e10)
        with pytest.raises(ValueError, match=r"query vectors contain NaN or infinite values \(in float32\)"):
            int8.search(query.double() * 1e10)
