"""max_seq_length counts an item's own tokens; meta tokens are appended beyond it and never eat the text."""

from __future__ import annotations

import pytest
import torch

from metaembed import MetaEmbed

R_Q, R_C = 4, 8
SHARED = "the quick brown fox jumps over the lazy dog and then runs far away"  # 15 word tokens


@pytest.fixture(scope="module")
def model(tiny_bert_path) -> MetaEmbed:
    model = MetaEmbed.from_backbone(tiny_bert_path, R_Q, R_C, device="cpu", max_seq_length=24)
    model.eval()
    return model


def test_meta_tokens_come_on_top_of_max_seq_length(model: MetaEmbed):
    features = model.backbone.preprocess(["word " * 100], task="document")
    # [CLS] + 22 words + [SEP] = 24 real tokens, then the 8 document meta tokens
    assert features["input_ids"].shape == (1, 24 + R_C)
    assert features["meta_positions"].tolist() == [list(range(24, 24 + R_C))]


def test_documents_differing_after_the_old_cut_encode_differently(model: MetaEmbed):
    # Under the old meaning (meta tokens counted in max_seq_length) only 24 - 8 = 16 tokens were kept:
    # these two documents share their first 17 tokens and would have encoded identically.
    first, second = f"{SHARED} toward the river", f"{SHARED} into the city"
    with torch.no_grad():
        vectors = model.encode_document([first, second])
    assert not torch.allclose(vectors[0], vectors[1], atol=1e-4)


def test_text_beyond_max_seq_length_is_still_truncated(model: MetaEmbed):
    long_tail = " ".join(["alpha"] * 30)
    with torch.no_grad():
        vectors = model.encode_document([f"{SHARED} {long_tail} river", f"{SHARED} {long_tail} city"])
    torch.testing.assert_close(vectors[0], vectors[1])


def test_a_length_the_backbone_cannot_hold_is_refused(model: MetaEmbed, tiny_bert_path):
    # the tiny BERT has 128 positions: 121 + 8 document meta tokens do not fit
    with pytest.raises(ValueError, match=r"max_seq_length 121 .* at most 128 positions, so max_seq_length can be at most 120"):
        model.max_seq_length = 121
    with pytest.raises(ValueError, match="at most 120"):
        MetaEmbed.from_backbone(tiny_bert_path, R_Q, R_C, device="cpu", max_seq_length=200)
    model.max_seq_length = 120  # fits exactly
    assert model.max_seq_length == 120
    model.max_seq_length = 24


def test_default_length_leaves_room_for_the_meta_tokens(tiny_bert_path):
    model = MetaEmbed.from_backbone(tiny_bert_path, R_Q, R_C, device="cpu")
    features = model.backbone.preprocess(["word " * 300], task="document")
    assert features["input_ids"].shape == (1, 128)  # 120 real tokens + 8 meta tokens, the backbone's limit
    features = model.backbone.preprocess(["word " * 300], task="query")
    assert features["input_ids"].shape == (1, 128)  # 124 real tokens + 4 query meta tokens
