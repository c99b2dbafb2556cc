"""Search on several threads (blocks of documents pulled by single-threaded workers) gives the one-thread results; array results (integer keys + scores) match the per-query objects; query checks stay exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metaembed.index.scan as scan_module
import metaembed.index.search as search_module
from metaembed.index import MissingIdsError, MultiVectorIndex
from metaembed.index import SearchArrays
from metaembed.index.scan import document_chunks, search_tasks
from metaembed.scoring import maxsim


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)


@pytest.fixture
def small_blocks(monkeypatch):
    """Tasks of any size, so a 300-document index is split into many (by documents, or by ranks)."""
    monkeypatch.setattr(scan_module, "_MIN_TASK_MACS", 1)
    monkeypatch.setattr(scan_module, "_MIN_TASK_VECTORS", 1)
    monkeypatch.setattr(scan_module, "_MIN_RANK_TASK_VECTORS", 1)
    monkeypatch.setattr(scan_module, "_MIN_PARALLEL_VECTORS", 0)
    monkeypatch.setattr(scan_module, "_MIN_PARALLEL_MACS", 0)


@pytest.fixture
def index(tmp_path):
    documents = unit(300, 8, 16, seed=1)
    index = MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=8)
    index.add([f"d{i:03d}" for i in range(130)], documents[:130], [{"n": i} for i in range(130)])
    index.add([f"d{i:03d}" for i in range(130, 300)], documents[130:], [{"n": i} for i in range(130, 300)])
    index.delete([f"d{i:03d}" for i in range(0, 300, 7)])
    yield index
    index.close()


def test_chunks_cover_every_row_once_and_split_for_threads():
    chunks = document_chunks([50_000, 0, 25_000], block=100_000, threads=2, macs_per_document=1 << 20,
                             vectors_per_document=64)
    covered = [(s, row) for s, start, stop, _ in chunks for row in range(start, stop)]
    assert covered == [(0, r) for r in range(50_000)] + [(2, r) for r in range(25_000)]
    assert {offset for s, _, _, offset in chunks if s == 2} == {50_000}
    # four equal blocks per thread at least: 75,000 / 8 -> blocks of <= 9,375, each segment cut evenly
    assert [stop - start for _, start, stop, _ in chunks] == [8_333, 8_333, 8_334] * 2 + [8_333, 8_333, 8_334]
    # one block per thread where more would hold fewer than 2,048 documents (oneDNN's matmul slows down there)
    small = document_chunks([6_000], block=100_000, threads=2, macs_per_document=1 << 20, vectors_per_document=64)
    assert [stop - start for _, start, stop, _ in small] == [3_000, 3_000]
    assert len(document_chunks([9_000], block=100_000, threads=2, macs_per_document=1 << 20, vectors_per_document=64)) == 4
    # never fewer than 2**28 multiply-adds per task: at 4 x 10**5 per document -> 672 documents
    small = document_chunks([600], block=100_000, threads=2, macs_per_document=400_000, vectors_per_document=1)
    assert small == [(0, 0, 600, 0)]
    # ... or 2**18 vectors read (few queries: a whole segment is read faster than parts of it)
    lone = document_chunks([40_000], block=10**6, threads=2, macs_per_document=128, vectors_per_document=1)
    assert lone == [(0, 0, 40_000, 0)]
    lone = document_chunks([600_000], block=10**6, threads=2, macs_per_document=128, vectors_per_document=1)
    assert [stop - start for _, start, stop, _ in lone] == [200_000] * 3
    tiny = document_chunks([3_000], block=10**6, threads=2, macs_per_document=128, vectors_per_document=1)
    assert tiny == [(0, 0, 3_000, 0)]  # not worth splitting
    assert document_chunks([5000], block=100_000, threads=1) == [(0, 0, 5000, 0)]  # one thread: one block


def test_a_small_search_runs_on_one_thread():
    """Below ~10 ms of work a second thread is not worth waiting for (on a busy machine it may start late)."""
    from types import SimpleNamespace

    small = [SimpleNamespace(count=2_000, stores_plain_vectors=True) for _ in range(5)]  # 10k x 8 vectors
    tasks = search_tasks(small, 8, 16, 384, threads=2)
    assert [(t.segment, t.start, t.stop, t.ranks, t.parts) for t in tasks] == [
        (s, 0, 2_000, (0, 8), 1) for s in range(5)]
    large = [SimpleNamespace(count=2_000, stores_plain_vectors=True) for _ in range(5)]  # 10k x 64 vectors
    assert {t.parts for t in search_tasks(large, 64, 16, 384, threads=2)} == {2}  # each segment shared by its ranks
    codes = [SimpleNamespace(count=20_000, stores_plain_vectors=False)]  # pq: shared by documents
    assert [(t.start, t.stop) for t in search_tasks(codes, 16, 16, 384, threads=2)] == [
        (start, start + 2_500) for start in range(0, 20_000, 2_500)]  # four blocks per thread
    # pq codes in blocks of at most 2**14 documents, even for one thread (lookup rows and sums stay in cache)
    one_million = [SimpleNamespace(count=1_000_000, stores_plain_vectors=False)]
    blocks = [t.stop - t.start for t in search_tasks(one_million, 64, 16, 384, threads=1)]
    assert max(blocks) <= 1 << 14 and sum(blocks) == 1_000_000
    plain = [SimpleNamespace(count=1_000_000, stores_plain_vectors=True)]  # bf16: 4 equal blocks of <= 4M / 16
    assert [t.stop - t.start for t in search_tasks(plain, 64, 16, 384, threads=1)] == [250_000] * 4


def test_a_small_search_hands_nothing_to_helper_threads(index, monkeypatch):
    def no_pool(threads):
        raise AssertionError("a small search asked for helper threads")

    monkeypatch.setattr(search_module, "search_pool", no_pool)
    index.threads = 2
    assert len(index._segments) > 1 and len(index.search(unit(2, 4, 16, seed=3), k=3, budget=(2, 4))) == 2


def test_tasks_cover_every_document_vector_once(index, small_blocks):
    segments = index._segments
    for n_query_vectors, r_c, threads in ((16, 8, 2), (16, 8, 1), (16, 1, 2), (400, 8, 2)):
        tasks = search_tasks(segments, r_c, n_query_vectors, 16, threads)
        covered = sorted((t.segment, row, rank) for t in tasks for row in range(t.start, t.stop)
                         for rank in range(*t.ranks))
        assert covered == sorted((s, row, rank) for s, segment in enumerate(segments)
                                 for row in range(segment.count) for rank in range(r_c))
        for task in tasks:  # a task's parts count is the number of tasks sharing its documents
            assert task.parts == sum(1 for t in tasks if (t.segment, t.start) == (task.segment, task.start))
        shared = [t for t in tasks if t.parts > 1]
        if n_query_vectors == 16 and r_c == 8 and threads == 2:  # few query vectors: segments shared by their ranks
            assert shared and all(t.start == 0 and t.stop == segments[t.segment].count for t in shared)
        else:  # one thread, one rank, or many query vectors (per-rank maxima in cache): no rank sharing
            assert not shared


@pytest.mark.parametrize("budget", [(1, 1), (4, 8), (8, 8)])
def test_threads_give_the_one_thread_results(index, small_blocks, budget):
    queries = unit(7, 8, 16, seed=2)
    fp32 = dict(compute_dtype=torch.float32)  # bf16 (the default on CPUs with AMX) rounds near-ties apart
    index.threads = 1
    one = index.search(queries, k=12, budget=budget, **fp32)
    for threads in (2, 3):
        index.threads = threads
        many = index.search(queries, k=12, budget=budget, **fp32)
        assert [r.ids for r in many] == [r.ids for r in one]
        # the same sums, up to float rounding (matmul kernels differ by block shape)
        np.testing.assert_allclose([r.scores for r in many], [r.scores for r in one], rtol=0, atol=1e-5)
    # and both are the brute-force MaxSim ranking over the live documents
    live = index.ids
    brute = maxsim(queries, index.get_vectors(live), *budget, dtype=torch.float32)
    top = brute.topk(12, dim=1)
    assert [r.ids for r in one] == [[live[j] for j in row] for row in top.indices.tolist()]
    torch.testing.assert_close(torch.tensor([r.scores for r in one]), top.values, atol=2e-3, rtol=0)


def test_a_search_never_waits_for_a_stalled_helper(index, small_blocks, monkeypatch):
    """A helper thread stuck in its task (its core busy elsewhere) does not hold the search up: the caller runs the
    task again itself, keeps the first result, and the helper's late one is dropped."""
    import threading

    queries = unit(3, 8, 16, seed=2)
    index.threads = 1
    expected = index.search(queries, k=10, budget=(4, 8), compute_dtype=torch.float32)
    release, helper_started, stalled, returned = threading.Event(), threading.Event(), [], []
    real = search_module.task_maxima

    def stall_in_helpers(*args, **kwargs):
        if threading.current_thread().name.startswith("metaembed-search"):
            if not release.is_set():
                stalled.append(1)
                helper_started.set()
                release.wait(timeout=60)
                returned.append(release.is_set())
        else:  # on a loaded machine the caller could run every task before a helper wakes: give one the chance
            helper_started.wait(timeout=10)
        return real(*args, **kwargs)

    monkeypatch.setattr(search_module, "task_maxima", stall_in_helpers)
    index.threads = 2
    found = index.search(queries, k=10, budget=(4, 8), compute_dtype=torch.float32)
    finished_before_release = not release.is_set()
    release.set()
    assert stalled and finished_before_release  # a helper took a task, and the search ended while it was stuck
    assert [r.ids for r in found] == [r.ids for r in expected]
    np.testing.assert_allclose([r.scores for r in found], [r.scores for r in expected], rtol=0, atol=1e-5)


