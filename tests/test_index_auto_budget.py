"""budget="auto": (1,1) for every query, larger budgets only where the top two are too close to call; calibration."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import metaembed
from metaembed.budgets import Budget
from metaembed.evaluation.metrics import evaluate_run
from metaembed.index import MultiVectorIndex
from metaembed.index.adaptive import DEFAULT_AUTO_MARGIN, auto_ladder
from metaembed.model.query_weights import query_vector_weights

FP32 = {"compute_dtype": torch.float32}  # exact comparisons; bf16 compute (the default on CPUs with native bf16) rounds
DIM, STORED, N_BACKGROUND = 32, 8, 40


def e(i: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(i), DIM).float()


def unit(*shape: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def documents_with(first: list[torch.Tensor], seed: int) -> torch.Tensor:
    """One document (STORED, DIM): the given leading vectors, then vectors off the query directions (dims 16+)."""
    rest = unit(STORED - len(first), DIM, seed=seed)
    rest[:, :16] = 0
    return torch.cat([torch.stack(first), torch.nn.functional.normalize(rest, dim=-1)])


@pytest.fixture
def ladder_index(tmp_path):
    """Known answers: EASY wins (1,1) by far; B/C tie at (1,1) and B wins at (2,4); F/G tie up to (2,4), F wins at (4,8)."""
    background = torch.nn.functional.normalize(unit(N_BACKGROUND, STORED, DIM, seed=1) + 0.0, dim=-1) * 0.3
    background[:, :, 16:] += unit(N_BACKGROUND, STORED, 16, seed=2)
    background = torch.nn.functional.normalize(background, dim=-1)
    special = {
        "EASY": documents_with([e(0)] * 4, seed=3),
        "B": documents_with([e(1), e(2)], seed=4),
        "C": documents_with([e(1), e(3)], seed=5),
        "F": documents_with([e(4), e(5), e(5), e(5), e(6), e(7)], seed=6),
        "G": documents_with([e(4), e(5), e(5), e(5)], seed=7),
    }
    index = MultiVectorIndex.create(tmp_path / "ix", DIM, STORED)
    index.add([f"bg{i}" for i in range(N_BACKGROUND)], background)
    index.add(list(special), torch.stack(list(special.values())))
    queries = torch.stack([
        torch.stack([e(0), e(8), e(9), e(10)]),  # easy: stops at (1,1)
        torch.stack([e(1), e(2), e(11), e(12)]),  # B and C tied at (1,1): stops at (2,4)
        torch.stack([e(4), e(5), e(6), e(7)]),  # F and G tied at (1,1) and (2,4): climbs to (4,8)
    ])
    yield index, queries
    index.close()


def canonical(result) -> list[tuple[float, str]]:
    """A result's hits with exact ties in id order (top-k may return tied documents in either order)."""
    return sorted(zip([-s for s in result.scores], result.ids))


def test_the_ladder_is_the_papers_clipped_to_the_max_budget():
    assert auto_ladder(Budget(4, 8)) == [(1, 1), (2, 4), (4, 8)]
    assert auto_ladder(Budget(16, 64)) == [(1, 1), (2, 4), (4, 8), (8, 16), (16, 64)]
    assert auto_ladder(Budget(4, 16)) == [(1, 1), (2, 4), (4, 8), (4, 16)]
    assert auto_ladder(Budget(32, 128)) == [(1, 1), (2, 4), (4, 8), (8, 16), (16, 64), (32, 128)]
    assert auto_ladder(Budget(1, 1)) == [(1, 1)]
    assert auto_ladder(Budget(4, 8), [(1, 4), (2, 2), (4, 8)]) == [(1, 4), (4, 8)]  # every step adds vectors


def test_easy_query_stops_at_1_1_with_the_exact_1_1_results(ladder_index):
    index, queries = ladder_index
    auto = index.search(queries[:1], k=5, budget="auto", auto_margin=0.1, candidates=10, **FP32)[0]
    exact = index.search(queries[:1], k=5, budget=(1, 1), **FP32)[0]
    assert auto.budget == (1, 1) and auto.ids[0] == "EASY"
    assert auto.ids == exact.ids and auto.scores == exact.scores


