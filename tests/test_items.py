"""Issue 16 section 2, one data layer: the one Item, one reader per format (values and errors), training data as
real ``datasets`` columns (an Image feature), and the same row giving the same item to train, index, eval and serve."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from metaembed.data.beir import DataFormatError, load_beir
from metaembed.data.item import Item, dataset_item_feature, parse_json_item, resolve_image, strip_image_placeholder
from metaembed.data.mmeb import load_mmeb_subset
from metaembed.data.rows import EmptyItemError, parse_beir_row, parse_item_row
from metaembed.index.corpus import CorpusError, read_corpus
from metaembed.inputs import InvalidInputError, PathOutsideFolderError, prepare_item
from metaembed.serve.service import SearchService
from metaembed.training.data import cells_to_items, read_jsonl, read_mmeb_subset, to_dataset


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """data/ with img/red.png (8x6) and a file outside it."""
    (tmp_path / "data" / "img").mkdir(parents=True)
    Image.new("RGB", (8, 6), (255, 0, 0)).save(tmp_path / "data" / "img" / "red.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "outside.png")
    return tmp_path / "data"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ------------------------------------------------------------------------------------------------ the Item
def test_item_model_input_describe_and_instruction(folder):
    red = (folder / "img" / "red.png").resolve()
    assert Item("a cat").to_model_input() == "a cat"
    assert Item("photo.png").to_model_input() == {"text": "photo.png"}  # text that looks like a file stays text
    assert Item(image=red).to_model_input() == red
    assert Item("cap", red).to_model_input() == {"text": "cap", "image": red}
    assert Item("cap", red).describe() == "'cap' + <image red.png>"
    assert Item(image=red.read_bytes()).to_model_input().size == (8, 6)
    with pytest.raises(InvalidInputError, match="not a readable image"):
        Item(image=b"no image").to_model_input()
    with pytest.raises(ValueError, match="needs text, an image, or both"):
        Item()
    assert Item(image=red).with_instruction("Find: ") == Item("Find: ", red)
    assert Item("x").with_instruction(None) == Item("x")


def test_one_placeholder_rule():
    assert strip_image_placeholder("<|image_1|>\nRepresent it") == "Represent it"
    assert strip_image_placeholder("<|image_1|> <|image_2|>") is None
    assert strip_image_placeholder(None) is None


def test_image_paths_are_resolved_checked_and_kept_inside(folder):
    assert resolve_image("img/red.png", folder, where="w") == (folder / "img" / "red.png").resolve()
    with pytest.raises(PathOutsideFolderError, match=r"^f:3: image path '../outside.png' leads outside"):
        resolve_image("../outside.png", folder, where="f:3")
    assert resolve_image("../outside.png", folder, where="w", allow_outside=True).name == "outside.png"
    with pytest.raises(ValueError, match=r"nope.png' of item 'x' does not exist"):
        resolve_image("nope.png", folder, where="w", owner="item 'x'", check="exists")
    (folder / "bad.png").write_bytes(b"text")
    with pytest.raises(ValueError, match="bad.png' is not a readable image"):
        resolve_image("bad.png", folder, where="w", check="readable")
    assert resolve_image("nope.png", folder, where="w").name == "nope.png"  # "none": reported when encoded


# ------------------------------------------------------------------------------------- one reader per format
def test_json_item_values_and_errors(folder):
    parse = lambda value: parse_json_item(value, base_dir=folder, what="positive", check="readable")  # noqa: E731
    assert parse("text") == Item("text")
    assert parse({"text": " ", "image": "img/red.png"}) == Item(image=(folder / "img/red.png").resolve())
    for value, message in [(None, "positive is missing"), (3, "must be a string or an object"),
                           ({"txt": "a"}, "unknown keys"), ({"text": ""}, "'text' of positive is empty"),
                           ({"text": 5}, "'text' of positive must be a string"),
                           ({"image": "../outside.png"}, "^positive: image path")]:
        with pytest.raises(ValueError, match=message):
            parse(value)


def test_beir_and_item_rows(folder):
    where = "c.jsonl:1"
    item_id, item, metadata = parse_beir_row({"_id": 7, "title": " T ", "text": "body ", "image": "img/red.png"},
                                             base_dir=folder, where=where)
    assert (item_id, item, metadata["title"]) == ("7", Item("T body", (folder / "img/red.png").resolve()), " T ")
    assert parse_beir_row({"_id": "q", "title": "ignored", "text": "ask"}, base_dir=folder, where=where,
                          use_title=False)[1] == Item("ask")
    with pytest.raises(EmptyItemError, match="BEIR document 'e' needs a non-empty string"):
        parse_beir_row({"_id": "e", "title": ""}, base_dir=folder, where=where)
    with pytest.raises(ValueError, match="missing '_id'"):
        parse_beir_row({"text": "x"}, base_dir=folder, where=where)
    assert parse_item_row({"id": "a", "text": "t", "metadata": {"k": 1}}, base_dir=folder, where=where) == (
        "a", Item("t"), {"k": 1})
    with pytest.raises(ValueError, match="'id' must be a non-empty string"):
        parse_item_row({"id": "", "text": "t"}, base_dir=folder, where=where)


def test_readers_report_file_and_line(folder):
    write_jsonl(folder / "corpus.jsonl", [{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}, {"_id": "d2"}])
    write_jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "find a"}])
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    task = load_beir(folder)
    assert task.corpus == {"d1": Item("a")}  # the duplicate and the empty row are skipped and counted
    assert task.issues.counts == {"duplicate_id": 1, "empty_item": 1}
    assert any("corpus.jsonl:3: BEIR document 'd2'" in message for message in task.issues.messages)
    with pytest.raises(CorpusError, match=r"corpus.jsonl, line 2: id 'd1' repeats line 1"):
        read_corpus(folder / "corpus.jsonl")  # the index refuses what evaluation skips
    write_jsonl(folder / "corpus.jsonl", [{"title": "no id"}])
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:1: missing '_id'"):
        load_beir(folder)


# ------------------------------------------------------------------------------------------- dataset columns
def test_training_columns_are_text_and_a_real_image_feature(folder):
    from datasets import Image as ImageFeature
    from datasets import Value

    path = write_jsonl(folder / "train.jsonl", [
        {"query": "red", "positive": {"text": "a picture", "image": "img/red.png"}},
        {"query": {"image": "img/red.png"}, "positive": "words only"},
    ])
    examples, _ = read_jsonl(path)
    dataset = to_dataset(examples, num_negatives=0)
    for name in ("query", "positive"):
        assert dataset.features[name]["text"] == Value("string")
        assert isinstance(dataset.features[name]["image"], ImageFeature)
    assert dataset.features["query"] == dataset_item_feature()
    # text + image round-trips: the text, and the image file, opened by the collator (not by datasets)
    cell = dataset[0]["positive"]
    assert cell["text"] == "a picture" and Path(cell["image"]["path"]) == (folder / "img" / "red.png").resolve()
    assert dataset[1]["positive"] == {"text": "words only", "image": None}
    assert dataset[1]["query"]["text"] is None and Path(dataset[1]["query"]["image"]["path"]).name == "red.png"
    inputs = cells_to_items(dataset["positive"], accepts_images=True, max_image_side=4)
    assert inputs[0]["text"] == "a picture" and inputs[0]["image"].size == (4, 3) and inputs[1] == "words only"
    assert inputs[0]["image"].getpixel((1, 1)) == Image.open(folder / "img" / "red.png").convert("RGB").getpixel((1, 1))


def test_a_corrupt_or_huge_training_image_names_its_column_and_item(folder, tmp_path):
    from metaembed.inputs import InvalidInputError
    from metaembed.training.trainer import MetaEmbedDataCollator

    broken = folder / "img" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    path = write_jsonl(folder / "bad.jsonl", [{"query": "red", "positive": {"image": "img/broken.png"}},
                                              {"query": "blue", "positive": "words"}])
    examples, _ = read_jsonl(path, check_images=False)
    dataset = to_dataset(examples, num_negatives=0)
    collator = MetaEmbedDataCollator(preprocess_fn=lambda *a, **k: {}, accepts_images=True)
    with pytest.raises(InvalidInputError, match=r"training column 'positive': .*broken\.png"):
        collator([dataset[0], dataset[1]])


# ------------------------------------------------------------------------- same row, same item everywhere
def pixels(model_input) -> tuple:
    """A prepared model input as (text, sha of RGB pixels)."""
    prepared = prepare_item(model_input, accepts_images=True)
    if not isinstance(prepared, dict):
        prepared = {"text": prepared} if isinstance(prepared, str) else {"image": prepared}
    image = prepared.get("image")
    return prepared.get("text"), image and hashlib.sha256(image.tobytes()).hexdigest()


def test_train_index_eval_and_serve_read_the_same_item(folder):
    red = (folder / "img" / "red.png").resolve()
    expected = Item("a red square", red)
    write_jsonl(folder / "corpus.jsonl", [{"_id": "d1", "text": "a red square", "image": "img/red.png"}])
    write_jsonl(folder / "queries.jsonl", [{"_id": "q1", "image": "img/red.png"}])
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    task = load_beir(folder)  # metaembed eval
    assert task.corpus["d1"] == expected and task.queries["q1"] == Item(image=red)
    assert read_corpus(folder / "corpus.jsonl")[0].item == expected  # metaembed index, BEIR rows ...
    items = write_jsonl(folder / "items.jsonl", [{"id": "d1", "text": "a red square", "image": "img/red.png"}])
    assert read_corpus(items)[0].item == expected  # ... and item rows
    train = write_jsonl(folder / "train.jsonl", [{"query": {"image": "img/red.png"},
                                                   "positive": {"text": "a red square", "image": "img/red.png"}}])
    (example,), _ = read_jsonl(train)  # metaembed train
    assert example.positive == expected and example.query == Item(image=red)
    cell = to_dataset([example, example], num_negatives=0)[0]["positive"]
    assert pixels(Item.from_cell(cell).to_model_input()) == pixels(expected.to_model_input())
    with Image.open(red) as upload:  # metaembed serve: an uploaded image with its text
        _, (served,), _ = SearchService._prepare([{"id": "d1", "text": "a red square", "image": upload.copy()}])
    assert pixels(served) == pixels(expected.to_model_input())
    pq.write_table(pa.table({"qry": ["<|image_1|>\nFind it"], "qry_image_path": ["img/red.png"],
                             "pos_text": ["a red square"], "pos_image_path": ["img/red.png"]}),
                   folder / "train.parquet")
    (mmeb,), _ = read_mmeb_subset(folder.parent, "data", image_root=folder)  # MMEB-train and MMEB-eval
    assert mmeb.positive == expected and mmeb.query == Item("Find it", red)
    subset = folder / "mmeb"
    subset.mkdir()
    pq.write_table(pa.table({"qry_text": ["<|image_1|>\nFind it"], "qry_img_path": ["img/red.png"],
                             "tgt_text": [["a red square", "other"]], "tgt_img_path": [["img/red.png", ""]]}),
                   subset / "test-0.parquet")
    evaluated = load_mmeb_subset(subset, image_root=folder)
    assert evaluated.queries[0] == Item("Find it", red)
    assert evaluated.candidates[0][0] == expected


def test_item_bytes_round_trip_through_a_cell(folder):
    data = (folder / "img" / "red.png").read_bytes()
    cell = Item("t", data).to_cell()
    assert cell == {"text": "t", "image": {"bytes": data, "path": None}}
    assert Item.from_cell(cell) == Item("t", data)
    assert Image.open(io.BytesIO(Item.from_cell(cell).image)).size == (8, 6)
