"""The frozen-towers baseline of image tasks (metaembed.evaluation.frozen_towers) with real MobileNetV2 and MiniLM
weights: each kind of item's vector recomputed by hand, the fitted map checked against the ridge, image files
computed once; and in an evaluation, scored on image tasks beside the budgets while a text baseline reads an
image+text task's text alone and sits out a task with image-only items."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer

from metaembed import MetaEmbed
from metaembed.data.item import Item
from metaembed.evaluation import SweepSettings, evaluate
from metaembed.evaluation.frozen_towers import FROZEN_TOWERS, FrozenTowers
from metaembed.evaluation.report import task_table
from metaembed.evaluation.stats import paired_bootstrap
from metaembed.model.vlm.pooled import pooled_grid_features
from metaembed.ridge import fit_ridge
from tests.test_projector_warm_start import COLOURS, draw_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    return draw_images(tmp_path_factory.mktemp("discs"))


@pytest.fixture(scope="module")
def towers(minilm_path, mobilenet_v2_path, pictures) -> FrozenTowers:
    names = list(pictures)
    return FrozenTowers(minilm_path, mobilenet_v2_path).fit([pictures[n] for n in names], [f"a {n} disc" for n in names],
                                                            strength=0.1)


def test_every_kind_of_item_is_the_vector_the_module_docstring_says(towers, minilm_path, pictures):
    names = list(pictures)
    features = pooled_grid_features(towers.tower, towers.image_processor, [pictures[n] for n in names])
    text_model = SentenceTransformer(minilm_path, device="cpu")
    captions = text_model.encode([f"a {n} disc" for n in names], convert_to_tensor=True, normalize_embeddings=True)
    weight, bias = fit_ridge(features, captions.float(), 0.1)
    torch.testing.assert_close(towers.weight, weight)
    torch.testing.assert_close(towers.bias, bias)
    assert 0.0 < towers.fit_r2 <= 1.0

    items = [Item(text="a red disc"), Item(image=pictures["red"]), Item(text="a red disc", image=pictures["red"])]
    vectors = towers.encode_items(items)
    assert vectors.shape == (3, 384)
    text = text_model.encode(["a red disc"], convert_to_tensor=True, normalize_embeddings=True)[0].float()
    image = torch.nn.functional.normalize(features[0].double() @ weight + bias, dim=0).float()
    torch.testing.assert_close(vectors[0], text, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vectors[1], image, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vectors[2], torch.nn.functional.normalize(text + image, dim=0), rtol=1e-4, atol=1e-5)
    assert "frozen towers" in towers.describe() and "ridge strength 0.1" in towers.describe()


def test_an_image_file_is_pooled_once_even_through_a_hard_link(towers, pictures, tmp_path, monkeypatch):
    link = tmp_path / "same-red.png"
    os.link(pictures["red"], link)
    towers.image_features([pictures["red"]])
    calls = []
    real = towers.tower.forward
    monkeypatch.setattr(towers.tower, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = towers.image_features([link, pictures["red"]])
    assert calls == [] and torch.equal(again[0], again[1])


def test_an_unfitted_map_or_mismatched_pairs_are_refused(minilm_path, mobilenet_v2_path, pictures):
    fresh = FrozenTowers(minilm_path, mobilenet_v2_path)
    with pytest.raises(RuntimeError, match="needs a fitted map"):
        fresh.encode_items([Item(text="a disc")])
    with pytest.raises(ValueError, match="as many images as captions"):
        fresh.fit([pictures["red"]], ["a red disc", "a blue disc"])


def write_image_task(folder: Path, pictures: dict[str, Path], documents_have_text: bool) -> Path:
    """A BEIR task: a caption per colour as the query, its disc (with or without a caption) as the document."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "images").mkdir()
    rows, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for number, (name, path) in enumerate(pictures.items()):
        shutil.copy(path, folder / "images" / path.name)
        rows.append({"_id": f"d{number}", "image": f"images/{path.name}",
                     **({"text": f"{name} disc"} if documents_have_text else {})})
        queries.append({"_id": f"q{number}", "text": f"a {name} disc"})
        qrels.append(f"q{number}\td{number}\t1")
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in queries))
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return folder


