"""MetaEmbed over the real all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import pytest
import torch

from metaembed import MetaEmbed, maxsim

TEXTS = [
    "how do I compress files on linux",
    "a text editor for the terminal",
    "GNU zip compresses files with Lempel-Ziv coding and keeps their names and dates",
]


@pytest.fixture(scope="module")
def model(minilm_path) -> MetaEmbed:
    return MetaEmbed.from_backbone(minilm_path, 4, 8, device="cpu")


def test_real_weights_give_finite_deterministic_unit_vectors(model):
    first = model.encode_document(TEXTS)
    second = model.encode_document(TEXTS)
    assert first.shape == (3, 8, 384)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)
    torch.testing.assert_close(first.norm(dim=-1), torch.ones(3, 8), atol=1e-5, rtol=0)


def test_batch_composition_does_not_change_vectors(model):
    text = TEXTS[1]
    alone = model.encode_query([text])
    with_short = model.encode_query(["editor", text, "vim"], batch_size=2)
    with_long = model.encode_query([TEXTS[2] * 5, text])
    torch.testing.assert_close(with_short[1:2], alone, atol=2e-6, rtol=0)
    torch.testing.assert_close(with_long[1:2], alone, atol=2e-6, rtol=0)


def test_scores_are_budget_prefixes(model):
    queries = model.encode_query(TEXTS[:2])
    documents = model.encode_document(TEXTS)
    small = maxsim(model.encode_query(TEXTS[:2], budget=2), model.encode_document(TEXTS, budget=3))
    torch.testing.assert_close(small, maxsim(queries, documents, 2, 3), atol=1e-5, rtol=0)
