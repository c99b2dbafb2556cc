"""The projector warm start (metaembed.training.projector_warm_start): the closed-form ridge checked against an
independent least-squares solution, which training rows it reads, the fitted linear path on a tiny composed VLM
(its image tokens are exactly the fitted map of each grid cell: the MLP starts at zero), the save/load round trip,
the cases it leaves alone, and training that runs it for a fresh backbone (and not when turned off)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoModel, AutoProcessor

from metaembed import MetaEmbed
from metaembed.data.item import Item
from metaembed.model.vlm import IMAGE_TOKEN
from metaembed.ridge import fit_ridge, held_out_strength
from metaembed.training import TrainConfig, train
from metaembed.training.data import TrainingExample
from metaembed.training.projector_warm_start import image_caption_pairs, warm_start_projector

pytestmark = pytest.mark.usefixtures("one_thread")

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
           "black": (10, 10, 10), "purple": (140, 30, 160), "orange": (250, 140, 20), "white": (245, 245, 245)}


def draw_images(folder: Path) -> dict[str, Path]:
    """One PNG per colour: a filled disc on grey."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, colour in COLOURS.items():
        image = Image.new("RGB", (56, 56), (128, 128, 128))
        ImageDraw.Draw(image).ellipse([8, 8, 48, 48], fill=colour)
        paths[name] = folder / f"{name}.png"
        image.save(paths[name])
    return paths


def caption_examples(paths: dict[str, Path]) -> list[TrainingExample]:
    """Text -> image rows for half the colours, image -> text rows for the other half."""
    examples = []
    for index, (name, path) in enumerate(paths.items()):
        text, image = Item(text=f"a {name} disc"), Item(image=path)
        query, positive = (text, image) if index % 2 == 0 else (image, text)
        examples.append(TrainingExample(query=query, positive=positive, negatives=[], source=f"rows:{index}"))
    return examples


def test_fit_ridge_matches_an_independent_least_squares_solution():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(50, 6, generator=generator) * torch.tensor([1.0, 2.0, 3.0, 0.5, 1.0, 4.0]) + 3.0
    targets = features @ torch.randn(6, 3, generator=generator) + 0.1 * torch.randn(50, 3, generator=generator) + 1.0
    weight, bias = fit_ridge(features, targets, 0.2)
    # by hand: centre both sides, strength 0.2 x trace(Xc^T Xc) / channels, ridge as least squares on stacked rows
    features, targets = features.double(), targets.double()
    centred = features - features.mean(dim=0)
    ridge = 0.2 * (centred ** 2).sum() / 6
    stacked = torch.cat([centred, ridge.sqrt() * torch.eye(6, dtype=torch.float64)])
    goal = torch.cat([targets - targets.mean(dim=0), torch.zeros(6, 3, dtype=torch.float64)])
    expected = torch.linalg.lstsq(stacked, goal).solution
    torch.testing.assert_close(weight, expected)
    torch.testing.assert_close(bias, targets.mean(dim=0) - features.mean(dim=0) @ expected)
    # no ridge on exactly linear data: the map itself
    true_map, true_bias = torch.randn(6, 3, generator=generator).double(), torch.tensor([1.0, -2.0, 0.5]).double()
    weight, bias = fit_ridge(features, features @ true_map + true_bias, 0.0)
    torch.testing.assert_close(weight, true_map)
    torch.testing.assert_close(bias, true_bias)