def test_scored_beside_the_budgets_where_a_text_baseline_can_or_cannot_run(towers, tiny_composed_vlm_path, minilm_path,
                                                                          pictures, tmp_path, capsys):
    data = tmp_path / "tasks"
    write_image_task(data / "to-image", pictures, documents_have_text=False)
    write_image_task(data / "to-image-text", pictures, documents_have_text=True)
    model = MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, first_vector="mean")
    results = evaluate(model, data, ["1,1", "2,4"], tmp_path / "out", format="beir",
                       settings=SweepSettings(use_cache=False, progress=False),
                       baselines={FROZEN_TOWERS: towers, "minilm": minilm_path})
    assert results["baselines"][FROZEN_TOWERS]["overall"]["ndcg@10"] > 0
    per_query = [json.loads(line) for line in (tmp_path / "out" / "per_query.jsonl").read_text().splitlines()]
    systems = {(row["task"], row["system"]) for row in per_query}
    assert {("to-image", FROZEN_TOWERS), ("to-image-text", FROZEN_TOWERS), ("to-image-text", "minilm")} <= systems
    assert ("to-image", "minilm") not in systems  # image-only documents: the text baseline cannot run there
    # per task: each baseline's own tasks, comparisons within each task, and the table that shows them
    assert set(results["baselines"]["minilm"]["tasks"]) == {"to-image-text"}
    assert set(results["baselines"][FROZEN_TOWERS]["tasks"]) == {"to-image", "to-image-text"}
    by_task = results["paired"]["by_task"]
    assert "(2,4) - frozen_towers" in by_task["to-image"] and "(2,4) - minilm" not in by_task["to-image"]
    within = {row["query_id"]: row["ndcg@10"] for row in per_query if row["task"] == "to-image-text"}
    largest = {row["query_id"]: row["ndcg@10"] for row in per_query
               if row["task"] == "to-image-text" and row["system"] == "2,4"}
    minilm = {row["query_id"]: row["ndcg@10"] for row in per_query
              if row["task"] == "to-image-text" and row["system"] == "minilm"}
    assert within and by_task["to-image-text"]["(2,4) - minilm"] == paired_bootstrap(largest, minilm, 2000)
    table = task_table(results)
    assert table[0].split()[-2:] == ["to-image", "to-image-text"]
    minilm_row = next(line for line in table if line.startswith("minilm"))
    assert minilm_row.split()[1] == "—" and float(minilm_row.split()[2]) == pytest.approx(
        100 * results["baselines"]["minilm"]["tasks"]["to-image-text"]["ndcg@10"], abs=0.01)
    assert any(line.startswith("Δ (2,4) - frozen_towers") for line in table)
    warnings = capsys.readouterr().err
    assert "the text baselines (minilm) read the items' text alone" in warnings
    assert "items with an image and no text; the text baselines (minilm) are not scored on it" in warnings
    # the frozen towers' ranking on the image task is its own vectors' ranking
    task = [row for row in per_query if row["task"] == "to-image" and row["system"] == FROZEN_TOWERS]
    queries = towers.encode_items([Item(text=f"a {name} disc") for name in COLOURS])
    documents = towers.encode_items([Item(image=pictures[name]) for name in COLOURS])
    hits = (queries @ documents.T).argmax(dim=1).tolist()
    assert {row["query_id"]: row["recall@1"] for row in task} == {f"q{i}": float(hits[i] == i) for i in range(len(COLOURS))}


def test_a_composed_model_records_its_towers_and_of_model_rebuilds_them(tiny_composed_vlm_path, tiny_mobilenet_v2_path,
                                                                        tiny_bert_path):
    model = MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4)
    config = model.backbone.model.config
    assert config.vision_tower_source == str(Path(tiny_mobilenet_v2_path).resolve())
    assert config.language_model_source == str(Path(tiny_bert_path).resolve())
    towers = FrozenTowers.of_model(model)
    assert (towers.vision_tower, towers.language_model) == (config.vision_tower_source, config.language_model_source)
    config.vision_tower_source = None  # a folder composed before the towers were recorded
    with pytest.raises(ValueError, match="composed before its towers were recorded"):
        FrozenTowers.of_model(model)
    with pytest.raises(ValueError, match="has no composed vision-language backbone"):
        FrozenTowers.of_model(MetaEmbed.from_backbone(tiny_bert_path, 2, 4))


def test_eval_command_scores_the_frozen_towers_of_the_model(tiny_composed_vlm_path, tiny_mobilenet_v2_path,
                                                            tiny_bert_path, pictures, tmp_path):
    from typer.testing import CliRunner

    from metaembed.cli import app

    folder = tmp_path / "m"
    MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, first_vector="mean").save_pretrained(str(folder))
    data = tmp_path / "tasks"
    write_image_task(data / "to-image", pictures, documents_have_text=False)
    train = tmp_path / "train.jsonl"  # its image paths relative to it, as metaembed train reads them
    shutil.copytree(next(iter(pictures.values())).parent, tmp_path / "discs")
    train.write_text("".join(json.dumps({"query": f"a {name} disc", "positive": {"image": f"discs/{path.name}"}}) + "\n"
                             for name, path in pictures.items()))
    command = ["eval", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "o"), "--budget", "1,1",
               "--no-cache", "--no-baseline", "--frozen-towers", str(train)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert f"yardstick: frozen towers: {Path(tiny_mobilenet_v2_path).resolve()} (pooled grid)" in result.stdout
    assert f"fitted on {len(pictures)} training pairs, ridge strength 0.05" in result.stdout

    # the same towers fitted by hand rank the task the same way
    expected = FrozenTowers(tiny_bert_path, tiny_mobilenet_v2_path).fit(list(pictures.values()),
                                                                       [f"a {name} disc" for name in pictures])
    queries = expected.encode_items([Item(text=f"a {name} disc") for name in pictures])
    documents = expected.encode_items([Item(image=path) for path in pictures.values()])
    hits = (queries @ documents.T).argmax(dim=1).tolist()
    per_query = [json.loads(line) for line in (tmp_path / "o" / "per_query.jsonl").read_text().splitlines()]
    scored = {row["query_id"]: row["recall@1"] for row in per_query if row["system"] == FROZEN_TOWERS}
    assert scored == {f"q{i}": float(hits[i] == i) for i in range(len(pictures))}

    missing = CliRunner().invoke(app, command[:-1] + [str(tmp_path / "nope.jsonl")])
    assert missing.exit_code != 0 and "--frozen-towers" in missing.output and "no such file" in missing.output
    text_model = tmp_path / "text"
    MetaEmbed.from_backbone(tiny_bert_path, 2, 4).save_pretrained(str(text_model))
    refused = CliRunner().invoke(app, [*command[:2], str(text_model), *command[3:]])
    assert refused.exit_code != 0 and "has no composed vision-language backbone" in refused.output
