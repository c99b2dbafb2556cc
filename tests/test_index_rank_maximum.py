"""The running maximum over document vector ranks: bf16 blocks compared by their bits give exactly torch's maximum,
whatever the signs, and bf16 search stays the brute-force MaxSim of bf16 scores when every score is negative."""

from __future__ import annotations

import pytest
import torch

from metaembed.index import MultiVectorIndex
import metaembed.index.scan as scan_module
from metaembed.index.scan import max_of_stacked, max_over_ranks


def blocks_with_every_sign_case() -> list[torch.Tensor]:
    """5 ranks of (6, 7) bf16 scores: random signs, columns all negative, all positive, signed zeros, infinities."""
    generator = torch.Generator().manual_seed(0)
    blocks = torch.randn(5, 6, 7, generator=generator)
    blocks[:, :, 0] = -blocks[:, :, 0].abs() - 1e-3  # every rank negative: the answer is the smallest magnitude
    blocks[:, :, 1] = blocks[:, :, 1].abs()  # every rank positive
    blocks[:, 0, 2] = torch.tensor([-0.0, -0.5, -0.0, -2.0, -1e-30])  # -0.0 is the largest of these
    blocks[:, 1, 2] = torch.tensor([0.0, -0.0, -1.0, 0.0, -3.0])
    blocks[:, 2, 2] = torch.tensor([float("-inf"), -1.0, -2.0, float("-inf"), -1e30])
    blocks[:, 3, 2] = torch.tensor([float("inf"), 1.0, -1.0, 2.0, 0.0])
    return list(blocks.to(torch.bfloat16))


def test_bf16_maximum_by_bits_equals_torch_maximum():
    blocks = blocks_with_every_sign_case()
    expected = torch.stack(blocks).float().amax(dim=0)
    result = max_over_ranks(block.clone() for block in blocks)
    assert result.dtype == torch.bfloat16 and result.shape == (6, 7)
    assert torch.equal(result.float(), expected)
    assert result[0, 0] < 0 and result[0, 2] == 0 and result[2, 2] == -1.0 and result[3, 2] == float("inf")
    # transposed views (how a segment returns documents @ queries^T) give the same
    transposed = max_over_ranks(block.clone().T.contiguous().T for block in blocks)
    assert torch.equal(transposed.float(), expected)
    # the same ranks stacked (a small segment scored in one matmul)
    assert torch.equal(max_of_stacked(torch.stack(blocks)).float(), expected)
    assert torch.equal(max_of_stacked(torch.stack(blocks)[:, :, 1:]).float(), expected[:, 1:])  # none all-negative


def test_one_block_is_returned_as_it_is_and_fp32_uses_torch_maximum():
    block = torch.randn(3, 4).to(torch.bfloat16)
    assert max_over_ranks([block]) is block
    fp32 = [torch.randn(3, 4) for _ in range(3)]
    assert torch.equal(max_over_ranks(b.clone() for b in fp32), torch.stack(fp32).amax(dim=0))
    assert torch.equal(max_of_stacked(torch.stack(fp32)), torch.stack(fp32).amax(dim=0))


@pytest.mark.parametrize("bits_only", [False, True], ids=["running-minimum", "bit-maximum-and-fix-up"])
@pytest.mark.parametrize("per_rank", [False, True], ids=["segment-in-one-matmul", "rank-by-rank"])
def test_bf16_search_ranks_all_negative_scores_as_brute_force(tmp_path, monkeypatch, per_rank, bits_only):
    """Queries pointing away from every document: every score is negative, so a maximum taken on raw bits would
    pick the most negative rank; the search must give brute-force bf16 MaxSim instead (with a running minimum, or
    with every pair recomputed by the fix-up)."""
    monkeypatch.setattr(scan_module, "_BIT_MAXIMUM_MIN_RANKS", 2 if bits_only else 1000)
    if per_rank:  # blocks too small for a segment's ranks to be stacked into one matmul
        monkeypatch.setattr(scan_module, "_RUNNING_MAX_ELEMENTS", 1)
    generator = torch.Generator().manual_seed(1)
    documents = torch.nn.functional.normalize(torch.randn(40, 6, 16, generator=generator).abs() + 0.5, dim=-1)
    queries = -torch.nn.functional.normalize(torch.rand(3, 2, 16, generator=generator) + 0.5, dim=-1)
    with MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=6) as index:
        index.add([f"d{i:02d}" for i in range(40)], documents)
        results = index.search(queries, k=40, budget=(2, 6), compute_dtype=torch.bfloat16)
    scores = torch.einsum("qid,njd->qnij", queries.bfloat16(), documents.bfloat16()).float()  # bf16 products
    assert (scores < 0).all()
    expected = scores.amax(dim=-1).sum(dim=-1)  # (3, 40)
    for query, result in enumerate(results):
        by_id = dict(zip(result.ids, result.scores))
        got = torch.tensor([by_id[f"d{i:02d}"] for i in range(40)])
        assert torch.allclose(got, expected[query], atol=0.02)
        assert result.scores[0] == pytest.approx(expected[query].max().item(), abs=0.02)
        assert result.ids[0] == f"d{int(expected[query].argmax()):02d}" or \
            expected[query].max() - expected[query][int(result.ids[0][1:])] < 0.02
        # the worst document (whose most negative rank a bit-maximum would have picked) ranks last
        assert result.ids[-1] == f"d{int(expected[query].argmin()):02d}" or \
            expected[query][int(result.ids[-1][1:])] - expected[query].min() < 0.02


