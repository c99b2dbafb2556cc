"""Evaluation during training and the trainer's own progress and logs: the dev evaluator gives ``metaembed eval``'s
numbers, its metrics reach metrics.jsonl and the model card, the trainer's progress bar prints the logs, and
``report_to`` names what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metaembed import MetaEmbed
from metaembed.cli import app
from metaembed.evaluation import evaluate
from metaembed.training import TrainConfig, train
from metaembed.training.dev_evaluator import BudgetSweepEvaluator

TOPICS = ["compress", "editor", "json", "download", "image", "audio", "mail", "backup"]
BUDGETS = ["1,1", "2,4"]


def write_data(root: Path) -> tuple[Path, Path]:
    """A training JSONL and a BEIR folder with a dev split (as the data builders write them)."""
    rows = [{"query": f"{topic} tool {i}", "positive": f"package {topic}{i}: a {topic} program, release {i}",
             "negatives": [f"package other{i}: a {TOPICS[(n + 3) % len(TOPICS)]} tool"]}
            for n, topic in enumerate(TOPICS) for i in range(2)]
    root.mkdir(parents=True, exist_ok=True)
    train_jsonl = root / "train.jsonl"
    train_jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    beir = root / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{n}", "title": "", "text": f"{topic}: a program to {topic} things, version {n}"}) + "\n"
        for n, topic in enumerate(TOPICS)))
    (beir / "queries.jsonl").write_text("".join(
        json.dumps({"_id": f"q{n}", "text": f"how do I {topic}"}) + "\n" for n, topic in enumerate(TOPICS)))
    (beir / "qrels" / "dev.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{n}\td{n}\t1\n" for n in range(len(TOPICS))))
    return train_jsonl, beir


def overall(results: dict, budget: str) -> dict[str, float]:
    return results["budgets"][budget]["overall"]


def test_dev_evaluator_gives_metaembed_eval_numbers(tiny_bert_path, tmp_path, monkeypatch):
    monkeypatch.setenv("METAEMBED_CACHE", str(tmp_path / "cache"))
    _, beir = write_data(tmp_path / "data")
    folder = tmp_path / "model"
    MetaEmbed.from_backbone(tiny_bert_path, 2, 4, meta_token_init_seed=0).save_pretrained(str(folder))
    evaluator = BudgetSweepEvaluator(beir, BUDGETS)
    metrics = evaluator(MetaEmbed.from_pretrained(str(folder)))
    assert evaluator.primary_metric == "dev_ndcg@10_2x4"
    result = CliRunner().invoke(app, ["eval", "-m", str(folder), "--data", str(beir), "--split", "dev", "-b", *BUDGETS,
                                      "--no-baseline", "-o", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    expected = json.loads((tmp_path / "eval" / "results.json").read_text())
    for budget in BUDGETS:
        key = budget.replace(",", "x")
        for metric in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
            assert metrics[f"dev_{metric}_{key}"] == pytest.approx(overall(expected, budget)[metric], abs=1e-12), (budget, metric)


def test_training_evaluates_on_dev_and_logs_it(tiny_bert_path, tmp_path, capfd):
    train_jsonl, beir = write_data(tmp_path / "data")
    config = TrainConfig(model=tiny_bert_path, train_jsonl=[str(train_jsonl)], output_dir=str(tmp_path / "run"),
                         batch_size=4, max_steps=3, logging_steps=1, save_steps=100, eval_steps=2, dev_data=str(beir),
                         num_query_meta_tokens=2, num_document_meta_tokens=4, groups=BUDGETS, learning_rate=1e-3)
    result = train(config)
    records = [json.loads(line) for line in Path(result.metrics_path).read_text().splitlines()]
    evaluations = [r for r in records if "eval_dev_ndcg@10_2x4" in r]
    assert [r["step"] for r in evaluations] == [2, 3]  # every eval_steps, and after the last step
    assert all(0 <= r[f"eval_dev_{m}_{b}"] <= 1 for r in evaluations for m in ("ndcg@10", "recall@10") for b in ("1x1", "2x4"))
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]  # the training log is as before

    # The last evaluation is the final model's: metaembed eval's numbers, and its card's budget curve.
    final = evaluate(result.model_path, beir, BUDGETS, split="dev", baselines={})
    for budget in BUDGETS:
        assert evaluations[-1][f"eval_dev_ndcg@10_{budget.replace(',', 'x')}"] == pytest.approx(overall(final, budget)["ndcg@10"])
    card = (Path(result.model_path) / "README.md").read_text()
    assert "Evaluated during training, at step 3." in card and "(dev split)" in card
    assert MetaEmbed.from_pretrained(result.model_path).budget_curve.metric == "ndcg@10"
    assert (Path(config.output_dir) / "eval" / "dev_results_step2.json").is_file()

    out, err = capfd.readouterr()
    assert "'loss':" in out and "'eval_dev_ndcg@10_2x4':" in out  # the trainer's progress bar prints each log
    assert "3/3" in err  # and its bar shows the steps


def test_report_to_a_missing_integration_is_a_clear_error(tmp_path):
    from transformers.integrations import get_available_reporting_integrations

    if "tensorboard" in get_available_reporting_integrations():
        pytest.skip("tensorboard is installed here")
    with pytest.raises(ValueError, match="report_to: tensorboard is not installed here"):
        train(TrainConfig(model="x", train_jsonl=["none.jsonl"], report_to="tensorboard", output_dir=str(tmp_path)))


def test_dev_settings_from_flags():
    from metaembed.training.flags import config_from_args

    config = config_from_args(["--dev_data", "beir", "--eval_steps", "50", "--report_to", "none"])
    assert (config.dev_data, config.dev_split, config.eval_steps, config.report_to) == ("beir", "dev", 50, "none")
    with pytest.raises(ValueError, match="eval_steps must be at least 1, got 0"):
        TrainConfig(eval_steps=0)