def test_the_held_out_strength_is_the_one_that_predicts_unseen_groups_best():
    generator = torch.Generator().manual_seed(1)
    groups = torch.arange(40).repeat_interleave(2)  # two rows per group (an image with two captions)
    features = torch.randn(40, 30, generator=generator)[groups]
    signal = features[:, :3] @ torch.randn(3, 4, generator=generator)  # 3 of 30 channels matter
    targets = signal + 2.0 * torch.randn(80, 4, generator=generator)  # noisy: a weak fit overfits
    best, scores = held_out_strength(features, targets, groups, strengths=(0.0, 0.5, 5.0, 500.0), folds=4)
    assert best == max(scores, key=scores.get) and set(scores) == {0.0, 0.5, 5.0, 500.0}
    assert scores[0.0] < scores[best] and best > 0.0  # no ridge memorises the noise
    # recomputed by hand for the chosen strength: groups dealt to folds in a seeded order, never split
    order = torch.unique(groups)[torch.randperm(40, generator=torch.Generator().manual_seed(0))]
    fold = torch.tensor([{int(g): i % 4 for i, g in enumerate(order)}[int(g)] for g in groups])
    predicted = torch.empty(80, 4, dtype=torch.float64)
    for k in range(4):
        weight, bias = fit_ridge(features[fold != k], targets[fold != k], best)
        predicted[fold == k] = features[fold == k].double() @ weight + bias
    residual = ((targets.double() - predicted) ** 2).sum()
    total = ((targets.double() - targets.double().mean(dim=0)) ** 2).sum()
    assert scores[best] == pytest.approx(float(1 - residual / total))
    with pytest.raises(ValueError, match="needs at least 5 groups, got 3"):
        held_out_strength(features[:6], targets[:6], groups[:6])


def test_a_warm_start_without_a_strength_chooses_each_fits_on_held_out_images(tiny_composed_vlm_path, tmp_path):
    paths = draw_images(tmp_path / "images")
    model = MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, meta_token_init_seed=0, first_vector="mean")
    report = warm_start_projector(model, caption_examples(paths), progress=False, strength=None, image_readout=True)
    assert set(report.held_out_r2) == {"projector", "image_readout"}
    assert report.strength == max(report.held_out_r2["projector"], key=report.held_out_r2["projector"].get)
    assert report.readout_strength == max(report.held_out_r2["image_readout"],
                                          key=report.held_out_r2["image_readout"].get)
    assert "strengths chosen on held-out images" in report.summary()
    fixed = warm_start_projector(MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, meta_token_init_seed=0),
                                 caption_examples(paths), progress=False)
    assert fixed.held_out_r2 is None and fixed.strength == 0.15


def test_pairs_are_image_alone_with_text_alone_either_way_and_capped_by_distinct_images(tmp_path):
    cat, dog, mixed = tmp_path / "cat.png", tmp_path / "dog.png", tmp_path / "mixed.png"
    rows = [
        (Item(text="a cat"), Item(image=cat)),
        (Item(image=dog), Item(text="a dog")),
        (Item(text="a query"), Item(text="a caption", image=mixed)),  # image + text: not a caption pair
        (Item(text="a query"), Item(text="a passage")),               # text only
        (Item(text="   "), Item(image=mixed)),                          # blank caption
        (Item(text="a cat again"), Item(image=cat)),
    ]
    examples = [TrainingExample(query=q, positive=p, negatives=[], source=f"r:{i}") for i, (q, p) in enumerate(rows)]
    assert [(item.image, text) for item, text in image_caption_pairs(examples, max_images=10)] == [
        (cat, "a cat"), (dog, "a dog"), (cat, "a cat again")]
    assert [(item.image, text) for item, text in image_caption_pairs(examples, max_images=1)] == [
        (cat, "a cat"), (cat, "a cat again")]


