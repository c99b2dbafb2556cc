"""Cascade benchmark: a first stage at a small budget keeps K candidates, exact MaxSim reranks them at the full
budget. Recall@10 against exact search and the speed-up over it, on real-structured data, with K calibrated on
dev queries (:func:`metaembed.calibrate_cascade`) and swept by hand.

    .venv/bin/python benchmarks/search/cascade.py [--copies 10] [--target 0.99]

Data: the 10,000 Debian descriptions encoded by the quickstart's MMR-trained model (benchmarks/search/real_data.py),
plus ``copies - 1`` variants moved by a per-document perturbation (benchmarks/search/million.py's ``variant_chunk``,
noise shared by a document's vectors, so each variant keeps a real document's nearly parallel vectors and is a
distinct document rather than a near-duplicate). Test queries: the first 100 encoded queries; calibration: the next
200. Writes benchmarks/results/search_cascade.{json,md}. Ratios are within this run: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))
import machine  # noqa: E402
import real_data  # noqa: E402
from million import variant_chunk  # noqa: E402

import metaembed  # noqa: E402
from metaembed.budgets import PAPER_BUDGETS, Budget  # noqa: E402
from metaembed.index import MultiVectorIndex  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "data" / "search_indexes" / "cascade"
RESULTS = ROOT / "results"
TEST_QUERIES, DEV_QUERIES = slice(0, 100), slice(100, 300)


def recall(found, exact) -> float:
    """Mean share of exact search's top 10 that ``found`` returns."""
    return statistics.mean(len(set(f.ids[:10]) & set(e.ids[:10])) / max(1, len(e.ids[:10])) for f, e in zip(found, exact))


def timings(search, queries: torch.Tensor, lone: int = 5) -> tuple[float, float]:
    """(median seconds of one query alone over ``lone`` queries, seconds for all ``queries`` in one call)."""
    alone = statistics.median(machine.timed(lambda q=q: search(q.unsqueeze(0)), repeat=1) for q in queries[:lone])
    start = time.perf_counter()
    search(queries)
    return alone, time.perf_counter() - start


def build(documents: torch.Tensor, copies: int, noise: float) -> tuple[MultiVectorIndex, float]:
    shutil.rmtree(WORK, ignore_errors=True)
    start = time.perf_counter()
    with MultiVectorIndex.create(WORK, documents.shape[-1], documents.shape[1]) as index:
        for copy in tqdm(range(copies), desc="building", unit="chunk"):
            index.add([f"c{copy}-{i}" for i in range(len(documents))], variant_chunk(documents, copy, noise))
    return MultiVectorIndex.open(WORK), time.perf_counter() - start


def measure_budget(index: MultiVectorIndex, test: torch.Tensor, dev: torch.Tensor, budget: Budget, target: float,
                   sweep: tuple[int, ...]) -> dict:
    """Exact search at ``budget`` against the cascade at the calibrated K and at each swept K, first stage (1,1)."""
    exact = index.search(test, k=10, budget=budget)
    exact_alone, exact_batch = timings(lambda q: index.search(q, k=10, budget=budget), test)
    calibration = metaembed.calibrate_cascade(index, dev, k=10, target=target, budget=budget)
    rows = []
    for candidates, how in [(calibration.candidates, "calibrated")] + [(k, "fixed") for k in sweep]:
        search = lambda q, c=candidates: index.cascade_search(q, k=10, budget=budget, candidates=c)  # noqa: E731
        alone, batch = timings(search, test)
        rows.append({"candidates": candidates, "how": how, "recall_at_10": recall(search(test), exact),
                     "lone_s": alone, "batch_s": batch, "speedup_lone": exact_alone / alone,
                     "speedup_batch": exact_batch / batch})
    return {"budget": str(budget), "exact_lone_s": exact_alone, "exact_batch_s": exact_batch,
            "calibration": {"candidates": calibration.candidates, "dev_recall": calibration.recall,
                            "reached": calibration.reached, "curve": calibration.curve}, "rows": rows}


def markdown(results: dict) -> str:
    lines = [
        "# Cascade search: calibrated first-stage candidates",
        "",
        f"{results['documents']:,} documents x {results['stored_vectors']} x {results['dim']} (bf16), "
        f"{results['description']}. Built in {results['build_s']:.0f} s. {results['test_queries']} test queries "
        f"(recall@10 against exact bf16 search at the same budget); K calibrated on {results['dev_queries']} other "
        f"queries for a target recall of {results['target']} (`metaembed.calibrate_cascade`). First stage: exact "
        f"(1,1). {results['threads']} threads; lone = median of one query alone, batch = {results['test_queries']} "
        "queries in one call.",
        "",
        "| budget | exact lone (ms) | exact batch (s) | K | how | recall@10 | lone (ms) | speed-up lone | speed-up batch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for budget in results["budgets"]:
        for row in budget["rows"]:
            lines.append(f"| {budget['budget']} | {budget['exact_lone_s'] * 1e3:.1f} | {budget['exact_batch_s']:.2f} | "
                         f"{row['candidates']} | {row['how']} | {row['recall_at_10']:.3f} | {row['lone_s'] * 1e3:.1f} | "
                         f"{row['speedup_lone']:.1f}x | {row['speedup_batch']:.1f}x |")
    lines += ["", "Calibration curves (K: dev recall@10), first points:", ""]
    for budget in results["budgets"]:
        curve = ", ".join(f"{k}: {r:.3f}" for k, r in budget["calibration"]["curve"][:8])
        lines.append(f"- {budget['budget']}: {curve}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=10, help="variants of the 10,000 real documents (10: 100k)")
    parser.add_argument("--noise", type=float, default=0.5, help="norm of each variant's per-document perturbation")
    parser.add_argument("--target", type=float, default=0.99, help="recall@10 the calibration aims for")
    parser.add_argument("--sweep", type=int, nargs="*", default=[20, 50, 100, 300])
    parser.add_argument("--out", default="search_cascade", help="results file name (without suffix)")
    args = parser.parse_args()

    model, trained = real_data.default_model()
    if not trained:
        raise SystemExit("run `make quickstart` first: the cascade needs an MMR-trained model's vectors")
    data = real_data.encoded_corpus(model, trained, n_documents=10_000, n_queries=1000)
    queries = data["queries"].float()
    test, dev = queries[TEST_QUERIES], queries[DEV_QUERIES]
    index, build_s = build(data["documents"], args.copies, args.noise)
    budgets = [measure_budget(index, test, dev, Budget(*b), args.target, tuple(args.sweep))
               for b in tqdm(PAPER_BUDGETS[1:], desc="budgets")]
    results = {"documents": len(index), "stored_vectors": index.max_document_vectors, "dim": index.dim,
               "description": "the 10,000 Debian descriptions encoded by the quickstart's model" + (
                   f" and {args.copies - 1} variants of each (per-document noise of norm {args.noise})"
                   if args.copies > 1 else ", no variants"),
               "build_s": build_s, "test_queries": len(test), "dev_queries": len(dev), "target": args.target,
               "threads": torch.get_num_threads(), "budgets": budgets}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(results, indent=1))
    (RESULTS / f"{args.out}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
