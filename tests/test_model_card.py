"""The model's own config and card: a training run stores its MMR groups and temperature in the model's config,
``metaembed serve`` offers them from there (older checkpoints: from train_config.yaml), and the saved README.md
is a MetaEmbed card (install and load lines, meta tokens, groups, backbone, plain-text examples, budget table)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from metaembed import Budget, MetaEmbed, MultiVectorIndex
from metaembed.cli import app
from metaembed.cli.serve import trained_budgets
from metaembed.evaluation import SweepSettings, evaluate
from metaembed.evaluation.report import budget_curve
from metaembed.model.saved_config import METAEMBED_CONFIG_FILE, module_folder, read_saved_model_info
from metaembed.training import TrainConfig, train
from tests.test_eval_sweep import write_beir

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = [
    {"query": "terminal text editor", "positive": "vim is a highly configurable text editor", "negatives": ["gzip compresses files"]},
    {"query": "compress a file", "positive": "gzip reduces the size of files", "negatives": ["vim edits text"]},
    {"query": "parse json", "positive": "a fast library for parsing json documents", "negatives": ["an image viewer"]},
    {"query": "view images", "positive": "an image viewer for the X window system", "negatives": ["a json parser"]},
]
JSON_STRING_ITEM = re.compile(r"""['"]\{\\?["']text""")
"""A JSON-encoded item inside a string literal, as sentence-transformers' generic card shows training cells."""


@pytest.fixture(scope="module")
def trained(tiny_bert_path, tmp_path_factory) -> Path:
    """A model folder written by a (two-step) ``metaembed.train`` run with 2 query and 4 document meta tokens."""
    root = tmp_path_factory.mktemp("card_run")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    config = TrainConfig(model=tiny_bert_path, train_jsonl=[str(data)], output_dir=str(root / "run"), batch_size=2,
                         max_steps=2, num_query_meta_tokens=2, num_document_meta_tokens=4, save_steps=100,
                         logging_steps=1, temperature=0.05)
    return Path(train(config).model_path)


def card_of(folder: Path) -> str:
    return (folder / "README.md").read_text(encoding="utf-8")


def test_training_stores_its_groups_and_temperature_in_the_models_config(trained):
    config = json.loads((module_folder(trained) / METAEMBED_CONFIG_FILE).read_text())
    assert config["training"]["groups"] == ["1,1", "2,4"]  # the paper's groups, clipped to 2 and 4 meta tokens
    assert config["training"]["temperature"] == 0.05
    assert config["training"]["settings"]["steps"] == 2
    assert config["training"]["data"] == ["train.jsonl"]
    assert config["training"]["examples"]["queries"][0] == ROWS[0]["query"]
    loaded = MetaEmbed.from_pretrained(str(trained), device="cpu")
    assert loaded.training_record.groups == [Budget(1, 1), Budget(2, 4)]
    assert read_saved_model_info(trained).training.temperature == 0.05


def test_the_card_of_a_trained_model(trained):
    card = card_of(trained)
    front = card.split("---")[1]
    assert "library_name: metaembed" in front and "- metaembed" in front and "- multi-vector" in front
    assert "pip install metaembed" in card
    assert f'MetaEmbed.from_pretrained("{trained}")' in card and "maxsim(queries, documents" in card
    assert "**Query meta tokens (R_q):** 2" in card and "**Document meta tokens (R_c):** 4" in card
    assert "**Meta attention:** `full`" in card
    assert "**MMR groups (r_q, r_c):** (1,1), (2,4)" in card and "**Temperature:** 0.05" in card
    backbone = MetaEmbed.from_pretrained(str(trained), device="cpu").backbone_name_or_path
    assert f"**Backbone:** `{backbone}`" in card
    for row in ROWS[:3]:  # real example items, as plain string literals
        assert f'    "{row["query"]}",' in card and f'    "{row["positive"]}",' in card
    assert not JSON_STRING_ITEM.search(card), card
    assert "## Budget curve" not in card  # no evaluation attached yet
    assert "multi_vector_encoder_model_id" not in card  # not sentence-transformers' generic card


def test_an_untrained_model_card_says_so_and_names_a_hub_backbone(tiny_bert_path, tmp_path):
    model = MetaEmbed.from_backbone(tiny_bert_path, 2, 4, device="cpu", meta_attention="document_windows")
    model.save_pretrained(str(tmp_path / "plain"), model_name="someone/metaembed-tiny")
    card = card_of(tmp_path / "plain")
    assert 'MetaEmbed.from_pretrained("someone/metaembed-tiny")' in card
    assert "Not trained by `metaembed train`" in card and "**Meta attention:** `document_windows`" in card
    assert "base_model" not in card  # a local backbone folder is not a hub id
    assert not JSON_STRING_ITEM.search(card)
    model.backbone.backbone_name_or_path = "sentence-transformers/all-MiniLM-L6-v2"
    model.write_model_card(str(tmp_path / "plain"))
    card = card_of(tmp_path / "plain")
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card and "# MetaEmbed over all-MiniLM-L6-v2" in card