def test_warm_start_fits_the_linear_path_and_the_image_tokens_are_that_map(tiny_composed_vlm_path, tmp_path):
    paths = draw_images(tmp_path / "images")
    model = MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, meta_token_init_seed=0)
    report = warm_start_projector(model, caption_examples(paths), progress=False)
    assert (report.pairs, report.images, report.strength) == (8, 8, 0.15)
    assert 0.0 < report.r2 <= 1.0
    vlm, processor = model.backbone.model, model.backbone.processor
    assert vlm.config.projector_linear_skip is True
    # the same fit, computed here from the tower and the word-embedding table
    pictures = [Image.open(path).convert("RGB") for path in paths.values()]
    pixels = processor.image_processor(images=pictures, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        grid = vlm.vision_tower(pixel_values=pixels).last_hidden_state
    table = vlm.get_input_embeddings().weight.detach()
    targets = torch.stack([table[processor.tokenizer(f"a {name} disc", add_special_tokens=False)["input_ids"]].mean(dim=0)
                           for name in paths])
    weight, bias = fit_ridge(grid.mean(dim=(2, 3)), targets, 0.15)
    skip = vlm.projector.linear_skip
    torch.testing.assert_close(skip.weight.detach(), weight.T.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(skip.bias.detach(), bias.float(), rtol=1e-4, atol=1e-5)
    # every image token is the fitted map of its own grid cell: the MLP beside it starts at zero
    cells = grid.flatten(2).transpose(1, 2)
    with torch.no_grad():
        tokens = vlm.get_image_features(pixels)
    torch.testing.assert_close(tokens, (cells.double() @ weight + bias).float(), rtol=1e-4, atol=1e-4)
    # the image tokens' mean over cells predicts each caption's mean word embedding at least as well as the mean
    predicted = tokens.mean(dim=1)
    assert ((predicted - targets) ** 2).sum() < ((targets - targets.mean(dim=0)) ** 2).sum()

    item = {"image": str(paths["red"])}
    before = model.encode_document([item])
    model.save_pretrained(str(tmp_path / "saved"))
    loaded = MetaEmbed.from_pretrained(str(tmp_path / "saved"))
    assert loaded.backbone.model.config.projector_linear_skip is True
    torch.testing.assert_close(loaded.encode_document([item]), before)


def test_text_backbones_and_rows_without_caption_pairs_are_left_alone(tiny_bert_path, tiny_composed_vlm_path, tmp_path):
    paths = draw_images(tmp_path / "images")
    text_model = MetaEmbed.from_backbone(tiny_bert_path, 2, 4, meta_token_init_seed=0)
    assert warm_start_projector(text_model, caption_examples(paths), progress=False) is None
    model = MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, meta_token_init_seed=0)
    state = {name: value.clone() for name, value in model.state_dict().items()}
    image_and_text = [TrainingExample(query=Item(text="a query"), positive=Item(text="a disc", image=paths["red"]),
                                      negatives=[], source="r:0")]
    assert warm_start_projector(model, image_and_text, progress=False) is None
    assert model.backbone.model.projector.linear_skip is None
    assert model.backbone.model.config.projector_linear_skip is False
    assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())


def _write_rows(folder: Path) -> Path:
    paths = draw_images(folder / "images")
    rows = [{"query": f"a {name} disc", "positive": {"image": f"images/{name}.png"}} for name in paths]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return folder / "train.jsonl"


@pytest.mark.parametrize(("warm_start", "readout"), [(True, None), (True, True), (False, True)],
                         ids=["default", "readout", "off"])
def test_training_a_fresh_vlm_warm_starts_its_projector_unless_turned_off(tiny_composed_vlm_path, tmp_path, warm_start,
                                                                          readout):
    result = train(TrainConfig(
        model=tiny_composed_vlm_path, train_jsonl=[str(_write_rows(tmp_path / "data"))], output_dir=str(tmp_path / "run"),
        batch_size=4, max_steps=1, learning_rate=1e-4, warmup_ratio=0.0, save_steps=100, num_query_meta_tokens=2,
        num_document_meta_tokens=4, projector_warm_start=warm_start,
        **({} if readout is None else {"image_readout": readout}),
    ))
    trained = MetaEmbed.from_pretrained(result.model_path)
    assert (trained.backbone.model.projector.linear_skip is not None) is warm_start
    assert trained.backbone.model.config.projector_linear_skip is warm_start
    # the image readout comes with the warm start when asked for (training's layout has a mean first vector)
    assert trained.backbone.first_vector == "mean"
    assert (trained.backbone.model.image_readout is not None) is bool(warm_start and readout)
    assert trained.backbone.model.config.image_readout is bool(warm_start and readout)


