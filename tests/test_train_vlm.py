"""Images train end to end: a tiny Qwen2-VL learns text -> image+text pairs (PNG files the test draws, named
by relative paths in a JSONL file) with LoRA on the language model's projections and the meta tokens
trained in full; its loss on the training pairs goes down, well below that of uniform scores."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import TrainerCallback

from metaembed import MetaEmbed
from metaembed.training import MMRLoss, TrainConfig, train

SHAPES = {"red square": ((220, 30, 30), "rectangle"), "green circle": ((30, 200, 40), "ellipse"),
          "blue square": ((30, 40, 220), "rectangle"), "yellow circle": ((230, 220, 30), "ellipse"),
          "black square": ((10, 10, 10), "rectangle"), "purple circle": ((140, 30, 160), "ellipse"),
          "orange square": ((250, 140, 20), "rectangle"), "white circle": ((245, 245, 245), "ellipse")}
LANGUAGE_PROJECTION = re.compile(
    r"^0\.model\.language_model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.lora_[AB]\.default\.weight$"
)
META_TOKENS = ("0.query_meta_tokens", "0.document_meta_tokens")
FRESH = (*META_TOKENS, "1.meta_residual.weight")
"""What a decoder VLM trains in full under LoRA with training's default layout (mean first vector + residual map)."""


pytestmark = pytest.mark.usefixtures("one_thread")


def write_image_pairs(folder: Path) -> Path:
    """One drawn PNG per caption under folder/images; rows name them relative to the JSONL file."""
    (folder / "images").mkdir(parents=True)
    rows = []
    names = list(SHAPES)
    for index, name in enumerate(names):
        colour, shape = SHAPES[name]
        image = Image.new("RGB", (56, 56), (128, 128, 128))
        getattr(ImageDraw.Draw(image), shape)([8, 8, 48, 48], fill=colour)
        image.save(folder / "images" / f"{index}.png")
    for index, name in enumerate(names):
        rows.append({"query": f"a {name}",
                     "positive": {"text": "a picture", "image": f"images/{index}.png"},
                     "negatives": [{"text": "a picture", "image": f"images/{(index + 3) % len(names)}.png"}]})
    path = folder / "train.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def pair_loss(model: MetaEmbed, folder: Path) -> float:
    """The MMR loss of every caption against all the images (in-batch negatives), in eval mode."""
    names = list(SHAPES)
    model.eval()
    with torch.no_grad():
        queries = model.encode_query([f"a {name}" for name in names])
        documents = model.encode_document(
            [{"text": "a picture", "image": str(folder / "images" / f"{index}.png")} for index in range(len(names))]
        )
        return float(MMRLoss(model).loss_from_embeddings(queries, [documents]))


class InspectTraining(TrainerCallback):
    """Records what trains, whether the meta tokens and adapters get gradients, and the adapters at the end."""

    def __init__(self) -> None:
        self.trainable: list[str] = []
        self.first_gradients: dict[str, float] = {}
        self.final_lora_b: dict[str, torch.Tensor] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.first_gradients:
            self.first_gradients = {
                name: float(parameter.grad.abs().max()) if parameter.grad is not None else 0.0
                for name, parameter in model.named_parameters() if parameter.requires_grad
            }

    def on_train_end(self, args, state, control, model=None, **kwargs):  # before the adapters are merged
        self.final_lora_b = {name: parameter.detach().clone() for name, parameter in model.named_parameters()
                             if "lora_B" in name}


