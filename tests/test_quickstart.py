"""The quickstart end to end at a small size: real Python docs (and Debian) data, real MiniLM training, index, every
budget evaluated, auto calibrated; a second run reuses every stage. (`make quickstart` runs the same code at full
size.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from metaembed import MetaEmbed, MultiVectorIndex
from metaembed.cli import app
from metaembed.data.debian import find_translation_files
from metaembed.quickstart import Quickstart, QuickstartSettings
from tests.test_data_images import needs_rsvg, write_fixture_packages

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def debian_lists():
    """The package descriptions apt keeps; fetched with `apt-get update` (as the quickstart does) when missing."""
    find_translation_files()


def run(work, **overrides) -> tuple[dict, str]:
    small = dict(train_steps=2, batch_size=8, max_text_tokens=32, corpus_size=300, test_queries=40)
    settings = QuickstartSettings(work_dir=work, **{**small, **overrides})
    console = Console(record=True, width=200)
    result = Quickstart(settings, console=console).run()
    return result, console.export_text()


def test_quickstart_builds_everything_then_reuses_it(tmp_path):
    """The default data (the standard library's docs: a module's members, a line each), read whole (448 tokens)
    when indexed."""
    work = tmp_path / "qs"
    result, output = run(work)
    stats = json.loads((work / "data" / "stats.json").read_text())
    assert stats["max_body_words"] == 16 and stats["test_queries"] == 40

    budgets = ["1,1", "2,4", "4,8", "8,16", "16,64"]
    overall = result["results"]
    saved = json.loads((work / "eval" / "results.json").read_text())
    assert list(saved["budgets"]) == list(overall["budgets"]) == budgets
    for budget in budgets:
        metrics = saved["budgets"][budget]["overall"]
        assert set(metrics) == {"ndcg@10", "recall@10", "mrr@10", "recall@1"}
        assert 0.0 <= metrics["recall@1"] <= metrics["recall@10"] <= 1.0
        assert f"\n({budget}) " in output  # the printed table has a row per budget
    assert "\nbackbone " in output and "backbone: " in output  # the plain backbone's row and what it is
    assert (work / "eval" / "budget_curve.png").stat().st_size > 10_000
    with MultiVectorIndex.open(work / "index") as index:
        assert len(index) == stats["corpus_documents"] and index.max_document_vectors == 64
        properties = index.properties
    # budget=auto calibrated on the dev queries, stored in the index, and run on the test queries
    auto = result["auto"]
    assert properties["auto_margin"] == auto["margin"] and properties["auto_candidates"] == auto["candidates"] >= 10
    assert 0 < auto["cost_share"] <= 1 and sum(auto["stopped"].values()) == pytest.approx(1.0)
    assert 0 <= auto["ndcg@10"] <= 1 and f"On the 40 test queries: nDCG@10 {100 * auto['ndcg@10']:.2f} with auto" in output
    assert MetaEmbed.from_pretrained(result["model_path"]).max_seq_length == 448
    model_file = work / "train" / "model" / "0_MetaTransformer" / "model.safetensors"
    assert model_file.is_file()
    backbone_config = json.loads((model_file.parent / "sentence_bert_config.json").read_text())
    assert backbone_config["meta_attention"] == "document_lines"  # a vector per line: a module's member
    card = (work / "train" / "model" / "README.md").read_text()
    assert "## Budget curve" in card and "\n| (16,64) | " in card  # the run's budget curve is in the model's card
    assert f"metaembed search --index {work / 'index'} --query 'parse command-line options' --budget auto" in output
    assert f"metaembed serve --index {work / 'index'}" in output
    assert set(result["timings"]) == {"data", "train", "index", "evaluate", "auto", "total"}
    assert json.loads((work / "quickstart.json").read_text())["data"] == "pydocs"

    trained_at = model_file.stat().st_mtime_ns
    _, again = run(work)
    for stage in ("Reusing the retrieval set", "Reusing the trained model", "Reusing the index"):
        assert stage in again
    assert model_file.stat().st_mtime_ns == trained_at

    # --model: a trained checkpoint instead of training one
    other = tmp_path / "other"
    given = str(work / "train" / "model")
    result, output = run(other, model=given)
    assert f"Using the given model {given} (no training)" in output
    assert result["model_path"] == given and not (other / "train").exists()

    # --fresh: everything rebuilt, the model trained again
    _, rebuilt = run(work, fresh=True)
    assert "--fresh: removing" in rebuilt and "Reusing" not in rebuilt
    assert model_file.stat().st_mtime_ns != trained_at


def test_quickstart_on_debian_sources(tmp_path):
    """--data sources: a Debian source package's binaries, a line each; a later run on other data replaces the
    folder's run rather than mixing the two."""
    work = tmp_path / "qs"
    result, output = run(work, data="sources")
    assert set(result["results"]["budgets"]) == {"1,1", "2,4", "4,8", "8,16", "16,64"}
    with MultiVectorIndex.open(work / "index") as index:
        assert len(index) == 300 and index.properties["auto_candidates"] == result["auto"]["candidates"]
    model = MetaEmbed.from_pretrained(result["model_path"])
    assert model.backbone.meta_attention == "document_lines"
    assert json.loads((work / "quickstart.json").read_text())["data"] == "sources"
    assert "--query 'a text editor for the terminal' --budget auto" in output
    _, again = run(work)
    assert "holds a run on the 'sources' data: removing it" in again