def test_training_settings_reach_the_warm_start_and_the_model(tiny_composed_vlm_path, tmp_path, monkeypatch):
    """warm_start_strength None (held-out choice) and mixed_image_weight go from TrainConfig to the fit and the model;
    values out of range are refused by name."""
    import metaembed.training.run as training_run

    seen = {}
    real = training_run.warm_start_projector
    monkeypatch.setattr(training_run, "warm_start_projector",
                        lambda *a, **k: seen.update(k) or real(*a, **k))
    result = train(TrainConfig(
        model=tiny_composed_vlm_path, train_jsonl=[str(_write_rows(tmp_path / "data"))], output_dir=str(tmp_path / "run"),
        batch_size=4, max_steps=1, learning_rate=1e-4, warmup_ratio=0.0, save_steps=100, num_query_meta_tokens=2,
        num_document_meta_tokens=4, warm_start_strength=None, mixed_image_weight=0.2, image_readout=True,
    ))
    assert seen["strength"] is None and seen["image_readout"] is True
    assert MetaEmbed.from_pretrained(result.model_path).backbone.mixed_image_weight == 0.2
    with pytest.raises(ValueError, match="mixed_image_weight must lie strictly between 0 and 1"):
        TrainConfig(model="m", mixed_image_weight=1.0)
    with pytest.raises(ValueError, match="warm_start_strength must be >= 0"):
        TrainConfig(model="m", warm_start_strength=-1)

def test_image_readout_adds_a_linear_map_of_each_cell_to_that_cells_output_only(tiny_composed_vlm_path):
    vlm = AutoModel.from_pretrained(tiny_composed_vlm_path).eval()
    processor = AutoProcessor.from_pretrained(tiny_composed_vlm_path)
    batch = processor(images=[Image.new("RGB", (90, 70), (200, 30, 30))], text=[f"{IMAGE_TOKEN}a red square"],
                      return_tensors="pt")
    with torch.no_grad():
        plain = vlm(**batch).last_hidden_state
        readout = vlm.add_image_readout()
        torch.testing.assert_close(vlm(**batch).last_hidden_state, plain, rtol=0, atol=0)  # starts at zero
        generator = torch.Generator().manual_seed(0)
        readout.weight.copy_(torch.randn(readout.weight.shape, generator=generator))
        readout.bias.copy_(torch.randn(readout.bias.shape, generator=generator))
        added = vlm(**batch).last_hidden_state - plain
        cells = vlm.get_image_cells(batch["pixel_values"])[0]
    placeholders = batch["input_ids"][0] == vlm.config.image_token_id
    assert vlm.config.image_readout is True and int(placeholders.sum()) == cells.shape[0] == 4
    torch.testing.assert_close(added[0, placeholders], cells @ readout.weight.T + readout.bias, rtol=1e-5, atol=1e-5)
    assert torch.equal(added[0, ~placeholders], torch.zeros_like(added[0, ~placeholders]))