@pytest.mark.parametrize("row, stop, best", [(1, (2, 4), "B"), (2, (4, 8), "F")])
def test_a_tie_escalates_and_ranks_exactly_at_the_rung_it_stops(ladder_index, row, stop, best):
    index, queries = ladder_index
    query = queries[row : row + 1]
    auto = index.search(query, k=5, budget="auto", auto_margin=0.1, candidates=10, **FP32)[0]
    assert auto.budget == stop
    # the exact ranking at that rung of the 10 candidates found at (1,1)
    candidates = index.search(query, k=10, budget=(1, 1), **FP32)[0].ids
    scores = metaembed.maxsim(query, index.get_vectors(candidates), stop[0], stop[1])[0]
    order = scores.argsort(descending=True)[:5].tolist()
    assert auto.ids == [candidates[i] for i in order]
    assert auto.scores == pytest.approx(scores[order].tolist(), abs=1e-6)
    assert auto.ids[0] == best == index.search(query, k=1, budget=stop, **FP32)[0].ids[0]  # the true best at that rung


def test_margin_zero_stops_everything_at_1_1_and_inf_reaches_the_max_budget(ladder_index):
    index, queries = ladder_index
    queries = torch.cat([queries, unit(4, 4, DIM, seed=9)])
    never = index.search(queries, k=10, budget="auto", auto_margin=0, **FP32)
    for auto, exact in zip(never, index.search(queries, k=10, budget=(1, 1), **FP32)):
        assert auto.budget == (1, 1) and auto.scores == exact.scores
        assert canonical(auto) == canonical(exact)  # F and G share their first vector: an exact tie at (1,1) for every query
    always = index.search(queries, k=10, budget="auto", auto_margin=math.inf, candidates=len(index), **FP32)
    for auto, exact in zip(always, index.search(queries, k=10, budget=(4, 8), **FP32)):
        assert auto.budget == (4, 8) and auto.ids == exact.ids
        assert auto.scores == pytest.approx(exact.scores, abs=1e-5)
    normalised = index.search(queries, k=10, budget="auto", auto_margin=math.inf, normalize_by_query=True, **FP32)
    assert normalised[0].scores == pytest.approx([s / 4 for s in always[0].scores], abs=1e-6)
    # weighted query vectors (query_tail_weight 1.0 over 4 vectors: 1, 1/3, 1/3, 1/3): divided by their total, 2
    weighted = queries * query_vector_weights(4, 1.0)[:, None]
    exact = index.search(weighted, k=10, budget=(4, 8), **FP32)
    for ranked in (index.search(weighted, k=10, budget="auto", auto_margin=math.inf, normalize_by_query=True, **FP32),
                   index.search(weighted, k=10, budget=(4, 8), normalize_by_query=True, **FP32)):
        assert ranked[0].ids == exact[0].ids
        assert ranked[0].scores == pytest.approx([s / 2 for s in exact[0].scores], abs=1e-6)


def test_cost_is_the_hand_counted_dot_products(ladder_index):
    index, queries = ladder_index
    n = len(index)  # 45
    results = index.search(queries, k=5, budget="auto", auto_margin=0.1, candidates=10)
    assert [r.cost for r in results] == [n * 1 * 1, n + 10 * 2 * 4, n + 10 * 2 * 4 + 10 * 4 * 8]
    assert index.search(queries[:1], k=5, budget=(4, 8))[0].cost == n * 4 * 8
    assert index.cascade_search(queries[:1], k=5, budget=(4, 8), candidates=10)[0].cost == n + 10 * 4 * 8
    index.delete(["bg0", "bg1"])  # 43 live: every live document is a candidate, deleted rows are not
    results = index.search(queries, k=5, budget="auto", auto_margin=0.1, candidates=100)
    assert [r.cost for r in results] == [43, 43 + 43 * 8, 43 + 43 * 8 + 43 * 32]
    assert all("bg0" not in r.ids for r in results)
    cascade = index.cascade_search(queries, k=50, budget=(4, 8), candidates=100)
    assert all(len(r) == 43 and "bg0" not in r.ids for r in cascade)  # deleted rows no longer come back


