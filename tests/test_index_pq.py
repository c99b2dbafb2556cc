"""Product-quantized storage (``dtype="pq"``): per-document anchors and residual codes on disk (codes rank-major),
MaxSim scored on them (lookup tables and decoded blocks agree), exact rescoring from kept bf16 copies, crash safety
and checksums, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import metaembed
from metaembed.cli import app
from metaembed.index import CorruptIndexError, MultiVectorIndex, build_index
from metaembed.index import codebook as codebook_module
from metaembed.index.manifest import manifest_checksum
from metaembed.index.codebook import (LOOKUP_TABLE_MAX_QUERY_VECTORS, ProductCodebook, anchored_residuals,
                                      default_subquantizers)
from metaembed.model import MetaEmbed

DIM, STORED, N = 32, 6, 300


def clustered(n: int, stored: int, dim: int, seed: int) -> torch.Tensor:
    """Unit vectors around 40 topics, as encoded documents are (not uniform noise)."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(40, dim, generator=generator), dim=-1)
    picks = torch.randint(0, 40, (n, stored), generator=generator)
    noise = torch.randn(n, stored, dim, generator=generator) * 0.6 / dim ** 0.5
    return torch.nn.functional.normalize(centers[picks] + noise, dim=-1)


@pytest.fixture(scope="module")
def documents() -> torch.Tensor:
    return clustered(N, STORED, DIM, seed=1)


@pytest.fixture(scope="module")
def queries(documents) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    return torch.nn.functional.normalize(documents[:12, :4] + 0.2 * torch.randn(12, 4, DIM, generator=generator), dim=-1)


@pytest.fixture
def pq_index(tmp_path, documents):
    index = MultiVectorIndex.create(tmp_path / "pq", DIM, STORED, dtype="pq")
    index.add([f"d{i}" for i in range(200)], documents[:200], [{"n": i} for i in range(200)])
    index.add([f"d{i}" for i in range(200, N)], documents[200:], [{"n": i} for i in range(200, N)])
    yield index
    index.close()


def test_codebook_codes_decode_and_both_scorers_agree(documents):
    codebook = ProductCodebook.train(documents, subquantizers=8)
    assert (codebook.subquantizers, codebook.sub_dim, codebook.dim) == (8, 4, DIM)
    codes = codebook.encode(documents)
    assert codes.shape == (N, STORED, 8) and codes.dtype == torch.uint8
    decoded = codebook.decode(codes)
    torch.testing.assert_close(codebook.rotation @ codebook.rotation.T, torch.eye(DIM), atol=1e-5, rtol=0)
    # each sub-vector is its nearest centroid: no other centroid is closer
    sub = (documents[:5] @ codebook.rotation.T).reshape(-1, 8, 4)  # codes describe the rotated vectors
    distances = (sub.unsqueeze(2) - codebook.centroids.unsqueeze(0)).pow(2).sum(-1)
    assert torch.equal(distances.argmin(-1).to(torch.uint8), codes[:5].reshape(-1, 8))
    relative = ((decoded - documents).norm(dim=-1) / documents.norm(dim=-1)).mean()
    assert relative < 0.35
    flat = codes[:, 0]
    for count in (1, 3, LOOKUP_TABLE_MAX_QUERY_VECTORS, LOOKUP_TABLE_MAX_QUERY_VECTORS + 5):
        query_vectors = clustered(count, 1, DIM, seed=count)[:, 0]
        prepared = codebook.prepare(query_vectors, torch.float32)
        assert (prepared.table is None) == (count > LOOKUP_TABLE_MAX_QUERY_VECTORS)
        scores = codebook.scores(prepared, flat)
        assert scores.shape == (count, N)
        torch.testing.assert_close(scores.float(), query_vectors @ decoded[:, 0].T, atol=1e-5, rtol=1e-5)
    again = ProductCodebook.from_bytes(codebook.to_bytes())
    assert torch.equal(again.centroids, codebook.centroids) and torch.equal(again.encode(documents), codes)


def test_default_subquantizers_take_a_byte_per_eight_dimensions():
    assert default_subquantizers(384) == 48 and default_subquantizers(30) == 3
    assert default_subquantizers(36) == 4 and default_subquantizers(32) == 4  # the largest divisor at or below dim / 8
    assert default_subquantizers(3) == 1


