"""``metaembed serve``: without ``--model`` it serves the model that built the index (recorded in it), says so,
and ``GET /stats`` names the model serving (name, backbone, vector size, meta tokens, trained budgets) and the
model the index records; an index that records none needs ``--model`` (one ``error:`` line, exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import metaembed.serve
from metaembed.cli import app
from metaembed.index import MultiVectorIndex
from metaembed.model import MetaEmbed

TEXTS = ["a text editor", "gzip compresses files", "a json parser"]


@pytest.fixture(scope="module")
def built(tiny_bert_path, tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny model; an index that records it (as `metaembed index` does) and one that records no model."""
    root = tmp_path_factory.mktemp("serve_cli")
    model = MetaEmbed.from_backbone(tiny_bert_path, num_query_meta_tokens=4, num_document_meta_tokens=8)
    model.save_pretrained(str(root / "model"))
    vectors = model.encode_document(TEXTS)
    for name, properties in (("ix", {"model": str(root / "model")}), ("bare", {})):
        with MultiVectorIndex.create(root / name, model.embedding_dim, 8, properties=properties) as index:
            index.add([f"doc{i}" for i in range(len(TEXTS))], vectors)
    return root / "model", root / "ix", root / "bare"


@pytest.fixture()
def served(monkeypatch):
    """Runs `metaembed serve` without a server: the app and service it would serve are kept, uvicorn is not run."""
    import uvicorn

    kept: dict = {}
    real_create_app = metaembed.serve.create_app

    def create_app(service):
        kept["service"] = service
        kept["app"] = real_create_app(service)
        return kept["app"]

    monkeypatch.setattr(metaembed.serve, "create_app", create_app)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: kept.update(run=kwargs))
    yield kept
    if "service" in kept:
        kept["service"].index.close()


def test_serve_without_model_uses_the_one_that_built_the_index(built, served, tiny_bert_path):
    model, index, _ = built
    result = CliRunner().invoke(app, ["serve", "-i", str(index), "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert f"model {model} (the one the index was built with)" in result.stdout
    assert served["run"]["port"] == 8123
    with TestClient(served["app"]) as client:
        stats = client.get("/stats").json()
    assert stats["index_model"] == str(model)
    assert stats["model"] == {
        "name": str(model), "backbone": str(Path(tiny_bert_path).resolve()), "embedding_dim": stats["dim"],
        "query_meta_tokens": 4, "document_meta_tokens": 8, "trained_budgets": None, "accepts_images": False}
    assert [b["budget"] for b in stats["budgets"]][-1] == [4, 8]


def test_serve_with_model_names_it(built, served):
    model, index, _ = built
    result = CliRunner().invoke(app, ["serve", "--index", str(index), "-m", str(model)])
    assert result.exit_code == 0, result.output
    assert f"model {model}\n" in result.stdout and "built with" not in result.stdout
    assert served["service"].stats()["model"]["name"] == str(model)


def test_serve_index_without_recorded_model_needs_model(built, served):
    _, _, bare = built
    result = CliRunner().invoke(app, ["serve", "--index", str(bare)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == ["error: --model: the index records no model: pass --model"]
    assert "service" not in served
    with MultiVectorIndex.open(bare, mode="a"):  # the refused command let go of the index
        pass
