"""PyLate's side of benchmarks/search/peers.py, run by the peers' own Python (PyLate pins sentence-transformers 5
and its PLAID backend, fast-plaid, pins a CUDA build of torch 2.11: neither can share metaembed's environment).

    /tmp/peers-venv/bin/python benchmarks/search/peers_pylate.py --vectors V.npz --work W --out rows.json

Reads the documents (n, R_c, D) and queries (n_q, R_q, D) float32 arrays peers.py wrote, and measures PyLate's
exact ``rank.rerank`` over every document, its Voyager index (HNSW over every document vector, then an exact
rerank of the documents found) and its PLAID index (fast-plaid, 4-bit residuals; its default search settings and
the points of ``PLAID_CURVE``): build seconds, bytes on disk, one query alone (median of 11) and all queries in one
call, and each query's top-10 row numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(name: str, search, queries: list, build_s: float, size: int, lone: int = 11, batch: int | None = None) -> dict:
    """One row: ``search(list of queries) -> per-query lists of document row numbers``."""
    search(queries[:1])  # warm-up
    lone_s = statistics.median(timed(lambda q=q: search([q])) for q in queries[:lone])
    batch_queries = queries[: batch or len(queries)]
    times, found = [], None
    while len(times) < 3:  # the median of up to 3 calls, one when a call takes 2 s or more (as peers.py times its rows)
        start = time.perf_counter()
        result = search(batch_queries)
        times.append(time.perf_counter() - start)
        found = result if found is None else found
        if times[-1] >= 2.0:
            break
    batch_s = statistics.median(times)
    return {"system": name, "build_s": build_s, "bytes": size, "lone_s": lone_s, "batch_s": batch_s,
            "batch_queries": len(batch_queries), "top10": [[int(i) for i in row[:10]] for row in found]}


PLAID_CURVE = ((2, 256), (4, 1024), (32, 8192))
"""(n_ivf_probe, n_full_scores) settings measured besides the default (8, 8192): faster and less exact, then more
exact; fast-plaid's recall/latency curve on one index."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rerank-batch", type=int, default=10, help="queries in rank.rerank's batch (it is slow)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    from pylate import indexes, rank, retrieve

    arrays = np.load(args.vectors)
    documents, queries = arrays["documents"], list(arrays["queries"])
    ids = [str(i) for i in range(len(documents))]
    document_list = list(documents)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows = []

    def exact(batch):
        ranked = rank.rerank(documents_ids=[ids] * len(batch), queries_embeddings=batch,
                             documents_embeddings=[document_list] * len(batch))
        return [[int(hit["id"]) for hit in hits] for hits in ranked]

    rows.append(measure("PyLate rank.rerank (exact, every document)", exact, queries, 0.0, documents.nbytes // 2,
                        batch=args.rerank_batch))

    start = time.perf_counter()
    voyager = indexes.Voyager(index_folder=str(work / "voyager"), index_name="v", override=True,
                              embedding_size=documents.shape[-1])
    voyager.add_documents(documents_ids=ids, documents_embeddings=document_list)
    voyager_build = time.perf_counter() - start
    retriever = retrieve.ColBERT(index=voyager)

    def voyager_search(batch):
        return [[int(hit["id"]) for hit in hits] for hits in retriever.retrieve(queries_embeddings=batch, k=10)]

    rows.append(measure("PyLate Voyager (HNSW over every vector, k_token 100, exact rerank)", voyager_search, queries,
                        voyager_build, folder_bytes(work / "voyager")))

    start = time.perf_counter()
    plaid = indexes.PLAID(index_folder=str(work / "plaid"), index_name="p", override=True, nbits=4,
                          show_progress=False, device="cpu")
    plaid.add_documents(documents_ids=ids, documents_embeddings=[torch.from_numpy(d) for d in document_list])
    plaid_build = time.perf_counter() - start
    plaid_retriever = retrieve.ColBERT(index=plaid)

    def plaid_search(batch):
        return [[int(hit["id"]) for hit in hits]
                for hits in plaid_retriever.retrieve(queries_embeddings=[torch.from_numpy(q) for q in batch], k=10)]

    rows.append(measure("PyLate PLAID (fast-plaid, 4-bit residuals)", plaid_search, queries, plaid_build,
                        folder_bytes(work / "plaid")))
    backend = plaid._index  # fast-plaid reads these at every search: the same index along its recall/latency curve
    for probes, full_scores in PLAID_CURVE:
        backend.n_ivf_probe, backend.n_full_scores = probes, full_scores
        rows.append(measure(f"PyLate PLAID (fast-plaid, 4-bit residuals, n_ivf_probe={probes}, "
                            f"n_full_scores={full_scores})", plaid_search, queries, plaid_build, folder_bytes(work / "plaid")))
    Path(args.out).write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
