"""``metaembed.index.build_index``, the one way to build an index (``metaembed index`` and the quickstart): the model
is recorded as an absolute folder, so ``metaembed search --index /abs/index`` works from any folder, and an older
index that recorded a relative path still finds its model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from metaembed.cli import app
from metaembed.index import IndexSettingsError, MultiVectorIndex, build_index, recorded_model
from metaembed.data.item import Item
from metaembed.index.corpus import CorpusRecord
from metaembed.model import MetaEmbed

TEXTS = ["a text editor for programmers", "gzip compresses files", "a json parser library", "image viewer for X11",
         "network time protocol daemon", "a music player for the terminal"]


@pytest.fixture(scope="module")
def tiny(tiny_bert_path) -> MetaEmbed:
    return MetaEmbed.from_backbone(tiny_bert_path, num_query_meta_tokens=4, num_document_meta_tokens=8)


@pytest.fixture
def project(tiny, tmp_path, monkeypatch) -> Path:
    """Folder A with a saved model at A/models/tiny and a corpus at A/corpus.jsonl; the working folder is A."""
    root = tmp_path / "A"
    tiny.save_pretrained(str(root / "models" / "tiny"))
    (root / "corpus.jsonl").write_text("".join(json.dumps({"id": f"doc{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    monkeypatch.chdir(root)
    return root


def invoke(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def test_build_index_records_absolute_paths_and_resumes(tiny, project):
    built = build_index("models/tiny", "corpus.jsonl", "ix", chunk_size=4, progress=False)
    assert (built.documents, built.encoded, built.already_indexed, built.document_budget) == (6, 6, 0, 8)
    assert built.model == str(project / "models" / "tiny")
    with MultiVectorIndex.open(project / "ix") as index:
        assert index.properties["model"] == str(project / "models" / "tiny")
        assert index.properties["corpus"] == str(project / "corpus.jsonl")
        assert torch.allclose(index.get_vectors(["doc2"]), tiny.encode_document([TEXTS[2]]), atol=0.01)
        assert [seg["count"] for seg in index.manifest["segments"]] == [6]  # chunks of 4 and 2, merged at the end

    lines: list[str] = []
    again = build_index(tiny, "corpus.jsonl", "ix", model_name=str(project / "models" / "tiny"), log=lines.append)
    assert (again.documents, again.encoded, again.already_indexed) == (6, 0, 6)
    assert lines == ["resuming: 6 of 6 documents already indexed"]
    with pytest.raises(IndexSettingsError, match="was built with") as error:
        build_index(tiny, "corpus.jsonl", "ix", document_budget=4)
    assert error.value.setting == "index"
    with pytest.raises(IndexSettingsError, match="more than the model's 8") as error:
        build_index(tiny, "corpus.jsonl", "other", document_budget=9)
    assert error.value.setting == "document_budget"


def test_build_index_takes_vectors_already_encoded(tiny, project):
    records = [CorpusRecord(f"d{i}", Item(text), {"n": i}) for i, text in enumerate(TEXTS)]
    vectors = torch.nn.functional.normalize(torch.randn(len(TEXTS), 8, tiny.embedding_dim), dim=-1)
    built = build_index(tiny, records, "pre", document_budget=2, vectors=vectors, progress=False)
    assert built.documents == 6 and built.model is None
    with MultiVectorIndex.open(project / "pre") as index:
        assert "model" not in index.properties and index.max_document_vectors == 2
        assert torch.allclose(index.get_vectors(["d3"]).float(), vectors[3:4, :2], atol=0.01)
        assert index.get_metadata("d3") == {"n": 3}


def test_search_from_another_folder_finds_the_model(project, tmp_path, monkeypatch):
    """The bug: an index built with a relative --model could not be searched from elsewhere."""
    built = invoke("index", "--model", "models/tiny", "--corpus", "corpus.jsonl", "--out", "ix")
    assert built.exit_code == 0, built.output
    assert f"model {project / 'models' / 'tiny'}" in built.output
    elsewhere = tmp_path / "B"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = invoke("search", "--index", project / "ix", "--query", "json", "--top-k", 2, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["model"] == str(project / "models" / "tiny") and len(payload["hits"]) == 2
    table = invoke("search", "--index", project / "ix", "--query", "json")
    assert table.exit_code == 0, table.output
    assert f"model {project / 'models' / 'tiny'} (the one the index was built with)" in table.output


def test_older_index_with_a_relative_model_path(tiny, project, tmp_path, monkeypatch):
    """Indexes written before kept the path as typed, relative to where they were built (the quickstart's
    ``metaembed-quickstart/train/model``): it is found from the index's folder, the working folder, or above."""
    work = project / "qs"
    tiny.save_pretrained(str(work / "train" / "model"))
    with MultiVectorIndex.create(work / "index", tiny.embedding_dim, 8, properties={"model": "qs/train/model"}) as index:
        index.add(["a", "b"], tiny.encode_document(TEXTS[:2]))
    expected = str(work / "train" / "model")
    assert recorded_model({"model": "qs/train/model"}, work / "index") == expected
    assert recorded_model({"model": "owner/hub-model"}, work / "index") == "owner/hub-model"
    assert recorded_model({"model": "/abs/model"}, work / "index") == "/abs/model"
    assert recorded_model({}, work / "index") is None

    monkeypatch.chdir(tmp_path)
    result = invoke("search", "--index", work / "index", "--query", "json", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["model"] == expected
    resumed = build_index(tiny, [CorpusRecord("c", Item(TEXTS[2]), None)], work / "index", model_name=expected)
    assert resumed.documents == 3  # the same model, recorded relatively before: the build resumes


def test_quickstart_index_stage_uses_build_index(tiny, project):
    """The quickstart's index stage: one index through build_index, with absolute model and corpus paths."""
    from rich.console import Console

    from metaembed.quickstart import Quickstart, QuickstartSettings

    beir = project / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "json"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td2\t1\n")
    console = Console(record=True, width=200)
    quickstart = Quickstart(QuickstartSettings(work_dir=Path("qs"), batch_size=4), console=console)
    with quickstart.build_index(tiny, "models/tiny", Path("beir")) as index:
        assert len(index) == 6 and index.max_document_vectors == 8
        assert index.properties["model"] == str(project / "models" / "tiny")
        assert index.properties["corpus"] == str(beir / "corpus.jsonl")
        assert index.get_metadata("d1") == {"text": TEXTS[1], "title": "d1"}
    with quickstart.build_index(tiny, "models/tiny", Path("beir")) as index:
        assert len(index) == 6
    assert "Reusing the index in qs/index (6 documents)" in console.export_text()


def test_commands_hide_transformers_loading_bars_and_keep_ours(project):
    """transformers' "Loading weights" bar is off while a command runs (and back on after); our encoding bar shows."""
    from transformers.utils import logging as hf_logging

    result = invoke("index", "--model", "models/tiny", "--corpus", "corpus.jsonl", "--out", "ix")
    assert result.exit_code == 0, result.output
    assert "Loading weights" not in result.output and "encoding" in result.output
    assert hf_logging.set_tqdm_hook(None) is None  # the command put transformers' hook back as it was
