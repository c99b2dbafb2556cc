"""Search on a busy machine, per-call overhead, and opening a large index: the parts of issue 15 that are about how
the index runs rather than what it computes.

    .venv/bin/python benchmarks/search/load_and_open.py [--quick] [--documents 200000]

1. Threads under load: 1 and 100 queries at several budgets with ``index.threads`` = 1 and 2, on a quiet machine and
   while a background process keeps both cores busy (a 2-thread fp32 matmul loop): 2 threads should never be slower
   than 1. Ratio = time on 2 threads / time on 1, in the same condition.
2. Per-call overhead at 10k documents, (1,1): metaembed (objects and arrays) against the plain torch baseline
   (benchmarks/search/baseline.py) on the same vectors.
3. Opening: open() time, the first (1,1) and (16,64) searches (which check the ranks they read), ``verify()``, and
   the time a full sha256 of the files takes (what opening with verification did before per-rank checksums).

Writes benchmarks/results/search_load_open.json and .md. Ratios within the run are the figures to compare.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import machine  # noqa: E402
from baseline import plain_torch_topk  # noqa: E402

from metaembed.index import MultiVectorIndex  # noqa: E402
from metaembed.index.search import default_compute_dtype  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "data" / "search_indexes"
RESULTS = ROOT / "results"
LOAD = ("import torch\ntorch.set_num_threads(2)\na = torch.randn(1500, 1500)\n"
        "while True:\n    a @ a\n")


def unit(*shape: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def build(path: Path, n: int, stored: int, dim: int, chunk: int = 20_000) -> float:
    shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    with MultiVectorIndex.create(path, dim, stored) as index:
        for first in range(0, n, chunk):
            count = min(chunk, n - first)
            index.add([f"d{first + i}" for i in range(count)], unit(count, stored, dim, seed=first + 1))
    return time.perf_counter() - start


def busy_machine() -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", LOAD])
    time.sleep(2.0)  # let it reach full speed
    return process


def threads_rows(index: MultiVectorIndex, queries: torch.Tensor, budgets, repeat: int) -> list[dict]:
    rows = []
    for budget in budgets:
        row: dict = {"budget": list(budget)}
        for threads in (1, 2):
            index.threads = threads
            index.search(queries[:1], k=10, budget=budget)  # warm-up
            row[f"latency_s_{threads}t"] = machine.timed(lambda: index.search(queries[:1], k=10, budget=budget), repeat)
            row[f"batch_s_{threads}t"] = machine.timed(lambda: index.search(queries, k=10, budget=budget), 1)
        row["latency_ratio_2t_over_1t"] = row["latency_s_2t"] / row["latency_s_1t"]
        row["batch_ratio_2t_over_1t"] = row["batch_s_2t"] / row["batch_s_1t"]
        rows.append(row)
    index.threads = None
    return rows


def overhead(path: Path, n: int, dim: int, repeat: int) -> dict:
    build(path, n, 1, dim)
    index = MultiVectorIndex.open(path)
    documents = index.get_vectors(index.ids, 1).bfloat16()
    queries = unit(100, 1, dim, seed=7)
    dtype = default_compute_dtype(torch.bfloat16)
    out: dict = {"documents": n, "dim": dim, "budget": [1, 1]}
    for label, count in (("1q", 1), ("100q", 100)):
        q = queries[:count]
        index.search(q, k=10, budget=(1, 1))
        out[f"metaembed_objects_{label}_s"] = machine.timed(lambda: index.search(q, k=10, budget=(1, 1)), repeat)
        out[f"metaembed_arrays_{label}_s"] = machine.timed(lambda: index.search(q, k=10, budget=(1, 1), arrays=True), repeat)
        out[f"baseline_{label}_s"] = machine.timed(lambda: plain_torch_topk(documents, q, (1, 1), 10, dtype), repeat)
        out[f"objects_over_baseline_{label}"] = out[f"metaembed_objects_{label}_s"] / out[f"baseline_{label}_s"]
        out[f"arrays_over_baseline_{label}"] = out[f"metaembed_arrays_{label}_s"] / out[f"baseline_{label}_s"]
    shutil.rmtree(path, ignore_errors=True)
    return out


def opening(path: Path, n: int, stored: int, dim: int) -> dict:
    out: dict = {"documents": n, "stored_document_vectors": stored, "dim": dim}
    out["build_s"] = build(path, n, stored, dim)
    files = sorted(path.glob("segments/*/*"))
    out["bytes"] = sum(f.stat().st_size for f in files)
    queries = unit(1, 16, dim, seed=3)
    timings = {}
    start = time.perf_counter()
    index = MultiVectorIndex.open(path)
    timings["open_s"] = time.perf_counter() - start
    for budget in ((1, 1), (16, stored)):
        start = time.perf_counter()
        index.search(queries, k=10, budget=budget)
        timings[f"first_search_{budget[0]}x{budget[1]}_s"] = time.perf_counter() - start
        start = time.perf_counter()
        index.search(queries, k=10, budget=budget)
        timings[f"second_search_{budget[0]}x{budget[1]}_s"] = time.perf_counter() - start
    start = time.perf_counter()
    MultiVectorIndex.open(path).verify()
    timings["open_and_verify_all_s"] = time.perf_counter() - start
    start = time.perf_counter()
    for f in files:
        digest = hashlib.sha256()
        with open(f, "rb", buffering=0) as handle:
            while chunk := handle.read(8 << 20):
                digest.update(chunk)
    timings["sha256_all_files_s"] = time.perf_counter() - start
    out.update(timings)
    shutil.rmtree(path, ignore_errors=True)
    return out


def markdown(results: dict) -> str:
    lines = ["# Search on a busy machine, per-call overhead, opening a large index", "",
             f"Machine: {results['machine']}. Started {results['started']}.", ""]
    for condition, rows in results["threads"].items():
        lines += [f"## 1 vs 2 search threads, {condition} ({results['threads_index']})", "",
                  "| budget | 1 query: 1 thread / 2 threads (ms) | ratio 2t/1t | 100 queries: 1 thread / 2 threads (s) | ratio 2t/1t |",
                  "|---|---|---|---|---|"]
        lines += [f"| {tuple(r['budget'])} | {r['latency_s_1t'] * 1e3:.1f} / {r['latency_s_2t'] * 1e3:.1f} | "
                  f"{r['latency_ratio_2t_over_1t']:.2f} | {r['batch_s_1t']:.3f} / {r['batch_s_2t']:.3f} | "
                  f"{r['batch_ratio_2t_over_1t']:.2f} |" for r in rows]
        lines.append("")
    o = results["overhead"]
    lines += [f"## Per-call overhead at (1,1), {o['documents']:,} documents, D={o['dim']} (time / plain torch baseline)", "",
              "| queries | metaembed objects (ms) | metaembed arrays (ms) | baseline (ms) | objects / baseline | arrays / baseline |",
              "|---|---|---|---|---|---|"]
    for label in ("1q", "100q"):
        lines.append(f"| {label} | {o[f'metaembed_objects_{label}_s'] * 1e3:.2f} | {o[f'metaembed_arrays_{label}_s'] * 1e3:.2f} | "
                     f"{o[f'baseline_{label}_s'] * 1e3:.2f} | {o[f'objects_over_baseline_{label}']:.2f} | "
                     f"{o[f'arrays_over_baseline_{label}']:.2f} |")
    p = results["opening"]
    lines += ["", f"## Opening {p['documents']:,} documents x {p['stored_document_vectors']} x {p['dim']} "
              f"({p['bytes'] / 1e9:.2f} GB, built in {p['build_s']:.0f} s)", "",
              "| step | seconds |", "|---|---|"]
    lines += [f"| {key.removesuffix('_s').replace('_', ' ')} | {p[key]:.3f} |" for key in p if key.endswith("_s") and key != "build_s"]
    lines += ["", "- open: manifest, sizes, ids.json checksum; each rank of the vectors is checked (xxh3-128) when a "
              "search first reads it, so the first (1,1) search checks 1/64 of the bytes.",
              "- sha256 all files: what open(verify=True) cost before (every byte hashed on every open).",
              "- Page cache warm (the files were just written). Background load: " + LOAD.replace("\n", "; ")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script end to end")
    parser.add_argument("--documents", type=int, default=100_000, help="documents of the opening test (x 64 x 128)")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    scale = 10 if args.quick else 1
    repeat = 3
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick,
                     "machine": f"{torch.get_num_threads()} torch threads, {machine.measure()['cpu_capability']}"}

    n, stored, dim = 100_000 // scale, 16, 128
    path = WORK / "threads"
    build(path, n, stored, dim)
    index = MultiVectorIndex.open(path)
    index.verify()
    queries = unit(100, 16, dim, seed=5)
    budgets = [(1, 1), (4, 8), (16, 16)]
    results["threads_index"] = f"{n:,} documents x {stored} x {dim}, bf16"
    results["threads"] = {"quiet machine": threads_rows(index, queries, budgets, repeat)}
    load = busy_machine()
    try:
        results["threads"]["both cores busy with another process"] = threads_rows(index, queries, budgets, repeat)
    finally:
        load.kill()
        load.wait()
    del index
    shutil.rmtree(path, ignore_errors=True)

    results["overhead"] = overhead(WORK / "overhead", 10_000, 384, repeat)
    results["opening"] = opening(WORK / "opening", args.documents // scale, 64, 128)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = RESULTS / ("search_load_open_quick.json" if args.quick else "search_load_open.json")
    out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
