"""The budget sweep on a BEIR folder: values against a direct computation, the encoding cache, the outputs,
bad input, and the ``metaembed eval`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from metaembed import MetaEmbed, maxsim
from metaembed.data.beir import DataFormatError, load_beir
from metaembed.data.item import Item
from metaembed.data.tasks import RetrievalTask
from metaembed.evaluation import SweepSettings, evaluate, evaluate_run, run_budget_sweep
from metaembed.evaluation.metrics import max_cutoff

DOCUMENTS = [
    "gzip reduces the size of files using Lempel-Ziv coding",
    "vim is a highly configurable text editor",
    "the GNU C library provides the system calls",
    "a fast library for parsing JSON documents",
    "an image viewer for the X window system",
    "a tool to download files over HTTP and FTP",
]
QUERIES = {"q0": "compress files", "q1": "edit text in a terminal", "q2": "parse json", "q3": "download from the web"}
QRELS = "query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t2\nq1\td4\t1\nq2\td3\t1\nq3\td5\t1\n"


def write_beir(root: Path, qrels: str = QRELS, documents: list[str] = DOCUMENTS, extra_corpus: list[dict] | None = None) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    rows = [{"_id": f"d{i}", "title": "", "text": text} for i, text in enumerate(documents)] + (extra_corpus or [])
    (root / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


@pytest.fixture(scope="module")
def model_dir(tiny_bert_path, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("metaembed_model")
    MetaEmbed.from_backbone(tiny_bert_path, 4, 8).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def model(model_dir) -> MetaEmbed:
    return MetaEmbed.from_pretrained(model_dir)


def count_encodes(model: MetaEmbed, monkeypatch) -> dict[str, int]:
    counts = {"query": 0, "document": 0}
    for side in counts:
        original = getattr(model, f"encode_{side}")

        def counted(*args, _original=original, _side=side, **kwargs):
            counts[_side] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(model, f"encode_{side}", counted)
    return counts


def test_sweep_equals_direct_maxsim_and_metrics(model, tmp_path):
    root = write_beir(tmp_path / "set")
    settings = SweepSettings(cache_dir=tmp_path / "cache", storage_dtype=torch.float32, progress=False)
    results = evaluate(model, root, ["1,1", "2,4", "4,8"], settings=settings)
    task = load_beir(root)
    query_vectors = model.encode_query([task.queries[q].text for q in task.qrels])
    document_vectors = model.encode_document([item.text for item in task.corpus.values()])
    document_ids = list(task.corpus)
    for budget in ("1,1", "2,4", "4,8"):
        r_q, r_c = map(int, budget.split(","))
        scores = maxsim(query_vectors, document_vectors, r_q, r_c)
        order = scores.argsort(dim=1, descending=True)
        run = {q: [document_ids[i] for i in row] for q, row in zip(task.qrels, order.tolist())}
        expected, _ = evaluate_run(run, task.qrels, settings.metrics)
        for metric, value in expected.items():
            assert results["budgets"][budget]["overall"][metric] == pytest.approx(value, abs=1e-6), (budget, metric)
        assert results["budgets"][budget]["index_bytes_per_document"] == r_c * model.embedding_dim * 2
        assert results["budgets"][budget]["latency_ms_single_query"] > 0
    assert results["tasks"]["set"]["num_queries"] == 4 and results["tasks"]["set"]["num_documents"] == 6


def test_second_run_with_other_budgets_encodes_nothing(model, tmp_path, monkeypatch):
    root = write_beir(tmp_path / "set")
    counts = count_encodes(model, monkeypatch)
    settings = SweepSettings(cache_dir=tmp_path / "cache", progress=False)
    first = evaluate(model, root, ["1,1", "4,8"], settings=settings)
    assert counts["query"] >= 1 and counts["document"] >= 1
    assert first["tasks"]["set"]["cached"] == {"queries": False, "documents": False}
    counts.update(query=0, document=0)
    second = evaluate(model, root, ["2,4", "4,8", "3,5"], settings=settings)
    assert counts == {"query": 0, "document": 0}
    assert second["tasks"]["set"]["cached"] == {"queries": True, "documents": True}
    assert second["budgets"]["4,8"]["overall"] == first["budgets"]["4,8"]["overall"]
    # Other data (one document changed) misses the document cache only.
    write_beir(root, documents=[*DOCUMENTS[:-1], "wget retrieves files from web servers"])
    third = evaluate(model, root, ["1,1"], settings=settings)
    assert counts["document"] >= 1 and counts["query"] == 0
    assert third["tasks"]["set"]["cached"] == {"queries": True, "documents": False}


def test_changed_model_weights_miss_the_cache(model_dir, tmp_path):
    root = write_beir(tmp_path / "set")
    settings = SweepSettings(cache_dir=tmp_path / "cache", progress=False)
    model = MetaEmbed.from_pretrained(model_dir)
    evaluate(model, root, ["1,1"], settings=settings)
    with torch.no_grad():
        model.backbone.document_meta_tokens[0, 0] += 1.0
    again = evaluate(model, root, ["1,1"], settings=settings)
    assert again["tasks"]["set"]["cached"] == {"queries": False, "documents": False}


def test_outputs_json_markdown_and_plot(model, tmp_path):
    root = write_beir(tmp_path / "set")
    out = tmp_path / "out"
    evaluate(model, root, ["1,1", "2,4"], out, settings=SweepSettings(cache_dir=tmp_path / "cache", progress=False))
    saved = json.loads((out / "results.json").read_text())
    assert saved["budget_list"] == ["1,1", "2,4"]
    assert set(saved["budgets"]["2,4"]) >= {"overall", "tasks", "index_bytes_per_document", "latency_ms_per_query", "latency_ms_single_query"}
    assert saved["data"]["format"] == "beir" and saved["model"]["num_document_meta_tokens"] == 8
    markdown = (out / "results.md").read_text()
    assert "| (1,1) |" in markdown and "| (2,4) |" in markdown and "ndcg@10" in markdown
    ndcg = saved["budgets"]["2,4"]["overall"]["ndcg@10"]
    assert f"{ndcg * 100:.2f}" in markdown
    with Image.open(out / "budget_curve.png") as image:
        assert image.width > 600 and image.height > 300


def test_bad_qrels_rows_are_skipped_counted_and_named(model, tmp_path, capsys):
    qrels = QRELS + "q9\td0\t1\nq2\tmissing-doc\t1\n"
    root = write_beir(tmp_path / "set", qrels=qrels.replace("q3\td5\t1", "q3\td5\t0"))
    task = load_beir(root)
    err = capsys.readouterr().err
    assert f"{root / 'qrels' / 'test.tsv'}:7: query id 'q9' is not in the queries" in err
    assert f"{root / 'qrels' / 'test.tsv'}:8: corpus id 'missing-doc' is not in the corpus; row skipped" in err
    assert "query 'q3' has no relevant document; query skipped" in err
    assert task.issues.counts == {"qrels_unknown_query": 1, "qrels_unknown_document": 1, "query_without_relevant": 1}
    assert set(task.qrels) == {"q0", "q1", "q2"}
    results = evaluate(model, root, ["1,1"], settings=SweepSettings(cache_dir=tmp_path / "cache", progress=False))
    assert results["tasks"]["set"]["skipped"] == task.issues.counts
    assert results["tasks"]["set"]["num_queries"] == 3


def test_unreadable_images_in_the_corpus_are_skipped_and_counted(model, tmp_path):
    good = {f"d{i}": Item(text=t) for i, t in enumerate(DOCUMENTS)}
    corpus = {**good, "broken-page": Item(image=b"definitely not a PNG")}
    qrels = {"q0": {"d0": 1}, "q1": {"broken-page": 1}}
    task = RetrievalTask("t", corpus, {q: Item(text=QUERIES[q]) for q in qrels}, qrels, source="fixture")
    task.issues.quiet = True
    results = run_budget_sweep(model, [task], ["1,1"], SweepSettings(use_cache=False, progress=False))
    skipped = results["tasks"]["t"]["skipped"]
    assert skipped == {"unreadable_document": 1, "query_without_relevant": 1}
    assert results["tasks"]["t"]["num_documents"] == 6 and results["tasks"]["t"]["num_queries"] == 1
    assert any("'broken-page' cannot be encoded (embedded image bytes are not a readable image" in m for m in results["skipped"]["messages"])


def test_empty_corpus_and_malformed_json_stop_with_file_and_line(tmp_path):
    root = write_beir(tmp_path / "empty", documents=[])
    with pytest.raises(DataFormatError, match=r"corpus.jsonl: the corpus is empty"):
        load_beir(root)
    broken = write_beir(tmp_path / "broken")
    (broken / "corpus.jsonl").write_text('{"_id": "d0", "text": "fine"}\n{"_id": "d1", "text": oops}\n')
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:2: not valid JSON"):
        load_beir(broken)


def test_impossible_budget_stops_before_encoding(model, tmp_path, monkeypatch):
    counts = count_encodes(model, monkeypatch)
    with pytest.raises(ValueError, match=r"budget \(2,16\) asks for 16 document vectors, but .* has only 8 document meta tokens"):
        evaluate(model, write_beir(tmp_path / "set"), ["1,1", "2,16"], settings=SweepSettings(use_cache=False))
    assert counts == {"query": 0, "document": 0}


def test_cli_eval_prints_table_and_writes_outputs(model_dir, tmp_path):
    from metaembed.cli import app

    root = write_beir(tmp_path / "set")
    out = tmp_path / "out"
    runner = CliRunner()
    arguments = ["eval", "--model", model_dir, "--data", str(root), "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--budget", "1,1", "2,4", "4,8"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()
    assert any(row.startswith("(1,1) ") for row in rows) and any(row.startswith("(4,8) ") for row in rows)
    assert any(row.startswith("backbone ") for row in rows)  # the model's own backbone, scored by default
    assert json.loads((out / "results.json").read_text())["budget_list"] == ["1,1", "2,4", "4,8"]

    too_big = runner.invoke(app, ["eval", "--model", model_dir, "--data", str(root), "--out", str(out), "--budget", "8,8"])
    assert too_big.exit_code == 2
    assert "budget (8,8) asks for 8 query vectors" in too_big.output and "largest budget is (4,8)" in too_big.output

    wrong_format = runner.invoke(app, ["eval", "--model", model_dir, "--data", str(root), "--out", str(out), "--format", "mmeb"])
    assert wrong_format.exit_code == 2 and "--format mmeb given, but the folder holds beir data" in wrong_format.output
    assert max_cutoff(["ndcg@10"]) == 10
