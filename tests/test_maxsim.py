"""metaembed.maxsim against a plain double loop, for every budget pair, in fp32 and bf16."""

from __future__ import annotations

import pytest
import torch

from metaembed import maxsim


def double_loop_maxsim(queries: torch.Tensor, documents: torch.Tensor, r_q: int, r_c: int) -> torch.Tensor:
    scores = torch.zeros(queries.shape[0], documents.shape[0])
    for qi in range(queries.shape[0]):
        for di in range(documents.shape[0]):
            total = 0.0
            for i in range(r_q):
                total += max(float(queries[qi, i] @ documents[di, j]) for j in range(r_c))
            scores[qi, di] = total
    return scores


@pytest.fixture(scope="module")
def vectors():
    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(3, 4, 16, generator=generator), dim=-1)
    documents = torch.nn.functional.normalize(torch.randn(7, 6, 16, generator=generator), dim=-1)
    return queries, documents


def test_every_budget_pair_matches_double_loop(vectors):
    queries, documents = vectors
    for r_q in range(1, 5):
        for r_c in range(1, 7):
            expected = double_loop_maxsim(queries, documents, r_q, r_c)
            got = maxsim(queries, documents, r_q, r_c, block_size=3)  # blocks that do not divide 7
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_defaults_use_every_vector_and_normalize_option(vectors):
    queries, documents = vectors
    full = double_loop_maxsim(queries, documents, 4, 6)
    torch.testing.assert_close(maxsim(queries, documents), full, atol=1e-5, rtol=0)
    torch.testing.assert_close(maxsim(queries, documents, normalize_by_query=True), full / 4, atol=1e-5, rtol=0)


def test_bf16_inputs_compute_in_bf16_close_to_fp32(vectors):
    queries, documents = vectors
    expected = maxsim(queries, documents, 2, 3)
    got = maxsim(queries.bfloat16(), documents.bfloat16(), 2, 3)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=0.05, rtol=0)


def test_fp16_is_refused_on_cpu(vectors):
    queries, documents = vectors
    with pytest.raises(ValueError, match="fp16"):
        maxsim(queries, documents, dtype=torch.float16)
    # fp16 inputs on CPU are computed in fp32 instead of fp16.
    torch.testing.assert_close(maxsim(queries.half(), documents.half()), maxsim(queries.half().float(), documents.half().float()))


def test_large_corpus_in_blocks_matches_single_block():
    generator = torch.Generator().manual_seed(1)
    queries = torch.randn(2, 3, 8, generator=generator)
    documents = torch.randn(5000, 4, 8, generator=generator)
    torch.testing.assert_close(maxsim(queries, documents, block_size=333), maxsim(queries, documents, block_size=5000))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"query_budget": 0}, "at least 1"),
        ({"query_budget": -2}, "at least 1"),
        ({"query_budget": 5}, "query budget 5 is larger than the 4 query vectors"),
        ({"document_budget": 7}, "document budget 7 is larger than the 6 document vectors"),
    ],
)
def test_budget_errors(vectors, kwargs, message):
    queries, documents = vectors
    with pytest.raises(ValueError, match=message):
        maxsim(queries, documents, **kwargs)


def test_shape_errors(vectors):
    queries, documents = vectors
    with pytest.raises(ValueError, match="expects query_vectors"):
        maxsim(queries[0], documents)
    with pytest.raises(ValueError, match="dimension"):
        maxsim(queries, documents[..., :8])


def test_paired_maxsim_scores_each_query_against_its_own_documents(vectors):
    from metaembed.scoring import paired_maxsim

    queries, documents = vectors
    own = torch.tensor([[0, 3, 6], [5, 5, 1], [2, 0, 4]])  # query i's candidates; a document may repeat
    paired = paired_maxsim(queries, documents[own])  # (3, 3, 6, 16) -> (3, 3)
    full = double_loop_maxsim(queries, documents, 4, 6)
    torch.testing.assert_close(paired, full.gather(1, own), atol=1e-5, rtol=0)
    torch.testing.assert_close(paired_maxsim(queries, documents[own], normalize_by_query=True), full.gather(1, own) / 4,
                               atol=1e-5, rtol=0)
    bf16 = paired_maxsim(queries.bfloat16(), documents[own].bfloat16())
    assert bf16.dtype == torch.float32 and (bf16 - full.gather(1, own)).abs().max() < 0.05
    with pytest.raises(ValueError, match="expects query_vectors"):
        paired_maxsim(queries, documents)  # (n_documents, R_c, D): not grouped per query
    with pytest.raises(ValueError, match="expects query_vectors"):
        paired_maxsim(queries[:2], documents[own])
    with pytest.raises(ValueError, match="dimension"):
        paired_maxsim(queries, documents[own][..., :8])
