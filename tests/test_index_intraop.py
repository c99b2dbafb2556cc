"""A search too small to share among worker threads runs on the caller, on torch's own threads only where that has
recently been faster for searches of its size: both choices are tried, the faster kept, the other tried again now
and then (less often while it keeps losing), and the results do not depend on the choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metaembed.index.search as search_module
from metaembed.index import MultiVectorIndex
from metaembed.index.intraop import IntraOpThreads


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)


def choices(record: IntraOpThreads, size: tuple[int, int, int], searches: int, seconds: dict[int, float]) -> list[int]:
    """The choice of each of ``searches`` searches of ``size``, each recorded as taking ``seconds[choice]``."""
    made = []
    for _ in range(searches):
        made.append(record.choose(size, 2))
        record.record(size, made[-1], seconds[made[-1]])
    return made


def test_both_choices_are_tried_then_the_faster_kept_and_the_other_tried_less_often():
    record = IntraOpThreads()
    size = record.size(10_000, 1)
    assert record.choose(size, 1) == 1  # one thread asked: nothing to choose
    made = choices(record, size, 6 + 8 + 16 + 32, {1: 1.0e-3, 2: 0.7e-3})
    assert made[:6] == [1, 2] * 3  # each choice three times, alternating
    tried_one = [i for i, choice in enumerate(made) if choice == 1][3:]
    assert tried_one == [6 + 7, 6 + 8 + 15, 6 + 8 + 16 + 31]  # the gap doubles while 2 threads stay faster
    # load arrives: 2 threads become slower; within the next tries of 1 thread the choice flips to 1
    made = choices(record, size, 200, {1: 1.0e-3, 2: 5e-3})
    flipped = made.index(1)
    assert flipped == 3  # the median of the last 5 two-thread times turns after 3 slow ones
    assert made[flipped : flipped + 7] == [1] * 7 and made[flipped + 7] == 2  # then 2 threads every 8th search
    assert made[flipped:].count(2) <= 1 + 200 // 8  # 2 threads tried again, every 8th search at first
    # another size keeps its own record
    assert record.choose(record.size(1_000_000, 1), 2) == 1


def test_a_one_off_stall_does_not_flip_the_choice():
    record = IntraOpThreads()
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
    record = IntraOpThreads()
    monkeypatch.setattr(search_module, "INTRA_OP_THREADS", record)
    seen = []
    real = search_module.max_over_ranks

    def watched(blocks):
        seen.append(torch.get_num_threads())
        return real(blocks)

    monkeypatch.setattr(search_module, "max_over_ranks", watched)
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