def test_default_and_stored_margin(ladder_index):
    index, queries = ladder_index
    default = index.search(queries, k=5, budget="auto")
    explicit = index.search(queries, k=5, budget="auto", auto_margin=DEFAULT_AUTO_MARGIN)
    assert [r.budget for r in default] == [r.budget for r in explicit] == [(1, 1), (2, 4), (4, 8)]
    index.set_properties(auto_margin=0.0)
    reopened = MultiVectorIndex.open(index.path)
    assert [r.budget for r in reopened.search(queries, k=5, budget="AUTO")] == [(1, 1)] * 3
    assert [r.budget for r in reopened.search(queries, k=5, budget="auto", auto_margin=0.2)] == [(1, 1), (2, 4), (4, 8)]


def test_errors_name_the_argument(ladder_index):
    index, queries = ladder_index
    with pytest.raises(ValueError, match=r"max_budget 4,9: r_c=9 is larger than the 8 vectors per document"):
        index.search(queries, budget="auto", max_budget=(4, 9))
    with pytest.raises(ValueError, match=r"max_budget 5,8: r_q=5 is larger than the 4 query vectors given"):
        index.search(queries, budget="auto", max_budget="5,8")
    with pytest.raises(ValueError, match=r"'fast' is not of the form 'r_q,r_c'.*or 'auto'"):
        index.search(queries, budget="fast")
    with pytest.raises(ValueError, match="max_budget, auto_margin only apply to budget='auto'"):
        index.search(queries, budget=(2, 4), max_budget=(4, 8), auto_margin=0.1)
    with pytest.raises(ValueError, match="auto_margin must be a number >= 0"):
        index.search(queries, budget="auto", auto_margin=-1)
    with pytest.raises(ValueError, match="candidates must be at least 1"):
        index.search(queries, budget="auto", candidates=0)
    with pytest.raises(ValueError, match="cascade_search reranks at a fixed budget"):
        index.cascade_search(queries, budget="auto")


# ---------------------------------------------------------------------------------------------- calibration
@pytest.fixture
def dev_set(tmp_path):
    """60 queries, each with one relevant document and a distractor that shares its first direction: the distractor
    often wins at (1,1) by a little, never at (4,8); plus 100 random documents."""
    n, g = 60, torch.Generator().manual_seed(11)
    base = unit(n, 4, DIM, seed=12)  # the query's four directions
    noise = lambda scale: scale * torch.randn(n, DIM, generator=g)  # noqa: E731
    relevant = torch.cat([torch.nn.functional.normalize(base[:, :1] + noise(0.1).unsqueeze(1), dim=-1), base[:, 1:],
                          unit(n, STORED - 4, DIM, seed=13)], dim=1)
    distractor = torch.cat([torch.nn.functional.normalize(base[:, :1] + noise(0.09).unsqueeze(1), dim=-1),
                            unit(n, STORED - 1, DIM, seed=14)], dim=1)
    index = MultiVectorIndex.create(tmp_path / "dev", DIM, STORED)
    index.add([f"rel{i}" for i in range(n)] + [f"dis{i}" for i in range(n)] + [f"rnd{i}" for i in range(100)],
              torch.cat([relevant, distractor, unit(100, STORED, DIM, seed=15)]))
    query_ids = [f"q{i}" for i in range(n)]
    qrels = {f"q{i}": {f"rel{i}": 1} for i in range(n)}
    yield index, base, query_ids, qrels
    index.close()


def ndcg(results, query_ids, qrels) -> float:
    return evaluate_run({q: r.ids for q, r in zip(query_ids, results)}, qrels, ["ndcg@10"])[0]["ndcg@10"]


