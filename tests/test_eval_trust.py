"""Evaluation a user can trust and decide from (issue 18): the backbone baseline by default, per-query results on
disk that pytrec_eval re-scores to our means, one tie order everywhere, progress while scoring, the encoding
cache shown and cleared, latency spread and machine load, errors that name the argument, a table that fits 100
columns, an honest plot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from metaembed import MetaEmbed, MultiVectorIndex
from metaembed.cli import app
from metaembed.evaluation import BACKBONE, EncodingCache, SweepSettings, evaluate, terminal_table
from metaembed.evaluation.plot import budget_curve_figure, quality_axis_limits
from metaembed.model.saved_config import METAEMBED_CONFIG_FILE, module_folder, read_saved_model_info
from metaembed.scoring import tie_order, top_k
from tests.test_eval_sweep import write_beir

pytrec_eval = pytest.importorskip("pytrec_eval")

# Two documents with the same text score exactly alike: their order is the tie rule alone.
TIED = ["gzip reduces the size of files", "gzip reduces the size of files", "vim is a text editor",
        "a fast JSON parser", "an image viewer", "download files over HTTP"]
TIED_QRELS = "query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td2\t2\nq1\td4\t1\nq2\td3\t1\nq3\td5\t1\n"


@pytest.fixture(scope="module")
def model_dir(tiny_bert_path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trust_model")
    MetaEmbed.from_backbone(tiny_bert_path, 4, 8).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def model(model_dir) -> MetaEmbed:
    return MetaEmbed.from_pretrained(str(model_dir))


def invoke(*args, **kwargs):
    return CliRunner().invoke(app, [str(arg) for arg in args], **kwargs)


def table_lines(output: str) -> list[str]:
    """The printed table and its notes: from the header line to the line before the cache line."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("budget "))
    end = next(i for i, line in enumerate(lines) if line.startswith("encoding cache"))
    return lines[start:end]


def test_model_records_its_backbone(model, model_dir, tiny_bert_path, tmp_path):
    assert model.backbone_name_or_path == str(Path(tiny_bert_path).resolve())
    info = read_saved_model_info(model_dir)
    assert (info.num_query_meta_tokens, info.num_document_meta_tokens, info.backbone) == (4, 8, model.backbone_name_or_path)
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    (module_folder(old) / METAEMBED_CONFIG_FILE).unlink()  # a checkpoint saved before the backbone was recorded
    assert MetaEmbed.from_pretrained(str(old)).backbone_name_or_path is None
    assert read_saved_model_info(old).backbone is None
    assert read_saved_model_info(tmp_path / "nothing") is None


def test_eval_scores_the_backbone_by_default_and_no_baseline_turns_it_off(model_dir, tiny_bert_path, tmp_path):
    data = write_beir(tmp_path / "set")
    result = invoke("eval", "--model", model_dir, "--data", data, "--out", tmp_path / "a", "--no-cache", "--budget", "1,1", "4,8")
    assert result.exit_code == 0, result.output
    lines = table_lines(result.stdout)
    assert lines[0].split()[:3] == ["budget", "ndcg@10", "Δ"] and "Δ vs backbone" in lines[0]
    assert any(line.startswith("backbone ") for line in lines)
    assert f"backbone: {Path(tiny_bert_path).resolve()} (mean pooling, cosine" in result.stdout
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["baselines"]["backbone"]["source"] == str(Path(tiny_bert_path).resolve())
    assert "(4,8) - backbone" in saved["paired"]["comparisons"]

    off = invoke("eval", "--model", model_dir, "--data", data, "--out", tmp_path / "b", "--no-cache", "--budget", "1,1", "--no-baseline")
    assert off.exit_code == 0, off.output
    assert not any(line.startswith("backbone") for line in table_lines(off.stdout))
    assert json.loads((tmp_path / "b" / "results.json").read_text())["baselines"] == {}


