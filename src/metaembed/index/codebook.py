"""Product-quantized storage (``dtype="pq"``): each document keeps one anchor vector (the mean of its vectors, in
bf16) and each of its vectors becomes M one-byte codes of its *residual* from that anchor; MaxSim is scored from
the anchor and the codes without decompressing the corpus.

Why anchored: a MetaEmbed document's vectors are nearly parallel (cosine ~0.99 to their mean after MMR training;
0.88 for a model whose budget pays more), so the residuals are several times shorter than the vectors and their
quantization error is that much smaller. Vector number r of every document also shares a direction of its own
(its meta token's): the codebook keeps each rank's mean residual over the first add (*rank centres*, R x D) and
codes the residual less its rank's centre (on the 2026-11-28 quickstart model: 56% less residual energy, but
recall@10 only +0.003 to +0.009 at 48 bytes). On the
quickstart model's Debian vectors (recall@10 against exact bf16 over the paper's budgets): plain PQ of the
vectors, 96 bytes, 0.84-0.86 (``search_compressed_plain_pq.md``); anchored residuals, 64 bytes, 0.945-0.968;
with the rotation below, 48 bytes, 0.968-0.980 and nDCG@10 within 0.2 of bf16 (``search_compressed.md`` of 2026-11-27;
on the 2026-11-28 model, whose budget pays more, 0.87-0.92, and 0.95-0.97 once each document's top directions are
taken out first: :mod:`metaembed.index.document_basis`). Since the anchor
is the same for every vector of a document, MaxSim is ``q . anchor + max_r (q . centre_r + q . code_r)`` summed
over query vectors: the anchor costs one dot product per query vector and document, at any budget, and a rank's
centre one per query vector and search.

The codebook is an OPQ rotation (faiss' ``OPQMatrix``: an orthonormal D x D matrix that spreads the residuals'
variance evenly over the sub-spaces) followed by M sub-space codebooks of D/M dimensions, 256 centroids each
(faiss' ``ProductQuantizer``), trained on a sample of the residuals of the index's first ``add``; every later add
is encoded with it. The rotation halved the reconstruction error of 48-byte codes on the quickstart's vectors, and
still does on what the directions leave (relative error 0.58 unrotated, 0.30 after faiss' default 50 iterations from a
random rotation, 0.32 after 20; started from PCA's eigenvalue allocation instead, 0.50-0.59 after 5-20: measured
2026-11-29 on 2,000 documents' residuals, 1,000 others held out); it is learnt on a subsample first and refined on the
whole sample, in half the time of faiss' default for the same error (:data:`ROTATION_ITERATIONS`). Scoring reads
only the anchors and codes, block by block:

- few query vectors (a lone query, up to ``LOOKUP_TABLE_MAX_QUERY_VECTORS``): one lookup table of every query vector
  against every centroid, then a summed gather per document vector (``embedding_bag``), M table rows per vector;
- many query vectors (a batch): the block's codes are decoded into a cache-sized bf16 block and multiplied, which the
  CPU's matrix units do far faster than M gathers per (query vector, document vector) pair.

Both give the dot product of a query vector with the decoded residual, so the choice is speed only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metaembed.index.document_basis import DocumentBases

BITS = 8
CENTROIDS = 1 << BITS
TRAINING_SAMPLE = 65_536
"""Vectors the codebook is trained on at most (a seeded random sample of the first add)."""
MIN_TRAINING_VECTORS = CENTROIDS
"""k-means needs at least as many vectors as centroids per sub-space."""
MIN_ROTATION_VECTORS = 40 * CENTROIDS
"""The OPQ rotation is learnt from at least this many vectors (faiss' advice for k-means: ~40 per centroid); a first
add smaller than that gets no rotation (faiss' OPQ training aborted or stalled on a few hundred vectors)."""
ENCODE_CHUNK_VECTORS = 8192
"""Vectors :func:`encode_documents` encodes at a time (10,000 documents of 64 x 384 with 5 directions, 2 threads of
an AMX CPU: 6.3-6.6 s in chunks of 128 documents, 7.0-7.5 s in chunks of 512-2,048, 8.1-9.7 s whole)."""
ROTATION_WARM_UP_VECTORS = 16_384
"""The OPQ rotation is first learnt on this many of the training sample's vectors, then refined on all of them."""
ROTATION_ITERATIONS = (40, 15)
"""OPQ iterations on the warm-up subsample, then on the whole sample. faiss' default, 50 on 65,536 vectors, took
188-208 s on 2 threads of an AMX CPU for 48 sub-spaces of 384 (a third of a million-document build); these took
0.47x that for the same error (2026-11-29, residuals of a 1M-benchmark variant of the quickstart's vectors, 20,000
held out: relative error 0.1780 against 0.1776; 40 + 10: 0.1797, and 0.1442 against 0.1421 on another variant;
50 on 16,384: 0.1641 against 0.1421; 20 on all 65,536: 0.1504). In the index (10,000 real documents, 1,000 queries,
paired against faiss' default): recall@10 against exact bf16 -0.0013 to +0.0013 at (1,1)-(8,16), within noise, but
-0.0039 [-0.0070, -0.0008] at (16,64) (0.9503 against 0.9542); nDCG@10 within noise at every budget. That was one
training sample: over three more (the sample drawn with seeds 1-3), (16,64) recall 0.9526 / 0.9534 / 0.9565 staged
against 0.9532 / 0.9530 / 0.9523 (-0.0006, +0.0004, +0.0042 [+0.0012, +0.0073]), mean 0.9542 against 0.9528;
every other budget within 0.002 on average; build 86-97 against 172-182 s."""
LOOKUP_TABLE_MAX_QUERY_VECTORS = 32
"""Up to this many query vectors per search, scores come from lookup tables; beyond it, from decoded blocks
(measured on a 2-core AVX-512/AMX CPU, 100k codes of 96 bytes: tables 16-35 ms for 2-32 query vectors against
30-36 ms decoded; 80 ms against 38 ms at 64)."""


def default_subquantizers(dim: int) -> int:
    """M for a vector of ``dim``: one byte per 8 dimensions (48 for 384: with the anchor and the default 5 directions,
    :mod:`metaembed.index.document_basis`, a 64-vector document takes 1/8 of bf16's bytes; faiss encodes 8-dimensional sub-vectors ~10x faster than 6-dimensional ones), or the
    largest divisor of dim below that."""
    for m in range(max(1, dim // 8), 0, -1):
        if dim % m == 0:
            return m
    return 1


def check_subquantizers(dim: int, subquantizers: Any) -> int:
    """``subquantizers`` as a valid M for ``dim`` (a positive divisor), or ValueError naming both."""
    if isinstance(subquantizers, bool) or not isinstance(subquantizers, int) or subquantizers < 1:
        raise ValueError(f"subquantizers must be a positive integer, got {subquantizers!r}")
    if dim % subquantizers:
        raise ValueError(f"subquantizers={subquantizers} must divide the vector size {dim} (each code covers "
                         f"dim / subquantizers dimensions)")
    return subquantizers


def anchored_residuals(vectors: Tensor) -> tuple[Tensor, Tensor]:
    """Documents (n, R, D) -> their anchors (n, D) bf16 (the mean of each document's vectors) and the residuals
    (n, R, D) fp32 of every vector from its stored (bf16) anchor: what the codes encode."""
    anchors = vectors.float().mean(dim=1).to(torch.bfloat16)
    return anchors, vectors.float() - anchors.float().unsqueeze(1)


@dataclass
class EncodedDocuments:
    """What a pq segment stores of its documents (:func:`encode_documents`)."""

    anchors: Tensor
    """(n, D) bf16: each document's mean vector."""
    codes: Tensor
    """(R, n, M) uint8, rank-major: each vector's residual less its rank's centre and its document's low-rank part."""
    bases: DocumentBases | None
    """The documents' directions (None: the index keeps none)."""


def encode_documents(vectors: Tensor, codebook: "ProductCodebook", basis: int) -> EncodedDocuments:
    """Documents (n, R, D) -> their anchors, codes and (``basis`` > 0) top ``basis`` directions each, as a pq segment
    stores them. Encoded :data:`ENCODE_CHUNK_VECTORS` vectors at a time, in place where it can: every step then works
    in the CPU's caches, with no copy of the whole add per step, and each document is encoded as it would be alone."""
    count, ranks, dim = vectors.shape
    centres = codebook.centres(ranks)
    anchors = torch.empty(count, dim, dtype=torch.bfloat16)
    codes = torch.empty(ranks, count, codebook.subquantizers, dtype=torch.uint8)
    bases = []
    step = max(1, ENCODE_CHUNK_VECTORS // ranks)
    for start in range(0, max(count, 1), step):
        chunk_anchors, residuals = anchored_residuals(vectors[start : start + step])
        anchors[start : start + step] = chunk_anchors
        residuals.sub_(centres)
        if basis:
            bases.append(DocumentBases.fit(residuals.transpose(0, 1), basis))
            bases[-1].subtract_from(residuals)
        codes[:, start : start + step] = codebook.encode(residuals).transpose(0, 1)
    return EncodedDocuments(anchors, codes, DocumentBases.concatenate(bases) if basis else None)


def learn_rotation(sample: np.ndarray, subquantizers: int) -> np.ndarray:
    """The (D, D) OPQ rotation (faiss' ``OPQMatrix``) for ``sample`` (n, D) fp32: learnt on a subsample of
    :data:`ROTATION_WARM_UP_VECTORS` first, then refined on all of ``sample`` from there
    (:data:`ROTATION_ITERATIONS`)."""
    import faiss

    dim = sample.shape[1]
    warm_up_iterations, refine_iterations = ROTATION_ITERATIONS
    opq = faiss.OPQMatrix(dim, subquantizers)
    opq.niter, opq.max_train_points = warm_up_iterations, ROTATION_WARM_UP_VECTORS  # faiss subsamples, seeded
    opq.train(sample)
    if len(sample) > ROTATION_WARM_UP_VECTORS:
        warm = faiss.vector_to_array(opq.A)
        opq = faiss.OPQMatrix(dim, subquantizers)
        faiss.copy_array_to_vector(warm, opq.A)  # a set A is where faiss' training starts from
        opq.niter, opq.niter_pq_0 = refine_iterations, opq.niter_pq  # its sub-codebooks restart: few k-means rounds
        opq.train(sample)
    return faiss.vector_to_array(opq.A).reshape(dim, dim)


@dataclass
class PreparedQueries:
    """Query vectors made ready to score anchors and codes: the vectors, and a lookup table when they are few."""

    vectors: Tensor
    """(count, D) in the compute dtype: anchor scores."""
    rotated: Tensor
    """(count, D) the vectors in the codebook's rotated space, compute dtype (decoded-block scoring)."""
    table: Tensor | None = None
    """(M * 256, max(2, count)) fp32: every query vector's dot product with every centroid (lookup-table scoring)."""
    centre_scores: Tensor | None = None
    """(count, R) fp32: every query vector's dot product with every rank's centre (None: the codebook has none)."""

    @property
    def count(self) -> int:
        """Query vectors (n_q * r_q)."""
        return len(self.vectors)


class ProductCodebook:
    """A rotation, then M sub-space codebooks of 256 centroids: encodes vectors to (…, M) uint8 codes and scores
    queries on codes. Codes describe rotated vectors; queries are rotated the same way (a rotation keeps dot
    products), and :meth:`decode` rotates back."""

    def __init__(self, centroids: Tensor, rotation: Tensor | None = None, rank_centres: Tensor | None = None) -> None:
        """``centroids``: (M, 256, D/M) fp32; ``rotation``: (D, D) orthonormal, rotated = x @ rotation.T (None:
        identity); ``rank_centres``: (R, D), what :meth:`encode_ranks` subtracts from rank r (None: nothing, as in
        indexes written before centres); as :meth:`train` makes them."""
        if centroids.ndim != 3 or centroids.shape[1] != CENTROIDS:
            raise ValueError(f"centroids must be (M, {CENTROIDS}, D/M), got {tuple(centroids.shape)}")
        self.centroids = centroids.float().contiguous()
        self.subquantizers, _, self.sub_dim = self.centroids.shape
        self.dim = self.subquantizers * self.sub_dim
        if rotation is None:
            rotation = torch.eye(self.dim)
        if rotation.shape != (self.dim, self.dim):
            raise ValueError(f"rotation must be ({self.dim}, {self.dim}), got {tuple(rotation.shape)}")
        self.rotation = rotation.float().contiguous()
        if rank_centres is not None and (rank_centres.ndim != 2 or rank_centres.shape[1] != self.dim):
            raise ValueError(f"rank_centres must be (R, {self.dim}), got {tuple(rank_centres.shape)}")
        self.rank_centres = None if rank_centres is None else rank_centres.float().contiguous()
        self._flat = self.centroids.reshape(-1, self.sub_dim)  # (M * 256, D/M): row m * 256 + c
        self._flat_by_dtype: dict[torch.dtype, Tensor] = {torch.float32: self._flat}
        self._row_offsets = torch.arange(self.subquantizers, dtype=torch.int32) * CENTROIDS
        self._quantizer: Any = None

    @classmethod
    def train(cls, vectors: Tensor, subquantizers: int, seed: int = 0, by_rank: bool = False,
              basis: int = 0) -> "ProductCodebook":
        """k-means per sub-space (faiss' ProductQuantizer) on at most ``TRAINING_SAMPLE`` of ``vectors`` (…, D)
        (the index passes residuals, :func:`anchored_residuals`). ``by_rank``: ``vectors`` are (n, R, D) documents,
        and each rank's mean over them becomes its centre, subtracted before coding (:meth:`encode_ranks`);
        ``basis`` > 0 (with ``by_rank``): the codes will describe what is left after each document's top ``basis``
        directions (:mod:`metaembed.index.document_basis`), so the centroids are trained on that."""
        import faiss

        centres = None
        if by_rank:
            if vectors.ndim != 3:
                raise ValueError(f"by_rank needs (documents, R, D) vectors, got {tuple(vectors.shape)}")
            centres = vectors.float().mean(dim=0)
            vectors = vectors.float() - centres
            if basis:
                DocumentBases.fit(vectors.transpose(0, 1), basis).subtract_from(vectors)
        elif basis:
            raise ValueError("basis needs by_rank (documents' vectors, (n, R, D))")
        flat = vectors.reshape(-1, vectors.shape[-1]).float()
        if len(flat) < MIN_TRAINING_VECTORS:
            raise ValueError(f"a pq index trains its codebook on its first add, which needs at least "
                             f"{MIN_TRAINING_VECTORS} vectors (documents x stored vectors); got {len(flat)}: add more "
                             "documents at once, or store bfloat16 or int8")
        if len(flat) > TRAINING_SAMPLE:
            generator = torch.Generator().manual_seed(seed)
            flat = flat[torch.randperm(len(flat), generator=generator)[:TRAINING_SAMPLE]]
        dim = flat.shape[1]
        check_subquantizers(dim, subquantizers)
        sample = np.ascontiguousarray(flat.numpy())
        rotation = np.eye(dim, dtype=np.float32)
        if len(sample) >= MIN_ROTATION_VECTORS:
            rotation = learn_rotation(sample, subquantizers)
        quantizer = faiss.ProductQuantizer(dim, subquantizers, BITS)
        quantizer.cp.seed = seed
        quantizer.cp.min_points_per_centroid = 1  # a small first add is enough (checked above); no faiss warning
        quantizer.train(np.ascontiguousarray(sample @ rotation.T))
        centroids = faiss.vector_to_array(quantizer.centroids).reshape(subquantizers, CENTROIDS, dim // subquantizers)
        return cls(torch.from_numpy(centroids.copy()), torch.from_numpy(rotation.copy()), centres)

    # ------------------------------------------------------------------ storage
    def to_bytes(self) -> bytes:
        """The codebook as safetensors bytes (what the index stores in ``codebook-*.safetensors``)."""
        from safetensors.torch import save

        tensors = {"centroids": self.centroids, "rotation": self.rotation}
        if self.rank_centres is not None:
            tensors["rank_centres"] = self.rank_centres
        return save(tensors)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ProductCodebook":
        from safetensors.torch import load

        tensors = load(data)
        return cls(tensors["centroids"], tensors.get("rotation"), tensors.get("rank_centres"))

    # ------------------------------------------------------------------ coding
    def encode(self, vectors: Tensor) -> Tensor:
        """(…, D) float vectors -> (…, M) uint8 codes: the nearest centroid in each sub-space of the rotated
        vectors (faiss)."""
        shape = vectors.shape[:-1]
        flat = np.ascontiguousarray((vectors.detach().reshape(-1, self.dim).float() @ self.rotation.T).numpy())
        codes = self._faiss_quantizer().compute_codes(flat) if len(flat) else np.zeros((0, self.subquantizers), np.uint8)
        return torch.from_numpy(codes).view(*shape, self.subquantizers)

    def encode_ranks(self, residuals: Tensor) -> Tensor:
        """Rank-major residuals (R, n, D) -> (R, n, M) codes of each rank's residuals less its centre."""
        return self.encode(residuals.float() - self.centres(residuals.shape[0]).unsqueeze(1))

    def decode_ranks(self, codes: Tensor, first_rank: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
        """Rank-major codes (R', n, M) of ranks ``first_rank ..`` -> (R', n, D) residuals (their centres added back)."""
        centres = self.centres(first_rank + codes.shape[0])[first_rank:]
        return (self.decode(codes) + centres.unsqueeze(1)).to(dtype)

    def centres(self, ranks: int) -> Tensor:
        """(ranks, D) the centres of ranks 0 .. ranks - 1 (zeros where the codebook has none)."""
        if self.rank_centres is None:
            return torch.zeros(ranks, self.dim)
        if ranks > len(self.rank_centres):
            raise ValueError(f"the codebook has centres for {len(self.rank_centres)} ranks, not {ranks}")
        return self.rank_centres[:ranks]

    def _faiss_quantizer(self) -> Any:
        """faiss' ProductQuantizer holding these centroids (made on first use)."""
        if self._quantizer is None:
            import faiss

            quantizer = faiss.ProductQuantizer(self.dim, self.subquantizers, BITS)
            faiss.copy_array_to_vector(self.centroids.numpy().ravel(), quantizer.centroids)
            quantizer.sync_transposed_centroids()  # faiss' faster nearest-centroid search (~15% less to encode)
            self._quantizer = quantizer
        return self._quantizer

    def decode(self, codes: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """(…, M) uint8 codes -> (…, D) reconstructed vectors in ``dtype``, rotated back."""
        return (self.decode_rotated(codes) @ self.rotation).to(dtype)

    def decode_rotated(self, codes: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """(…, M) uint8 codes -> (…, D) reconstructions in the rotated space (what scoring multiplies)."""
        if dtype not in self._flat_by_dtype:
            self._flat_by_dtype[dtype] = self._flat.to(dtype)
        shape = codes.shape[:-1]
        rows = codes.reshape(-1, self.subquantizers).to(torch.int32) + self._row_offsets
        return torch.nn.functional.embedding(rows, self._flat_by_dtype[dtype]).view(*shape, self.dim)

    # ------------------------------------------------------------------ scoring
    def prepare(self, query_vectors: Tensor, compute_dtype: torch.dtype) -> PreparedQueries:
        """Query vectors (n, D) ready for :meth:`scores`; made once per search, used for every block."""
        count = len(query_vectors)
        vectors = query_vectors.to(compute_dtype).contiguous()
        rotated = query_vectors.float() @ self.rotation.T
        centre_scores = None if self.rank_centres is None else query_vectors.float() @ self.rank_centres.T
        if count > LOOKUP_TABLE_MAX_QUERY_VECTORS:
            return PreparedQueries(vectors, rotated.to(compute_dtype).contiguous(), centre_scores=centre_scores)
        sub = rotated.reshape(count, self.subquantizers, self.sub_dim)
        table = torch.einsum("qmd,mcd->mcq", sub, self.centroids).reshape(-1, count)
        if count == 1:  # embedding_bag over one-column rows is slow: a second, ignored column
            table = torch.cat([table, torch.zeros_like(table)], dim=1)
        return PreparedQueries(vectors, rotated, table=table.contiguous(), centre_scores=centre_scores)

    def scores(self, prepared: PreparedQueries, codes: Tensor, rank: int | None = None,
               offsets: Tensor | None = None) -> Tensor:
        """Dot products of prepared query vectors with the decoded ``codes`` (n, M), plus rank ``rank``'s centre
        when given (codes from :meth:`encode_ranks`): (count, n) fp32 for lookup tables, compute dtype for decoded
        blocks; ``offsets`` (n, D), rotated, decoded blocks only: added to the decoded residuals first."""
        if prepared.table is None:
            decoded = self.decode_rotated(codes, prepared.rotated.dtype)
            scores = prepared.rotated @ (decoded if offsets is None else decoded.add_(offsets)).T
        else:
            rows = codes.to(torch.int32) + self._row_offsets
            scores = torch.nn.functional.embedding_bag(rows, prepared.table, mode="sum")[:, : prepared.count].T
        if rank is None or prepared.centre_scores is None:
            return scores
        return scores.add_(prepared.centre_scores[:, rank : rank + 1].to(scores.dtype))