def test_anchored_residuals_shrink_the_error_on_nearly_parallel_vectors(tmp_path):
    """MetaEmbed documents' vectors are nearly parallel: coding residuals from each document's mean loses far
    less than coding the vectors, for the same bytes, and search keeps the exact ranking."""
    generator = torch.Generator().manual_seed(5)
    directions = torch.randn(N, 1, DIM, generator=generator)
    documents = torch.nn.functional.normalize(directions + 0.1 * torch.randn(N, STORED, DIM, generator=generator), dim=-1)
    anchors, residuals = anchored_residuals(documents)
    assert anchors.dtype == torch.bfloat16 and anchors.shape == (N, DIM)
    torch.testing.assert_close(anchors.float().unsqueeze(1) + residuals, documents)
    plain = ProductCodebook.train(documents, 4)
    plain_error = (plain.decode(plain.encode(documents)) - documents).norm(dim=-1).mean()
    with MultiVectorIndex.create(tmp_path / "pq", DIM, STORED, dtype="pq", subquantizers=4) as index, \
            MultiVectorIndex.create(tmp_path / "bf", DIM, STORED) as exact:
        index.add([f"d{i}" for i in range(N)], documents)
        exact.add([f"d{i}" for i in range(N)], documents)
        anchored_error = (index.get_vectors([f"d{i}" for i in range(N)]) - documents).norm(dim=-1).mean()
        assert anchored_error < 0.3 * plain_error
        queries = torch.nn.functional.normalize(documents[:20, :3] + 0.3 * torch.randn(20, 3, DIM, generator=generator), dim=-1)
        truth, found = exact.search(queries, k=10), index.search(queries, k=10)
        assert sum(len(set(t.ids) & set(f.ids)) for t, f in zip(truth, found)) / 200 >= 0.9


def test_codes_on_disk_are_rank_major_and_search_equals_maxsim_of_the_reconstruction(pq_index, documents, queries, tmp_path):
    manifest = json.loads((tmp_path / "pq" / "manifest.json").read_text())
    assert manifest["pq"] == {"subquantizers": 4, "full_precision": False, "basis": 0}  # the defaults for 32 x 8
    assert manifest["codebook"]["file"] == "codebook.safetensors"
    segment = tmp_path / "pq" / "segments" / manifest["segments"][0]["name"]
    assert sorted(p.name for p in segment.iterdir()) == ["anchors.bin", "codes.bin", "ids.json", "metadata.json"]
    codebook = ProductCodebook.from_bytes((tmp_path / "pq" / "codebook.safetensors").read_bytes())
    anchors, residuals = anchored_residuals(documents)
    stored_anchors = torch.frombuffer(bytearray((segment / "anchors.bin").read_bytes()), dtype=torch.bfloat16)
    assert torch.equal(stored_anchors.view(200, DIM), anchors[:200])
    raw = torch.frombuffer(bytearray((segment / "codes.bin").read_bytes()), dtype=torch.uint8).view(STORED, 200, 4)
    # each rank's centre is its mean residual over the first add (200 documents), subtracted before coding
    torch.testing.assert_close(codebook.rank_centres, residuals[:200].mean(dim=0))
    by_rank = residuals.transpose(0, 1)  # rank r of every document, then r + 1
    assert torch.equal(raw, codebook.encode(by_rank[:, :200] - codebook.rank_centres.unsqueeze(1)))
    reconstructed = pq_index.get_vectors([f"d{i}" for i in range(N)])
    decoded = codebook.decode(codebook.encode_ranks(by_rank)) + codebook.rank_centres.unsqueeze(1)
    torch.testing.assert_close(reconstructed, anchors.float().unsqueeze(1) + decoded.transpose(0, 1))
    assert pq_index.scored_bytes_per_document() == 2 * DIM + STORED * 4
    assert pq_index.scored_bytes_per_document(2) == 2 * DIM + 2 * 4
    for budget in [(1, 1), (2, 3), (4, 6)]:
        results = pq_index.search(queries, k=5, budget=budget, compute_dtype=torch.float32)
        expected = metaembed.maxsim(queries, reconstructed, *budget).topk(5, dim=1)
        for result, scores, rows in zip(results, expected.values, expected.indices):
            assert result.ids == [f"d{i}" for i in rows.tolist()]
            assert result.scores == pytest.approx(scores.tolist(), abs=1e-4)
        assert results[0].budget == budget


