"""``metaembed index`` / ``metaembed search`` with a tiny model: encode, resume after an interruption, search."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import metaembed
from metaembed.cli import app
from metaembed.data.item import Item
from metaembed.index import MultiVectorIndex
from metaembed.index.corpus import CorpusError, read_corpus
from metaembed.model import MetaEmbed

TEXTS = [
    "a text editor for programmers", "gzip compresses files", "a json parser library", "image viewer for X11",
    "network time protocol daemon", "spell checker dictionaries", "python bindings for sqlite", "a tiling window manager",
    "fonts for mathematics", "a music player for the terminal", "tools to read pdf files", "a compiler for rust",
]


@pytest.fixture(scope="module")
def model_path(tiny_bert_path, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("metaembed_tiny")
    MetaEmbed.from_backbone(tiny_bert_path, num_query_meta_tokens=4, num_document_meta_tokens=8).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": f"doc{i}", "text": t, "metadata": {"n": i}}) + "\n" for i, t in enumerate(TEXTS)))
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def flat(output: str) -> str:
    """CLI output with rich's box drawing and line wrapping removed, for matching messages."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", output).split())


def test_index_then_search(model_path, corpus, tmp_path):
    out = tmp_path / "ix"
    result = invoke("index", "--model", model_path, "--corpus", corpus, "--out", out, "--document-budget", 6,
                    "--batch-size", 4, "--chunk-size", 5)
    assert result.exit_code == 0, result.output
    index = MultiVectorIndex.open(out)
    assert len(index) == 12 and index.max_document_vectors == 6 and index.get_metadata("doc3") == {"n": 3}
    model = MetaEmbed.from_pretrained(model_path)
    expected = model.encode_document(TEXTS, budget=6)
    assert torch.allclose(index.get_vectors([f"doc{i}" for i in range(12)]), expected, atol=0.01)

    result = invoke("search", "--index", out, "--query", "a pdf reader", "--budget", "2,4", "--top-k", 3, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    direct = index.search(model.encode_query(["a pdf reader"], budget=2), k=3, budget=(2, 4))[0]
    assert payload["budget"] == [2, 4]
    assert [hit["id"] for hit in payload["hits"]] == direct.ids
    assert [hit["score"] for hit in payload["hits"]] == pytest.approx(direct.scores, abs=1e-4)
    assert payload["hits"][0]["metadata"] == {"n": int(direct.ids[0][3:])}

    table = invoke("search", "--index", out, "--model", model_path, "--query", "pdf", "--budget", "1,1")
    assert table.exit_code == 0 and "top 10 at budget 1,1" in table.output and "doc" in table.output
    too_big = invoke("search", "--index", out, "--query", "pdf", "--budget", "2,7")
    assert too_big.exit_code != 0 and "r_c=7 is larger than the 6" in flat(too_big.output)
    too_many = invoke("search", "--index", out, "--query", "pdf", "--budget", "5,4")
    assert too_many.exit_code != 0 and "more than the model's 4 query meta tokens" in flat(too_many.output)
    threaded = invoke("search", "--index", out, "--query", "a pdf reader", "--budget", "2,4", "--top-k", 3, "--json",
                      "--threads", 2)
    assert threaded.exit_code == 0, threaded.output
    assert [hit["id"] for hit in json.loads(threaded.stdout.strip().splitlines()[-1])["hits"]] == direct.ids
    no_threads = invoke("search", "--index", out, "--query", "pdf", "--threads", 0)
    assert no_threads.exit_code != 0 and "--threads must be at least 1, got 0" in flat(no_threads.output)


def test_float32_index_gives_the_models_fp32_maxsim_exactly(model_path, corpus, tmp_path):
    out = tmp_path / "ix"
    result = invoke("index", "--model", model_path, "--corpus", corpus, "--out", out, "--dtype", "float32", "--chunk-size", 5)
    assert result.exit_code == 0, result.output
    index = MultiVectorIndex.open(out)
    model = MetaEmbed.from_pretrained(model_path)
    documents = model.encode_document(TEXTS)
    assert index.dtype == "float32" and len(index.manifest["segments"]) == 1  # chunks merged when the build ends
    torch.testing.assert_close(index.get_vectors([f"doc{i}" for i in range(12)]), documents, rtol=0, atol=1e-6)
    result = invoke("search", "--index", out, "--query", "a pdf reader", "--budget", "2,4", "--top-k", 12, "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout.strip().splitlines()[-1])["hits"]
    exact = metaembed.maxsim(model.encode_query(["a pdf reader"]), documents, 2, 4, dtype=torch.float32)[0]
    assert [hit["id"] for hit in hits] == [f"doc{i}" for i in exact.argsort(descending=True).tolist()]
    assert [hit["score"] for hit in hits] == pytest.approx(exact.sort(descending=True).values.tolist(), abs=1e-5)


def test_interrupted_index_resumes_where_it_left_off(model_path, corpus, tmp_path, monkeypatch):
    out = tmp_path / "ix"
    original = MetaEmbed.encode_document
    encoded: list[str] = []

    def failing_on_third_chunk(self, items, *args, **kwargs):
        if len(encoded) >= 8:
            raise RuntimeError("simulated crash")
        encoded.extend(items)
        return original(self, items, *args, **kwargs)

    monkeypatch.setattr(MetaEmbed, "encode_document", failing_on_third_chunk)
    crashed = invoke("index", "--model", model_path, "--corpus", corpus, "--out", out, "--chunk-size", 4)
    assert crashed.exit_code != 0 and isinstance(crashed.exception, RuntimeError)
    assert len(MultiVectorIndex.open(out)) == 8  # two chunks committed before the crash

    monkeypatch.setattr(MetaEmbed, "encode_document", lambda self, items, *a, **k: encoded.extend(items) or original(self, items, *a, **k))
    encoded.clear()
    resumed = invoke("index", "--model", model_path, "--corpus", corpus, "--out", out, "--chunk-size", 4)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming: 8 of 12" in resumed.output
    assert encoded == TEXTS[8:]  # only what was missing is encoded again
    assert MultiVectorIndex.open(out).ids == [f"doc{i}" for i in range(12)]

    other = invoke("index", "--model", model_path, "--corpus", corpus, "--out", out, "--document-budget", 4)
    assert other.exit_code != 0 and "was built with" in flat(other.output)


def test_corpus_formats_and_errors(tmp_path):
    beir = tmp_path / "corpus.jsonl"
    beir.write_text('{"_id": "d1", "title": "T", "text": "body"}\n{"_id": 2, "text": "only text"}\n')
    records = read_corpus(beir)
    assert [(r.id, r.item) for r in records] == [("d1", Item("T body")), ("2", Item("only text"))]
    assert records[0].metadata == {"title": "T", "text": "body"}

    from PIL import Image
    (tmp_path / "pages" / "doc").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "pages" / "doc" / "p2.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "pages" / "a.jpg")
    (tmp_path / "pages" / "notes.txt").write_text("skip")
    images = read_corpus(tmp_path / "pages")
    assert [r.id for r in images] == ["a.jpg", "doc/p2.png"] and images[1].item.image.name == "p2.png"

    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "x", "text": "cat", "image": "pages/a.jpg"}\n')
    assert read_corpus(items)[0].item == Item("cat", (tmp_path / "pages" / "a.jpg").resolve())

    bad_cases = {
        '{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n': "line 2: id 'x' repeats line 1",
        '{"id": "x", "text": "a"}\n{oops\n': "line 2: not valid JSON",
        '{"text": "a"}\n': "line 1: missing 'id'",
        '{"id": "x"}\n': "item 'x' has neither 'text' nor 'image'",
        '{"id": "x", "image": "missing.png"}\n': "missing.png' of item 'x' does not exist",
    }
    for content, message in bad_cases.items():
        items.write_text(content)
        with pytest.raises(CorpusError, match=message):
            read_corpus(items)
    with pytest.raises(CorpusError, match="does not exist"):
        read_corpus(tmp_path / "nothing.jsonl")


def test_torchrun_two_processes_commit_once(model_path, corpus, tmp_path):
    """Two CPU processes (gloo) each encode half of the corpus; rank 0 commits every segment in one manifest update."""
    out = tmp_path / "ix"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    metaembed = shutil.which("metaembed", path=str(Path(sys.executable).parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", "29533", "--no-python", metaembed, "index",
         "--model", model_path, "--corpus", str(corpus), "--out", str(out), "--chunk-size", "3"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    # created at 0, one commit for both processes' 4 segments (6 documents per rank in chunks of 3), then one commit
    # of the merge policy joining those 4 small segments
    assert manifest["generation"] == 2
    assert [segment["count"] for segment in manifest["segments"]] == [12]
    index = MultiVectorIndex.open(out)
    assert sorted(index.ids) == sorted(f"doc{i}" for i in range(12))
    expected = MetaEmbed.from_pretrained(model_path).encode_document(TEXTS)
    assert torch.allclose(index.get_vectors([f"doc{i}" for i in range(12)]), expected, atol=0.01)
    assert not list((out / "staging").glob("*.jsonl"))
