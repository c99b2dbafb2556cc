"""Image paths in data files that lead outside the data file's folder are refused unless allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from metaembed.data.beir import DataFormatError, load_beir
from metaembed.data.item import Item
from metaembed.index.corpus import CorpusError, read_corpus
from metaembed.inputs import PathOutsideFolderError, resolve_data_path
from metaembed.training.data import BadRowError, read_jsonl


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """data/ holds the data files and inside.png; secret.png sits next to data/, outside it."""
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(data / "img" / "inside.png")
    Image.new("RGB", (8, 8), (10, 200, 10)).save(tmp_path / "secret.png")
    return {"data": data, "secret": tmp_path / "secret.png"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_resolve_data_path(layout):
    data = layout["data"]
    assert resolve_data_path("img/inside.png", data, "x") == data / "img" / "inside.png"
    assert resolve_data_path("img/../img/inside.png", data, "x").resolve() == (data / "img" / "inside.png").resolve()
    for escaping in ("../secret.png", "img/../../secret.png", str(layout["secret"])):
        with pytest.raises(PathOutsideFolderError, match=r"file.jsonl:3: image path .* leads outside the data folder"):
            resolve_data_path(escaping, data, "file.jsonl:3")
        assert resolve_data_path(escaping, data, "x", allow_outside=True).resolve() == layout["secret"].resolve()


def test_index_corpus_refuses_escaping_images(layout):
    corpus = write_jsonl(layout["data"] / "corpus.jsonl", [
        {"id": "a", "image": "img/inside.png"},
        {"id": "b", "text": "caption", "image": "../secret.png"},
    ])
    with pytest.raises(CorpusError, match=r"corpus.jsonl, line 2: image path '../secret.png' leads outside"):
        read_corpus(corpus)
    records = read_corpus(corpus, allow_outside_paths=True)
    assert [r.id for r in records] == ["a", "b"]
    assert records[1].item.image == layout["secret"].resolve()


def test_beir_corpus_image_field_is_read_and_checked(layout):
    corpus = write_jsonl(layout["data"] / "corpus.jsonl", [{"_id": "p1", "image": "img/inside.png"}])
    records = read_corpus(corpus)
    assert records[0].item == Item(image=(layout["data"] / "img" / "inside.png").resolve())
    write_jsonl(corpus, [{"_id": "p1", "title": "t", "image": "/etc/../" + str(layout["secret"])}])
    with pytest.raises(CorpusError, match="leads outside the data folder"):
        read_corpus(corpus)


def test_training_jsonl_reports_escaping_row_with_its_line(layout):
    path = write_jsonl(layout["data"] / "train.jsonl", [
        {"query": "red", "positive": {"image": "img/inside.png"}},
        {"query": "green", "positive": {"text": "x", "image": "../secret.png"}},
    ])
    with pytest.raises(BadRowError, match=r"train.jsonl:2: .*positive.*leads outside the data folder"):
        read_jsonl(path)
    rows, report = read_jsonl(path, on_bad_row="skip")
    assert len(rows) == 1 and report.rows_skipped == 1
    rows, _ = read_jsonl(path, allow_outside_paths=True)
    assert Path(rows[1].positive.image) == layout["secret"].resolve()


def test_beir_eval_folder_refuses_escaping_images(layout):
    data = layout["data"]
    write_jsonl(data / "corpus.jsonl", [{"_id": "d1", "image": "../secret.png"}])
    write_jsonl(data / "queries.jsonl", [{"_id": "q1", "text": "green"}])
    (data / "qrels").mkdir()
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:1: image path '../secret.png' leads outside"):
        load_beir(data)
    task = load_beir(data, allow_outside_paths=True)
    assert Path(task.corpus["d1"].image).resolve() == layout["secret"].resolve()
