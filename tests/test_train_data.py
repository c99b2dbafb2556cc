"""Training data: the JSONL format, the MMEB-train layout with subset weights, and bad rows by line number."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from metaembed.training import BadRowError, read_jsonl, read_mmeb_train, to_dataset
from metaembed.data.item import Item
from metaembed.training.data import cells_to_items, task_of, to_task_datasets


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_jsonl_rows_images_and_instructions(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "img" / "red.png")
    path = write_lines(tmp_path / "train.jsonl", [
        {"query": "red square", "positive": {"text": "a picture", "image": "img/red.png"}, "negatives": ["blue"]},
        {"query": {"image": "img/red.png"}, "positive": "red", "query_instruction": "Find: ", "document_instruction": "Doc: "},
    ])
    examples, report = read_jsonl(path)
    assert report.rows_read == 2 and report.rows_kept == 2 and report.rows_skipped == 0
    first, second = examples
    assert first.positive == Item("a picture", (tmp_path / "img" / "red.png").resolve())
    assert first.negatives == [Item("blue")]
    assert second.query == Item("Find: ", (tmp_path / "img" / "red.png").resolve())
    assert second.positive == Item("Doc: red") and second.source.endswith("train.jsonl:2")

    dataset = to_dataset(examples, num_negatives=1, seed=0)
    assert dataset.column_names == ["query", "positive", "negative_1"]
    # Row 2 has no hard negative: it borrows row 1's positive (its image file, opened by the collator).
    borrowed = dataset[1]["negative_1"]
    assert borrowed["text"] == "a picture" and Path(borrowed["image"]["path"]) == (tmp_path / "img" / "red.png").resolve()
    items = cells_to_items(dataset["positive"], accepts_images=True, max_image_side=64)
    assert items[1] == "Doc: red"
    assert items[0]["text"] == "a picture" and items[0]["image"].size == (8, 8)


BAD_LINES = [
    {"query": "ok", "positive": "fine"},
    {"query": "no positive here"},
    {"query": "", "positive": "empty query text"},
    {"query": "q", "positive": {"text": "x", "image": "missing.png"}},
    "{not json",
    {"query": "q", "positive": "p", "negatives": [{"text": "   "}]},
    {"query": "q", "positive": {"image": "broken.png"}},
    {"query": "last good", "positive": "row"},
]


def test_bad_rows_stop_with_the_line_number(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    path = write_lines(tmp_path / "bad.jsonl", BAD_LINES)
    with pytest.raises(BadRowError, match=r"bad\.jsonl:2: missing 'positive'"):
        read_jsonl(path, on_bad_row="stop")


def test_bad_rows_are_skipped_counted_and_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    path = write_lines(tmp_path / "bad.jsonl", BAD_LINES)
    examples, report = read_jsonl(path, on_bad_row="skip")
    assert [example.query.text for example in examples] == ["ok", "last good"]
    assert report.rows_read == 8 and report.rows_kept == 2 and report.rows_skipped == 6
    expected = {2: "missing 'positive'", 3: "'text' of query is empty", 4: "missing.png' does not exist",
                5: "not valid JSON", 6: "'text' of negative 0 is empty", 7: "not a readable image"}
    for message, (line, problem) in zip(report.skipped, expected.items()):
        assert f"bad.jsonl:{line}: " in message and problem in message, message
    assert "skipped 6 bad rows" in report.summary()


def make_mmeb(root: Path) -> None:
    """Two subsets in the VLM2Vec MMEB-train layout: root/<subset>/*.parquet, images under root/images."""
    (root / "images").mkdir(parents=True)
    for index in range(3):
        Image.new("RGB", (6, 6), (index * 80, 0, 0)).save(root / "images" / f"{index}.jpg")
    subsets = {
        "VOC2007": {
            "qry": ["<|image_1|>\nRepresent the given image for classification"] * 3,
            "qry_image_path": [f"images/{i}.jpg" for i in range(3)],
            "pos_text": ["cat", "dog", "bird"],
            "pos_image_path": ["", "", ""],
            "neg_text": ["", "", ""],
            "neg_image_path": ["", "", ""],
        },
        "MSCOCO_t2i": {
            "qry": ["Find me an everyday image that matches the caption: a red box"] * 2,
            "qry_image_path": ["", ""],
            "pos_text": ["<|image_1|>\nRepresent the given image.", ""],
            "pos_image_path": ["images/0.jpg", ""],  # row 2 has no positive at all
            "neg_text": ["<|image_1|>\nRepresent the given image.", ""],
            "neg_image_path": ["images/1.jpg", ""],
        },
    }
    for name, columns in subsets.items():
        (root / name).mkdir()
        pq.write_table(pa.table(columns), root / name / "original-00000-of-00001.parquet")


def test_mmeb_layout_placeholders_and_subset_weights(tmp_path):
    make_mmeb(tmp_path)
    with pytest.raises(BadRowError, match=r"MSCOCO_t2i/original-00000-of-00001\.parquet:row 2: missing positive"):
        read_mmeb_train(tmp_path, ["VOC2007", "MSCOCO_t2i"])
    examples, report = read_mmeb_train(
        tmp_path, {"VOC2007": 3.0, "MSCOCO_t2i": 1.0}, num_examples=8, seed=1, on_bad_row="skip"
    )
    assert report.rows_read == 5 and report.rows_kept == 4 and report.rows_skipped == 1
    assert len(examples) == 8
    voc = [e for e in examples if "VOC2007" in e.source]
    coco = [e for e in examples if "MSCOCO" in e.source]
    assert len(voc) == 6 and len(coco) == 2  # 3:1 weights
    assert voc[0].query.text == "Represent the given image for classification"  # placeholder removed
    assert voc[0].query.image.suffix == ".jpg" and voc[0].query.image.is_file()
    assert coco[0].positive == Item("Represent the given image.", (tmp_path / "images/0.jpg").resolve())
    assert coco[0].negatives == [Item("Represent the given image.", (tmp_path / "images/1.jpg").resolve())]
    with pytest.raises(FileNotFoundError, match="MMEB subset 'Nope'"):
        read_mmeb_train(tmp_path, ["Nope"])


def mixed_task_rows(tmp_path: Path) -> Path:
    """Six rows of three tasks: text -> image, image -> text, text -> image+text (two each)."""
    (tmp_path / "img").mkdir()
    for index, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (8, 8), colour).save(tmp_path / "img" / f"{index}.png")
    return write_lines(tmp_path / "train.jsonl", [
        {"query": "red", "positive": {"image": "img/0.png"}},
        {"query": {"image": "img/1.png"}, "positive": "green"},
        {"query": "blue thing", "positive": {"text": "blue", "image": "img/2.png"}},
        {"query": "green", "positive": {"image": "img/1.png"}},
        {"query": {"image": "img/2.png"}, "positive": "blue"},
        {"query": "red thing", "positive": {"text": "red", "image": "img/0.png"}},
    ])


def test_task_datasets_split_rows_by_modalities_and_fill_negatives_within_a_task(tmp_path):
    examples, _ = read_jsonl(mixed_task_rows(tmp_path))
    assert [task_of(e) for e in examples] == ["text->image", "image->text", "text->image+text"] * 2
    datasets = to_task_datasets(examples, num_negatives=1, seed=0)
    assert sorted(datasets) == ["image->text", "text->image", "text->image+text"]
    assert datasets["text->image"]["query"] == [{"text": "red", "image": None}, {"text": "green", "image": None}]
    # a missing negative is the positive of another row of the same task, never of another modality
    assert datasets["image->text"]["negative_1"] == [{"text": "blue", "image": None}, {"text": "green", "image": None}]
    assert [cell["text"] for cell in datasets["text->image+text"]["negative_1"]] == ["red", "blue"]
    one_task = to_task_datasets([e for e in examples if task_of(e) == "text->image"], num_negatives=1)
    assert one_task.column_names == ["query", "positive", "negative_1"] and len(one_task) == 2  # a plain dataset
    with pytest.raises(ValueError, match=r"each task needs at least 2 rows, got \{'image->text': 1, 'text->image\+text': 1\}"):
        to_task_datasets(examples[:4], num_negatives=1)