def test_warm_start_fits_the_image_readout_to_what_the_image_mean_misses_of_its_caption(tiny_composed_vlm_path,
                                                                                         tmp_path):
    paths = draw_images(tmp_path / "images")
    examples = caption_examples(paths)
    model = MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, meta_token_init_seed=0, first_vector="auto",
                                    meta_residual=None)
    assert model.backbone.first_vector == "mean"
    warm_start_projector(model, examples, progress=False, image_readout=False)  # the projector's fit alone
    vlm, processor = model.backbone.model, model.backbone.processor
    images = [{"image": str(path)} for path in paths.values()]
    captions = [f"a {name} disc" for name in paths]
    raw = _raw_first_vectors(model)
    image_means, caption_means = raw(images, "document"), raw(captions, "query")

    report = warm_start_projector(model, examples, progress=False, image_readout=True)
    assert report.readout_r2 is not None and 0.0 < report.readout_r2 <= 1.0
    # by hand: pooled tower features -> (caption mean - image mean) / share of the item's own tokens that are cells
    pictures = [Image.open(path).convert("RGB") for path in paths.values()]
    pixels = processor.image_processor(images=pictures, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        grid = vlm.vision_tower(pixel_values=pixels).last_hidden_state
    own_tokens = processor(images=pictures[:1], text=[IMAGE_TOKEN], return_tensors="pt")["attention_mask"].sum()
    share = grid.shape[2] * grid.shape[3] / int(own_tokens)
    weight, bias = fit_ridge(grid.mean(dim=(2, 3)), (caption_means - image_means) / share, 0.15)
    torch.testing.assert_close(vlm.image_readout.weight.detach(), weight.T.float(), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(vlm.image_readout.bias.detach(), bias.float(), rtol=1e-3, atol=1e-4)
    # an image's mean now moves by exactly share x the fitted map of its pooled features, and towards its caption
    after = raw(images, "document")
    torch.testing.assert_close(after - image_means, share * (grid.mean(dim=(2, 3)).double() @ weight + bias).float(),
                               rtol=1e-3, atol=1e-4)
    assert ((after - caption_means) ** 2).sum() < ((image_means - caption_means) ** 2).sum()
    # text items do not change; lone == in a padded batch; the save/load round trip keeps the readout
    torch.testing.assert_close(raw(captions, "query"), caption_means, rtol=0, atol=0)
    lone = model.encode_document(images[:1])
    mixed = model.encode_document([images[0], {"text": "a long caption " * 5, "image": images[1]["image"]}])
    torch.testing.assert_close(mixed[:1], lone, rtol=1e-5, atol=1e-5)
    model.save_pretrained(str(tmp_path / "saved"))
    loaded = MetaEmbed.from_pretrained(str(tmp_path / "saved"))
    assert loaded.backbone.model.config.image_readout is True
    torch.testing.assert_close(loaded.encode_document(images), model.encode_document(images))


def test_the_image_readout_is_not_fitted_where_the_first_vector_is_a_meta_token(tiny_composed_vlm_path, tmp_path):
    paths = draw_images(tmp_path / "images")
    model = MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, meta_token_init_seed=0, first_vector="meta")
    report = warm_start_projector(model, caption_examples(paths), progress=False, image_readout=True)
    assert report.readout_r2 is None and report.r2 > 0
    assert model.backbone.model.image_readout is None and model.backbone.model.config.image_readout is False


def _raw_first_vectors(model):
    """Encode items one at a time (``encode`` reorders a batch by length) and return their first vectors before
    normalisation (the pooling's output)."""
    from metaembed.model.meta_pooling import MetaTokenPooling

    pooling = next(module for module in model if isinstance(module, MetaTokenPooling))

    def encode(items, side):
        captured = []
        handle = pooling.register_forward_hook(lambda module, args, output: captured.append(
            output["token_embeddings"][:, 0].detach().clone()))
        try:
            for item in items:
                (model.encode_query if side == "query" else model.encode_document)([item], budget=1)
        finally:
            handle.remove()
        return torch.cat(captured)

    return encode


def test_an_unmerged_lora_adapter_loads_back_with_the_warm_started_layers(tiny_composed_vlm_path, tmp_path):
    data = str(_write_rows(tmp_path / "data"))
    models = {}
    for merge in (True, False):
        result = train(TrainConfig(
            model=tiny_composed_vlm_path, train_jsonl=[data], output_dir=str(tmp_path / f"run-{merge}"), batch_size=4,
            max_steps=2, learning_rate=3e-3, warmup_ratio=0.0, save_steps=100, num_query_meta_tokens=2,
            num_document_meta_tokens=4, lora=True, lora_rank=4, lora_alpha=8, merge_lora=merge, seed=0,
            image_readout=True,
        ))
        models[merge] = MetaEmbed.from_pretrained(result.model_path)
    adapter = models[False].backbone
    assert adapter.composed_vlm_layers == {"projector_linear_skip": True, "image_readout": True}
    assert adapter.model.config.image_readout is True and adapter.model.config.projector_linear_skip is True
    # the adapter's trained copies of the fitted layers are the ones in use: the same vectors as the merged model
    items = [{"image": str(tmp_path / "data" / "images" / f"{name}.png")} for name in ("red", "blue", "white")]
    torch.testing.assert_close(models[False].encode_document(items), models[True].encode_document(items),
                               rtol=1e-4, atol=1e-4)