def test_threads_setting_is_checked_and_reaches_cascade_and_auto(index, small_blocks):
    queries = unit(3, 4, 16, seed=3)
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            index.threads = bad
    index.threads = 1
    cascade_one = index.cascade_search(queries, k=5, budget=(4, 8), candidates=40)
    auto_one = index.search(queries, k=5, budget="auto")
    index.threads = 2
    assert [r.ids for r in index.cascade_search(queries, k=5, budget=(4, 8), candidates=40)] == [r.ids for r in cascade_one]
    assert [r.ids for r in index.search(queries, k=5, budget="auto")] == [r.ids for r in auto_one]
    index.threads = None
    assert index.search_threads() == torch.get_num_threads()


def test_open_takes_threads(index):
    with MultiVectorIndex.open(index.path, threads=2) as reader:
        assert reader.threads == 2 and reader.search_threads() == 2
    with pytest.raises(ValueError, match="threads must be"):
        MultiVectorIndex.open(index.path, threads=0)
    index.close()
    with pytest.raises(ValueError, match="threads must be"):
        MultiVectorIndex.open(index.path, mode="a", threads=0)
    MultiVectorIndex.open(index.path, mode="a").close()  # the refused writer let go of the lock


def test_array_results_match_objects(index):
    queries = unit(4, 8, 16, seed=4)
    objects = index.search(queries, k=6, budget=(2, 4))
    arrays = index.search(queries, k=6, budget=(2, 4), arrays=True)
    assert isinstance(arrays, SearchArrays)
    assert arrays.scores.shape == arrays.keys.shape == (4, 6)
    assert arrays.scores.dtype == np.float32 and arrays.keys.dtype == np.int64
    assert index.ids_of(arrays.keys) == [r.ids for r in objects]
    np.testing.assert_allclose(arrays.scores, np.array([r.scores for r in objects]), rtol=0, atol=1e-6)
    assert arrays.budgets == [(2, 4)] * 4 and arrays.costs == [r.cost for r in objects]
    assert all(index.key_of(i) == key for r, row in zip(objects, arrays.keys) for i, key in zip(r.ids, row))
    with pytest.raises(MissingIdsError):
        index.key_of("d000")  # deleted