def test_tiny_qwen2_vl_learns_image_text_pairs_with_lora(tiny_qwen2_vl_path, tmp_path):
    data = write_image_pairs(tmp_path / "data")
    initial = MetaEmbed.from_backbone(tiny_qwen2_vl_path, 2, 4, meta_token_init_seed=0, first_vector="auto",
                                      meta_residual=None)  # training's default layout
    assert initial.backbone.first_vector == "mean"  # a decoder: its meta tokens come last
    initial_weights = {name: value.detach().clone() for name, value in initial.state_dict().items()}
    before = pair_loss(initial, tmp_path / "data")
    inspect = InspectTraining()
    result = train(TrainConfig(
        model=tiny_qwen2_vl_path, train_jsonl=[str(data)], output_dir=str(tmp_path / "run"), batch_size=8,
        max_steps=30, learning_rate=3e-3, warmup_ratio=0.0, logging_steps=1, save_steps=100,
        lora=True, lora_rank=4, lora_alpha=8, num_query_meta_tokens=2, num_document_meta_tokens=4, num_negatives=1,
    ), callbacks=[inspect])

    # LoRA on every attention/MLP projection of the language model, nothing in the vision tower; meta tokens and
    # the residual map in full.
    lora = [name for name in inspect.trainable if "lora_" in name]
    assert set(inspect.trainable) == set(lora) | set(FRESH)
    assert lora and all(LANGUAGE_PROJECTION.match(name) for name in lora), lora
    layers = {name.split(".layers.")[1].split(".")[0] for name in lora}
    assert len(lora) == len(layers) * 7 * 2  # q, k, v, o, gate, up, down; A and B
    # Gradients reach the map and the adapters' B at once; the map and B start at zero, so the meta tokens' and A's
    # first gradients are zero (both move later: checked on the saved model below).
    assert inspect.first_gradients["1.meta_residual.weight"] > 0
    assert all(inspect.first_gradients[name] == 0 for name in META_TOKENS)
    assert all(inspect.first_gradients[name] > 0 for name in lora if "lora_B" in name)
    assert all(value.abs().max() > 0 for value in inspect.final_lora_b.values())

    trained = MetaEmbed.from_pretrained(result.model_path)
    after = pair_loss(trained, tmp_path / "data")
    # Uniform scores over the 8 images would give ln 8 = 2.08: the pairs were learned, not just flattened.
    assert after < 0.5 * before and after < 0.75 * math.log(len(SHAPES)), (before, after)
    final = trained.state_dict()
    assert set(final) == set(initial_weights)  # adapters merged: a plain MetaEmbed folder
    for name in FRESH:
        assert not torch.allclose(final[name], initial_weights[name]), name
    for name, value in initial_weights.items():
        projection = LANGUAGE_PROJECTION.match(name.replace(".weight", ".lora_A.default.weight"))
        if projection:  # the merged adapters moved the projections
            assert not torch.allclose(final[name], value), name
        elif name not in FRESH:  # the vision tower, embeddings, norms and biases stayed frozen
            torch.testing.assert_close(final[name], value, msg=name)

    step_losses = [record["loss"] for record in map(json.loads, Path(result.metrics_path).read_text().splitlines())
                   if "loss" in record and "step" in record]
    assert len(step_losses) == 30 and all(torch.isfinite(torch.tensor(step_losses)))


def test_batches_are_drawn_one_task_at_a_time(tiny_qwen2_path, tiny_mobilenet_v2_path, tmp_path, monkeypatch):
    """Mixed data (text -> image, image -> text, text -> image+text): with batches_by_task every training batch holds
    rows of one task; without it, batches mix them."""
    from metaembed.training.trainer import MetaEmbedDataCollator

    monkeypatch.setenv("METAEMBED_CACHE", str(tmp_path / "cache"))
    write_image_pairs(tmp_path / "data")
    rows = []
    for index, name in enumerate(SHAPES):
        image = {"image": f"images/{index}.png"}
        rows += [{"query": f"a {name}", "positive": image}, {"query": image, "positive": f"a {name}"},
                 {"query": f"the {name}", "positive": {"text": name, **image}}]
    data = tmp_path / "data" / "mixed.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n")

    batches: list[set[tuple[str, str]]] = []
    collate = MetaEmbedDataCollator.__call__

    def recording(self, features):
        def modality(cell):
            return "image+text" if cell["image"] and cell["text"] else ("image" if cell["image"] else "text")

        batches.append({(modality(row["query"]), modality(row["positive"])) for row in features})
        return collate(self, features)

    monkeypatch.setattr(MetaEmbedDataCollator, "__call__", recording)
    for by_task in (True, False):
        batches.clear()
        train(TrainConfig(model=tiny_qwen2_path, vision_tower=tiny_mobilenet_v2_path, train_jsonl=[str(data)],
                          output_dir=str(tmp_path / f"run-{by_task}"), batches_by_task=by_task, batch_size=4,
                          max_steps=6, num_query_meta_tokens=1, num_document_meta_tokens=2, groups=["1,1", "1,2"],
                          save_steps=1000, seed=0))
        assert len(batches) >= 6  # the loader may draw one batch ahead
        if by_task:
            assert all(len(tasks) == 1 for tasks in batches), batches
            assert set.union(*batches) == {("text", "image"), ("image", "text"), ("text", "image+text")}
        else:
            assert any(len(tasks) > 1 for tasks in batches), batches