def test_an_unloadable_backbone_is_one_line_and_the_run_goes_on(model_dir, tmp_path):
    moved = tmp_path / "model"
    shutil.copytree(model_dir, moved)
    (module_folder(moved) / METAEMBED_CONFIG_FILE).write_text(json.dumps({"backbone": "no-such-owner/no-such-backbone"}))
    result = invoke("eval", "--model", moved, "--data", write_beir(tmp_path / "set"), "--out", tmp_path / "o", "--no-cache", "--budget", "1,1")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "backbone" in line and "baseline" in line]
    assert len(notes) == 1 and notes[0].startswith("note: no 'backbone' baseline (no-such-owner/no-such-backbone)"), result.stderr
    assert "no backbone baseline:" in result.stdout
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert saved["baselines"] == {} and "backbone" in saved["baselines_not_run"]


def test_backbone_baseline_equals_the_backbone_loaded_directly(model, tiny_bert_path, tmp_path):
    results = evaluate(model, write_beir(tmp_path / "set"), ["1,1"], settings=SweepSettings(use_cache=False, progress=False),
                       baselines={"backbone": BACKBONE, "plain": tiny_bert_path})
    assert results["baselines"]["backbone"]["overall"] == results["baselines"]["plain"]["overall"]
    assert results["baselines"]["backbone"]["description"].startswith("mean pooling, cosine, ")