def test_keys_stay_valid_after_adds_and_deletes(index):
    """Until a merge (here 3 segments: the policy merges 4 of a tier), keys are segment offset + row."""
    key = index.key_of("d150")
    index.add(["new"], unit(1, 8, 16, seed=5))
    index.delete(["d151"])
    assert index.key_of("d150") == key
    assert index.ids_of([[key, -1]]) == [["d150", None]]


def test_array_results_pad_short_rows_and_cover_cascade_and_auto(tmp_path):
    with MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=4) as small:
        small.add(["a", "b", "c"], unit(3, 4, 16, seed=6))
        small.delete(["b"])
        queries = unit(2, 4, 16, seed=7)
        for arrays in (small.search(queries, k=5, arrays=True),
                       small.cascade_search(queries, k=5, candidates=3, arrays=True),
                       small.search(queries, k=5, budget="auto", arrays=True)):
            assert arrays.keys.shape == (2, 5)
            assert (arrays.keys[:, 2:] == -1).all() and np.isneginf(arrays.scores[:, 2:]).all()
            assert {frozenset(row) for row in small.ids_of(arrays.keys[:, :2])} == {frozenset({"a", "c"})}
        with pytest.raises(ValueError, match="document key 9 is not in this index"):
            small.ids_of([[9]])


