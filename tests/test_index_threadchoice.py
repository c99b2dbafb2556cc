"""A search runs on the index's threads only where that has recently been faster than one thread for searches of its
size (one too small to share among worker threads: on torch's own threads in the caller; a larger one: with helper
threads): both choices are tried, the faster kept, the other tried again now and then (less often while it keeps
losing), and the results do not depend on the choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metaembed.index.search as search_module
from metaembed.index import MultiVectorIndex
import metaembed.index.scan as scan_module
from metaembed.index.threadchoice import ThreadChoice


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)


def choices(record: ThreadChoice, size: tuple[int, ...], searches: int, seconds: dict[int, float],
            first: int = 1) -> list[int]:
    """The choice of each of ``searches`` searches of ``size``, each recorded as taking ``seconds[choice]``."""
    made = []
    for _ in range(searches):
        made.append(record.choose(size, 2, first=first))
        record.record(size, made[-1], seconds[made[-1]])
    return made


def test_both_choices_are_tried_then_the_faster_kept_and_the_other_tried_less_often():
    record = ThreadChoice()
    size = record.size(10_000, 1)
    assert record.choose(size, 1) == 1  # one thread asked: nothing to choose
    made = choices(record, size, 6 + 8 + 16 + 32, {1: 1.0e-3, 2: 0.7e-3})
    assert made[:6] == [1, 2] * 3  # each choice three times, alternating
    tried_one = [i for i, choice in enumerate(made) if choice == 1][3:]
    assert tried_one == [6 + 7, 6 + 8 + 15, 6 + 8 + 16 + 31]  # the gap doubles while 2 threads stay faster
    # load arrives: 2 threads become slower; the choice flips to 1 once their median turns
    made = choices(record, size, 200, {1: 1.0e-3, 2: 5e-3})
    flipped = made.index(1)
    assert flipped == 3  # the median of the last 5 two-thread times turns after 3 slow ones
    # (that search re-measured one thread, whose record was old); then 2 threads tried every 8th search at first
    assert made[flipped : flipped + 8] == [1] * 8 and made[flipped + 8] == 2
    assert made[flipped:].count(2) <= 1 + 200 // 8
    # another size keeps its own record
    assert record.choose(record.size(1_000_000, 1), 2) == 1


def test_a_held_choice_gives_way_only_to_a_clearly_faster_one():
    """Close medians (a noisy machine) do not swap the choice back and forth; a clearly faster other choice wins."""
    record = ThreadChoice()
    size = record.size(10_000, 1)
    made = choices(record, size, 20, {1: 1.0e-3, 2: 1.2e-3})
    assert made[6:13] == [1] * 7  # one thread held
    made = choices(record, size, 300, {1: 1.0e-3, 2: 0.95e-3})  # two threads now 5% faster: within the noise
    assert made.count(2) <= 6  # only its scheduled tries (8, 16, 32, ... searches apart)
    made = choices(record, size, 2000, {1: 1.0e-3, 2: 0.8e-3})  # 20% faster: it takes over once its tries show it
    assert made[-20:] == [2] * 20 and made.count(2) > 500


def test_a_choice_held_while_the_machine_was_idle_gives_way_soon_after_load_arrives():
    """Two threads were faster for a long time (one thread's record is old: the gap between its tries has grown);
    then load makes one thread the faster by far. The held choice's median passing the other's old record makes
    the other be tried at once, not 256 searches later at its next try; and a try's time replaces the old record
    (one new time among 4 old ones would not move its median)."""
    record = ThreadChoice()
    size = record.size(640_000, 16, 8, helpers=True)
    choices(record, size, 400, {1: 74e-3, 2: 42e-3}, first=2)
    made = choices(record, size, 40, {1: 46e-3, 2: 80e-3}, first=2)
    assert made[:3] == [2] * 3  # 3 slow runs turn the held median past one thread's old record (74 ms) ...
    assert made[3:11] == [1] * 8 and made[11] == 2  # ... so one thread is tried at once (46 ms) and kept
    assert made[12:].count(2) <= 2  # 2 threads tried every 8th, then 16th search


def test_a_one_off_stall_does_not_flip_the_choice():
    record = ThreadChoice()
    size = record.size(10_000, 1)
    choices(record, size, 20, {1: 1.0e-3, 2: 0.7e-3})
    record.record(size, 2, 1.0)  # one search stalled (a page fault, a descheduled thread)
    assert record.choose(size, 2) == 2  # the median of the recent times ignores it


@pytest.fixture
def index(tmp_path):
    documents = unit(300, 8, 16, seed=1)
    index = MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=8)
    index.add([f"d{i:03d}" for i in range(300)], documents)
    index.delete([f"d{i:03d}" for i in range(0, 300, 7)])
    yield index
    index.close()


@pytest.mark.parametrize("budget", [(1, 1), (4, 8)])
def test_a_small_search_on_torch_threads_gives_the_one_thread_results(index, monkeypatch, budget):
    record = ThreadChoice()
    monkeypatch.setattr(search_module, "THREAD_CHOICE", record)
    seen = []
    real = search_module.task_maxima

    def watched(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(search_module, "task_maxima", watched)
    queries = unit(1, 8, 16, seed=2)
    index.threads = 2
    before = torch.get_num_threads()
    found = [index.search(queries, k=12, budget=budget, compute_dtype=torch.float32) for _ in range(3)]
    assert torch.get_num_threads() == before  # restored
    assert seen[:3] == [1, 2, 1]  # one thread first, then torch's two, alternating; each timed
    size = record.size(len(index._segments[0].ids) * budget[1], budget[0], 1)
    assert set(record._seconds) == {(*size, 1), (*size, 2)}
    assert found[1][0].ids == found[0][0].ids == found[2][0].ids
    np.testing.assert_allclose(found[1][0].scores, found[0][0].scores, rtol=0, atol=1e-5)
    assert not any(int(i[1:]) % 7 == 0 for i in found[0][0].ids)  # deleted documents stay out
    index.threads = 1
    seen.clear()
    assert index.search(queries, k=12, budget=budget, compute_dtype=torch.float32)[0].ids == found[0][0].ids
    assert seen == [1]  # one thread asked: torch's threads are not used


def test_a_search_shared_with_helpers_starts_on_its_threads_and_keeps_the_faster_choice():
    record = ThreadChoice()
    size = record.size(640_000, 16, 8, helpers=True)
    assert size != record.size(640_000, 16, 8)  # helpers or not: separate records
    made = choices(record, size, 6 + 8, {1: 60e-3, 2: 35e-3}, first=2)
    assert made[:6] == [2, 1] * 3  # the index's threads first (a one-off large search is not run on one)
    assert made[6:] == [2] * 7 + [1]  # then the faster, one thread tried again on the 8th
    made = choices(record, size, 16, {1: 60e-3, 2: 90e-3}, first=2)  # load arrives: a helper now costs
    assert made[:11] == [2] * 3 + [1] * 8 and made[11] == 2  # after 3 slow times one thread; 2 tried on the 8th


@pytest.fixture
def segmented(tmp_path, monkeypatch):
    """Three segments, each a task of its own handed to helpers (any search is worth sharing here)."""
    monkeypatch.setattr(scan_module, "_MIN_PARALLEL_VECTORS", 0)
    monkeypatch.setattr(scan_module, "_MIN_PARALLEL_MACS", 0)
    documents = unit(300, 8, 16, seed=4)
    index = MultiVectorIndex.create(tmp_path / "seg", dim=16, max_document_vectors=8)
    index.auto_merge = False
    for start in (0, 100, 200):
        index.add([f"d{i:03d}" for i in range(start, start + 100)], documents[start:start + 100])
    index.delete([f"d{i:03d}" for i in range(0, 300, 11)])
    yield index
    index.close()


def test_a_search_with_helpers_runs_on_the_caller_alone_when_that_was_faster(segmented, monkeypatch):
    """... and then as a one-thread search would: its segments whole, not cut into the helpers' rank parts."""
    record = ThreadChoice()
    monkeypatch.setattr(search_module, "THREAD_CHOICE", record)
    monkeypatch.setattr(scan_module, "_MIN_RANK_TASK_VECTORS", 1)  # a shared search cuts each segment by ranks
    pools, ranks = [], []
    real_pool, real_maxima = search_module.search_pool, search_module.task_maxima
    monkeypatch.setattr(search_module, "search_pool", lambda threads: pools.append(threads) or real_pool(threads))
    monkeypatch.setattr(search_module, "task_maxima",
                        lambda *args, **kwargs: ranks.append(args[-1]) or real_maxima(*args, **kwargs))
    queries, budget, fp32 = unit(3, 4, 16, seed=5), (4, 8), dict(compute_dtype=torch.float32)
    segmented.threads = 2
    assert len(segmented._segments) == 3
    found, tasks = [], []
    for _ in range(6):
        ranks.clear()
        found.append(segmented.search(queries, k=15, budget=budget, **fp32))
        tasks.append(sorted(ranks))
    assert pools == [1, 1, 1]  # searches 1, 3, 5 on the caller and a helper; 2, 4, 6 on the caller alone
    shared = set(tasks[0])  # (a task a stalled helper held may also have run on the caller: compared as sets)
    assert set(tasks[2]) == set(tasks[4]) == shared and len(shared) > 1 and (0, 8) not in shared  # rank parts
    assert tasks[1] == tasks[3] == tasks[5] == [(0, 8)] * 3  # alone: one task a segment, every rank
    size = next(key[:-1] for key in record._seconds)
    assert size[-1] == 1 and set(record._seconds) == {(*size, 1), (*size, 2)}  # recorded as a helpers search
    for key in record._seconds:  # a busy machine: the helper's searches were slow
        record._seconds[key].clear()
        record._seconds[key].extend([0.001] * 3 if key[-1] == 1 else [1.0] * 3)
    pools.clear()
    found += [segmented.search(queries, k=15, budget=budget, **fp32) for _ in range(7)]
    assert pools == []  # the caller alone, until the 8th search tries the helper again
    for other in found[1:]:  # the same results whoever ran the tasks
        assert [r.ids for r in other] == [r.ids for r in found[0]]
        np.testing.assert_allclose([r.scores for r in other], [r.scores for r in found[0]], rtol=0, atol=1e-5)
    segmented.threads = 1
    one = segmented.search(queries, k=15, budget=budget, **fp32)
    assert [r.ids for r in one] == [r.ids for r in found[0]]
    assert not any(int(i[1:]) % 11 == 0 for r in one for i in r.ids)  # deleted documents stay out


def test_a_search_choosing_while_another_runs_a_try_gets_the_held_choice():
    """A try empties the tried choice's record until its search ends; a concurrent search of that size meanwhile
    runs the held choice (no median of nothing)."""
    record = ThreadChoice()
    size = record.size(10_000, 1)
    made = choices(record, size, 13, {1: 1.0e-3, 2: 0.7e-3})
    assert made[-1] == 2
    assert record.choose(size, 2) == 1  # the 8th search after learning: a try of one thread, not yet recorded
    assert [record.choose(size, 2) for _ in range(3)] == [2, 2, 2]  # searches meanwhile: the held choice
    record.record(size, 1, 1.0e-3)
    assert record.choose(size, 2) == 2
