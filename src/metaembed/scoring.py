"""Late-interaction (MaxSim) scoring of fixed-size multi-vector embeddings at a chosen budget.

Shapes used throughout:
    query_vectors:    (n_queries, R_q, D)
    document_vectors: (n_documents, R_c, D)
    scores:           (n_queries, n_documents), s(q, c) = sum_i max_j <q_i, c_j> over the budget prefixes.

Ranking: equal scores rank by document id, *descending* — trec_eval's rule, which pytrec_eval, BEIR and MTEB
share — so a run re-scored by any of them gives the numbers we report (:func:`tie_order`, :func:`top_k`).

Why not ``sentence_transformers.util.maxsim``: it gives the same scores on the budget prefixes
(``st_maxsim(q[:, :r_q], d[:, :r_c])``; tests/test_maxsim_vs_st.py), but measured against it in one run
(benchmarks/maxsim_vs_st: 2,000 documents of 64 x 384, 1 and 64 queries, budgets (1,1), (4,8), (16,64), bf16,
fp32 and a bf16 index scored in fp32; 2 busy AMD EPYC cores without native bf16) this function was faster in
every case: ST / ours 1.3-67x in fp32 (67x at (1,1) for one query: 0.7 ms against 48 ms, ST pads a copy of
every document's prefix before scoring), 1.1-5.7x in bf16, 1.3-3.6x for a bf16 index scored in fp32 (ST has no
compute dtype, so the index is converted whole first; here it is converted block by block, in bounded memory).
ST's function also handles what fixed-size MetaEmbed vectors never need (ragged token counts, masks). So this
one stays: the MaxSim of search, eval and the index (training scores differently on purpose: the MMR loss takes
every group as a prefix reduction of one similarity tensor of the batch, with gradients; see
:mod:`metaembed.training.mmr_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from metaembed.budgets import check_vector_budget

_BLOCK_ELEMENTS = 1 << 25
"""Upper bound on the (n_q * r_q) x (block * r_c) similarity block, about 128 MB in fp32."""
TIE_WINDOW = 16
"""Extra places looked at past the k-th, so equal scores straddling the cut are ordered by id, not by chance."""


def compute_dtype(*tensors: Tensor, requested: torch.dtype | None = None) -> torch.dtype:
    """bf16 when every input is bf16 (or it is asked for), fp32 otherwise; fp16 is never used on CPU."""
    if requested is not None:
        if requested == torch.float16 and any(t.device.type == "cpu" for t in tensors):
            raise ValueError("fp16 matmul is pathologically slow on CPU: use torch.bfloat16 or torch.float32")
        return requested
    dtypes = {t.dtype for t in tensors}
    if dtypes == {torch.bfloat16}:
        return torch.bfloat16
    if dtypes == {torch.float16} and all(t.device.type != "cpu" for t in tensors):
        return torch.float16
    return torch.float32


def query_prefix_weights(query_vectors: Tensor) -> Tensor:
    """(n_q, R_q) fp32: the summed norms of each query's first r vectors, r = 1..R_q.

    That is r for unit vectors, and the weighted total for a model whose query vectors carry weights
    (QueryVectorWeights); a MaxSim sum divided by it is the (weighted) mean over query vectors."""
    return query_vectors.float().norm(dim=-1).cumsum(dim=1)


def check_shapes(expected: str, query_vectors: Tensor, document_vectors: Tensor, shapes_ok: bool) -> None:
    """Raise ValueError naming the ``expected`` shapes and the given ones unless ``shapes_ok``, or naming both
    dimensions when queries and documents differ in D."""
    if not shapes_ok:
        raise ValueError(f"{expected}, got shapes {tuple(query_vectors.shape)} and {tuple(document_vectors.shape)}")
    if query_vectors.shape[-1] != document_vectors.shape[-1]:
        raise ValueError(
            f"query dimension {query_vectors.shape[-1]} differs from document dimension {document_vectors.shape[-1]}"
        )


def maxsim(
    query_vectors: Tensor,
    document_vectors: Tensor,
    query_budget: int | None = None,
    document_budget: int | None = None,
    *,
    normalize_by_query: bool = False,
    dtype: torch.dtype | None = None,
    block_size: int | None = None,
) -> Tensor:
    """MaxSim scores between every query and every document, using the first ``query_budget`` query
    vectors and the first ``document_budget`` document vectors (all of them when None).

    Documents are scored in blocks so the similarity tensor never exceeds ~128 MB, whatever the corpus
    size. Computes in bf16 when both inputs are bf16, else fp32 (never fp16 on CPU); returns fp32.
    ``normalize_by_query`` divides by the query's total weight (r_q for unit vectors: the mean over query vectors).
    """
    check_shapes("maxsim expects query_vectors (n_queries, R_q, D) and document_vectors (n_documents, R_c, D)",
                 query_vectors, document_vectors, query_vectors.ndim == 3 and document_vectors.ndim == 3)
    r_q = check_vector_budget(query_budget, query_vectors.shape[1], "query", "vectors")
    r_c = check_vector_budget(document_budget, document_vectors.shape[1], "document", "vectors")
    work_dtype = compute_dtype(query_vectors, document_vectors, requested=dtype)

    n_q, n_d, dim = query_vectors.shape[0], document_vectors.shape[0], query_vectors.shape[-1]
    queries = query_vectors[:, :r_q].to(work_dtype).reshape(n_q * r_q, dim)
    scores = torch.empty(n_q, n_d, dtype=torch.float32, device=query_vectors.device)
    if block_size is None:
        block_size = max(1, _BLOCK_ELEMENTS // max(1, n_q * r_q * r_c))
    for start in range(0, n_d, block_size):
        block = document_vectors[start : start + block_size, :r_c]
        n_block = block.shape[0]
        block = block.to(device=queries.device, dtype=work_dtype).reshape(n_block * r_c, dim)
        similarity = (queries @ block.T).view(n_q, r_q, n_block, r_c)
        scores[:, start : start + n_block] = similarity.amax(dim=-1).float().sum(dim=1)
    if normalize_by_query:
        scores /= query_prefix_weights(query_vectors[:, :r_q])[:, -1:].to(scores.device)
    return scores


def paired_maxsim(query_vectors: Tensor, document_vectors: Tensor, *, normalize_by_query: bool = False,
                  dtype: torch.dtype | None = None) -> Tensor:
    """MaxSim of each query against its own documents only: query_vectors (n, R_q, D) and document_vectors
    (n, K, R_c, D), every vector used, give scores (n, K) in fp32 (query i against documents [i, 0..K-1]).

    One batched matmul for a whole batch of reranks (a cascade's candidates), rather than one :func:`maxsim` call
    per query; the caller bounds n * K * R_c * D. Computes in ``dtype`` as :func:`maxsim` does."""
    check_shapes("paired_maxsim expects query_vectors (n, R_q, D) and document_vectors (n, K, R_c, D)",
                 query_vectors, document_vectors, query_vectors.ndim == 3 and document_vectors.ndim == 4
                 and document_vectors.shape[0] == query_vectors.shape[0])
    work_dtype = compute_dtype(query_vectors, document_vectors, requested=dtype)
    n, n_docs, r_c, dim = document_vectors.shape
    documents = document_vectors.to(work_dtype).reshape(n, n_docs * r_c, dim)
    similarity = torch.bmm(query_vectors.to(work_dtype), documents.transpose(1, 2))  # (n, R_q, K * R_c)
    scores = similarity.view(n, -1, n_docs, r_c).amax(dim=-1).float().sum(dim=1)
    if normalize_by_query:
        scores /= query_prefix_weights(query_vectors)[:, -1:]
    return scores


def tie_order(ids: Sequence[str]) -> list[int]:
    """Positions of ``ids`` in the order equal scores rank: by id, descending (trec_eval's rule).

    Put a score matrix's columns in this order and :func:`top_k` ranks ties exactly as trec_eval does."""
    return sorted(range(len(ids)), key=lambda position: str(ids[position]), reverse=True)


def top_k(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` best (values, columns) of every row, best first; equal scores rank the lower column first.

    Deterministic, unlike ``Tensor.topk``: ties inside the top k and ties straddling the k-th place alike."""
    n = scores.shape[1]
    k = min(k, n)
    width = min(n, k + TIE_WINDOW)
    while True:
        values, columns = scores.topk(width, dim=1)
        columns, order = columns.sort(dim=1)
        values, by_value = values.gather(1, order).sort(dim=1, descending=True, stable=True)
        columns = columns.gather(1, by_value)
        if k == 0 or width == n or not bool((values[:, k - 1] == values[:, -1]).any()):
            return values[:, :k], columns[:, :k]
        width = min(n, width * 4)  # ties may continue past the window: look further