def test_lone_query_tables_and_batched_decoding_give_the_same_ranking(pq_index, queries):
    many = queries.repeat(LOOKUP_TABLE_MAX_QUERY_VECTORS // 4 + 1, 1, 1)  # past the lookup-table limit
    batched = pq_index.search(many, k=5, compute_dtype=torch.float32)
    for i in range(3):
        alone = pq_index.search(queries[i : i + 1], k=5, compute_dtype=torch.float32)[0]
        assert alone.ids == batched[i].ids
        assert alone.scores == pytest.approx(batched[i].scores, abs=1e-4)


def test_pq_recall_against_bf16_and_exact_rescoring(tmp_path, documents, queries):
    ids = [f"d{i}" for i in range(N)]
    with MultiVectorIndex.create(tmp_path / "bf", DIM, STORED) as exact, \
            MultiVectorIndex.create(tmp_path / "pq", DIM, STORED, dtype="pq") as codes_only, \
            MultiVectorIndex.create(tmp_path / "full", DIM, STORED, dtype="pq", full_precision=True) as full:
        for index in (exact, codes_only, full):
            index.add(ids, documents)
        truth = exact.search(queries, k=10)
        approx = codes_only.search(queries, k=10)
        recall = sum(len(set(t.ids) & set(a.ids)) for t, a in zip(truth, approx)) / (10 * len(queries))
        assert recall >= 0.5  # these vectors are not parallel within a document: the anchor helps little
        rescored = full.search(queries, k=10)  # every candidate the codes rank in the top 100, rescored from bf16
        for t, r in zip(truth, rescored):
            assert r.ids == t.ids and r.scores == pytest.approx(t.scores, abs=1e-5)
        unrescored = full.search(queries, k=10, rescore=0)
        assert [r.ids for r in unrescored] == [a.ids for a in approx]
        narrow = full.search(queries, k=3, rescore=3)  # exact scores of the codes' own top 3, re-ordered
        for a, n in zip(approx, narrow):
            assert set(n.ids) <= set(a.ids[:5])  # the codes' top 3 (up to ties at the cut)
        exact_scores = metaembed.maxsim(queries[:1], exact.get_vectors(narrow[0].ids))[0]
        assert narrow[0].scores == pytest.approx(exact_scores.tolist(), abs=0.02)
        assert all(len(r) == 5 for r in full.search(queries, k=5, rescore=2))  # never fewer than k rescored
        cascade = full.cascade_search(queries, k=5, candidates=N)
        assert [c.ids for c in cascade] == [t.ids[:5] for t in truth]
        assert full.get_vectors(["d4"]).shape == (1, STORED, DIM)
        full.verify()
        with pytest.raises(ValueError, match="rescore needs a pq index that keeps full precision"):
            codes_only.search(queries, rescore=50)
        with pytest.raises(ValueError, match="rescore must be an integer >= 0"):
            full.search(queries, rescore=-1)


def test_reopen_add_delete_replace_keep_one_codebook(pq_index, documents, queries, tmp_path):
    before = (tmp_path / "pq" / "codebook.safetensors").read_bytes()
    pq_index.add(["new"], documents[:1] * -1.0)
    pq_index.add(["d5"], documents[6:7])  # replaced: d5 now holds d6's vectors
    pq_index.delete(["d7"])
    assert (tmp_path / "pq" / "codebook.safetensors").read_bytes() == before  # trained once, on the first add
    reopened = MultiVectorIndex.open(tmp_path / "pq")
    assert len(reopened) == N and "d7" not in reopened
    assert torch.equal(reopened.get_vectors(["d5"]), reopened.get_vectors(["d6"]))
    hits = reopened.search(documents[6:7, :4], k=2)[0].ids
    assert set(hits) == {"d5", "d6"}
    reopened.verify()


def test_damaged_codes_or_codebook_are_named(pq_index, queries, tmp_path):
    manifest = json.loads((tmp_path / "pq" / "manifest.json").read_text())
    codes = tmp_path / "pq" / "segments" / manifest["segments"][0]["name"] / "codes.bin"
    data = bytearray(codes.read_bytes())
    data[200 * 4 * 2 + 5] ^= 0xFF  # a byte of rank 2
    codes.write_bytes(bytes(data))
    reopened = MultiVectorIndex.open(tmp_path / "pq")
    reopened.search(queries, k=3, budget=(2, 2))  # ranks 0-1 are intact and checked
    with pytest.raises(CorruptIndexError, match=r"codes\.bin fails its xxh3_128 checksum in part 2"):
        reopened.search(queries, k=3, budget=(2, 3))
    book = tmp_path / "pq" / "codebook.safetensors"
    book.write_bytes(book.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CorruptIndexError, match="codebook.safetensors fails its xxh3_128 checksum"):
        MultiVectorIndex.open(tmp_path / "pq")


def test_a_crash_after_the_codebook_is_written_loses_nothing(tmp_path, documents, monkeypatch):
    index = MultiVectorIndex.create(tmp_path / "pq", DIM, STORED, dtype="pq")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("metaembed.index.writing.write_segment", crash)
    with pytest.raises(OSError, match="disk full"):
        index.add([f"d{i}" for i in range(N)], documents)
    monkeypatch.undo()
    assert "codebook" not in json.loads((tmp_path / "pq" / "manifest.json").read_text())  # never committed
    index.close()
    again = MultiVectorIndex.open(tmp_path / "pq", mode="a")
    assert len(again) == 0
    again.add([f"d{i}" for i in range(N)], documents)  # trains anew, over the uncommitted file
    assert len(MultiVectorIndex.open(tmp_path / "pq")) == N
    again.close()


def test_bad_settings_and_a_first_add_too_small(tmp_path, documents, monkeypatch):
    with pytest.raises(ValueError, match="subquantizers=5 must divide the vector size 32"):
        MultiVectorIndex.create(tmp_path / "a", DIM, STORED, dtype="pq", subquantizers=5)
    with pytest.raises(ValueError, match="apply to dtype='pq' only"):
        MultiVectorIndex.create(tmp_path / "b", DIM, STORED, subquantizers=8)
    with pytest.raises(ValueError, match="apply to dtype='pq' only"):
        MultiVectorIndex.create(tmp_path / "c", DIM, STORED, dtype="int8", full_precision=True)
    with MultiVectorIndex.create(tmp_path / "d", DIM, STORED, dtype="pq") as index:
        with pytest.raises(ValueError, match="needs at least 256 vectors .* got 60"):
            index.add([f"d{i}" for i in range(10)], documents[:10])
        assert len(index) == 0 and not (tmp_path / "d" / "codebook.safetensors").exists()
        with pytest.raises(ValueError, match="has no codebook yet: the writer's first add"):
            index.stage(["x"], documents[:1])
        with pytest.raises(ValueError, match="rescore needs a pq index that keeps full precision"):
            index.search(documents[:1, :2], rescore=5)
    monkeypatch.setattr(codebook_module, "TRAINING_SAMPLE", 300)  # a sample of the first add trains the codebook
    with MultiVectorIndex.create(tmp_path / "e", DIM, STORED, dtype="pq") as index:
        index.add([f"d{i}" for i in range(N)], documents)
        assert len(index) == N


TEXTS = [f"{thing} for {use}" for thing in ("a library", "a daemon", "a tool", "fonts", "a game", "bindings")
         for use in ("images", "sound", "networks", "python", "compilers", "printing", "mail")]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": f"doc{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    return path


def test_index_command_builds_a_pq_index_and_search_reads_it(tiny_bert_path, corpus, tmp_path):
    model_path = tmp_path / "model"
    model = MetaEmbed.from_backbone(tiny_bert_path, num_query_meta_tokens=4, num_document_meta_tokens=8)
    model.save_pretrained(str(model_path))
    out = tmp_path / "ix"
    runner = CliRunner()
    result = runner.invoke(app, ["index", "--model", str(model_path), "--corpus", str(corpus), "--out", str(out),
                                 "--dtype", "pq", "--subquantizers", "8", "--full-precision", "--chunk-size", "40"])
    assert result.exit_code == 0, result.output
    index = MultiVectorIndex.open(out)
    assert index.dtype == "pq" and index.manifest["pq"] == {"subquantizers": 8, "full_precision": True, "basis": 1,
                                                           "nested_basis": True}  # the default for its shape
    # two chunks of 40, merged into one segment when the build finishes (codes copied as stored)
    assert len(index) == len(TEXTS) and [seg["count"] for seg in index.manifest["segments"]] == [len(TEXTS)]
    hits = runner.invoke(app, ["search", "--index", str(out), "--query", "fonts for printing", "--json", "--top-k", "3"])
    assert hits.exit_code == 0, hits.output
    payload = json.loads(hits.stdout.strip().splitlines()[-1])
    query = model.encode_query(["fonts for printing"])
    direct = index.search(query, k=3)[0]
    assert [hit["id"] for hit in payload["hits"]] == direct.ids
    # the hits' scores are exact: rescored from the kept bf16 copies, not the codes
    documents = model.encode_document([TEXTS[int(i[3:])] for i in direct.ids]).bfloat16().float()
    exact = metaembed.maxsim(query, documents)[0]
    assert [hit["score"] for hit in payload["hits"]] == pytest.approx(exact.tolist(), abs=0.02)
    mixed = runner.invoke(app, ["index", "--model", str(model_path), "--corpus", str(corpus), "--out", str(tmp_path / "x"),
                                "--subquantizers", "8"])
    assert mixed.exit_code != 0 and "apply to --dtype pq only" in " ".join(mixed.output.split())
    with pytest.raises(Exception, match="was built with"):
        build_index(str(model_path), corpus, out, dtype="pq", subquantizers=16, progress=False)
    with pytest.raises(Exception, match="was built with"):
        build_index(str(model_path), corpus, out, dtype="pq", subquantizers=8, full_precision=True, basis=2, progress=False)
    no_basis = runner.invoke(app, ["index", "--model", str(model_path), "--corpus", str(corpus), "--out",
                                   str(tmp_path / "y"), "--basis", "2"])
    assert no_basis.exit_code != 0 and "apply to --dtype pq only" in " ".join(no_basis.output.split())
    # an index written before directions existed (no "basis" recorded) resumes with none when none is asked for
    old = tmp_path / "old"
    build_index(str(model_path), corpus, old, dtype="pq", subquantizers=8, basis=0, progress=False)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["pq"] = {"subquantizers": 8, "full_precision": False}
    manifest["checksum"] = manifest_checksum(manifest)
    (old / "manifest.json").write_text(json.dumps(manifest))
    resumed = build_index(str(model_path), corpus, old, dtype="pq", subquantizers=8, progress=False)
    assert resumed.encoded == 0 and MultiVectorIndex.open(old).manifest["pq"] == manifest["pq"]


def test_enough_vectors_learn_a_rotation_that_lowers_the_error():
    """From MIN_ROTATION_VECTORS on, an OPQ rotation is learnt: orthonormal, and on vectors whose variance sits in
    a few dimensions it codes them better than the same bytes without it; scoring still agrees with decoding."""
    generator = torch.Generator().manual_seed(7)
    scales = torch.tensor([4.0] * 4 + [0.2] * (DIM - 4))
    vectors = torch.randn(codebook_module.MIN_ROTATION_VECTORS, DIM, generator=generator) * scales
    rotated = ProductCodebook.train(vectors, 4)
    assert not torch.equal(rotated.rotation, torch.eye(DIM))
    torch.testing.assert_close(rotated.rotation @ rotated.rotation.T, torch.eye(DIM), atol=1e-4, rtol=0)
    plain = ProductCodebook.train(vectors[: codebook_module.MIN_ROTATION_VECTORS - 1], 4)
    assert torch.equal(plain.rotation, torch.eye(DIM))
    error = lambda book: (book.decode(book.encode(vectors)) - vectors).norm(dim=-1).mean()  # noqa: E731
    assert error(rotated) < error(plain)
    queries = vectors[:3] / vectors[:3].norm(dim=-1, keepdim=True)
    torch.testing.assert_close(rotated.scores(rotated.prepare(queries, torch.float32), rotated.encode(vectors[:50])),
                               queries @ rotated.decode(rotated.encode(vectors[:50])).T, atol=1e-4, rtol=1e-4)


def test_rotation_warmed_up_on_a_subsample_codes_as_well_as_faiss_default_training(monkeypatch):
    """Over ROTATION_WARM_UP_VECTORS training vectors the rotation is learnt on a subsample, then refined on all of
    them: orthonormal, changed by the refinement, and held-out vectors code with the error of faiss' default OPQ
    (50 iterations on the whole sample) within 5%."""
    import faiss
    import numpy as np

    generator = torch.Generator().manual_seed(3)
    mixing = torch.linalg.qr(torch.randn(DIM, DIM, generator=generator)).Q
    scales = torch.linspace(3.0, 0.1, DIM)
    vectors = (torch.randn(4000 + 3000, DIM, generator=generator) * scales) @ mixing  # correlated dimensions
    monkeypatch.setattr(codebook_module, "ROTATION_WARM_UP_VECTORS", 1000)
    sample, held_out = vectors[:4000].numpy(), vectors[4000:].numpy()

    def error(rotation: np.ndarray) -> float:
        rotated = np.ascontiguousarray(sample @ rotation.T)
        quantizer = faiss.ProductQuantizer(DIM, 4, 8)
        quantizer.train(rotated)
        test = np.ascontiguousarray(held_out @ rotation.T)
        return float(((quantizer.decode(quantizer.compute_codes(test)) - test) ** 2).sum() / (test ** 2).sum())

    staged = codebook_module.learn_rotation(sample, 4)
    np.testing.assert_allclose(staged @ staged.T, np.eye(DIM), atol=1e-4)
    monkeypatch.setattr(codebook_module, "ROTATION_ITERATIONS", (codebook_module.ROTATION_ITERATIONS[0], 0))
    assert not np.allclose(staged, codebook_module.learn_rotation(sample, 4), atol=1e-3)  # the refinement ran
    default = faiss.OPQMatrix(DIM, 4)
    default.train(sample)
    reference = error(faiss.vector_to_array(default.A).reshape(DIM, DIM))
    assert error(staged) <= 1.05 * reference and error(staged) < 0.9 * error(np.eye(DIM, dtype=np.float32))


def test_rank_centres_code_what_ranks_share_and_old_codebooks_still_score():
    """Vector r of every document sharing an offset (each meta token's own direction): centring each rank codes the
    rest with less error for the same bytes; scores with a rank's centre equal the decoded vectors' (lookup tables
    and decoded blocks); a codebook saved without centres (indexes written before them) loads and scores as before."""
    generator = torch.Generator().manual_seed(11)
    offsets = torch.randn(STORED, DIM, generator=generator)
    residuals = offsets + 0.3 * torch.randn(N, STORED, DIM, generator=generator)  # (n, R, D)
    centred = ProductCodebook.train(residuals, 4, by_rank=True)
    plain = ProductCodebook.train(residuals, 4)
    assert plain.rank_centres is None and centred.rank_centres.shape == (STORED, DIM)
    by_rank = residuals.transpose(0, 1)
    error = lambda book: (book.decode_ranks(book.encode_ranks(by_rank)) - by_rank).norm(dim=-1).mean()  # noqa: E731
    assert error(centred) < 0.8 * error(plain)
    codes = centred.encode_ranks(by_rank)
    torch.testing.assert_close(centred.decode_ranks(codes[2:4], first_rank=2), centred.decode_ranks(codes)[2:4])
    for count in (1, LOOKUP_TABLE_MAX_QUERY_VECTORS + 1):  # lookup tables, then decoded blocks
        query_vectors = torch.randn(count, DIM, generator=generator)
        prepared = centred.prepare(query_vectors, torch.float32)
        for rank in (0, STORED - 1):
            torch.testing.assert_close(centred.scores(prepared, codes[rank], rank).float(),
                                       query_vectors @ centred.decode_ranks(codes[rank : rank + 1], rank)[0].T,
                                       atol=1e-4, rtol=1e-4)
    old = ProductCodebook.from_bytes(plain.to_bytes())
    assert old.rank_centres is None and torch.equal(old.centres(STORED), torch.zeros(STORED, DIM))
    torch.testing.assert_close(old.decode_ranks(old.encode_ranks(by_rank)), old.decode(old.encode(by_rank)))
    again = ProductCodebook.from_bytes(centred.to_bytes())
    assert torch.equal(again.rank_centres, centred.rank_centres) and torch.equal(again.encode_ranks(by_rank), codes)
    with pytest.raises(ValueError, match="centres for 6 ranks, not 7"):
        centred.centres(STORED + 1)
    with pytest.raises(ValueError, match="by_rank needs"):
        ProductCodebook.train(residuals[:, 0], 4, by_rank=True)