@needs_rsvg
def test_quickstart_multimodal_half(tmp_path):
    """--data images on small fixture packages: a MobileNetV2 + MiniLM model warm-started and trained, the test images
    indexed (their files kept for the page's thumbnails), the three tasks evaluated at every budget next to the
    frozen-towers yardstick (and MiniLM on the one text task), an image query printed and run."""
    roots, lists = write_fixture_packages(tmp_path / "pkgs")
    work = tmp_path / "qs"
    result, output = run(work, data="images", batch_size=4, max_text_tokens=None, corpus_size=12, test_queries=5,
                         image_package_roots=roots, image_lists_dir=lists)
    budgets = ["1,1", "2,4", "4,8", "8,16", "16,64"]
    saved = json.loads((work / "eval" / "results.json").read_text())
    assert list(saved["budgets"]) == budgets
    tasks = set(saved["budgets"]["16,64"]["tasks"])
    assert tasks == {"text-to-image", "image-to-text", "text-to-image-text"}
    assert "frozen_towers" in saved["baselines"] and "backbone" in saved["baselines"]
    comparisons = saved["paired"]["comparisons"]
    assert "(16,64) - frozen_towers" in comparisons and "(16,64) - backbone" in comparisons
    assert "Yardstick: frozen towers: " in output and "mobilenet" in output and "fitted on" in output
    model = MetaEmbed.from_pretrained(result["model_path"])
    assert model.accepts_images and model.backbone.mixed_image_weight == 0.25
    assert model.backbone.model.config.image_readout and model.backbone.model.config.projector_linear_skip
    with MultiVectorIndex.open(work / "index") as index:
        metadata = index.get_metadata(next(iter(json.loads(line)["_id"] for line in
                                                (work / "data/beir/text-to-image/corpus.jsonl").read_text().splitlines())))
    assert Path(metadata["image"]).is_absolute() and Path(metadata["image"]).is_file()
    command = next(line for line in output.splitlines() if "--query-image" in line)
    picture = Path(command.split("--query-image ")[1].split()[0])
    assert picture.is_file() and f"metaembed search --index {work / 'index'}" in command
    assert f"metaembed serve --index {work / 'index'}" in output
    assert json.loads((work / "quickstart.json").read_text())["data"] == "images"
    assert Quickstart(QuickstartSettings(work_dir=work, data="images"))._previous_data() == "images"
    found = CliRunner().invoke(app, ["search", "-i", str(work / "index"), "--query-image", str(picture), "-k", "3", "--json"])
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout.strip().splitlines()[-1])["hits"]) == 3
