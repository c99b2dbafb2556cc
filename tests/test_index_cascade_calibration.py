"""calibrate_cascade: the smallest first-stage candidate count that keeps a target share of exact search's top k."""

from __future__ import annotations

import pytest
import torch

import metaembed
from metaembed.index import MultiVectorIndex

FP32 = {"compute_dtype": torch.float32}  # exact comparisons; bf16 compute rounds
DIM, STORED, N = 16, 8, 300


def unit(*shape: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture
def index(tmp_path):
    """Documents whose first vector only partly predicts the full MaxSim: the first stage needs depth."""
    index = MultiVectorIndex.create(tmp_path / "ix", DIM, STORED)
    index.add([f"d{i}" for i in range(N)], unit(N, STORED, DIM, seed=1))
    return index


def cascade_recall(index, queries, candidates: int, k: int = 5, budget=(4, 8)) -> float:
    exact = index.search(queries, k=k, budget=budget, **FP32)
    cascade = index.cascade_search(queries, k=k, budget=budget, candidates=candidates, **FP32)
    return sum(len(set(a.ids) & set(b.ids)) for a, b in zip(exact, cascade)) / (k * len(queries))


def test_calibrated_count_is_the_smallest_that_reaches_the_target(index):
    queries = unit(20, 4, DIM, seed=2)
    calibration = metaembed.calibrate_cascade(index, queries, k=5, target=0.9, budget=(4, 8), **FP32)
    assert calibration.reached and calibration.recall >= 0.9
    assert 5 < calibration.candidates < N  # the first vector alone is not enough here, every document is too many
    # the recall it reports is what cascade_search gives at that count, and one fewer falls short of the target
    assert cascade_recall(index, queries, calibration.candidates) == pytest.approx(calibration.recall)
    assert cascade_recall(index, queries, calibration.candidates - 1) < 0.9
    counts, recalls = zip(*calibration.curve)
    assert list(counts) == sorted(set(counts)) and list(recalls) == sorted(recalls) and recalls[-1] == 1.0
    for count, recall in calibration.curve[:: max(1, len(calibration.curve) // 5)]:
        assert cascade_recall(index, queries, count) == pytest.approx(recall)
    assert (calibration.budget, calibration.first_stage_budget, calibration.k) == ((4, 8), (1, 1), 5)


def test_target_one_reproduces_exact_search_and_a_larger_first_stage_needs_fewer(index):
    queries = unit(20, 4, DIM, seed=3)
    full = metaembed.calibrate_cascade(index, queries, k=5, target=1.0, budget=(4, 8), **FP32)
    assert cascade_recall(index, queries, full.candidates) == 1.0
    closer = metaembed.calibrate_cascade(index, queries, k=5, target=1.0, budget=(4, 8), first_stage_budget=(2, 4), **FP32)
    assert closer.candidates < full.candidates


def test_too_shallow_a_first_stage_says_so(index):
    queries = unit(20, 4, DIM, seed=4)
    shallow = metaembed.calibrate_cascade(index, queries, k=5, target=1.0, budget=(4, 8), max_candidates=6, **FP32)
    assert not shallow.reached and shallow.candidates == 6 and shallow.recall < 1.0


def test_stored_count_is_the_cascade_default(index):
    queries = unit(20, 4, DIM, seed=5)
    calibration = metaembed.calibrate_cascade(index, queries, k=5, target=0.9, budget=(4, 8), **FP32)
    default = index.cascade_search(queries, k=5, budget=(4, 8), **FP32)
    assert [r.ids for r in default] == [r.ids for r in index.cascade_search(queries, k=5, budget=(4, 8), candidates=100, **FP32)]
    index.set_properties(cascade_candidates=calibration.candidates)
    reopened = MultiVectorIndex.open(index.path)
    stored = reopened.cascade_search(queries, k=5, budget=(4, 8), **FP32)
    given = reopened.cascade_search(queries, k=5, budget=(4, 8), candidates=calibration.candidates, **FP32)
    assert [r.ids for r in stored] == [r.ids for r in given]
    assert len(reopened.cascade_search(queries[:1], k=50, budget=(4, 8), **FP32)[0]) == 50  # never fewer than k


@pytest.mark.parametrize("arguments, message", [
    ({"target": 0.0}, "target must be in (0, 1]"),
    ({"target": 1.5}, "target must be in (0, 1]"),
    ({"k": 0}, "k must be"),
    ({"max_candidates": 0}, "max_candidates must be"),
    ({"first_stage_budget": (8, 1)}, "first-stage query budget 8 exceeds the query budget 4"),
    ({"budget": (4, 9)}, "r_c=9"),
])
def test_bad_settings_are_named(index, arguments, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[").replace("]", r"\]")):
        metaembed.calibrate_cascade(index, unit(3, 4, DIM, seed=6), **arguments)
