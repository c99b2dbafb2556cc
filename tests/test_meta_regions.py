"""``meta_attention: document_regions``: a composed VLM's document meta tokens read nested regions of the image grid.
The regions' geometry, the attention each meta token gets, each untrained vector recomputed from the token states
(its region's mean), text items and queries unchanged, lone == padded batch, saved and loaded, refused elsewhere."""

from __future__ import annotations

import pytest
import torch

from metaembed import MetaEmbed
from metaembed.model.meta_regions import grid_regions, region_attention
from tests.test_mixed_image_weight import states_and_first_vectors
from tests.test_projector_warm_start import draw_images

pytestmark = pytest.mark.usefixtures("one_thread")


def test_regions_run_coarse_to_fine_each_once():
    seven = grid_regions(7)
    assert len(seven) == 4 + 9 + 49
    assert seven[0] == tuple(r * 7 + c for r in range(4) for c in range(4))  # top-left quadrant, 4 x 4
    assert seven[3] == tuple(r * 7 + c for r in range(3, 7) for c in range(3, 7))  # bottom-right, overlapping
    assert seven[4] == (0, 1, 2, 7, 8, 9, 14, 15, 16) and seven[12][-1] == 48  # 3 x 3 blocks
    assert seven[13:] == [(i,) for i in range(49)]  # then every cell, row by row
    assert grid_regions(2) == [(0,), (1,), (2,), (3,)]  # quadrants are the cells: not repeated
    assert grid_regions(1) == []  # nothing finer than the whole
    with pytest.raises(ValueError, match="positive side"):
        grid_regions(0)


def test_each_meta_token_reads_its_region_the_sink_and_itself():
    # one row: [CLS] 9 cells (a 3 x 3 grid) [SEP] then 5 meta tokens (vectors 2..6); another row: text only, padded
    seq = 16
    attention = torch.tensor([[1] * 16, [1] * 4 + [1] * 5 + [0] * 7])
    meta = torch.tensor([list(range(11, 16)), list(range(4, 9))])
    cells = torch.zeros(2, seq, dtype=torch.bool)
    cells[0, 1:10] = True
    allowed, reads = region_attention(attention, meta, cells, causal=False, first_ordinal=2)
    allowed = allowed[:, 0]
    regions = grid_regions(3)
    for j in range(5):
        expected = torch.zeros(seq, dtype=torch.bool)
        expected[[1 + cell for cell in regions[j]]] = True
        assert torch.equal(reads[0, j], expected)
        row = expected.clone()
        row[0] = row[11 + j] = True  # the sink and itself
        assert torch.equal(allowed[0, 11 + j], row)
    own = torch.zeros(seq, dtype=torch.bool)
    own[:11] = True
    assert torch.equal(allowed[0, 5], own)  # an own token reads the item as the backbone does, never a meta token
    assert torch.equal(reads[1], torch.tensor([[True] * 4 + [False] * 12] * 5))  # no image: the whole item
    assert not allowed[1, 10, :10].any() and allowed[1, 10, 10]  # padding reads only itself
    with pytest.raises(ValueError, match="one square feature grid"):
        odd = cells.clone()
        odd[0, 10] = True
        region_attention(attention, meta, odd, causal=False, first_ordinal=2)


@pytest.fixture
def pictures(tmp_path):
    return draw_images(tmp_path / "images")


def test_untrained_region_vectors_are_their_cells_means(tiny_composed_vlm_path, pictures):
    model = MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 8, first_vector="mean", meta_residual=True,
                                    meta_attention="document_regions")
    items = [str(pictures["red"]), "a red disc"]
    hidden, own, cells, _ = states_and_first_vectors(model, items)
    vectors = model.encode_document(items)  # (items, 8, H)
    grid = cells[0].nonzero(as_tuple=True)[0]
    assert grid.numel() == 4  # the tiny tower's 2 x 2 grid: the regions are its cells, then again from the first
    unit = torch.nn.functional.normalize
    for vector in range(1, 8):
        cell = grid[(vector - 1) % 4]
        torch.testing.assert_close(vectors[0, vector].float(), unit(hidden[0, cell], dim=0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vectors[0, 0].float(), unit(hidden[0][own[0].bool()].mean(dim=0), dim=0),
                               rtol=1e-4, atol=1e-5)
    for vector in range(1, 8):  # a text item has no grid: every meta vector starts at its mean
        torch.testing.assert_close(vectors[1, vector], vectors[1, 0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backbone", ["tiny_composed_vlm_path", "tiny_composed_decoder_vlm_path"])  # right / left padding
def test_queries_are_unchanged_and_a_lone_item_matches_a_padded_batch(backbone, request, pictures, tmp_path):
    path = request.getfixturevalue(backbone)
    regions = MetaEmbed.from_backbone(path, 2, 8, first_vector="mean", meta_residual=True,
                                      meta_attention="document_regions")
    full = MetaEmbed.from_backbone(path, 2, 8, first_vector="mean", meta_residual=True)
    queries = [str(pictures["blue"]), "a blue disc"]
    for got, expected in zip(regions.encode_query(queries), full.encode_query(queries)):
        torch.testing.assert_close(got, expected)
    items = [str(pictures["green"]), {"text": "a green disc drawn on a grey ground, twice as long", "image":
                                      str(pictures["blue"])}, "green"]
    batch = regions.encode_document(items)
    for index, item in enumerate(items):
        torch.testing.assert_close(regions.encode_document([item])[0], batch[index], rtol=1e-4, atol=1e-5)
    assert (batch[0][1] - batch[0][2]).abs().max() > 1e-3  # two regions: two different vectors
    regions.save_pretrained(str(tmp_path / "saved"))
    again = MetaEmbed.from_pretrained(str(tmp_path / "saved"))
    assert again[0].meta_attention == "document_regions"
    torch.testing.assert_close(again.encode_document(items)[0], batch[0])


def test_refused_without_a_composed_vlm_and_a_mean_first_vector(tiny_bert_path, tiny_composed_vlm_path):
    with pytest.raises(ValueError, match="composed vision-language backbone"):
        MetaEmbed.from_backbone(tiny_bert_path, 2, 4, first_vector="mean", meta_attention="document_regions")
    with pytest.raises(ValueError, match="first_vector='meta' is not one"):
        MetaEmbed.from_backbone(tiny_composed_vlm_path, 2, 4, first_vector="meta", meta_attention="document_regions")


def test_the_mode_is_a_training_setting():
    from metaembed.model.meta_windows import region_sides, segmented_sides, windowed_sides
    from metaembed.training import TrainConfig

    assert region_sides("document_regions") == ("document",) and region_sides("document_lines") == ()
    assert segmented_sides("document_regions") == () and windowed_sides("document_regions") == ()
    TrainConfig(model="m", meta_attention="document_regions").validate()
