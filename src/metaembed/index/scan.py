"""How one exact search reads the segments: the MaxSim maxima of a block of documents (bf16 compared by its bits,
a small segment's ranks in a few large matmuls) and the tasks that share a search among threads."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from metaembed.index.codebook import PreparedQueries
from metaembed.index.segment import Segment, documents_times_queries

_RUNNING_MAX_ELEMENTS = 1 << 22
"""Documents per block are chosen so the running (query vectors x documents) maximum holds ~4M values (8 MB in
bf16): large enough for full-speed matmuls (0.67 of the bf16 peak for 1,600 query vectors on one thread against
0.47 at 1M values), small enough to stay in the last-level cache."""
_CODE_BLOCK_DOCUMENTS = 1 << 14
"""Documents per block of pq codes at most: a block's codes become int32 lookup rows (~3 MB at 48 bytes a vector) and
its lookup-table sums stay in cache (1M documents in one segment, a lone query: 0.38 -> 0.18 s at (1,1), 6.0 -> 4.4 s
at (16,64) against blocks of 125,000; 8,192 was slower again)."""
_RANK_GROUPS_MAX_QUERY_VECTORS = 64
"""Up to this many query vectors a matmul against stored vectors is memory-bound (~64 FLOP per byte read, below a
bf16 AMX core's ~100), so a segment's ranks are scored in large groups, which stream memory faster."""
_RANK_TASKS_PER_THREAD = 4
"""Tasks per search thread when segments are shared by their ranks (cheap to cut: each part stays one large read)."""
_MIN_RANK_TASK_VECTORS = 1 << 15
"""Document vectors worth a rank-shared task of its own: 25 MB at D = 384, ~2.5 ms on one core."""
_BIT_MAXIMUM_MIN_RANKS = 16
"""Document vectors per search from which bf16 maxima skip the running minimum (:func:`task_maxima`). Real MetaEmbed
vectors (10,000 documents, 100 queries): all-negative pairs are 0.76% at r_c = 4 (45% of documents have one), 0.07%
at 16 (13%), 0.04% at 64 (9%); the fix-up of one 10,000-document block costs 31 ms at (2,4) against the 11 ms the
minimum took, 9.5 against 50 ms at (8,16); a (16,64) block of 2,621 documents: ~10 against ~160 ms."""
_RESCAN_FRACTION = 0.25
"""Past this fraction of a block's documents with a negative maximum, :func:`fix_negative_maxima` scores the block
again with a running minimum rather than gathering those documents' vectors (a gather of most of a block costs
several passes over it). Random query vectors against real documents, whose vectors share a direction, leave half
the pairs negative over every rank: a lone (16,64) query over 100,000 documents took 2.7 s gathering, 1.3 s
rescanning (paired medians, one thread), against 0.43 s for real queries either way."""
_CHUNKS_PER_THREAD = 4
"""Document blocks per search thread at most, where blocks stay large enough (_MIN_BLOCK_DOCUMENTS): a thread slowed
by other work on its core takes fewer of them."""
_MIN_BLOCK_DOCUMENTS = 2048
"""Documents per block at least, whatever the query vectors: scoring a rank of fewer documents than a batch has query
vectors, oneDNN's bf16 matmul slows down (1,600 query vectors, one thread, time per document against blocks of 4,000,
paired: 1.47x at 1,000 documents, 1.34x at 1,250, 1.20-1.26x at 1,400-1,536, 0.91-0.97x at 1,700-2,621; 512 query
vectors: 1.14x at 1,000, 1.04x at 1,250, 1.0 at 2,048). A 100-query (16,64) batch over 10,000 documents on 2 threads
was cut into 8 blocks of 1,250."""
_MIN_TASK_MACS = 1 << 28
"""Multiply-adds worth a task of its own: ~0.4 ms on one AMX core (bf16), ~9 ms on an AVX2 one (fp32)."""
_MIN_PARALLEL_VECTORS = 1 << 17
"""A search reading fewer document vectors than this (100 MB at D = 384, ~10 ms on one core) and doing fewer than
_MIN_PARALLEL_MACS multiply-adds runs on one thread: on a busy machine a helper thread can wait a scheduler time slice
(milliseconds) before it starts, longer than such a search takes."""
_MIN_PARALLEL_MACS = 1 << 32
"""See _MIN_PARALLEL_VECTORS: ~6 ms of bf16 matmul on one AMX core."""
_MIN_TASK_VECTORS = 1 << 18
"""Document vectors worth a task of its own when queries are few: 200 MB at D = 384, ~20 ms of reading on one core.
A part of a segment is read one rank at a time (~7.5 GB/s on one core, against ~11 for a whole segment's ranks in a
few matmuls), so cutting a smaller search in parts costs more than a second thread gains."""


def block_documents(n_query_vectors: int, plain_vectors: bool = True) -> int:
    """How many documents to score per block (fewer for pq codes: _CODE_BLOCK_DOCUMENTS)."""
    block = max(_MIN_BLOCK_DOCUMENTS, _RUNNING_MAX_ELEMENTS // max(1, n_query_vectors))
    return block if plain_vectors else min(block, _CODE_BLOCK_DOCUMENTS)


def scores_from_maxima(segment: Segment, maxima: Tensor, queries: Tensor | PreparedQueries, shape: tuple[int, int],
                       start: int, stop: int) -> Tensor:
    """(n_q, n) fp32 MaxSim from each query vector's best (n_q * r_q, n) over a document's vectors: plus the pq
    anchors' part, summed over each query's vectors."""
    n_q, r_q = shape
    anchors = segment.anchor_scores(start, stop, queries)  # pq: the part every rank of a document shares
    if anchors is not None:
        maxima = maxima.float() + anchors.float()
    if r_q == 1:
        return maxima.float()
    return maxima.view(n_q, r_q, stop - start).float().sum(dim=1)


def groups_ranks(segment: Segment, n_query_vectors: int) -> bool:
    """Whether a whole segment's ranks are scored in groups, one matmul each: plain vectors, few query vectors (a
    memory-bound matmul) and at least two ranks' scores fitting in ~_RUNNING_MAX_ELEMENTS."""
    return (segment.stores_plain_vectors and n_query_vectors <= _RANK_GROUPS_MAX_QUERY_VECTORS
            and 2 * segment.count * n_query_vectors <= _RUNNING_MAX_ELEMENTS)


