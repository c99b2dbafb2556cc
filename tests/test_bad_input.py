"""Bad input gives a clear error naming the item and the problem, before anything reaches the backbone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from metaembed import InvalidInputError, MetaEmbed
from metaembed.inputs import load_image, to_rgb


@pytest.fixture(scope="module")
def text_model(tiny_bert_path) -> MetaEmbed:
    return MetaEmbed.from_backbone(tiny_bert_path, 2, 4, device="cpu")


@pytest.fixture(scope="module")
def vlm(tiny_qwen2_vl_path) -> MetaEmbed:
    return MetaEmbed.from_backbone(tiny_qwen2_vl_path, 2, 4, device="cpu")


@pytest.mark.parametrize(
    "item, message",
    [
        ("", r"item 1 \(''\) has empty text"),
        ("   \n ", "has empty text"),
        ({}, "is an empty dict"),
        ({"text": ""}, "has empty text"),
        ({"caption": "x"}, "unknown keys"),
        (42, "unsupported type int"),
    ],
)
def test_bad_items_are_named(text_model, item, message):
    with pytest.raises(InvalidInputError, match=message):
        text_model.encode_query(["fine", item])


def test_missing_image_file(vlm, tmp_path):
    missing = tmp_path / "nowhere.png"
    with pytest.raises(InvalidInputError, match=r"item 0 .*nowhere\.png' does not exist"):
        vlm.encode_document([str(missing)])


def test_file_that_is_not_an_image(vlm, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is text, not a picture")
    with pytest.raises(InvalidInputError, match=r"notes\.png' is not a readable image"):
        vlm.encode_document([{"text": "x", "image": str(fake)}])


def test_truncated_image(vlm, tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match=r"cut\.png' is truncated or corrupt"):
        vlm.encode_document([str(path)])


def test_image_given_to_text_only_backbone(text_model):
    with pytest.raises(InvalidInputError, match="text-only"):
        text_model.encode_document([Image.new("RGB", (8, 8))])


@pytest.mark.parametrize("mode", ["CMYK", "RGBA", "P", "I;16", "L", "LA", "1", "I", "F"])
def test_every_image_mode_is_converted(vlm, tmp_path, mode):
    gradient = np.linspace(0, 255, 40 * 30, dtype=np.float64).reshape(30, 40)
    base = Image.fromarray(np.stack([gradient] * 3, axis=-1).astype(np.uint8), mode="RGB")
    if mode == "I;16":
        image = Image.fromarray((gradient * 257).astype(np.uint16))
        assert image.mode == "I;16"
    else:
        image = base.convert(mode)
    converted = to_rgb(image)
    assert converted.mode == "RGB" and converted.size == (40, 30)
    # A 16-bit ramp keeps its range instead of clipping to white.
    if mode == "I;16":
        pixels = np.asarray(converted)
        assert pixels.min() == 0 and pixels.max() == 255
    vectors = vlm.encode_document([image])
    assert vectors.shape == (1, 4, vlm.embedding_dim) and torch.isfinite(vectors).all()


def test_rgba_transparency_is_composited_on_white():
    transparent = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)


def test_huge_image_is_downscaled_without_gigabytes(tiny_qwen2_vl_path, tmp_path):
    """A 10,000 x 10,000 image (over the default pixel budget, so the budget is raised) encodes, and peak
    memory grows by far less than a gigabyte."""
    path = tmp_path / "huge.png"
    Image.new("L", (10_000, 10_000), 128).save(path)
    script = textwrap.dedent(
        f"""
        import resource, sys
        from tests import tiny_models
        tiny_models.register_image_only_qwen2_vl_processor()
        from metaembed import MetaEmbed
        model = MetaEmbed.from_backbone({tiny_qwen2_vl_path!r}, 2, 4, device="cpu")
        model.max_image_pixels = 100_000_000
        model.encode_document(["warm up"])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        vectors = model.encode_document([{str(path)!r}])
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(tuple(vectors.shape), (after - before) // 1024)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    shape, grown_mib = result.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert shape == "(1, 4, 64)"
    assert int(grown_mib) < 1024, f"peak memory grew by {grown_mib} MiB"


def test_load_image_downscales_to_max_side():
    image = load_image(Image.new("RGB", (5000, 100)), max_side=1000)
    assert image.size == (1000, 20)


@pytest.mark.parametrize(
    "budget, message",
    [
        (0, "query budget must be at least 1, got 0"),
        (-1, "query budget must be at least 1, got -1"),
        (3, "query budget 3 is larger than the 2 query meta tokens"),
        ((2, 4), "pass r_q to encode_query and r_c to encode_document"),
        (1.5, "must be a positive int"),
    ],
)
def test_bad_query_budgets(text_model, budget, message):
    with pytest.raises(ValueError, match=message):
        text_model.encode_query(["fine"], budget=budget)


def test_document_budget_asked_of_encode_query(text_model):
    """R_c = 4 is a valid document budget, but the query side has only 2 meta tokens."""
    assert text_model.encode_document(["fine"], budget=4).shape[1] == 4
    with pytest.raises(ValueError, match="query budget 4 is larger than the 2 query meta tokens"):
        text_model.encode_query(["fine"], budget=4)


def test_document_budget_too_large(text_model):
    with pytest.raises(ValueError, match="document budget 5 is larger than the 4 document meta tokens"):
        text_model.encode_document(["fine"], budget=5)


def test_empty_list_gives_empty_tensor(text_model):
    assert text_model.encode_query([]).shape == (0, 2, text_model.embedding_dim)
