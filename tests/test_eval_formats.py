"""Readers for MMEB-eval and ViDoRe (QA and BEIR layouts, parquet and save_to_disk), format detection, and
the MMEB grouping; fixtures are written here in exactly the published layouts, with tiny PIL images."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from metaembed import MetaEmbed, maxsim
from metaembed.data.beir import DataFormatError
from metaembed.data.detect import detect_format, load_tasks
from metaembed.data.item import strip_image_placeholder
from metaembed.data.mmeb import load_mmeb_subset
from metaembed.data.vidore import load_vidore_beir, load_vidore_qa
from metaembed.evaluation import MMEB_META_TASKS, MMEB_SUBSETS, SweepSettings, evaluate, mmeb_group_means

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png_bytes(color: tuple[int, int, int], size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_mmeb_subset(root: Path, name: str, rows: list[dict]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    table = pa.table({
        "qry_text": [r["qry_text"] for r in rows],
        "qry_img_path": [r.get("qry_img_path", "") for r in rows],
        "tgt_text": pa.array([r["tgt_text"] for r in rows], pa.list_(pa.string())),
        "tgt_img_path": pa.array([r.get("tgt_img_path", [""] * len(r["tgt_text"])) for r in rows], pa.list_(pa.string())),
    })
    pq.write_table(table, folder / "test-00000-of-00001.parquet")
    return folder


def test_mmeb_reader_strips_placeholder_and_resolves_images(tmp_path):
    images = tmp_path / "eval_images"
    (images / "ImageNet-1K").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(images / "ImageNet-1K" / "cat.png")
    rows = [
        {"qry_text": "<|image_1|>\nRepresent the given image for classification", "qry_img_path": "ImageNet-1K/cat.png", "tgt_text": ["tabby cat", "goldfish", "tractor"]},
        {"qry_text": "<|image_1|>", "qry_img_path": "cat.png", "tgt_text": ["goldfish", "tabby cat"]},  # path relative to the subset folder
    ]
    folder = write_mmeb_subset(tmp_path / "MMEB-eval", "ImageNet-1K", rows)
    task = load_mmeb_subset(folder, images)
    assert task.name == "ImageNet-1K" and len(task.queries) == 2
    assert task.queries[0].text == "Represent the given image for classification"
    assert task.queries[0].image == images / "ImageNet-1K" / "cat.png"
    assert task.queries[1].text is None and task.queries[1].image == images / "ImageNet-1K" / "cat.png"
    assert [c.text for c in task.candidates[0]] == ["tabby cat", "goldfish", "tractor"]
    assert strip_image_placeholder("<|image_1|> <|image_2|>") is None
    with pytest.raises(DataFormatError, match=r"row 0: the data has images .* no image folder was given \(--images DIR\)"):
        load_mmeb_subset(folder, None)


def test_mmeb_sweep_precision_at_1_matches_direct_scoring(tiny_bert_path, tmp_path):
    rows = [
        {"qry_text": "Find a document for: compress files", "tgt_text": ["gzip compresses files", "vim edits text", "a json parser"]},
        {"qry_text": "Find a document for: edit text", "tgt_text": ["vim edits text", "gzip compresses files", "an image viewer"]},
        {"qry_text": "Find a document for: parse json", "tgt_text": ["a json parser", "an image viewer", "vim edits text"]},
        {"qry_text": "Find a document for: view pictures", "tgt_text": ["an image viewer", "a json parser", "gzip compresses files"]},
    ]
    root = tmp_path / "MMEB-eval"
    write_mmeb_subset(root, "WebQA", rows)
    write_mmeb_subset(root, "OVEN", rows[::-1])
    model = MetaEmbed.from_backbone(tiny_bert_path, 4, 8)
    settings = SweepSettings(cache_dir=tmp_path / "cache", storage_dtype=torch.float32, progress=False)
    results = evaluate(model, root, ["1,1", "4,8"], settings=settings)
    assert results["data"]["format"] == "mmeb" and set(results["tasks"]) == {"WebQA", "OVEN"}
    assert results["tasks"]["WebQA"]["num_documents"] == 4  # each distinct candidate encoded once
    for budget in ("1,1", "4,8"):
        r_q, r_c = map(int, budget.split(","))
        hits = 0
        for row in rows:
            query = model.encode_query([row["qry_text"]])
            candidates = model.encode_document(row["tgt_text"])
            scores = maxsim(query, candidates, r_q, r_c)[0]
            hits += int(not bool((scores[1:] > scores[0]).any()))
        assert results["budgets"][budget]["tasks"]["WebQA"]["p@1"] == pytest.approx(hits / len(rows))
        groups = results["budgets"][budget]["groups"]
        assert groups["retrieval"]["n"] == 2 and groups["retrieval"]["of"] == 12
        assert groups["ind"]["n"] == 1 and groups["ood"]["n"] == 1
        assert groups["overall"]["mean"] == pytest.approx((results["budgets"][budget]["tasks"]["WebQA"]["p@1"] + results["budgets"][budget]["tasks"]["OVEN"]["p@1"]) / 2)


def test_mmeb_grouping_follows_the_paper():
    assert {task: len(names) for task, names in MMEB_META_TASKS.items()} == {"classification": 10, "vqa": 10, "retrieval": 12, "grounding": 4}
    assert len(MMEB_SUBSETS) == len(set(MMEB_SUBSETS)) == 36
    scores = {name: (1.0 if name in ("ImageNet-1K", "RefCOCO") else 0.0) for name in MMEB_SUBSETS}
    means = mmeb_group_means(scores)
    assert means["ind"]["of"] == 20 and means["ood"]["of"] == 16
    assert means["classification"]["mean"] == pytest.approx(0.1) and means["grounding"]["mean"] == pytest.approx(0.25)
    assert means["ind"]["mean"] == pytest.approx(1 / 20) and means["ood"]["mean"] == pytest.approx(1 / 16)
    assert means["overall"]["mean"] == pytest.approx(2 / 36)


def write_vidore_qa(folder: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    pages = {"p1.png": png_bytes((255, 0, 0)), "p2.png": png_bytes((0, 255, 0)), "p3.png": png_bytes((0, 0, 255))}
    rows = [
        ("What is the revenue?", "p1.png"), ("What is the revenue?", "p2.png"),  # same question on two pages
        ("Who signed the report?", "p2.png"), (None, "p3.png"),  # a page without a question
    ]
    table = pa.table({
        "query": [q for q, _ in rows],
        "image": pa.array([{"bytes": pages[p], "path": p} for _, p in rows], IMAGE_STRUCT),
        "image_filename": [p for _, p in rows],
        "answer": ["1", "1", "Ann", None],
        "page": ["1", "2", "2", "3"],
    })
    pq.write_table(table, folder / "data" / "test-00000-of-00001.parquet")
    return folder


def test_vidore_qa_layout_dedups_queries_and_pages(tmp_path):
    task = load_vidore_qa(write_vidore_qa(tmp_path / "docvqa_test_subsampled"))
    assert sorted(task.corpus) == ["p1.png", "p2.png", "p3.png"]
    assert len(task.queries) == 2 and task.headline == "ndcg@5"
    revenue = next(q for q, item in task.queries.items() if item.text == "What is the revenue?")
    assert task.qrels[revenue] == {"p1.png": 1, "p2.png": 1}
    with Image.open(io.BytesIO(task.corpus["p3.png"].image)) as image:
        assert image.getpixel((0, 0)) == (0, 0, 255)


def _vidore_beir_tables():
    corpus = {"corpus-id": [10, 11, 12], "image": [{"bytes": png_bytes((i * 80, 0, 0)), "path": None} for i in range(3)]}
    queries = {"query-id": [0, 1, 2], "query": ["revenue 2023", "board members", "water use"]}
    qrels = {"query-id": [0, 0, 1, 2, 2], "corpus-id": [10, 11, 12, 99, 11], "score": [2, 1, 1, 1, 0]}
    return corpus, queries, qrels


def test_vidore_beir_layout_from_parquet(tmp_path, capsys):
    root = tmp_path / "vidore_v3_finance"
    corpus, queries, qrels = _vidore_beir_tables()
    for name, columns in (("corpus", corpus), ("queries", queries), ("qrels", qrels)):
        (root / name).mkdir(parents=True)
        table = pa.table(columns) if name != "corpus" else pa.table({"corpus-id": columns["corpus-id"], "image": pa.array(columns["image"], IMAGE_STRUCT)})
        pq.write_table(table, root / name / "test-00000-of-00001.parquet")
    task = load_vidore_beir(root)
    assert task.headline == "ndcg@10"  # v3 reports nDCG@10
    assert task.qrels == {"0": {"10": 2, "11": 1}, "1": {"12": 1}}
    err = capsys.readouterr().err
    assert "corpus id '99' is not in the corpus; row skipped" in err
    assert "query '2' has no relevant document; query skipped" in err
    assert task.issues.counts == {"qrels_unknown_document": 1, "query_without_relevant": 1}


def test_vidore_beir_layout_from_save_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    root = tmp_path / "esg_reports_v2"
    corpus, queries, qrels = _vidore_beir_tables()
    images = [Image.open(io.BytesIO(cell["bytes"])) for cell in corpus["image"]]
    features = datasets.Features({"corpus-id": datasets.Value("int64"), "image": datasets.Image()})
    datasets.Dataset.from_dict({"corpus-id": corpus["corpus-id"], "image": images}, features=features).save_to_disk(str(root / "corpus"))
    datasets.Dataset.from_dict(queries).save_to_disk(str(root / "queries"))
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(qrels)}).save_to_disk(str(root / "qrels"))
    fmt, tasks = load_tasks(root)
    assert fmt == "vidore" and tasks[0].headline == "ndcg@5"
    assert tasks[0].qrels == {"0": {"10": 2, "11": 1}, "1": {"12": 1}}
    with Image.open(io.BytesIO(tasks[0].corpus["12"].image)) as image:
        assert image.getpixel((0, 0)) == (160, 0, 0)


def test_detect_format_of_dataset_and_folder_of_datasets(tmp_path):
    write_vidore_qa(tmp_path / "vidore" / "docvqa")
    write_vidore_qa(tmp_path / "vidore" / "tabfquad")
    assert detect_format(tmp_path / "vidore" / "docvqa") == ("vidore", [tmp_path / "vidore" / "docvqa"])
    fmt, folders = detect_format(tmp_path / "vidore")
    assert fmt == "vidore" and [f.name for f in folders] == ["docvqa", "tabfquad"]
    write_mmeb_subset(tmp_path / "mmeb", "CIRR", [{"qry_text": "q", "tgt_text": ["a", "b"]}])
    assert detect_format(tmp_path / "mmeb")[0] == "mmeb"
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataFormatError, match="not a BEIR folder"):
        detect_format(tmp_path / "nothing")
    with pytest.raises(DataFormatError, match="no dataset named \\['docvqaa'\\]"):
        load_tasks(tmp_path / "vidore", subsets=["docvqaa"])
