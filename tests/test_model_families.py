"""The MetaEmbed model on every backbone family: shapes, norms, budgets, gradients, save/load, padding."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from metaembed import MetaEmbed
from tests.conftest import BACKBONE_FIXTURES, VLM_FIXTURES

R_Q, R_C = 3, 5
LONG_TEXT = "the quick brown fox jumps over the lazy dog and keeps running " * 6


@pytest.fixture(scope="module", params=BACKBONE_FIXTURES)
def model(request) -> MetaEmbed:
    path = request.getfixturevalue(request.param)
    return MetaEmbed.from_backbone(path, R_Q, R_C, device="cpu")


def red_square() -> Image.Image:
    return Image.new("RGB", (48, 40), (220, 20, 20))


def test_shapes_and_unit_norm(model: MetaEmbed):
    queries = model.encode_query(["quick fox", "lazy dog"])
    documents = model.encode_document(["a text editor", "gzip compresses files", "json parsing"])
    dim = model.embedding_dim
    assert queries.shape == (2, R_Q, dim) and documents.shape == (3, R_C, dim)
    for vectors in (queries, documents):
        assert torch.isfinite(vectors).all()
        torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(vectors.shape[:2]), atol=1e-5, rtol=0)


def test_budget_is_prefix_of_full_encoding(model: MetaEmbed):
    full = model.encode_document(["a text editor", "gzip compresses files"])
    for budget in range(1, R_C + 1):
        part = model.encode_document(["a text editor", "gzip compresses files"], budget=budget)
        assert part.shape[1] == budget
        torch.testing.assert_close(part, full[:, :budget], atol=1e-6, rtol=0)


def test_query_and_document_meta_tokens_differ_and_are_deterministic(model: MetaEmbed):
    as_query = model.encode_query(["quick fox"])
    as_document = model.encode_document(["quick fox"], budget=R_Q)
    assert (as_query - as_document).abs().max() > 1e-3
    again = model.encode_query(["quick fox"])
    assert torch.equal(as_query, again)
    # The vectors of one item differ from each other: each meta token is its own parameter.
    assert (as_query[0, 0] - as_query[0, 1]).abs().max() > 1e-4


def test_padding_invariance(model: MetaEmbed):
    alone = model.encode_query(["quick fox"])
    padded = model.encode_query(["quick fox", LONG_TEXT])
    torch.testing.assert_close(padded[0:1], alone, atol=1e-5, rtol=0)
    alone_doc = model.encode_document(["lazy dog"])
    padded_doc = model.encode_document([LONG_TEXT, "lazy dog", "x"])
    torch.testing.assert_close(padded_doc[1:2], alone_doc, atol=1e-5, rtol=0)


def test_gradients_reach_meta_tokens(model: MetaEmbed):
    model.train()
    try:
        backbone = model.backbone
        features = model.preprocess(["quick fox", "lazy dog"], task="query")
        output = model(features, task="query")
        assert output["token_embeddings"].shape == (2, R_Q, model.embedding_dim)
        output["token_embeddings"].sum().backward()
        assert backbone.query_meta_tokens.grad is not None
        assert backbone.query_meta_tokens.grad.abs().sum() > 0
        # Only the query side was used: the document meta tokens got no gradient.
        doc_grad = backbone.document_meta_tokens.grad
        assert doc_grad is None or doc_grad.abs().sum() == 0
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_save_load_round_trip_is_bit_identical(model: MetaEmbed, tmp_path):
    items = ["quick fox", "lazy dog jumps"]
    before_q, before_d = model.encode_query(items), model.encode_document(items)
    model.save_pretrained(str(tmp_path / "saved"))
    loaded = MetaEmbed.from_pretrained(str(tmp_path / "saved"), device="cpu")
    assert loaded.num_query_meta_tokens == R_Q and loaded.num_document_meta_tokens == R_C
    assert torch.equal(loaded.encode_query(items), before_q)
    assert torch.equal(loaded.encode_document(items), before_d)


@pytest.mark.parametrize("backbone", BACKBONE_FIXTURES)
def test_unmerged_lora_saves_its_adapter_and_loads_back(backbone, request, tmp_path):
    """A LoRA-trained model saved without merging holds only the adapter (plus meta tokens) and loads bit-identically."""
    from metaembed.training.lora import apply_lora

    model = MetaEmbed.from_backbone(request.getfixturevalue(backbone), R_Q, R_C, device="cpu")
    items = ["quick fox", "lazy dog jumps"]
    plain = model.encode_document(items)
    apply_lora(model.backbone.model, rank=4)
    with torch.no_grad():  # B starts at zero; give the adapter an effect, as training would
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)))
    adapted_q, adapted_d = model.encode_query(items), model.encode_document(items)
    assert not torch.allclose(adapted_d, plain, atol=1e-3)
    model.save_pretrained(str(tmp_path / "saved"))
    saved = {path.name for path in (tmp_path / "saved" / "0_MetaTransformer").iterdir()}  # the backbone module's folder
    assert {"adapter_config.json", "adapter_model.safetensors", "meta_tokens.safetensors"} <= saved
    assert "model.safetensors" not in saved  # the frozen backbone is not copied
    loaded = MetaEmbed.from_pretrained(str(tmp_path / "saved"), device="cpu")
    assert torch.equal(loaded.encode_query(items), adapted_q)
    assert torch.equal(loaded.encode_document(items), adapted_d)


@pytest.fixture(scope="module", params=VLM_FIXTURES)
def vlm(request) -> MetaEmbed:
    return MetaEmbed.from_backbone(request.getfixturevalue(request.param), R_Q, R_C, device="cpu")


def test_vlm_takes_text_image_and_both(vlm: MetaEmbed, tmp_path):
    image_path = tmp_path / "square.png"
    red_square().save(image_path)
    vectors = vlm.encode_document(["a red square", red_square(), str(image_path), {"text": "red", "image": red_square()}])
    assert vectors.shape == (4, R_C, vlm.embedding_dim)
    torch.testing.assert_close(vectors[1], vectors[2], atol=1e-5, rtol=0)  # PIL image == its file
    assert (vectors[0] - vectors[1]).abs().max() > 1e-3  # the image changes the vectors
    assert (vectors[1] - vectors[3]).abs().max() > 1e-3  # and so does the text next to it


def test_vlm_image_padding_invariance(vlm: MetaEmbed):
    item = {"text": "red", "image": red_square()}
    alone = vlm.encode_document([item])
    batch = vlm.encode_document([{"text": LONG_TEXT, "image": Image.new("RGB", (90, 60), (0, 0, 255))}, item])
    torch.testing.assert_close(batch[1:2], alone, atol=1e-5, rtol=0)


def test_vlm_image_changes_with_content(vlm: MetaEmbed):
    red = vlm.encode_query([red_square()])
    blue = vlm.encode_query([Image.new("RGB", (48, 40), (20, 20, 220))])
    assert (red - blue).abs().max() > 1e-4


def test_projection_dim(tiny_bert_path, tmp_path):
    model = MetaEmbed.from_backbone(tiny_bert_path, 2, 4, projection_dim=8, device="cpu")
    vectors = model.encode_document(["a text editor"])
    assert vectors.shape == (1, 4, 8)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(1, 4), atol=1e-5, rtol=0)
    model.save_pretrained(str(tmp_path / "projected"))
    loaded = MetaEmbed.from_pretrained(str(tmp_path / "projected"), device="cpu")
    assert torch.equal(loaded.encode_document(["a text editor"]), vectors)


def test_prompts_change_the_encoding(tiny_bert_path):
    model = MetaEmbed.from_backbone(
        tiny_bert_path, 2, 4, device="cpu", prompts={"query": "query: ", "document": "passage: ", "vqa": "answer: "}
    )
    default = model.encode_query(["lazy dog"])
    explicit = model.encode_query(["lazy dog"], prompt="query: ")
    torch.testing.assert_close(default, explicit, atol=1e-6, rtol=0)
    per_task = model.encode_query(["lazy dog"], prompt_name="vqa")
    no_prompt = model.encode_query(["lazy dog"], prompt="")
    assert (per_task - default).abs().max() > 1e-4 and (no_prompt - default).abs().max() > 1e-4
