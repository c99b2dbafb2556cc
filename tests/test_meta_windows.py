"""Nested-window meta attention: the windows, the attention mask, and the model on every text backbone family."""

from __future__ import annotations

import pytest
import torch

from metaembed import MetaEmbed
from metaembed.model.meta_windows import nested_window_attention, nested_window_bounds, windowed_sides
from metaembed.training import TrainConfig
TEXT_BACKBONES = ["tiny_bert_path", "tiny_qwen2_path", "tiny_llama_path"]

R_Q, R_C = 3, 7
LONG_TEXT = "the quick brown fox jumps over the lazy dog and keeps running " * 4


def test_window_bounds_go_whole_halves_quarters():
    starts, stops = nested_window_bounds(7, torch.tensor([8, 3, 1]))
    windows = [list(zip(a.tolist(), b.tolist())) for a, b in zip(starts, stops)]
    assert windows[0] == [(0, 8), (0, 4), (4, 8), (0, 2), (2, 4), (4, 6), (6, 8)]
    # Fewer tokens than parts: every window still holds one token, inside the item, in order.
    assert windows[1] == [(0, 3), (0, 1), (1, 3), (0, 1), (0, 1), (1, 2), (2, 3)]
    assert windows[2] == [(0, 1)] * 7


def test_window_bounds_cover_each_level_exactly():
    lengths = torch.arange(4, 60)
    starts, stops = nested_window_bounds(31, lengths)
    for level, (first, count) in enumerate(((0, 1), (1, 2), (3, 4), (7, 8), (15, 16))):
        covered = (stops[:, first : first + count] - starts[:, first : first + count]).sum(dim=1)
        assert torch.equal(covered[lengths >= count], lengths[lengths >= count]), level
        assert torch.equal(starts[:, first], torch.zeros_like(lengths))
        assert torch.equal(stops[:, first + count - 1], lengths)


def test_attention_mask_by_hand():
    # One row: 3 own tokens, 2 meta tokens (the whole item, its first half), 1 padding.
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    allowed = nested_window_attention(mask, torch.tensor([[3, 4]]), causal=False)[0, 0].int()
    expected = torch.tensor([
        [1, 1, 1, 0, 0, 0],  # own tokens see own tokens, never the meta tokens
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],  # meta 1: the whole item and itself
        [1, 0, 0, 0, 1, 0],  # meta 2: the first half (1 of 3 tokens) and itself
        [0, 0, 0, 0, 0, 1],  # padding: itself only, so no softmax row is empty
    ])
    assert torch.equal(allowed, expected)
    causal = nested_window_attention(mask, torch.tensor([[3, 4]]), causal=True)[0, 0].int()
    assert torch.equal(causal[:3, :3], torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]]))
    assert torch.equal(causal[3:], expected[3:])


def test_attention_mask_with_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])  # 2 padding, 2 own tokens, 2 meta tokens
    allowed = nested_window_attention(mask, torch.tensor([[4, 5]]), causal=True)[0, 0].int()
    assert allowed[4].tolist() == [0, 0, 1, 1, 1, 0]
    assert allowed[5].tolist() == [0, 0, 1, 0, 0, 1]
    assert allowed[0].tolist() == [1, 0, 0, 0, 0, 0]


def test_modes_are_checked():
    assert windowed_sides("full") == () and windowed_sides("document_windows") == ("document",)
    assert windowed_sides("windows") == ("query", "document")
    with pytest.raises(ValueError, match="meta_attention must be one of full, document_windows, windows, document_lines, "
                                         "document_segments, document_regions or auto, got 'tokens'"):
        windowed_sides("tokens")
    with pytest.raises(ValueError, match="meta_attention must be one of"):
        TrainConfig(model="m", meta_attention="window").validate()


@pytest.fixture(scope="module", params=TEXT_BACKBONES)
def backbone_path(request) -> str:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def windowed(backbone_path) -> MetaEmbed:
    return MetaEmbed.from_backbone(backbone_path, R_Q, R_C, meta_attention="windows", device="cpu").eval()