def test_calibration_reaches_its_target_and_is_monotone(dev_set):
    index, queries, query_ids, qrels = dev_set
    settings = {"max_budget": (4, 8), "candidates": 30, **FP32}
    at_1_1 = ndcg(index.search(queries, k=10, budget=(1, 1), **FP32), query_ids, qrels)
    calibration = metaembed.calibrate_auto_margin(index, queries, query_ids, qrels, target=0.95, keep="metric",
                                                  **settings)
    assert calibration.reference == pytest.approx(ndcg(index.search(queries, k=10, budget=(4, 8), **FP32), query_ids, qrels))
    assert at_1_1 < 0.95 * calibration.reference  # (1,1) alone misses the target: escalation is needed
    assert calibration.reached and 0 < calibration.margin < math.inf
    assert calibration.achieved >= 0.95 * calibration.reference

    # the real search at that threshold gives what the simulation said
    results = index.search(queries, k=10, budget="auto", auto_margin=calibration.margin, **settings)
    assert ndcg(results, query_ids, qrels) == pytest.approx(calibration.achieved, abs=1e-9)
    assert ndcg(results, query_ids, qrels) >= 0.95 * calibration.reference - 1e-9
    assert dict(Counter(str(r.budget) for r in results)) == {b: c for b, c in calibration.stopped.items() if c}
    assert np.mean([r.cost for r in results]) == pytest.approx(calibration.mean_cost)
    assert calibration.mean_cost < calibration.fixed_cost

    # it is the smallest candidate (0 and the observed margins) that reaches the target: the one below it misses,
    # as the real search there confirms; the curve is the simulated cost/quality trade-off at every candidate
    thresholds = [t for t, _, _ in calibration.curve]
    assert thresholds == sorted(thresholds) and thresholds[0] == 0 and thresholds[-1] == math.inf
    chosen = thresholds.index(calibration.margin)
    assert all(m < 0.95 * calibration.reference for _, m, _ in calibration.curve[:chosen])
    below, below_ndcg, below_cost = calibration.curve[chosen - 1]
    cheaper = index.search(queries, k=10, budget="auto", auto_margin=below, **settings)
    assert ndcg(cheaper, query_ids, qrels) == pytest.approx(below_ndcg, abs=1e-9) and below_ndcg < 0.95
    assert np.mean([r.cost for r in cheaper]) == pytest.approx(below_cost)
    assert calibration.curve[0][1] == pytest.approx(at_1_1)  # threshold 0: everything at (1,1)

    for keep in ("metric", "gain"):
        margins = [metaembed.calibrate_auto_margin(index, queries, query_ids, qrels, target=t, keep=keep,
                                                   **settings).margin for t in (0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0)]
        assert margins[0] == 0.0 and margins == sorted(margins)

    index.set_properties(auto_margin=calibration.margin)  # stored: the default of later auto searches
    stored = index.search(queries, k=10, budget="auto", max_budget=(4, 8), candidates=30, **FP32)
    assert [r.ids for r in stored] == [r.ids for r in results]


def test_calibration_keeps_a_share_of_the_gain_with_calibrated_candidates(dev_set):
    """keep="gain" (the default): the goal is (1,1) + target x (every query climbed to (4,8) - (1,1)); the candidate
    count is the fewest that hold 99% of (4,8)'s top 10 among (1,1)'s candidates; store() makes both the index's
    auto defaults."""
    index, queries, query_ids, qrels = dev_set
    at_1_1 = ndcg(index.search(queries, k=10, budget=(1, 1), **FP32), query_ids, qrels)
    calibration = metaembed.calibrate_auto_margin(index, queries, query_ids, qrels, target=0.9, max_budget=(4, 8), **FP32)
    climbed = index.search(queries, k=10, budget="auto", max_budget=(4, 8), auto_margin=math.inf,
                           candidates=calibration.candidates, **FP32)
    assert calibration.keep == "gain" and calibration.first == pytest.approx(at_1_1)
    assert calibration.ceiling == pytest.approx(ndcg(climbed, query_ids, qrels)) and calibration.ceiling > at_1_1
    assert calibration.goal == pytest.approx(at_1_1 + 0.9 * (calibration.ceiling - at_1_1))
    assert calibration.reached and calibration.achieved >= calibration.goal - 1e-12
    cascade = metaembed.calibrate_cascade(index, queries, k=10, target=0.99, budget=(4, 8), **FP32)
    assert calibration.candidates == cascade.candidates
    # here (4,8)'s top 10 past the relevant pair are random documents: 99% of them needs nearly the whole index
    fewer = metaembed.calibrate_auto_margin(index, queries, query_ids, qrels, target=0.9, max_budget=(4, 8),
                                            candidate_recall=0.5, **FP32)
    half = metaembed.calibrate_cascade(index, queries, k=10, target=0.5, budget=(4, 8), **FP32)
    assert 10 <= fewer.candidates == half.candidates < calibration.candidates <= len(index)
    assert fewer.mean_cost < calibration.mean_cost
    # as a share of the metric, the same target asks for less: (1,1) is already most of (4,8)'s nDCG
    as_metric = metaembed.calibrate_auto_margin(index, queries, query_ids, qrels, target=0.9, keep="metric",
                                                max_budget=(4, 8), candidates=calibration.candidates, **FP32)
    assert as_metric.goal < calibration.goal and as_metric.margin <= calibration.margin

    calibration.store(index)
    reopened = MultiVectorIndex.open(index.path)
    assert reopened.properties["auto_candidates"] == calibration.candidates
    stored = reopened.search(queries, k=10, budget="auto", max_budget=(4, 8), **FP32)
    given = index.search(queries, k=10, budget="auto", max_budget=(4, 8), auto_margin=calibration.margin,
                         candidates=calibration.candidates, **FP32)
    assert [r.ids for r in stored] == [r.ids for r in given]
    assert ndcg(stored, query_ids, qrels) == pytest.approx(calibration.achieved, abs=1e-9)
    assert np.mean([r.cost for r in stored]) == pytest.approx(calibration.mean_cost)