@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), -3.4e38])  # -3.4e38: finite in fp32, not in bf16
def test_query_check_is_exact_in_the_stored_dtype(index, bad):
    queries = unit(2, 3, 16, seed=8)
    queries[1, 2, 5] = bad
    with pytest.raises(ValueError, match="NaN or infinite values \\(in bfloat16\\)"):
        index.search(queries, k=3)
    queries[1, 2, 5] = 3.3e38  # finite in bf16 too: accepted (the score is huge, not an error)
    assert len(index.search(queries, k=3)) == 2
    queries[1, 2, 5] = 3.3961e38  # above bf16's largest finite value, but rounds down to it: accepted
    assert len(index.search(queries, k=3)) == 2
    queries[1, 2, 5] = 3.3963e38  # rounds up to infinity in bf16
    with pytest.raises(ValueError, match="NaN or infinite values \\(in bfloat16\\)"):
        index.search(queries, k=3)


def test_a_search_runs_its_own_torch_work_on_one_thread(index, monkeypatch):
    """Query checks and merges in the calling thread use one torch thread (a parallel region on a busy machine waits
    for its slowest thread); the scan still gets the index's thread count, by default the caller's torch count."""
    import metaembed.index.embedded as embedded_module

    seen = []
    real_exact, real_ties = embedded_module.exact_search, embedded_module.ranked_by_id_on_ties

    def exact(*args, **kwargs):
        seen.append(("scan threads", args[-1] if len(args) == 8 else kwargs.get("threads")))
        return real_exact(*args, **kwargs)

    def ties(*args, **kwargs):
        seen.append(("torch threads", torch.get_num_threads()))
        return real_ties(*args, **kwargs)

    monkeypatch.setattr(embedded_module, "exact_search", exact)
    monkeypatch.setattr(embedded_module, "ranked_by_id_on_ties", ties)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        index.threads = None
        index.search(unit(2, 4, 16, seed=3), k=3, budget=(2, 4))
        index.cascade_search(unit(2, 4, 16, seed=3), k=3, budget=(2, 4), candidates=10)
        assert torch.get_num_threads() == 2  # restored after the search
        index.threads = 3
        index.search(unit(2, 4, 16, seed=3), k=3, budget=(2, 4))
    finally:
        torch.set_num_threads(before)
    assert [value for name, value in seen if name == "scan threads"] == [2, 2, 3]
    assert [value for name, value in seen if name == "torch threads"] == [1, 1, 1]


@pytest.mark.parametrize("query_vectors", [1, 5])
def test_stored_bf16_scored_in_fp32_block_by_block_gives_the_whole_conversions_products(monkeypatch, query_vectors):
    """On a CPU without native bf16 the stored vectors are converted a few rows at a time inside the matmul loop: the
    products equal converting everything first, including a last, shorter block."""
    import metaembed.index.segment as segment_module

    monkeypatch.setattr(segment_module, "_CONVERTED_BLOCK_ELEMENTS", 7 * 16)  # blocks of 7 rows
    rows = 7 * 5 + 3
    documents, queries = unit(rows, 16, seed=8).to(torch.bfloat16), unit(query_vectors, 16, seed=9)
    products = segment_module.documents_times_queries(documents, queries)
    assert products.shape == (rows, query_vectors) and products.dtype == torch.float32
    torch.testing.assert_close(products, documents.float() @ queries.T, rtol=0, atol=1e-6)


def test_an_index_search_over_blocks_of_converted_vectors_is_exact_maxsim(index, monkeypatch):
    import metaembed.index.segment as segment_module

    monkeypatch.setattr(segment_module, "_CONVERTED_BLOCK_ELEMENTS", 50 * 16)  # 50 rows: every rank, every group cut
    queries = unit(4, 8, 16, seed=10)
    for budget in ((1, 1), (4, 8)):
        found = index.search(queries, k=12, budget=budget, compute_dtype=torch.float32)
        live = index.ids
        brute = maxsim(queries, index.get_vectors(live), *budget, dtype=torch.float32).topk(12, dim=1)
        assert [r.ids for r in found] == [[live[j] for j in row] for row in brute.indices.tolist()]
        torch.testing.assert_close(torch.tensor([r.scores for r in found]), brute.values, atol=1e-5, rtol=0)