def rank_maxima(segment: Segment, queries: Tensor | PreparedQueries, n_query_vectors: int, start: int, stop: int,
                ranks: tuple[int, int], exact_negatives: bool = True) -> Iterator[Tensor]:
    """(n_qv, n) score blocks whose elementwise maximum is each document's best over its vectors ``ranks[0]:ranks[1]``:
    for a whole segment that :func:`groups_ranks`, groups of ranks scored in one matmul each (as many ranks as keep
    ~_RUNNING_MAX_ELEMENTS scores; vectors stored in another dtype than the compute one are converted a cache-sized
    block at a time inside the matmul's loop, :func:`~metaembed.index.segment.documents_times_queries`), each group's
    maximum when ``exact_negatives`` (:func:`max_of_stacked`), else its ranks one by one; otherwise one block per rank
    (many query vectors: the per-rank running maximum stays in cache).

    The consumer folds each block into the first before asking for the next, so every block after the first is
    written into a buffer an earlier one no longer needs (no fresh pages per rank)."""
    first, last = ranks
    if start == 0 and stop == segment.count and last - first > 1 and groups_ranks(segment, n_query_vectors):
        group = _RUNNING_MAX_ELEMENTS // (segment.count * n_query_vectors)
        reusable = None
        for begin in range(first, last, group):
            scores = segment.rank_group_scores(begin, min(last, begin + group), queries, out=reusable)
            if exact_negatives:
                yield max_of_stacked(scores).T  # a new tensor: the group's buffer is free again
                reusable = scores
            else:
                yield from (rank.T for rank in scores)  # the first group's first rank is the running maximum
                reusable = scores if begin > first else None
    else:
        directions = segment.basis_scores(start, stop, queries, range(first, last))  # pq with directions: once a block
        reusable = None
        for rank in range(first, last):
            block = segment.rank_scores(rank, start, stop, queries, directions, out=reusable)
            yield block
            reusable = block if rank > first else None


