"""Per-document directions in pq storage (``basis``): the low-rank part of each document's residuals is fitted,
stored in int8 (directions per document, coefficients rank-major) and scored without rebuilding the vectors; an
index with them scores exactly the MaxSim of what it reconstructs, names damaged files, and older indexes (no
directions) still open."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import metaembed
from metaembed.index import CorruptIndexError, MultiVectorIndex
from metaembed.index import manifest as manifest_module
from metaembed.index import segment as segment_module
from metaembed.index import codebook as codebook_module
from metaembed.index.codebook import (LOOKUP_TABLE_MAX_QUERY_VECTORS, ProductCodebook, anchored_residuals,
                                    encode_documents)
from metaembed.index.document_basis import (DocumentBases, add_low_rank, check_basis, default_basis,
                                            folds_into_decoded_blocks, low_rank, scaled_products)

DIM, STORED, N, SUBQUANTIZERS = 32, 8, 300, 8


def low_rank_documents(n: int, seed: int, rank: int = 2) -> torch.Tensor:
    """Unit vectors (n, STORED, DIM): a topic per document plus, per vector, its own mix of ``rank`` directions of
    that document (as a MetaEmbed document's meta-token vectors vary around their mean) and a little noise."""
    generator = torch.Generator().manual_seed(seed)
    topics = torch.randn(n, 1, DIM, generator=generator)
    directions = torch.randn(n, rank, DIM, generator=generator)
    mixes = torch.randn(n, STORED, rank, generator=generator)
    noise = 0.05 * torch.randn(n, STORED, DIM, generator=generator)
    return torch.nn.functional.normalize(topics + mixes @ directions + noise, dim=-1)


def relative_error(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    return float((estimate - truth).square().sum() / truth.square().sum())


def test_bases_fit_each_documents_low_rank_part_and_score_it_by_rank():
    generator = torch.Generator().manual_seed(3)
    residuals = torch.einsum("rnk,nkd->rnd", torch.randn(STORED, 50, 2, generator=generator),
                             torch.randn(50, 2, DIM, generator=generator))  # exactly rank 2 per document
    two, one = DocumentBases.fit(residuals, 2), DocumentBases.fit(residuals, 1)
    assert two.basis.shape == (50, 2, DIM) and two.basis.dtype == torch.int8
    assert two.scales.shape == (50, 2) and two.scales.dtype == torch.float32
    assert two.coefficients.shape == (STORED, 50, 2) and two.coefficients.dtype == torch.int8  # rank-major
    assert relative_error(two.low_rank(), residuals) < 1e-3  # only int8 rounding is lost
    assert relative_error(one.low_rank(), residuals) > 0.05  # one direction misses the second
    # nested by rank: vector 0 lies on the first direction alone, so a budget of one vector reads one direction
    assert torch.all(two.coefficients[0, :, 1] == 0) and torch.any(two.coefficients[1:, :, 1] != 0)
    assert relative_error(low_rank(two.basis[:, :1], two.scales[:, :1], two.coefficients[:1, :, :1]),
                          residuals[:1]) < 1e-3
    # a budget reads a prefix of the coefficients: the first ranks rebuild alone
    torch.testing.assert_close(low_rank(two.basis, two.scales, two.coefficients[:3]), two.low_rank()[:3])
    # scores from the directions' products equal dot products with the rebuilt vectors, rank by rank
    queries = torch.randn(5, DIM, generator=generator)
    products = scaled_products(two.basis.float() @ queries.T, two.scales, torch.float32)  # (n, k, count) in
    assert products.shape == (2, 5, 50)
    for rank in (0, STORED - 1):
        scores = add_low_rank(torch.zeros(5, 50), products, two.coefficients[rank])
        torch.testing.assert_close(scores, queries @ two.low_rank()[rank].T, atol=1e-4, rtol=1e-4)
    zero = DocumentBases.fit(torch.zeros(STORED, 3, DIM), 2)  # no spread at all: nothing to fit, nothing breaks
    assert torch.equal(zero.low_rank(), torch.zeros(STORED, 3, DIM))


def test_documents_are_encoded_in_chunks_exactly_as_whole_and_as_the_formula_says(monkeypatch):
    """A pq segment's arrays do not depend on how many documents are encoded at once (chunks of 7 documents against
    all 300 at once), and the codes are those of each residual less its rank's centre and its low-rank part."""
    documents = low_rank_documents(N, seed=11)
    anchors, residuals = anchored_residuals(documents)
    codebook = ProductCodebook.train(residuals, SUBQUANTIZERS, by_rank=True, basis=2)
    whole = encode_documents(documents, codebook, basis=2)
    monkeypatch.setattr(codebook_module, "ENCODE_CHUNK_VECTORS", 7 * STORED)
    chunked = encode_documents(documents, codebook, basis=2)
    assert torch.equal(whole.anchors, anchors) and whole.codes.shape == (STORED, N, SUBQUANTIZERS)
    assert torch.equal(chunked.anchors, whole.anchors) and torch.equal(chunked.codes, whole.codes)
    for name in ("basis", "scales", "coefficients"):
        assert torch.equal(getattr(chunked.bases, name), getattr(whole.bases, name)), name
    centred = residuals.transpose(0, 1) - codebook.rank_centres.unsqueeze(1)  # (R, n, D)
    bases = DocumentBases.fit(centred, 2)
    assert torch.equal(bases.coefficients, whole.bases.coefficients) and torch.equal(bases.basis, whole.bases.basis)
    expected = codebook.encode(centred - bases.low_rank())
    assert (expected == whole.codes).float().mean() > 0.999  # in-place arithmetic may round a rare tie the other way
    # subtract_from takes each vector's low-rank part off in place: what low_rank() rebuilds
    in_place = centred.transpose(0, 1).clone()  # (n, R, D); contiguous() could be centred itself
    assert bases.subtract_from(in_place) is in_place
    torch.testing.assert_close(in_place, (centred - bases.low_rank()).transpose(0, 1), atol=1e-6, rtol=1e-5)
    assert torch.equal(encode_documents(documents, codebook, basis=0).codes,
                       codebook.encode(centred))  # no directions: the centred residuals are coded
    empty = encode_documents(documents[:0], codebook, basis=2)
    assert empty.codes.shape == (STORED, 0, SUBQUANTIZERS) and empty.bases.basis.shape == (0, 2, DIM)


def test_directions_fold_into_decoded_blocks_only_for_many_query_vectors():
    assert folds_into_decoded_blocks(1600, 64, 384)  # 100 queries at (16,64)
    assert not folds_into_decoded_blocks(100, 1, 384)  # 100 queries at (1,1): products are cheaper
    assert not folds_into_decoded_blocks(33, 64, 384)


def test_default_and_checked_direction_counts():
    assert default_basis(384, 64, 48) == 5  # the paper's 64 vectors, MiniLM's 384 dimensions: 1/8 of bf16
    assert default_basis(32, 8, 8) == 1 and default_basis(384, 8, 48) == 0  # few vectors: directions cost too much
    assert default_basis(32, 2, 32) == 1  # never as many directions as vectors
    assert check_basis(3, 8) == 3 and check_basis(0, 1) == 0
    for bad in (-1, 8, 2.0, True):
        with pytest.raises(ValueError, match="basis must be an integer from 0 to max_document_vectors - 1 = 7"):
            check_basis(bad, 8)


def build(path, documents, basis):
    index = MultiVectorIndex.create(path, DIM, STORED, dtype="pq", subquantizers=SUBQUANTIZERS, basis=basis)
    index.add([f"d{i}" for i in range(200)], documents[:200], [{"n": i} for i in range(200)])
    index.add([f"d{i}" for i in range(200, N)], documents[200:], [{"n": i} for i in range(200, N)])
    return index


def test_an_index_with_directions_scores_the_maxsim_of_what_it_stores(tmp_path, monkeypatch):
    documents = low_rank_documents(N, seed=1)
    ids = [f"d{i}" for i in range(N)]
    with build(tmp_path / "basis", documents, 2) as index, build(tmp_path / "none", documents, 0) as plain:
        manifest = json.loads((tmp_path / "basis" / "manifest.json").read_text())
        assert manifest["pq"] == {"subquantizers": SUBQUANTIZERS, "full_precision": False, "basis": 2,
                                  "nested_basis": True}
        segment = tmp_path / "basis" / "segments" / manifest["segments"][1]["name"]
        assert sorted(p.name for p in segment.iterdir()) == ["anchors.bin", "basis.bin", "basis_scales.bin", "codes.bin",
                                                             "coefficients.bin", "ids.json", "metadata.json"]
        assert (segment / "coefficients.bin").stat().st_size == STORED * 100 * 2  # (R, n, k) int8
        assert (segment / "basis.bin").stat().st_size == 100 * 2 * DIM
        reconstructed = index.get_vectors(ids)
        # the directions take most of what the codes would have to carry: far less error for 2 * (D + R + 4) bytes
        assert relative_error(reconstructed, documents) < 0.5 * relative_error(plain.get_vectors(ids), documents)
        assert index.scored_bytes_per_document() == 2 * DIM + 2 * (DIM + 4) + STORED * (SUBQUANTIZERS + 2)
        assert index.scored_bytes_per_document(3) == 2 * DIM + 2 * (DIM + 4) + 3 * (SUBQUANTIZERS + 2)
        assert index.scored_bytes_per_document(1) == 2 * DIM + 1 * (DIM + 4) + 1 * (SUBQUANTIZERS + 2)  # nested
        queries = torch.nn.functional.normalize(documents[:6, :4] + 0.2 * torch.randn(6, 4, DIM), dim=-1)
        many = queries.repeat(LOOKUP_TABLE_MAX_QUERY_VECTORS // 4 + 1, 1, 1)  # past the lookup tables: decoded blocks
        for budget in [(1, 1), (2, 3), (4, 8)]:
            expected = metaembed.maxsim(queries, reconstructed, *budget).topk(5, dim=1)
            lone = [index.search(queries[i : i + 1], k=5, budget=budget, compute_dtype=torch.float32)[0]
                    for i in range(len(queries))]
            folded = index.search(many, k=5, budget=budget, compute_dtype=torch.float32)[: len(queries)]
            with monkeypatch.context() as patch:  # decoded blocks with the directions' products instead
                patch.setattr(segment_module, "folds_into_decoded_blocks", lambda *args: False)
                multiplied = index.search(many, k=5, budget=budget, compute_dtype=torch.float32)[: len(queries)]
            for found in (lone, folded, multiplied):
                for result, scores, rows in zip(found, expected.values, expected.indices):
                    assert result.ids == [f"d{i}" for i in rows.tolist()]
                    assert result.scores == pytest.approx(scores.tolist(), abs=1e-4)
        assert index.compact() == 2  # merged as stored: the same vectors after
        assert torch.equal(index.get_vectors(ids), reconstructed)
        index.verify()


def test_nested_directions_are_read_by_budget_and_older_indexes_read_them_all(tmp_path, monkeypatch):
    """A search at r_c < k reads only the first r_c directions of each document (nested by rank) and scores as if it
    read all k; an index written before nesting (no "nested_basis" in its manifest) reads all k, with the same
    results."""
    documents = low_rank_documents(N, seed=6, rank=3)
    build(tmp_path / "new", documents, 3).close()
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    path = tmp_path / "old" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["pq"]["nested_basis"]  # as written before the directions were nested
    manifest["checksum"] = manifest_module.manifest_checksum(manifest)
    path.write_text(json.dumps(manifest))
    read = []
    original = segment_module.Segment.basis_scores

    def counting(self, *args, **kwargs):
        directions = original(self, *args, **kwargs)
        read.append(directions.count)
        return directions

    monkeypatch.setattr(segment_module.Segment, "basis_scores", counting)
    queries = torch.nn.functional.normalize(documents[:4, :4] + 0.2 * torch.randn(4, 4, DIM), dim=-1)
    with MultiVectorIndex.open(tmp_path / "new") as new, MultiVectorIndex.open(tmp_path / "old") as old:
        assert old.scored_bytes_per_document(1) == 2 * DIM + 3 * (DIM + 4) + 1 * (SUBQUANTIZERS + 3)
        reconstructed = new.get_vectors([f"d{i}" for i in range(N)])
        for budget, directions in [((1, 1), 1), ((2, 2), 2), ((4, 6), 3)]:
            expected = metaembed.maxsim(queries, reconstructed, *budget).topk(5, dim=1)
            for index, count in ((new, directions), (old, 3)):
                read.clear()
                found = index.search(queries, k=5, budget=budget, compute_dtype=torch.float32)
                assert read and set(read) == {count}, (budget, index.path.name)
                for result, scores, rows in zip(found, expected.values, expected.indices):
                    assert result.ids == [f"d{i}" for i in rows.tolist()]
                    assert result.scores == pytest.approx(scores.tolist(), abs=1e-4)


def test_damaged_directions_or_coefficients_are_named(tmp_path):
    documents = low_rank_documents(N, seed=4)
    build(tmp_path / "ix", documents, 2).close()
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    segment = tmp_path / "ix" / "segments" / manifest["segments"][0]["name"]
    queries = documents[:2, :2]
    coefficients = bytearray((segment / "coefficients.bin").read_bytes())
    coefficients[200 * 2 * 3 + 1] ^= 0x7F  # a coefficient of rank 3
    (segment / "coefficients.bin").write_bytes(bytes(coefficients))
    reopened = MultiVectorIndex.open(tmp_path / "ix")
    reopened.search(queries, k=3, budget=(2, 3))  # ranks 0-2 are intact and checked
    with pytest.raises(CorruptIndexError, match=r"coefficients\.bin fails its xxh3_128 checksum in part 3"):
        reopened.search(queries, k=3, budget=(2, 4))
    basis = bytearray((segment / "basis.bin").read_bytes())
    basis[7] ^= 0x7F
    (segment / "basis.bin").write_bytes(bytes(basis))
    with pytest.raises(CorruptIndexError, match=r"basis\.bin fails its xxh3_128 checksum"):
        MultiVectorIndex.open(tmp_path / "ix").search(queries, k=3, budget=(1, 1))  # read by every search


def test_indexes_written_before_directions_open_and_take_no_directions(tmp_path):
    documents = low_rank_documents(N, seed=5)
    build(tmp_path / "old", documents, 0).close()
    path = tmp_path / "old" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["pq"]["basis"]  # as written before the setting existed
    manifest["checksum"] = manifest_module.manifest_checksum(manifest)
    path.write_text(json.dumps(manifest))
    with MultiVectorIndex.open(tmp_path / "old", mode="a") as old:
        before = old.search(documents[:2, :2], k=3)
        old.add(["new"], documents[:1])  # still no directions: its segments hold none
        assert old.scored_bytes_per_document() == 2 * DIM + STORED * SUBQUANTIZERS
        after = old.search(documents[:2, :2], k=3)
        assert set(after[0].ids[:2]) == {"d0", "new"} and after[0].ids[2] == before[0].ids[1]  # new = d0's vectors
        assert after[1].ids == before[1].ids
        old.verify()


def test_directions_are_a_pq_setting_with_a_checked_count(tmp_path):
    with pytest.raises(ValueError, match="apply to dtype='pq' only"):
        MultiVectorIndex.create(tmp_path / "a", DIM, STORED, dtype="int8", basis=2)
    with pytest.raises(ValueError, match="basis must be an integer from 0 to max_document_vectors - 1 = 7"):
        MultiVectorIndex.create(tmp_path / "b", DIM, STORED, dtype="pq", basis=STORED)
    assert not (tmp_path / "b" / "manifest.json").exists()