def test_an_evaluation_runs_budget_curve_goes_into_the_card_and_config(trained, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(trained, folder)
    model = MetaEmbed.from_pretrained(str(folder), device="cpu")
    results = evaluate(model, write_beir(tmp_path / "beir"), ["1,1", "2,4"], settings=SweepSettings(
        use_cache=False, progress=False, latency_queries=2, latency_repeats=1, bootstrap_resamples=50))
    model.attach_budget_curve(str(folder), budget_curve(results))
    card = card_of(folder)
    assert "## Budget curve" in card and "ndcg@10 at each budget" in card
    table = [line for line in card.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| budget | ndcg@10 | Δ vs (1,1) |")
    ndcg = {b: f"{100 * results['budgets'][b]['overall']['ndcg@10']:.2f}" for b in ("1,1", "2,4")}
    assert table[1].startswith(f"| (1,1) | {ndcg['1,1']} |") and table[2].startswith(f"| (2,4) | {ndcg['2,4']} |")
    assert "Measured on" in card and "4 queries, 6 documents" in card
    assert "**MMR groups (r_q, r_c):** (1,1), (2,4)" in card  # the training record is kept
    reloaded = MetaEmbed.from_pretrained(str(folder), device="cpu")
    assert reloaded.budget_curve == model.budget_curve
    reloaded.save_pretrained(str(tmp_path / "again"))  # a re-save keeps the curve
    assert f"| (2,4) | {ndcg['2,4']} |" in card_of(tmp_path / "again")


def test_serve_offers_the_groups_from_the_models_config(trained, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    shutil.copytree(trained, folder)
    (folder / "train_config.yaml").write_text("groups: ['1,1']\n")  # not read: the model's config says
    assert trained_budgets(str(folder)) == [Budget(1, 1), Budget(2, 4)]
    (folder / "train_config.yaml").unlink()
    assert trained_budgets(str(folder)) == [Budget(1, 1), Budget(2, 4)]

    model = MetaEmbed.from_pretrained(str(folder), device="cpu")
    with MultiVectorIndex.create(tmp_path / "index", dim=model.embedding_dim, max_document_vectors=4) as index:
        index.add(["a", "b"], model.encode_document(["gzip compresses files", "vim edits text"]))
    served = {}
    monkeypatch.setattr("uvicorn.run", lambda application, **kwargs: served.setdefault("app", application))
    result = CliRunner().invoke(app, ["serve", "--index", str(tmp_path / "index"), "--model", str(folder)])
    assert result.exit_code == 0, result.output
    stats = TestClient(served["app"]).get("/stats").json()
    assert [b["budget"] for b in stats["budgets"]] == [[1, 1], [2, 4]]


def test_serve_falls_back_to_train_config_yaml_for_older_checkpoints(trained, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(trained, old)
    config_file = module_folder(old) / METAEMBED_CONFIG_FILE
    config_file.write_text(json.dumps({"backbone": json.loads(config_file.read_text())["backbone"]}))  # no training record
    (old / "train_config.yaml").write_text("groups: ['2,4', '1,1']\n")
    assert trained_budgets(str(old)) == [Budget(1, 1), Budget(2, 4)]
    (old / "train_config.yaml").unlink()
    assert trained_budgets(str(old)) is None  # nothing recorded: the paper's budgets are offered


def test_a_malformed_training_record_is_a_clear_error(trained, tmp_path):
    from metaembed.cli._errors import CommandError

    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    (module_folder(broken) / METAEMBED_CONFIG_FILE).write_text(json.dumps({"training": {"groups": ["1,x"]}}))
    with pytest.raises(CommandError, match="cannot read its training record"):
        trained_budgets(str(broken))


def test_training_continues_from_a_saved_folder(trained, tmp_path):
    """A saved MetaEmbed folder (backbone in its module folder) is continued, not mistaken for a backbone."""
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    result = train(TrainConfig(model=str(trained), train_jsonl=[str(data)], output_dir=str(tmp_path / "more"),
                               batch_size=2, max_steps=1, groups=["1,1"], save_steps=100, attention_dropout=0.0))
    continued = MetaEmbed.from_pretrained(result.model_path, device="cpu")
    assert (continued.num_query_meta_tokens, continued.num_document_meta_tokens) == (2, 4)
    assert continued.training_record.groups == [Budget(1, 1)]