def test_own_tokens_keep_the_backbones_states(windowed: MetaEmbed):
    """The item's tokens never see the meta tokens: their states are the plain backbone's."""
    transformer = windowed.backbone
    features = windowed.preprocess(["lazy dog sleeps"], task="document")
    own = features["meta_positions"][0, 0].item() if transformer.tokenizer.padding_side == "right" else None
    with torch.no_grad():
        states = transformer({**features}, task="document")["token_embeddings"][0]
        plain_ids = transformer.tokenizer(["lazy dog sleeps"], return_tensors="pt")
        plain_ids = {k: v for k, v in plain_ids.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        plain = transformer.model(**plain_ids).last_hidden_state[0]
    real = features["attention_mask"][0].bool().clone()
    real[features["meta_positions"][0]] = False
    assert own is None or real[:own].all()
    torch.testing.assert_close(states[real], plain, atol=1e-5, rtol=0)


def test_padding_invariance_and_prefixes(windowed: MetaEmbed):
    alone = windowed.encode_document(["lazy dog"])
    padded = windowed.encode_document([LONG_TEXT, "lazy dog", "x"])
    torch.testing.assert_close(padded[1:2], alone, atol=1e-5, rtol=0)
    alone_query = windowed.encode_query(["quick fox"])
    torch.testing.assert_close(windowed.encode_query(["quick fox", LONG_TEXT])[0:1], alone_query, atol=1e-5, rtol=0)
    torch.testing.assert_close(windowed.encode_document(["lazy dog"], budget=3), alone[:, :3], atol=1e-6, rtol=0)


def test_vectors_differ_from_full_attention(backbone_path, windowed: MetaEmbed):
    full = MetaEmbed.from_backbone(backbone_path, R_Q, R_C, device="cpu").eval()
    by_window, by_whole = windowed.encode_document([LONG_TEXT]), full.encode_document([LONG_TEXT])
    # Vectors 2.. read parts of the item, not the whole item and the meta tokens before them.
    assert (by_window[:, 1:] - by_whole[:, 1:]).abs().amax(dim=-1).min() > 1e-4
    if windowed.backbone._is_causal():  # vector 1 of a decoder reads the whole item (and itself) either way
        torch.testing.assert_close(by_window[:, 0], by_whole[:, 0], atol=1e-6, rtol=0)
    else:  # an encoder's own tokens also read the meta tokens under full attention
        assert (by_window[:, 0] - by_whole[:, 0]).abs().max() > 1e-4


def test_decoder_window_sees_only_its_part(tiny_llama_path):
    """In a decoder, the first-half vector cannot see a change in the second half; the whole and the second half do."""
    model = MetaEmbed.from_backbone(tiny_llama_path, R_Q, R_C, meta_attention="document_windows", device="cpu").eval()
    first, second = model.encode_document(["abcdefghijklmnop", "abcdefghijklmnoz"])
    torch.testing.assert_close(first[1], second[1], atol=1e-6, rtol=0)  # vector 2: the first half
    torch.testing.assert_close(first[3], second[3], atol=1e-6, rtol=0)  # vector 4: the first quarter
    for index in (0, 2, 6):  # the whole item, the second half, the last quarter
        assert (first[index] - second[index]).abs().max() > 1e-4


def test_document_windows_leave_queries_as_full(tiny_bert_path):
    full = MetaEmbed.from_backbone(tiny_bert_path, R_Q, R_C, device="cpu").eval()
    documents_only = MetaEmbed.from_backbone(tiny_bert_path, R_Q, R_C, meta_attention="document_windows", device="cpu").eval()
    torch.testing.assert_close(documents_only.encode_query(["quick fox"]), full.encode_query(["quick fox"]), atol=1e-6, rtol=0)
    assert (documents_only.encode_document([LONG_TEXT]) - full.encode_document([LONG_TEXT])).abs().max() > 1e-3


def test_eager_attention_gives_the_sdpa_vectors(tiny_bert_path):
    sdpa = MetaEmbed.from_backbone(tiny_bert_path, R_Q, R_C, meta_attention="windows", device="cpu").eval()
    eager = MetaEmbed.from_backbone(tiny_bert_path, R_Q, R_C, meta_attention="windows", device="cpu",
                                    model_kwargs={"attn_implementation": "eager"}).eval()
    assert eager.backbone.model.config._attn_implementation == "eager"
    texts = [LONG_TEXT, "lazy dog"]
    torch.testing.assert_close(eager.encode_document(texts), sdpa.encode_document(texts), atol=1e-5, rtol=0)


def test_save_and_load_keep_the_windows(windowed: MetaEmbed, tmp_path):
    windowed.save_pretrained(str(tmp_path / "model"))
    loaded = MetaEmbed.from_pretrained(str(tmp_path / "model"), device="cpu").eval()
    assert loaded.backbone.meta_attention == "windows"
    torch.testing.assert_close(loaded.encode_document([LONG_TEXT]), windowed.encode_document([LONG_TEXT]), atol=1e-6, rtol=0)


def test_gradients_reach_the_document_meta_tokens(windowed: MetaEmbed):
    windowed.train()
    try:
        features = windowed.preprocess(["lazy dog", LONG_TEXT], task="document")
        vectors = windowed(features, task="document")["token_embeddings"]
        # A random readout: a plain sum has (almost) no gradient through a final LayerNorm.
        (vectors * torch.randn(vectors.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
        grad = windowed.backbone.document_meta_tokens.grad
        assert grad is not None and (grad.abs().sum(dim=1) > 1e-3).all()  # every window's token learns
    finally:
        windowed.zero_grad(set_to_none=True)
        windowed.eval()


def test_a_vision_language_model_is_refused(tiny_qwen2_vl_path):
    with pytest.raises(ValueError, match="is a vision-language model.*text backbones only"):
        MetaEmbed.from_backbone(tiny_qwen2_vl_path, R_Q, R_C, meta_attention="document_windows", device="cpu")