def task_maxima(segment: Segment, queries: Tensor | PreparedQueries, n_query_vectors: int, start: int, stop: int,
                ranks: tuple[int, int], part_of: int | None = None) -> Tensor:
    """(n_qv, stop - start) each query vector's best score over vectors ``ranks`` of documents ``start:stop``, in the
    dtype the segment scores in. Over _BIT_MAXIMUM_MIN_RANKS ranks or more, bf16 blocks are maximised on their bits
    alone (:func:`max_of_bits`), right wherever a pair has a score >= 0, and the few pairs whose every score is
    negative are recomputed (:func:`fix_negative_maxima`); over fewer, with a running minimum as well
    (:func:`max_over_ranks`). ``part_of``: the task is one of several parts of a segment's first ``part_of`` ranks;
    their count decides, and a part's negative entries are left for :func:`joined_parts` to fix once for all."""
    bits_only = uses_bit_maximum(ranks[1] - ranks[0] if part_of is None else part_of)
    blocks = rank_maxima(segment, queries, n_query_vectors, start, stop, ranks, exact_negatives=not bits_only)
    first = next(blocks)
    if not bits_only or first.dtype != torch.bfloat16:
        return max_over_ranks(itertools.chain([first], blocks))
    maxima = max_of_bits(itertools.chain([first], blocks))
    return maxima if part_of is not None else fix_negative_maxima(segment, maxima, queries, start, ranks)


def joined_parts(segment: Segment, parts: Sequence[Tensor], queries: Tensor | PreparedQueries, start: int,
                 r_c: int) -> Tensor:
    """The maxima over a segment's first ``r_c`` ranks from its parts' :func:`task_maxima` (``part_of=r_c``), in the
    first part's memory: on bits, then the pairs negative over every rank fixed in one pass (fixing each part's own,
    more of them over fewer ranks, and the running minimum below 16 ranks a part: a lone (16,64) query over 100,000
    documents in 8 parts on 2 threads took 1.42x as long, paired; (8,16) 1.06x)."""
    if uses_bit_maximum(r_c) and parts[0].dtype == torch.bfloat16:
        return fix_negative_maxima(segment, max_of_bits(parts), queries, start, (0, r_c))
    return max_over_ranks(parts)


def uses_bit_maximum(ranks: int) -> bool:
    """Whether bf16 maxima over ``ranks`` document vectors are taken on bits alone, then fixed
    (_BIT_MAXIMUM_MIN_RANKS)."""
    return ranks >= _BIT_MAXIMUM_MIN_RANKS


def max_of_bits(blocks: Iterable[Tensor]) -> Tensor:
    """Elementwise maximum of bf16 blocks (at least one) compared by their bits as int16, kept in the first block's
    memory: exact wherever some block's entry is >= 0 (a bf16 value >= 0 orders as its bits do, and every negative
    one has negative bits); where all are negative the result is negative but not the maximum."""
    blocks = iter(blocks)
    best = next(blocks)
    high = best.view(torch.int16)
    for block in blocks:
        torch.maximum(high, block.view(torch.int16), out=high)
    return best


