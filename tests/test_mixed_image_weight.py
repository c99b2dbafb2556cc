"""``mixed_image_weight``: the image cells' share of an image+text item's mean first vector in a composed VLM. The
mean recomputed by hand from the token states, items without both parts unchanged, lone == padded batch, the
setting saved and loaded, refused where it means nothing, and the warm start's readout fit reading the weighted
share."""

from __future__ import annotations

import pytest
import torch

from metaembed import MetaEmbed
from metaembed.data.item import Item
from metaembed.inputs import prepare_items
from metaembed.model.meta_pooling import MetaTokenPooling
from tests.test_projector_warm_start import draw_images

pytestmark = pytest.mark.usefixtures("one_thread")


def states_and_first_vectors(model, items, side="document"):
    """(token states (batch, seq, H), own-token mask, image-cell mask, raw first vectors (batch, H)) of one batch."""
    backbone, pooling = model[0], next(module for module in model if isinstance(module, MetaTokenPooling))
    model.eval()
    prepared = prepare_items(items, accepts_images=True, max_image_side=model.max_image_side,
                             max_image_pixels=model.max_image_pixels, max_text_chars=model.max_text_chars(side))
    with torch.no_grad():
        states = backbone(model.preprocess(prepared, task=side))
        hidden = states["token_embeddings"].clone()
        own = states["own_token_mask"].clone()
        cells = own.bool() & (states["input_ids"] == backbone.model.config.image_token_id)
        first = pooling(states)["token_embeddings"][:, 0]
    return hidden, own, cells, first


def test_an_image_and_text_items_mean_gives_its_cells_the_set_share(tiny_composed_vlm_path, tmp_path):
    picture = draw_images(tmp_path / "images")["red"]
    model = MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, first_vector="mean", mixed_image_weight=0.25)
    both = Item(text="a red disc on a grey ground", image=picture).to_model_input()
    hidden, own, cells, first = states_and_first_vectors(model, [both])
    rest = own.bool() & ~cells
    assert cells.sum() > 0 and rest.sum() > 0
    expected = 0.25 * hidden[cells].mean(dim=0) + 0.75 * hidden[rest].mean(dim=0)
    torch.testing.assert_close(first[0], expected, rtol=1e-5, atol=1e-6)
    plain = hidden[own.bool()].mean(dim=0)  # what every token weighing the same gives: not the same vector
    assert (first[0] - plain).abs().max() > 1e-3
    assert float(own.sum()) == pytest.approx(float(own.bool().sum()))  # the weights keep the own-token count


def test_items_without_both_parts_and_padded_batches_are_unchanged(tiny_composed_vlm_path, tmp_path):
    pictures = draw_images(tmp_path / "images")
    weighted = MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, first_vector="mean", mixed_image_weight=0.25)
    plain = MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, first_vector="mean")
    items = [str(pictures["blue"]), "a blue disc", {"text": "a blue disc, drawn", "image": str(pictures["blue"])},
             {"text": "green", "image": str(pictures["green"])}]
    with_weight, without = weighted.encode_document(items), plain.encode_document(items)
    for index in (0, 1):  # an image alone, a text alone: the same vectors with or without the setting
        torch.testing.assert_close(with_weight[index], without[index])
    assert (with_weight[2][0] - without[2][0]).abs().max() > 1e-4  # the image+text item's first vector moves
    torch.testing.assert_close(with_weight[2][1:], without[2][1:])  # its meta vectors do not read the mean
    for index, item in enumerate(items):  # a lone item and the same item in a padded batch
        torch.testing.assert_close(weighted.encode_document([item])[0], with_weight[index], rtol=1e-5, atol=1e-5)


def test_saved_and_loaded_and_refused_where_it_means_nothing(tiny_composed_vlm_path, tiny_bert_path, tmp_path):
    model = MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, first_vector="mean", mixed_image_weight=0.3)
    model.save_pretrained(str(tmp_path / "saved"))
    again = MetaEmbed.from_pretrained(str(tmp_path / "saved"))
    assert again.backbone.mixed_image_weight == 0.3
    item = [{"text": "a disc", "image": str(draw_images(tmp_path / "images")["red"])}]
    torch.testing.assert_close(again.encode_document(item)[0], model.encode_document(item)[0])
    with pytest.raises(ValueError, match="mixed_image_weight must lie strictly between 0 and 1, got 1.5"):
        MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, first_vector="mean", mixed_image_weight=1.5)
    with pytest.raises(ValueError, match="mixed_image_weight weighs the image cells .* has none"):
        MetaEmbed.from_backbone(tiny_bert_path, 2, 4, first_vector="mean", mixed_image_weight=0.25)
    with pytest.raises(ValueError, match="first_vector='meta' has none"):
        MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, first_vector="meta", mixed_image_weight=0.25)
