"""The plain-backbone baseline and the paired intervals in every evaluation report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from typer.testing import CliRunner

from metaembed import MetaEmbed
from metaembed.evaluation import SweepSettings, evaluate, evaluate_run, results_table
from metaembed.evaluation.stats import paired_bootstrap

from tests.test_eval_sweep import DOCUMENTS, QRELS, QUERIES, write_beir


@pytest.fixture(scope="module")
def model(tiny_bert_path) -> MetaEmbed:
    return MetaEmbed.from_backbone(tiny_bert_path, 4, 8)


def test_baseline_row_matches_sentence_transformers_computed_directly(model, tiny_bert_path, tmp_path):
    data = write_beir(tmp_path / "beir")
    results = evaluate(model, data, ["1,1", "4,8"], tmp_path / "out", format="beir",
                       settings=SweepSettings(use_cache=False, progress=False), baselines={"plain": tiny_bert_path})
    plain = SentenceTransformer(tiny_bert_path, device="cpu")
    q = plain.encode(list(QUERIES.values()), convert_to_tensor=True, normalize_embeddings=True)
    d = plain.encode(DOCUMENTS, convert_to_tensor=True, normalize_embeddings=True)
    top = (q @ d.T).topk(len(DOCUMENTS), dim=1).indices.tolist()
    run = {qid: [f"d{i}" for i in row] for qid, row in zip(QUERIES, top)}
    qrels: dict[str, dict[str, int]] = {}
    for line in QRELS.strip().splitlines()[1:]:
        query, doc, grade = line.split("\t")
        qrels.setdefault(query, {})[doc] = int(grade)
    expected, _ = evaluate_run(run, qrels, results["settings"]["metrics"])
    baseline = results["baselines"]["plain"]
    for metric, value in expected.items():
        assert baseline["overall"][metric] == pytest.approx(value, abs=1e-9)
    assert baseline["index_bytes_per_document"] == 32 * 2  # one 32-dim bf16 vector

    comparisons = results["paired"]["comparisons"]
    assert results["paired"]["metric"] == "ndcg@10"
    assert set(comparisons) == {"(4,8) - (1,1)", "(1,1) - plain", "(4,8) - plain"}
    difference = results["budgets"]["4,8"]["overall"]["ndcg@10"] - results["budgets"]["1,1"]["overall"]["ndcg@10"]
    assert comparisons["(4,8) - (1,1)"]["difference"] == pytest.approx(difference, abs=1e-4)
    table = results_table(results)
    assert "| baseline: plain |" in table and "Δ vs (1,1)" in table and "Δ vs plain" in table
    assert (tmp_path / "out" / "budget_curve.png").stat().st_size > 10_000


def test_eval_command_takes_baselines(model, tiny_bert_path, tmp_path):
    from metaembed.cli import app

    folder = tmp_path / "m"
    model.save_pretrained(str(folder))
    data = write_beir(tmp_path / "beir")
    result = CliRunner().invoke(app, ["eval", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "o"),
                                      "--budget", "1,1", "--no-cache", "--baseline", tiny_bert_path])
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()  # the backbone (by default), then the one asked for, labelled short
    assert any(row.startswith("backbone ") for row in rows) and any(row.startswith("baseline 2 ") for row in rows)
    assert any(row.startswith("baseline 2: ") and row.endswith("(mean pooling, cosine, 128 tokens)") for row in rows)
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert saved["baselines"][tiny_bert_path]["overall"] == saved["baselines"]["backbone"]["overall"]


def test_paired_bootstrap_covers_a_known_difference():
    """On synthetic per-query values whose true mean difference is 0.05, the 95% interval covers it in about
    95% of independent samples, and an identical pair is 'within noise'."""
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(200):
        base = rng.uniform(0, 1, 300)
        first = {str(i): float(v + 0.05 + rng.normal(0, 0.2)) for i, v in enumerate(base)}
        second = {str(i): float(v) for i, v in enumerate(base)}
        interval = paired_bootstrap(first, second, resamples=500, seed=trial)
        covered += interval["ci95_low"] <= 0.05 <= interval["ci95_high"]
    assert 0.89 <= covered / 200 <= 0.99
    same = paired_bootstrap(second, second)
    assert same["difference"] == 0 and same["within_noise"]
    with pytest.raises(ValueError, match="share no query"):
        paired_bootstrap({"a": 1.0}, {"b": 1.0})