def fix_negative_maxima(segment: Segment, maxima: Tensor, queries: Tensor | PreparedQueries, start: int,
                        ranks: tuple[int, int]) -> Tensor:
    """Make exact the entries of :func:`max_of_bits` ``maxima`` (n_qv, n) that came out negative: every score of
    that query vector with that document's vectors ``ranks`` was negative. They are recomputed from the documents'
    stored vectors, for the query vectors and documents involved only (on real MetaEmbed vectors ~0.04% of pairs at
    (16,64)), ~_RUNNING_MAX_ELEMENTS scores at a time; past _RESCAN_FRACTION of the documents, the block is scored
    again with a running minimum instead."""
    bits = maxima.view(torch.int16)
    documents = (bits.amin(dim=0) < 0).nonzero().squeeze(1)  # (u,): one reduction, not a (n_qv, n) nonzero
    if len(documents) == 0:
        return maxima
    if len(documents) > _RESCAN_FRACTION * maxima.shape[1]:  # query vectors unlike the stored ones: rescan the block
        stop = start + maxima.shape[1]
        return maxima.copy_(max_over_ranks(rank_maxima(segment, queries, len(maxima), start, stop, ranks)))
    pair_vectors, pair_documents = (bits[:, documents] < 0).nonzero(as_tuple=True)
    vector_rows, pair_vectors = torch.unique(pair_vectors, return_inverse=True)  # (v,) and each pair's place in it
    query_vectors = (queries if isinstance(queries, Tensor) else queries.vectors)[vector_rows]
    count = ranks[1] - ranks[0]
    step = max(1, _RUNNING_MAX_ELEMENTS // (count * len(vector_rows)))
    exact = torch.empty(len(documents), len(vector_rows), dtype=maxima.dtype)
    for begin in range(0, len(documents), step):
        chunk = documents[begin : begin + step]
        stored = segment.scored_vectors(chunk + start, range(*ranks), maxima.dtype)  # (u, r, D)
        products = documents_times_queries(stored.reshape(-1, stored.shape[-1]), query_vectors)
        exact[begin : begin + step] = max_of_stacked(products.view(len(chunk), count, -1).transpose(0, 1))
    maxima[vector_rows[pair_vectors], documents[pair_documents]] = exact[pair_documents, pair_vectors]
    return maxima


def max_over_ranks(blocks: Iterable[Tensor]) -> Tensor:
    """Elementwise maximum of same-shaped score blocks (at least one), kept in the first block's memory.

    bf16 blocks are compared by their bits as int16, which the CPU maximises natively (~4x faster than torch's
    bf16 maximum, which converts to fp32): a bf16 value >= 0 orders as its bits do and every negative one has a
    negative int16, so the largest bits are the largest value whenever any value is >= 0; where all are negative,
    the smallest bits are the largest value (the smallest magnitude)."""
    blocks = iter(blocks)
    best = next(blocks)
    if best.dtype != torch.bfloat16:
        for block in blocks:
            torch.maximum(best, block, out=best)
        return best
    high, low = best.view(torch.int16), None
    for block in blocks:
        bits = block.view(torch.int16)
        if low is None:
            low = high.clone()
        torch.maximum(high, bits, out=high)
        torch.minimum(low, bits, out=low)
    return best if low is None else torch.where(high >= 0, high, low).view(torch.bfloat16)


def max_of_stacked(scores: Tensor) -> Tensor:
    """The maximum over the first dimension of (r, ...) scores, as a new tensor; bf16 by its bits as
    :func:`max_over_ranks` does, taking the minimum of the bits only if some entry has no non-negative value."""
    if scores.dtype != torch.bfloat16:
        return scores.amax(dim=0)
    bits = scores.view(torch.int16)
    high = bits.amax(dim=0)
    negative = high < 0
    if bool(negative.any()):
        high = torch.where(negative, bits.amin(dim=0), high)
    return high.view(torch.bfloat16)


def document_chunks(counts: Sequence[int], block: int, threads: int, macs_per_document: int = 1,
                    vectors_per_document: int = 1, keep_whole: Sequence[bool] | None = None) -> list[tuple[int, int, int, int]]:
    """(segment, start, stop, offset of the segment) blocks covering every stored row, at most ``block`` documents
    each, and small enough that each of ``threads`` threads gets the same number of them (one, or more up to
    _CHUNKS_PER_THREAD while blocks keep _MIN_BLOCK_DOCUMENTS), but never under ~2 ms of work: the multiply-adds
    (``macs_per_document``, for the whole batch of queries) or the vectors read (``vectors_per_document`` = r_c) of a
    block reach their floor. A segment is cut into equal blocks, so no thread is left a small remainder; segments
    marked in ``keep_whole`` stay one block (they are shared by their ranks instead: :func:`search_tasks`)."""
    total = sum(counts)
    if threads > 1:
        floor = min(-(-_MIN_TASK_MACS // max(1, macs_per_document)), -(-_MIN_TASK_VECTORS // max(1, vectors_per_document)))
        per_thread = min(_CHUNKS_PER_THREAD, max(1, total // (threads * _MIN_BLOCK_DOCUMENTS)))
        block = min(block, max(floor, -(-total // (threads * per_thread))))
    chunks, offset = [], 0
    for s, count in enumerate(counts):
        pieces = 1 if keep_whole and keep_whole[s] else max(1, -(-count // block))
        bounds = [count * piece // pieces for piece in range(pieces + 1)]
        chunks.extend((s, start, stop, offset) for start, stop in zip(bounds, bounds[1:]) if stop > start)
        offset += count
    return chunks


def worth_threads(counts: Sequence[int], r_c: int, n_query_vectors: int, dim: int, threads: int) -> int:
    """``threads``, or 1 for a search too small to be worth waiting for a second thread (see _MIN_PARALLEL_VECTORS)."""
    vectors = sum(counts) * r_c
    if vectors < _MIN_PARALLEL_VECTORS and vectors * n_query_vectors * dim < _MIN_PARALLEL_MACS:
        return 1
    return threads


@dataclass(frozen=True)
class SearchTask:
    """Documents ``start:stop`` of segment ``segment`` (whose first key is ``offset``) over document vectors
    ``ranks`` = (first, stop). When a whole segment's ranks are shared among ``parts`` tasks, each part's maxima are
    joined with the others' (by the search's calling thread) before the segment is scored."""

    segment: int
    start: int
    stop: int
    offset: int
    ranks: tuple[int, int]
    parts: int = 1


def search_tasks(segments: Sequence[Segment], r_c: int, n_query_vectors: int, dim: int, threads: int) -> list[SearchTask]:
    """The work of one exact search, for ``threads`` workers (one for a small search): blocks of documents
    (:func:`document_chunks`), except
    that a segment whose ranks are read in groups (:func:`groups_ranks`: few query vectors) is shared by its ranks
    rather than cut into documents, so every part still streams large matmuls (a part of a segment cut by documents
    is read a rank at a time, ~30% slower)."""
    counts = [segment.count for segment in segments]
    threads = worth_threads(counts, r_c, n_query_vectors, dim, threads)
    by_ranks = [threads > 1 and r_c > 1 and groups_ranks(segment, n_query_vectors) for segment in segments]
    plain = all(segment.stores_plain_vectors for segment in segments)
    chunks = document_chunks(counts, block_documents(n_query_vectors, plain), threads,
                             macs_per_document=n_query_vectors * r_c * dim, vectors_per_document=r_c,
                             keep_whole=by_ranks)
    share = max(_MIN_RANK_TASK_VECTORS, sum(counts) * r_c // max(1, threads * _RANK_TASKS_PER_THREAD))
    tasks = []
    for s, start, stop, offset in chunks:
        parts = min(r_c, max(1, round(counts[s] * r_c / share))) if by_ranks[s] else 1
        bounds = [r_c * part // parts for part in range(parts + 1)]
        tasks.extend(SearchTask(s, start, stop, offset, (first, last), parts) for first, last in zip(bounds, bounds[1:]))
    return tasks