def test_calibration_errors(dev_set):
    index, queries, query_ids, qrels = dev_set
    with pytest.raises(ValueError, match="target must be between 0 and 1"):
        metaembed.calibrate_auto_margin(index, queries, query_ids, qrels, target=95)
    with pytest.raises(ValueError, match="keep must be 'gain' .* or 'metric', got 'ndcg'"):
        metaembed.calibrate_auto_margin(index, queries, query_ids, qrels, keep="ndcg")
    with pytest.raises(ValueError, match="59 query ids for 60 queries"):
        metaembed.calibrate_auto_margin(index, queries, query_ids[1:], qrels)
    with pytest.raises(ValueError, match="r_c=9 is larger"):
        metaembed.calibrate_auto_margin(index, queries, query_ids, qrels, max_budget=(4, 9))


# ---------------------------------------------------------------------------------------------- command line
def test_cli_budget_auto_prints_the_budget_used(tiny_bert_path, tmp_path):
    from metaembed.cli import app
    from metaembed.model import MetaEmbed

    model_dir = tmp_path / "model"
    model = MetaEmbed.from_backbone(tiny_bert_path, num_query_meta_tokens=4, num_document_meta_tokens=8)
    model.save_pretrained(str(model_dir))
    texts = ["a text editor", "gzip compresses files", "a json parser", "an image viewer", "a music player"]
    with MultiVectorIndex.create(tmp_path / "ix", model.embedding_dim, 8, properties={"model": str(model_dir)}) as index:
        index.add([f"doc{i}" for i in range(len(texts))], model.encode_document(texts))

    def search(*args: str):
        return CliRunner().invoke(app, ["search", "--index", str(tmp_path / "ix"), "--query", "json", *map(str, args)])

    result = search("--budget", "auto", "--json", "--top-k", 3)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["requested_budget"] == "auto" and payload["max_budget"] == [4, 8]
    assert payload["budget"] in ([1, 1], [2, 4], [4, 8]) and payload["cost"] >= 5 and len(payload["hits"]) == 3
    low = json.loads(search("--budget", "auto", "--auto-margin", 0, "--json").stdout.strip().splitlines()[-1])
    assert low["budget"] == [1, 1] and low["cost"] == 5
    high = json.loads(search("--budget", "auto", "--auto-margin", "inf", "--max-budget", "2,4", "--json").stdout.splitlines()[-1])
    assert high["budget"] == [2, 4] and high["cost"] == 5 + 5 * 2 * 4
    flat = lambda r: " ".join(r.output.replace("│", " ").split())  # noqa: E731
    table = search("--budget", "auto", "--auto-margin", "inf")
    assert table.exit_code == 0 and "budget auto -> 4,8 (up to 4,8)" in flat(table), table.output
    too_big = search("--budget", "auto", "--max-budget", "2,9")
    assert too_big.exit_code != 0 and "r_c=9 is larger than the 8" in flat(too_big)
    too_many = search("--budget", "auto", "--max-budget", "5,8")
    assert too_many.exit_code != 0 and "more than the model's 4 query meta tokens" in flat(too_many)
    not_auto = search("--budget", "2,4", "--max-budget", "4,8")
    assert not_auto.exit_code != 0 and "only apply to --budget auto" in flat(not_auto)
    bad = search("--budget", "fast")
    assert bad.exit_code != 0 and "or 'auto'" in flat(bad)