@pytest.mark.parametrize("dtype,basis", [("bfloat16", None), ("int8", None), ("pq", 0), ("pq", 2)],
                         ids=["bf16", "int8", "pq", "pq-directions"])
@pytest.mark.parametrize("query_vectors", [24, 80], ids=["few-ranks-stacked", "many-rank-by-rank"])
def test_task_maxima_fix_the_pairs_whose_every_score_is_negative(tmp_path, monkeypatch, dtype, basis, query_vectors):
    """Random unit vectors: some (query vector, document) pairs score negative with every one of a document's
    vectors (pq: with every residual from the anchor, over a few ranks). The bit-maximum leaves those wrong;
    task_maxima recomputes them (in chunks here), so every entry is the maximum of what the segment scores."""
    monkeypatch.setattr(scan_module, "_RUNNING_MAX_ELEMENTS", 8 * 80 * 16)  # fix-ups in several chunks
    monkeypatch.setattr(scan_module, "_BIT_MAXIMUM_MIN_RANKS", 2)  # from 16 ranks on by default
    generator = torch.Generator().manual_seed(3)
    documents = torch.nn.functional.normalize(torch.randn(300, 8, 16, generator=generator), dim=-1)
    queries = torch.nn.functional.normalize(torch.randn(query_vectors, 16, generator=generator), dim=-1)
    options = {} if basis is None else {"basis": basis, "subquantizers": 8}
    with MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=8, dtype=dtype, **options) as index:
        index.add([f"d{i:03d}" for i in range(300)], documents)
        segment = index._segments[0]
        prepared = segment.prepare_queries(queries, torch.bfloat16)
        scored = segment.scored_vectors(torch.arange(300), range(8), torch.float32)  # (300, 8, 16)
        for ranks in [(0, 8), (5, 8), (6, 8)]:
            want = torch.einsum("qd,nrd->qnr", queries, scored[:, ranks[0]:ranks[1]]).amax(dim=-1)  # (q, 300)
            got = scan_module.task_maxima(segment, prepared, query_vectors, 0, 300, ranks).float()
            assert got.shape == (query_vectors, 300)
            torch.testing.assert_close(got, want, atol=0.02, rtol=0)
        all_negative = want < -0.03  # ranks 6 and 7
        assert int(all_negative.sum()) >= 3 and int((want > 0.03).sum()) > 1000
        bits_only = scan_module.max_of_bits(
            segment.rank_scores(r, 0, 300, prepared).to(torch.bfloat16) for r in range(6, 8)).float()
        assert (bits_only[all_negative] < want[all_negative] - 0.02).sum() >= 2  # the more negative rank: mended


@pytest.mark.parametrize("r_c", [8, 16], ids=["running-minimum", "bit-maximum"])
@pytest.mark.parametrize("grouped", [True, False], ids=["groups-of-2-ranks", "rank-by-rank"])
def test_task_maxima_reuse_score_buffers_and_keep_the_running_maximum(tmp_path, monkeypatch, r_c, grouped):
    """Blocks after the first are written into a buffer an earlier block no longer needs: the maximum over every
    rank is still exact, and only the first blocks get fresh memory."""
    n_qv = 4
    monkeypatch.setattr(scan_module, "_RUNNING_MAX_ELEMENTS", 2 * 50 * n_qv if grouped else 1)  # 2 ranks a group
    generator = torch.Generator().manual_seed(5)
    documents = torch.nn.functional.normalize(torch.randn(50, r_c, 16, generator=generator), dim=-1)
    queries = torch.nn.functional.normalize(torch.randn(n_qv, 16, generator=generator), dim=-1)
    with MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=r_c) as index:
        index.add([f"d{i:02d}" for i in range(50)], documents)
        segment = index._segments[0]
        fresh = []
        for name in ("rank_group_scores", "rank_scores"):
            method = getattr(segment, name)
            monkeypatch.setattr(segment, name, lambda *a, _m=method, **k: fresh.append(k.get("out") is None) or _m(*a, **k))
        prepared = segment.prepare_queries(queries, torch.bfloat16)
        got = scan_module.task_maxima(segment, prepared, n_qv, 0, 50, (0, r_c)).float()
    stored = documents.bfloat16().float()
    want = torch.einsum("qd,nrd->qnr", queries.bfloat16().float(), stored).amax(dim=-1)
    assert got.shape == (n_qv, 50)
    torch.testing.assert_close(got, want, atol=0.02, rtol=0)
    calls = r_c // 2 if grouped else r_c
    bits_only = r_c >= scan_module._BIT_MAXIMUM_MIN_RANKS
    # the first block is kept as the running maximum (and with it, grouped, its group's buffer) unless a group's
    # maximum is a copy (running minimum): then every later block reuses one buffer
    first_fresh = 1 if grouped and not bits_only else 2
    assert fresh == [True] * first_fresh + [False] * (calls - first_fresh)


