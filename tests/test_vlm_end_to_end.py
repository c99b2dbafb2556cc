"""The composed vision-language model end to end through the command line, as a user runs it: ``metaembed train
--vision-tower`` on image-text pairs, ``metaembed index`` of a folder of images, ``metaembed search`` with a text
query and with ``--query-image``; the CLI's hits are the model's own ranking."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from metaembed.cli import app
from metaembed.model import MetaEmbed
from tests.test_train_vlm import SHAPES, write_image_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def hits(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])["hits"]


def test_train_index_search_with_text_and_image_queries(tiny_qwen2_path, tiny_mobilenet_v2_path, tmp_path, monkeypatch):
    monkeypatch.setenv("METAEMBED_CACHE", str(tmp_path / "cache"))  # the composed backbone is written here
    data = write_image_pairs(tmp_path / "data")
    trained = invoke("train", "-m", tiny_qwen2_path, "--vision-tower", tiny_mobilenet_v2_path, "--train-jsonl", data,
                     "-o", tmp_path / "run", "--batch-size", 8, "--max-steps", 25, "--learning-rate", 3e-3,
                     "--warmup-ratio", 0, "--num-query-meta-tokens", 2, "--num-document-meta-tokens", 4,
                     "--save-steps", 1000, "--bf16", "false")  # fp32 on every CPU: the same training with or without AMX
    assert trained.exit_code == 0, trained.output
    model_path = tmp_path / "run" / "model"
    assert any((tmp_path / "cache" / "composed-vlm").iterdir())

    images = tmp_path / "data" / "images"  # one drawn shape per caption: 0.png ... 7.png
    indexed = invoke("index", "-m", model_path, "--corpus", images, "-o", tmp_path / "index", "--batch-size", 4)
    assert indexed.exit_code == 0, indexed.output

    model = MetaEmbed.from_pretrained(str(model_path))
    documents = model.encode_document([str(images / f"{i}.png") for i in range(len(SHAPES))])
    correct = 0
    for index, name in enumerate(SHAPES):
        found = hits(invoke("search", "-i", tmp_path / "index", "-q", f"a {name}", "-b", "2,4", "-k", 3, "--json"))
        scores = metaembed_scores(model.encode_query([f"a {name}"]), documents)
        expected = [f"{i}.png" for i in scores.argsort(descending=True)[:3].tolist()]
        assert [hit["id"] for hit in found] == expected  # the CLI ranks as the model does
        correct += found[0]["id"] == f"{index}.png"
    assert correct >= 5, correct  # trained: most captions find their own drawing first (chance: 1 in 8)

    by_image = hits(invoke("search", "-i", tmp_path / "index", "--query-image", images / "2.png", "-k", 8, "--json"))
    assert sorted(hit["id"] for hit in by_image) == sorted(f"{i}.png" for i in range(len(SHAPES)))
    image_scores = metaembed_scores(model.encode_query([str(images / "2.png")]), documents)
    assert by_image[0]["id"] == f"{int(image_scores.argmax())}.png"


def metaembed_scores(query: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """The (documents,) MaxSim scores of one query at the full budget."""
    import metaembed

    return metaembed.maxsim(query, documents)[0]


def test_an_image_query_to_a_text_only_model_says_so(tiny_bert_path, tmp_path):
    model_path = tmp_path / "text_model"
    MetaEmbed.from_backbone(tiny_bert_path, 2, 4).save_pretrained(str(model_path))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(["gzip", "a text editor"])))
    assert invoke("index", "-m", model_path, "--corpus", corpus, "-o", tmp_path / "index").exit_code == 0
    image = tmp_path / "red.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 0, 0)).save(image)
    result = invoke("search", "-i", tmp_path / "index", "--query-image", image)
    assert result.exit_code == 2
    assert re.search(r"text-only", " ".join(result.output.split())), result.output