def _pytrec_means(run_file: Path, qrels_file: Path, measures: dict[str, str]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    qrels: dict[str, dict[str, int]] = {}
    for line in qrels_file.read_text().splitlines():
        query, _, doc, grade = line.split()
        qrels.setdefault(query, {})[doc] = int(grade)
    run: dict[str, dict[str, float]] = {}
    for line in run_file.read_text().splitlines():
        query, q0, doc, rank, score, tag = line.split()
        assert q0 == "Q0" and int(rank) >= 1 and tag
        run.setdefault(query, {})[doc] = float(score)
    per_query = pytrec_eval.RelevanceEvaluator(qrels, set(measures.values())).evaluate(run)
    means = {ours: sum(values[theirs] for values in per_query.values()) / len(per_query) for ours, theirs in measures.items()}
    return means, per_query


def test_trec_runs_rescored_by_pytrec_eval_give_our_means(model, tmp_path):
    data = write_beir(tmp_path / "set", qrels=TIED_QRELS, documents=TIED)
    out = tmp_path / "out"
    results = evaluate(model, data, ["1,1", "2,4", "4,8"], out, settings=SweepSettings(use_cache=False, progress=False),
                       baselines={"backbone": BACKBONE})
    measures = {"ndcg@1": "ndcg_cut_1", "ndcg@5": "ndcg_cut_5", "ndcg@10": "ndcg_cut_10", "recall@1": "recall_1",
                "recall@5": "recall_5", "recall@10": "recall_10", "recall@100": "recall_100", "map@100": "map_cut_100", "p@1": "P_1"}
    files = results["runs"]["set"]
    assert set(files) == {"qrels", "1,1", "2,4", "4,8", "backbone"}
    assert files["4,8"] == "runs/budget-4x8.trec" and files["backbone"] == "runs/baseline-backbone.trec"
    per_query_lines = [json.loads(line) for line in (out / "per_query.jsonl").read_text().splitlines()]
    for system, entry in [*((b, results["budgets"][b]) for b in ("1,1", "2,4", "4,8")), ("backbone", results["baselines"]["backbone"])]:
        theirs, their_per_query = _pytrec_means(out / files[system], out / files["qrels"], measures)
        for metric, value in theirs.items():
            assert entry["overall"][metric] == pytest.approx(value, abs=1e-9), (system, metric)
        ours = {row["query_id"]: row for row in per_query_lines if row["system"] == system}
        assert set(ours) == set(their_per_query)
        for query, values in their_per_query.items():
            assert ours[query]["ndcg@10"] == pytest.approx(values["ndcg_cut_10"], abs=1e-9)
    # the two copies tie: the run lists the larger id first, as trec_eval would rank them
    for line in (out / files["1,1"]).read_text().splitlines():
        if line.startswith("q0 "):
            tied = [row.split() for row in (out / files["1,1"]).read_text().splitlines() if row.split()[2] in ("d0", "d1") and row.startswith("q0 ")]
            assert tied[0][4] == tied[1][4] and [row[2] for row in tied] == ["d1", "d0"]
            break
    assert "per_query.jsonl" in (out / "results.md").read_text()


def test_a_tie_ranks_alike_in_eval_index_search_and_mteb(model, tmp_path):
    """Two identical documents: eval's run, the index and MTEB (through our adapter) all put the larger id first."""
    mteb = pytest.importorskip("mteb")
    from metaembed.evaluation.mteb_adapter import MetaEmbedMTEBEncoder, local_retrieval_task

    root = tmp_path / "tie"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": "a text editor"}) + "\n" for i in ("copy-a", "copy-b")))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "edit text"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\tcopy-a\t1\n")

    ours = evaluate(model, root, ["4,8"], tmp_path / "out", settings=SweepSettings(use_cache=False, progress=False))
    assert ours["budgets"]["4,8"]["overall"]["mrr@10"] == 0.5  # copy-b first
    run_lines = (tmp_path / "out" / "runs" / "budget-4x8.trec").read_text().splitlines()
    assert [line.split()[2] for line in run_lines] == ["copy-b", "copy-a"]

    result = mteb.evaluate(MetaEmbedMTEBEncoder(model, "4,8"), local_retrieval_task(root), cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    assert scores["mrr_at_10"] == 0.5 and scores["precision_at_1"] == 0.0

    vectors = model.encode_document(["a text editor", "a text editor"])
    with MultiVectorIndex.create(tmp_path / "ix", model.embedding_dim, 8) as index:
        index.add(["copy-a", "copy-b"], vectors)  # inserted in the other order: ranking must not follow insertion
        query = model.encode_query(["edit text"])
        assert index.search(query, k=2, budget=(4, 8))[0].ids == ["copy-b", "copy-a"]
        assert index.search(query, k=1, budget=(4, 8))[0].ids == ["copy-b"]  # a tie straddling the cut
        assert index.cascade_search(query, k=1, budget=(4, 8), candidates=2)[0].ids == ["copy-b"]
    with MultiVectorIndex.create(tmp_path / "ix3", model.embedding_dim, 8) as index:
        index.add(["copy-b", "copy-a", "copy-c"], model.encode_document(["a text editor"] * 3))
        for margin in (float("inf"),):  # budget="auto" climbing to the last rung (rerank scores ties exactly)
            assert index.search(query, k=3, budget="auto", max_budget=(4, 8), auto_margin=margin,
                                candidates=3)[0].ids == ["copy-c", "copy-b", "copy-a"]


def test_top_k_orders_ties_by_column_even_past_its_window():
    scores = torch.tensor([[0.5] * 40 + [0.9, 0.1]])
    values, columns = top_k(scores, 5)
    assert columns.tolist() == [[40, 0, 1, 2, 3]] and values[0, 0] == pytest.approx(0.9)
    assert tie_order(["b", "a", "c"]) == [2, 0, 1]  # ids descending: c, b, a


def test_scoring_shows_progress(model, tmp_path, capsys):
    evaluate(model, write_beir(tmp_path / "set"), ["1,1", "2,4"], settings=SweepSettings(use_cache=False))
    assert "scoring set" in capsys.readouterr().err


def test_latency_spread_and_machine_load_are_reported(model, tmp_path):
    out = tmp_path / "out"
    results = evaluate(model, write_beir(tmp_path / "set"), ["1,1", "4,8"], out,
                       settings=SweepSettings(use_cache=False, progress=False, latency_repeats=2))
    for budget in ("1,1", "4,8"):
        entry = results["budgets"][budget]
        assert entry["latency_ms_single_query_p90"] >= entry["latency_ms_single_query"] > 0
        assert entry["latency_ms_per_query_p90"] >= entry["latency_ms_per_query"] > 0
        assert entry["latency_repeats"] == {"batched": 2, "single": 2 * 4}
    assert len(results["machine"]["load_average_start"]) == 3 and results["machine"]["cpu_count"] >= 1
    markdown = (out / "results.md").read_text()
    assert "median / p90" in markdown and "machine load (1 min)" in markdown


def test_latency_is_timed_through_the_index_and_only_when_asked(model, tmp_path, monkeypatch):
    """The rankings come from the exact fp32 scorer; the timings from a bf16 MultiVectorIndex of the task's documents,
    in a temporary folder removed afterwards (each search: one query, or all of them)."""
    from metaembed.index import MultiVectorIndex

    searched, created = [], []
    real_search, real_create = MultiVectorIndex.search, MultiVectorIndex.create.__func__

    def spy_search(self, queries, k=10, budget=None, **options):
        searched.append((self.path, len(queries), tuple(budget), self.max_document_vectors))
        return real_search(self, queries, k=k, budget=budget, **options)

    def spy_create(cls, path, *args, **kwargs):
        created.append(Path(path))
        return real_create(cls, path, *args, **kwargs)

    monkeypatch.setattr(MultiVectorIndex, "search", spy_search)
    monkeypatch.setattr(MultiVectorIndex, "create", classmethod(spy_create))
    data = write_beir(tmp_path / "set")
    results = evaluate(model, data, ["1,1", "2,4"], settings=SweepSettings(
        use_cache=False, progress=False, latency_repeats=2, latency_queries=3), baselines={"backbone": BACKBONE})
    model_index = [row for row in searched if row[3] == 4]  # the model's documents, up to the largest r_c asked
    for budget in ((1, 1), (2, 4)):
        calls = [n for _, n, b, _ in model_index if b == budget]
        assert calls == [1] + [1] * 2 * 3 + [4] * 2  # warm-up, 3 queries twice, all 4 queries twice
    assert [b for _, _, b, r_c in searched if r_c == 1] == [(1, 1)] * 9  # the backbone: a one-vector index
    assert len(created) == 2 and not any(path.exists() for path in created)  # temporary, and gone
    assert results["budgets"]["2,4"]["latency_ms_single_query"] > 0

    searched.clear(), created.clear()
    quiet = evaluate(model, data, ["1,1"], settings=SweepSettings(
        use_cache=False, progress=False, latency_repeats=0, latency_queries=0))
    assert not searched and not created and quiet["budgets"]["1,1"]["latency_ms_single_query"] is None
    assert quiet["budgets"]["1,1"]["overall"] == results["budgets"]["1,1"]["overall"]  # the same ranking


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. an empty latency legend on the plot
def test_eval_without_latency_writes_no_index(model_dir, tmp_path, monkeypatch):
    import metaembed.evaluation.latency as latency

    def refused(*args, **kwargs):
        raise AssertionError("a latency index was built with --latency-repeats 0")

    monkeypatch.setattr(latency, "latency_index", refused)
    data = write_beir(tmp_path / "set")
    result = invoke("eval", "--model", model_dir, "--data", data, "--out", tmp_path / "o", "--no-cache",
                    "--budget", "1,1", "--no-baseline", "--latency-repeats", 0)
    assert result.exit_code == 0, result.output
    row = next(line for line in table_lines(result.stdout) if line.startswith("(1,1)"))
    assert row.split()[-1] == "—"  # no latency figure
    bad = invoke("eval", "--model", model_dir, "--data", data, "--out", tmp_path / "p", "--latency-repeats", -1)
    assert bad.exit_code == 2 and "--latency-repeats: must be 0 (no latency) or more, got -1" in bad.output


def test_encoding_cache_is_shown_listed_and_cleared(model_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    data = write_beir(tmp_path / "set")
    result = invoke("eval", "--model", model_dir, "--data", data, "--out", tmp_path / "o", "--cache-dir", cache_dir,
                    "--budget", "1,1", "--no-baseline")
    assert result.exit_code == 0, result.output
    summary = EncodingCache(cache_dir).summary()
    assert summary["entries"] == 2 and summary["bytes"] > 0
    assert f"encoding cache: {cache_dir} (2 entries, " in result.stdout
    no_cache = invoke("eval", "--model", model_dir, "--data", data, "--out", tmp_path / "o", "--no-cache", "--budget", "1,1", "--no-baseline")
    assert "encoding cache: not used (--no-cache)" in no_cache.stdout

    listed = invoke("cache", "--cache-dir", cache_dir)
    assert listed.exit_code == 0, listed.output
    assert f"{cache_dir}: 1 models, 2 entries" in listed.stdout
    assert EncodingCache(cache_dir).models()[0]["path"] in listed.stdout

    (cache_dir / "notes.txt").write_text("not ours")  # clear deletes only what the cache wrote
    declined = invoke("cache", "clear", "--cache-dir", cache_dir, input="n\n")
    assert declined.exit_code == 1 and "nothing deleted" in declined.stdout
    assert EncodingCache(cache_dir).summary()["entries"] == 2
    cleared = invoke("cache", "clear", "--cache-dir", cache_dir, "--yes")
    assert cleared.exit_code == 0 and "deleted 2 entries" in cleared.stdout
    assert EncodingCache(cache_dir).summary()["entries"] == 0
    assert sorted(p.name for p in cache_dir.iterdir()) == ["notes.txt"]
    assert "already empty" in invoke("cache", "clear", "--cache-dir", cache_dir, "--yes").stdout


def test_errors_name_the_argument(model_dir, tmp_path, monkeypatch):
    data = write_beir(tmp_path / "set")
    missing = invoke("eval", "--model", tmp_path / "runs" / "no-model", "--data", data, "--out", tmp_path / "o")
    assert missing.exit_code == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: --model: no such model folder")

    misspelt = invoke("eval", "--model", model_dir, "--data", data, "--out", tmp_path / "o", "--budgit", "1,1")
    assert misspelt.exit_code == 2 and "No such option: --budgit" in misspelt.output and "(Possible options: --budget)" in misspelt.output
    other = invoke("search", "--index", tmp_path, "--querry", "json")
    assert other.exit_code == 2 and "No such option: --querry" in other.output and "--query" in other.output

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the budget was checked")

    monkeypatch.setattr(MetaEmbed, "from_pretrained", no_weights)
    too_big = invoke("eval", "--model", model_dir, "--data", data, "--out", tmp_path / "o", "--budget", "1,1", "2,16")
    assert too_big.exit_code == 2, too_big.output
    assert too_big.stderr.strip().splitlines()[-1].startswith("error: --budget: budget (2,16) asks for 16 document vectors")
    with pytest.raises(ValueError, match="has only 8 document meta tokens"):
        evaluate(str(model_dir), data, ["2,16"])


def test_table_fits_100_columns_with_wide_intervals():
    comparison = {"difference": -0.1234, "ci95_low": -0.1567, "ci95_high": 0.1012, "queries": 9999, "within_noise": True}
    entry = {"overall": {"ndcg@10": 0.5}, "index_bytes_per_document": 49152, "latency_ms_single_query": 1234.56}
    results = {
        "headline": "ndcg@10", "budget_list": ["1,1", "16,64"], "tasks": {"t": {}},
        "budgets": {"1,1": entry, "16,64": entry},
        "baselines": {"/a/very/long/path/to/some/backbone/model/folder/that/is/deep": {**entry, "source": "/x" * 60, "description": "mean pooling, cosine, 512 tokens"}},
        "paired": {"metric": "ndcg@10", "comparisons": {"(16,64) - (1,1)": comparison, "(1,1) - /a/very/long/path/to/some/backbone/model/folder/that/is/deep": comparison,
                                                        "(16,64) - /a/very/long/path/to/some/backbone/model/folder/that/is/deep": comparison}},
        "machine": {"cpu_count": 2, "load_average_start": [7.3, 7.0, 6.0], "load_average_end": [7.5, 7.1, 6.0]},
    }
    lines = terminal_table(results).splitlines()
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    assert lines[0].startswith("budget ") and "Δ vs baseline" in lines[0]
    assert any(line.startswith("baseline 1 ") for line in lines) and any("latencies are inflated" in line for line in lines)


def test_plot_is_honest(model, tmp_path):
    results = evaluate(model, write_beir(tmp_path / "set"), ["1,1", "2,4", "4,8"], settings=SweepSettings(use_cache=False, progress=False),
                       baselines={"backbone": BACKBONE})
    figure = budget_curve_figure(results)
    quality, size, latency = figure.axes[:3]
    assert size.get_yscale() == "log" and latency.get_yscale() == "log"
    bottom, _ = quality.get_ylim()
    assert (bottom == 0) != ("zoomed: starts at" in quality.get_ylabel())
    assert any(line.get_label().startswith("baseline backbone") for line in quality.get_lines())
    assert any(line.get_label().startswith("baseline backbone") for line in size.get_lines())
    assert quality.containers, "no interval bars"
    assert quality_axis_limits([78.5, 80.3, 81.3]) == (77, 83)  # zoomed on the values, and the label says so
    assert quality_axis_limits([10.0, 60.0])[0] == 0.0