def test_rank_parts_leave_negative_maxima_to_one_fix_when_joined(tmp_path):
    """A segment shared by its ranks: each part of a 16-rank search is maximised on bits alone (its all-negative
    pairs left wrong), and joined_parts fixes the pairs negative over every rank once: the same as one task over
    all 16 ranks, and as brute force."""
    generator = torch.Generator().manual_seed(7)
    documents = torch.nn.functional.normalize(torch.randn(60, 16, 16, generator=generator), dim=-1)
    queries = torch.nn.functional.normalize(torch.randn(24, 16, generator=generator), dim=-1)
    away = -queries[:1] + 0.3 * torch.randn(3, 16, 16, generator=generator)  # 3 documents facing away from query 0
    documents[:3] = torch.nn.functional.normalize(away, dim=-1)
    with MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=16) as index:
        index.add([f"d{i:02d}" for i in range(60)], documents)
        segment = index._segments[0]
        prepared = segment.prepare_queries(queries, torch.bfloat16)
        parts = [scan_module.task_maxima(segment, prepared, 24, 0, 60, ranks, part_of=16) for ranks in [(0, 8), (8, 16)]]
        want = torch.einsum("qd,nrd->qnr", queries.bfloat16().float(), documents.bfloat16().float())  # (24, 60, 16)
        part_wrong = sum(int((part.float() < want[:, :, r : r + 8].amax(dim=-1) - 0.02).sum())
                         for part, r in zip(parts, (0, 8)))
        assert part_wrong >= 2  # random vectors: some pairs are negative over a part's 8 ranks, left unfixed there
        joined = scan_module.joined_parts(segment, parts, prepared, 0, 16).float()
        whole = scan_module.task_maxima(segment, prepared, 24, 0, 60, (0, 16)).float()
    assert int((want.amax(dim=-1) < 0).sum()) >= 3  # and some over all 16: the join's fix has work to do
    torch.testing.assert_close(joined, want.amax(dim=-1), atol=0.02, rtol=0)
    assert torch.equal(joined, whole)


@pytest.mark.parametrize("grouped", [True, False], ids=["groups-of-ranks", "rank-by-rank"])
def test_queries_unlike_the_documents_rescan_the_block_instead_of_gathering_it(tmp_path, monkeypatch, grouped):
    """Documents whose vectors share a direction, query vectors half facing away: most documents have a pair negative
    over all 16 ranks, so the fix-up scores the block again with a running minimum; exact either way."""
    if not grouped:
        monkeypatch.setattr(scan_module, "_RUNNING_MAX_ELEMENTS", 1)
    generator = torch.Generator().manual_seed(9)
    shared = torch.nn.functional.normalize(torch.randn(16, generator=generator), dim=0)
    documents = torch.nn.functional.normalize(shared + 0.3 * torch.randn(80, 16, 16, generator=generator), dim=-1)
    queries = torch.nn.functional.normalize(torch.randn(6, 16, generator=generator), dim=-1)
    queries[:3] = torch.nn.functional.normalize(-shared + 0.3 * torch.randn(3, 16, generator=generator), dim=-1)
    want = torch.einsum("qd,nrd->qnr", queries.bfloat16().float(), documents.bfloat16().float()).amax(dim=-1)
    assert ((want < 0).any(dim=0)).float().mean() > 0.5  # most documents involved
    with MultiVectorIndex.create(tmp_path / "ix", dim=16, max_document_vectors=16) as index:
        index.add([f"d{i:02d}" for i in range(80)], documents)
        segment = index._segments[0]
        prepared = segment.prepare_queries(queries, torch.bfloat16)
        gathered = []
        method = segment.scored_vectors
        monkeypatch.setattr(segment, "scored_vectors", lambda *a, **k: gathered.append(1) or method(*a, **k))
        rescanned = scan_module.task_maxima(segment, prepared, 6, 0, 80, (0, 16)).float()
        assert not gathered
        monkeypatch.setattr(scan_module, "_RESCAN_FRACTION", 1.0)  # never: the gather path, for comparison
        fixed = scan_module.task_maxima(segment, prepared, 6, 0, 80, (0, 16)).float()
        assert gathered
    torch.testing.assert_close(rescanned, want, atol=0.02, rtol=0)
    assert torch.equal(rescanned, fixed)