def test_cli_calibrate_stores_what_the_python_api_finds(tiny_bert_path, tmp_path):
    """`metaembed calibrate` encodes the judged dev queries as evaluation does, stores the margin and the candidate
    count calibrate_auto_margin finds for them, and later auto searches use both; --dry-run stores nothing."""
    from metaembed.cli import app
    from metaembed.data.beir import load_beir
    from metaembed.evaluation.encoding import QUERY, encode_items
    from metaembed.model import MetaEmbed
    from tests.test_eval_sweep import DOCUMENTS, QRELS, write_beir

    model_dir = tmp_path / "model"
    model = MetaEmbed.from_backbone(tiny_bert_path, num_query_meta_tokens=4, num_document_meta_tokens=8)
    model.save_pretrained(str(model_dir))
    beir = write_beir(tmp_path / "beir")
    (beir / "qrels" / "dev.tsv").write_text(QRELS)
    with MultiVectorIndex.create(tmp_path / "ix", model.embedding_dim, 8, properties={"model": str(model_dir)}) as index:
        index.add([f"d{i}" for i in range(len(DOCUMENTS))], model.encode_document(DOCUMENTS))
    task = load_beir(beir, split="dev")
    encoded, _ = encode_items(model, QUERY, list(task.qrels), [task.queries[q] for q in task.qrels], progress=False)
    with MultiVectorIndex.open(tmp_path / "ix") as index:
        expected = metaembed.calibrate_auto_margin(index, encoded.vectors, encoded.ids, task.qrels, target=0.9)

    def calibrate(*args: str):
        return CliRunner().invoke(app, ["calibrate", "--index", str(tmp_path / "ix"), "--data", str(beir), *args])

    dry = calibrate("--target", "0.9", "--dry-run")
    assert dry.exit_code == 0 and "dry run: nothing stored" in dry.output, dry.output
    assert "auto_margin" not in MultiVectorIndex.open(tmp_path / "ix").properties
    stored = calibrate("--target", "0.9")
    assert stored.exit_code == 0, stored.output
    assert f"4 dev queries; nDCG@10 at (1,1) {expected.first:.4f}, at (4,8) {expected.reference:.4f}" in stored.output
    assert f"margin {expected.margin:.4f}, {expected.candidates} candidates" in stored.output
    properties = MultiVectorIndex.open(tmp_path / "ix").properties
    assert properties["auto_margin"] == expected.margin and properties["auto_candidates"] == expected.candidates == 10

    flat = lambda r: " ".join(r.output.replace("│", " ").split())  # noqa: E731
    bad_keep = calibrate("--keep", "all")
    assert bad_keep.exit_code == 2 and "--keep" in flat(bad_keep) and "got 'all'" in flat(bad_keep)
    too_big = calibrate("--max-budget", "4,9")
    assert too_big.exit_code == 2 and "--max-budget" in flat(too_big) and "r_c=9 is larger" in flat(too_big)
    with MultiVectorIndex.create(tmp_path / "other", model.embedding_dim, 8) as other:  # another corpus's index
        other.add(["x0", "x1"], model.encode_document(DOCUMENTS[:2]))
    elsewhere = CliRunner().invoke(app, ["calibrate", "--index", str(tmp_path / "other"), "--data", str(beir),
                                         "--model", str(model_dir)])
    assert elsewhere.exit_code == 2 and "none of the documents the dev qrels of" in flat(elsewhere), elsewhere.output
