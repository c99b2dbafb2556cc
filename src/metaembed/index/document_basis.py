"""Per-document bases for pq storage: each document's residuals (its vectors less its anchor and each rank's centre)
are largely a low-rank matrix, so a few directions per document, with one coefficient per vector and direction,
carry most of them before the product quantizer codes what is left.

On the quickstart model's Debian vectors (2026-11-28) the top direction of a document's 64 centred residuals holds
44% of their energy, 4 hold 69% (a global PCA: 24% and 50%). With 5 directions (int8, 5 x 452 bytes a document at 64
vectors of 384) before 48-byte codes, the codes' error fell from 0.17 to 0.03 of the residual energy, and in the
index recall@10 against exact bf16 rose from 0.881-0.923 to 0.951-0.959 over the paper's budgets at 6,100 bytes a
document, 1/8 of bf16 (``benchmarks/results/search_compressed.md``, 1,000 queries); 96-byte codes without
directions reach only 0.930-0.957 at 6,912 bytes.

Stored per document: ``basis`` (k, D) int8 directions and ``scales`` (k,) fp32, and per vector ``coefficients``
(k,) int8, rank-major (R, n, k) so a budget reads a prefix. Vector r's low-rank part is
``sum_j coefficients[r, j] * scales[j] * basis[j]``. Scoring never rebuilds it: a block's query vectors are
multiplied with its documents' directions once (:func:`scaled_products`, ``k`` dot products per query vector and
document, at any budget), and each rank adds ``k`` products weighted by its coefficients (:func:`add_low_rank`);
decoded blocks over many query vectors instead add each rank's low-rank parts, from directions rotated once per block,
to its decoded residuals (:class:`BlockDirections`).

The directions are nested by rank, as MetaEmbed's vectors are: vector r < k lies in the first r + 1 of them, so a
search at r_c < k reads only the first r_c (10,000 documents at (1,1): a lone query in 0.47x the time of reading all
5, the same results; ``benchmarks/results/search_directions.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metaembed.index.int8 import symmetric_int8

MAX_DEFAULT_BASIS = 5
"""Directions per document by default at most (5 met recall@10 >= 0.95 at <= 1/8 of bf16's bytes; see above)."""
SUBSPACE_ITERATIONS = 4
"""Power iterations finding each document's top directions from its (R x R) Gram matrix: ~5x faster than an exact
eigen-decomposition of it (a million documents: ~3 against ~14 minutes on one core) and the directions need not be
exact (any basis helps; the coefficients are fitted to the one stored)."""


def default_basis(dim: int, vectors: int, subquantizers: int) -> int:
    """Directions per document for a pq index of ``vectors`` vectors of ``dim`` with ``subquantizers`` code bytes: as
    many as cost at most 3/4 of the document's code bytes (each takes D + R + 4 bytes), at most
    :data:`MAX_DEFAULT_BASIS`, and fewer than ``vectors`` (5 at 64 vectors of 384 with 48-byte codes; 0 at 8)."""
    affordable = (3 * vectors * subquantizers) // (4 * (dim + vectors + 4))
    return max(0, min(MAX_DEFAULT_BASIS, affordable, vectors - 1))


def check_basis(basis: object, vectors: int) -> int:
    """``basis`` as a valid direction count for documents of ``vectors`` vectors, or ValueError naming both."""
    if isinstance(basis, bool) or not isinstance(basis, int) or not 0 <= basis < max(1, vectors):
        raise ValueError(f"basis must be an integer from 0 to max_document_vectors - 1 = {max(0, vectors - 1)} "
                         f"(directions per document), got {basis!r}")
    return basis


@dataclass
class DocumentBases:
    """The low-rank part of n documents' residuals: ``basis`` (n, k, D) int8, ``scales`` (n, k) fp32 and rank-major
    ``coefficients`` (R, n, k) int8 (the three files a segment stores)."""

    basis: Tensor
    scales: Tensor
    coefficients: Tensor

    @classmethod
    def fit(cls, residuals: Tensor, k: int) -> "DocumentBases":
        """The top ``k`` directions of each document's rank-major residuals (R, n, D), *nested* by rank (vector r < k
        lies in the first r + 1 of them, so a budget of r_c vectors needs only the first min(r_c, k)), quantized, and
        every vector's least-squares coefficients on the quantized directions (what :func:`low_rank` rebuilds; for
        r < k on the first r + 1 only, the others exactly 0)."""
        ranks, count, dim = residuals.shape
        documents = residuals.float().transpose(0, 1)  # (n, R, D), a view
        gram = documents @ documents.transpose(1, 2)  # (n, R, R)
        directions = gram[:, :, :k].clone()  # start from the first k vectors' products: deterministic
        for _ in range(SUBSPACE_ITERATIONS):
            directions = torch.linalg.qr(gram @ directions).Q  # (n, R, k)
        basis = directions.transpose(1, 2) @ documents  # (n, k, D): the directions in vector space
        basis = basis / basis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        # nest them: the first k vectors' parts in the span are A B (A: (k, k) their coordinates); with A^T = Q R,
        # A B = R^T (Q^T B) and R^T is lower triangular, so in the rotated directions Q^T B vector r needs the first r + 1
        leading = documents[:, :k] @ basis.transpose(1, 2)  # (n, k vectors, k directions)
        basis = torch.linalg.qr(leading.transpose(1, 2)).Q.transpose(1, 2) @ basis
        basis = basis / basis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        basis_codes, basis_scales = symmetric_int8(basis, dim=-1)  # (n, k, D), (n, k, 1)
        quantized = basis_codes.float() * basis_scales
        # least squares on the stored (rounded, so not quite orthonormal) directions: X Q^T (Q Q^T + eps I)^-1
        overlaps = quantized @ quantized.transpose(1, 2) + 1e-6 * torch.eye(k)
        products = quantized @ documents.transpose(1, 2)  # (n, k, R)
        coefficients = torch.linalg.solve(overlaps, products).transpose(1, 2).contiguous()  # (n, R, k)
        for rank in range(min(k, ranks) - 1):  # vector r < k on the first r + 1 directions only
            coefficients[:, rank, rank + 1 :] = 0
            coefficients[:, rank, : rank + 1] = torch.linalg.solve(
                overlaps[:, : rank + 1, : rank + 1], products[:, : rank + 1, rank])
        coefficient_codes, coefficient_scales = symmetric_int8(coefficients, dim=1)  # scales (n, 1, k)
        scales = basis_scales.squeeze(-1) * coefficient_scales.squeeze(1)
        return cls(basis_codes, scales.contiguous(), coefficient_codes.transpose(0, 1).contiguous())

    def low_rank(self) -> Tensor:
        """(R, n, D) fp32: each vector's part in its document's directions."""
        return low_rank(self.basis, self.scales, self.coefficients)

    def subtract_from(self, documents: Tensor) -> Tensor:
        """``documents`` (n, R, D) fp32 less each vector's low-rank part, in place (no (R, n, D) tensor made: on
        10,000 documents of 64 x 384 ~5x faster than subtracting :meth:`low_rank`)."""
        weights = self.coefficients.transpose(0, 1).float() * self.scales.unsqueeze(1)  # (n, R, k)
        return documents.baddbmm_(weights, self.basis.float(), alpha=-1)

    @classmethod
    def concatenate(cls, parts: "list[DocumentBases]") -> "DocumentBases":
        """The bases of consecutive groups of documents as one (documents in order)."""
        return cls(torch.cat([part.basis for part in parts]), torch.cat([part.scales for part in parts]),
                   torch.cat([part.coefficients for part in parts], dim=1))


def low_rank(basis: Tensor, scales: Tensor, coefficients: Tensor) -> Tensor:
    """Documents' directions (m, k, D) int8 with ``scales`` (m, k) and coefficients (R', m, k) int8 -> (R', m, D) fp32."""
    weights = coefficients.float() * scales.float()  # (R', m, k)
    return torch.einsum("rmk,mkd->rmd", weights, basis.float())


def scaled_products(products: Tensor, scales: Tensor, dtype: torch.dtype, documents_first: bool = False) -> Tensor:
    """Query vectors' dot products with n documents' k int8 directions, (n, k, count), times the directions'
    ``scales`` (n, k): (k, count, n) in ``dtype``, ready for :func:`add_low_rank`; stored (k, n, count) when
    ``documents_first`` (to match scores that are a transposed (n, count) block: lookup-table sums)."""
    products = products.float() * scales.float().unsqueeze(-1)
    if documents_first:
        return products.permute(1, 0, 2).to(dtype).contiguous().transpose(1, 2)
    return products.permute(1, 2, 0).to(dtype).contiguous()


@dataclass
class BlockDirections:
    """A block of documents' directions made ready for one search: the query vectors' scaled products with them
    (``products``, (k, n_qv, n), for :func:`add_low_rank`), or, for decoded blocks scored over many ranks, the
    scaled directions in the codebook's rotated space (``rotated``, (n, k, D)), added to each rank's decoded
    residuals before the matmul (:func:`rotated_low_rank`): k D multiply-adds per vector instead of k passes over
    the (n_qv x n) scores."""

    products: Tensor | None = None
    rotated: Tensor | None = None

    @property
    def count(self) -> int:
        """Directions per document made ready (the first ones: a nested basis needs no more than the budget)."""
        return self.products.shape[0] if self.products is not None else self.rotated.shape[1]


def folds_into_decoded_blocks(query_vectors: int, ranks: int, dim: int) -> bool:
    """Whether a decoded block's directions are cheaper rotated and added to the residuals (D^2 per direction and
    document once, then D per rank) than multiplied with the queries (n_qv D once, then a memory-bound pass over
    n_qv scores per rank, counted 8 multiply-adds each)."""
    return dim * dim + ranks * dim < query_vectors * dim + 8 * ranks * query_vectors


def rotated_low_rank(rotated: Tensor, coefficients: Tensor) -> Tensor:
    """One rank's low-rank parts in the rotated space: directions (n, k, D) weighted by coefficients (n, k) int8 ->
    (n, D)."""
    weights = coefficients.to(rotated.dtype)
    part = rotated[:, 0] * weights[:, :1]
    for direction in range(1, rotated.shape[1]):
        part.addcmul_(rotated[:, direction], weights[:, direction : direction + 1])
    return part


def add_low_rank(scores: Tensor, products: Tensor, coefficients: Tensor) -> Tensor:
    """Scores (count, n) of one rank plus its low-rank part: ``products`` (k, count, n) from :func:`scaled_products`
    weighted by that rank's coefficients (n, k) int8; in place."""
    weights = coefficients.T.to(scores.dtype).contiguous()  # (k, n)
    for direction in range(products.shape[0]):  # products laid out as scores are (scaled_products), or this crawls
        scores.addcmul_(products[direction], weights[direction])
    return scores
