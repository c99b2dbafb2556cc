"""A lone query: metaembed's exact search against the plain torch yardstick, and the matmul orientation behind it.

    .venv/bin/python benchmarks/search/lone_query.py     # run benchmarks/search/peers.py first (it builds the index)

1. bf16 matmul of m query vectors against n document vectors (D = 384), one thread, in RAM: ``queries @ docs.T``
   against ``docs @ queries.T`` (what the index computes per rank since 2026-11-27, transposed back).
2. One query alone (median of 10) on the 10,000 real documents of the peers benchmark's bf16 index at each paper
   budget, 1 and 2 threads, against plain torch holding exactly the budget's vectors in RAM.
Writes benchmarks/results/lone_query.{json,md}.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import real_data  # noqa: E402
from baseline import plain_torch_topk  # noqa: E402

from metaembed.budgets import PAPER_BUDGETS  # noqa: E402
from metaembed.index import MultiVectorIndex  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT / "data" / "search_indexes" / "peers" / "metaembed-bfloat16"


def seconds(function, repeats: int) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def orientation() -> list[dict]:
    torch.set_num_threads(1)
    documents = torch.randn(4000, 384).to(torch.bfloat16)
    rows = []
    for m in (1, 4, 16, 64, 256, 1600):
        queries = torch.randn(m, 384).to(torch.bfloat16)
        for n in (1000, 4000):
            block = documents[:n]
            rows.append({"m": m, "n": n, "queries_first_us": 1e6 * seconds(lambda: queries @ block.T, 20),
                         "documents_first_us": 1e6 * seconds(lambda: block @ queries.T, 20)})
    return rows


def lone_queries() -> list[dict]:
    model, trained = real_data.default_model()
    data = real_data.encoded_corpus(model, trained, 10_000, 1000)
    queries = data["queries"][:10].float()
    index = MultiVectorIndex.open(INDEX)
    rows = []
    for budget in PAPER_BUDGETS:
        resident = data["documents"][:, : budget[1]].to(torch.bfloat16).contiguous()
        row = {"budget": list(budget)}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            index.threads = threads
            row[f"plain_ms_{threads}"] = 1e3 * statistics.median(
                seconds(lambda q=q: plain_torch_topk(resident, q.unsqueeze(0), budget, 10, torch.bfloat16), 1) for q in queries)
            row[f"metaembed_ms_{threads}"] = 1e3 * statistics.median(
                seconds(lambda q=q: index.search(q.unsqueeze(0), k=10, budget=budget), 1) for q in queries)
        rows.append(row)
    return rows


def main() -> None:
    if not (INDEX / "manifest.json").is_file():
        raise SystemExit(f"no index at {INDEX}: run benchmarks/search/peers.py first")
    results = {"orientation": orientation(), "lone_queries": lone_queries()}
    lines = ["# A lone query", "", "bf16 matmul, 1 thread, D = 384 (microseconds):", "",
             "| m query vectors | n documents | queries @ docs.T | docs @ queries.T |", "|---|---|---|---|"]
    lines += [f"| {r['m']} | {r['n']} | {r['queries_first_us']:.0f} | {r['documents_first_us']:.0f} |"
              for r in results["orientation"]]
    lines += ["", "One query alone on 10,000 real documents (ms, median of 10):", "",
              "| budget | plain torch, 1 thread | metaembed, 1 thread | plain torch, 2 threads | metaembed, 2 threads |",
              "|---|---|---|---|---|"]
    lines += [f"| ({r['budget'][0]},{r['budget'][1]}) | {r['plain_ms_1']:.2f} | {r['metaembed_ms_1']:.2f} | "
              f"{r['plain_ms_2']:.2f} | {r['metaembed_ms_2']:.2f} |" for r in results["lone_queries"]]
    out = ROOT / "results"
    (out / "lone_query.json").write_text(json.dumps(results, indent=1))
    (out / "lone_query.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
