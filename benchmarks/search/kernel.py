"""Exact search against the roofline and the plain torch yardstick, quiet and under load, one run.

    .venv/bin/python benchmarks/search/kernel.py

The 10,000 real documents of ``real_data`` (the quickstart's model; 64 x 384 per document; queries 16 x 384) in a
bf16 index built here once (kept under benchmarks/data/search_indexes/kernel/), added in 5 parts of 2,000 as a
user adding a corpus in parts would (5 segments), and a copy compacted into one segment
(``MultiVectorIndex.compact``, timed), at every paper budget, on 1 and 2 threads:
- one query alone (median of 10 queries) and 100 queries in one call, metaembed (result objects, and arrays; the
  compacted index, and lone queries on the 5 segments too) against plain torch holding exactly the budget's vectors
  in RAM in the compute dtype, at the fastest of several block sizes (benchmarks/search/baseline.py);
- fractions of this machine's limits measured in the same run: a lone query's bytes read / (time x read bandwidth
  on that many threads, reading as many bytes: a 10,000-document index at a small budget sits in the cache); a batch's FLOPs / (time x matmul peak on that many threads, best of several shapes) in the
  dtype both compute in here: bf16 on a CPU with native bf16 (AMX, AVX512-BF16), else fp32 (bf16 is emulated there;
  the index computes in fp32 and a user's best plain code would too);
- each batch also timed right after the matmul shape that was fastest at the run's start, on the same threads
  (``batch_beside_peak``): this VM's cores each flip between ~0.5 and ~1.15 TFLOP/s within seconds, so the fraction
  of a peak measured at that moment stands beside the fraction of the run's best;
- metaembed on 2 threads after a few searches of each shape, so that its choice between 1 and 2 threads
  (metaembed.index.threadchoice, learned from recent times) is settled, as in a running service;
- under load: the same while another process keeps one core busy with matmuls (what a shared machine does), to
  check that 2 search threads are never slower than 1;
  1 and 2 threads alternate, 3 rounds, medians; and metaembed alone paired, 1 and 2 threads back to back (the
  rounds are minutes apart, and this host's speed moves within seconds);
- lone queries over 100,000 documents (the 10,000 and 9 seeded noisy variants of each, as
  ``million.variant_chunk`` makes them; a bf16 index added in 10 parts and compacted, kept beside the other), where
  a lone query reads 77 MB-4.9 GB and is memory-bound: over 10,000 documents it reads 7.7-492 MB, mostly from the
  cache, and at small budgets a call's fixed cost (~0.3-0.5 ms of Python and small torch ops) is as long as its
  reading;
- the per-rank matmul orientation behind a lone query (compute dtype, one thread, in RAM).
Writes benchmarks/results/kernel.{json,md}; ``--budgets 2,4 16,64`` measures only those.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import machine  # noqa: E402
import real_data  # noqa: E402
from baseline import resident_documents, tuned_plain_torch  # noqa: E402
from million import variant_chunk  # noqa: E402

from metaembed.budgets import PAPER_BUDGETS  # noqa: E402
from metaembed.hardware import cpu_model_name  # noqa: E402
from metaembed.index import MultiVectorIndex  # noqa: E402
from metaembed.index.search import default_compute_dtype  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT / "data" / "search_indexes" / "kernel" / "bfloat16-5-parts"
COMPACTED = INDEX.with_name("bfloat16-compacted")
SOURCE = INDEX.with_name("vectors.txt")
"""Which cached vectors (real_data.vectors_key) the index holds."""
PARTS = 5
LARGE = INDEX.with_name("bfloat16-100k")
LARGE_COPIES, LARGE_NOISE = 10, 0.5
"""The 100,000-document index: each real document and 9 seeded variants of it (million.variant_chunk, noise 0.5)."""
LARGE_SOURCE = INDEX.with_name("vectors-100k.txt")
COMPUTE = default_compute_dtype(torch.bfloat16)
"""What both metaembed and plain torch compute in on this CPU (bf16 only where it is native)."""
SETTLE = 6
"""Searches of a shape before metaembed on 2 threads is timed: its 1-or-2-threads choice samples each 3 times."""
BUSY_CORE = "import torch; torch.set_num_threads(1); a = torch.randn(512, 512)\nwhile True: a @ a"


def build_in_parts(documents: torch.Tensor) -> None:
    """The bf16 index of ``documents``, added in PARTS equal parts (one segment each, as a corpus added in parts)."""
    shutil.rmtree(INDEX, ignore_errors=True)
    ids = [f"d{i}" for i in range(len(documents))]
    step = -(-len(documents) // PARTS)
    with MultiVectorIndex.create(INDEX, documents.shape[-1], documents.shape[1]) as index:
        index.auto_merge = False
        for begin in range(0, len(documents), step):
            index.add(ids[begin:begin + step], documents[begin:begin + step])


def large_documents(documents: torch.Tensor, source: str) -> torch.Tensor:
    """The LARGE_COPIES variants of every document as one bf16 (n x copies, R, D) tensor (what plain torch holds), the
    index LARGE of them built first if it is missing or holds other vectors: added one variant at a time (a
    segment each) and compacted into one segment."""
    key = f"{source} x{LARGE_COPIES} noise {LARGE_NOISE}"
    variants = [variant_chunk(documents, copy, LARGE_NOISE) for copy in range(LARGE_COPIES)]  # fp32, one at a time
    if not (LARGE / "manifest.json").is_file() or not LARGE_SOURCE.is_file() or LARGE_SOURCE.read_text() != key:
        shutil.rmtree(LARGE, ignore_errors=True)
        with MultiVectorIndex.create(LARGE, documents.shape[-1], documents.shape[1]) as index:
            index.auto_merge = False
            for copy, vectors in enumerate(variants):
                index.add([f"c{copy}-{i}" for i in range(len(vectors))], vectors)
            index.compact()
        LARGE_SOURCE.write_text(key)
    return torch.cat([vectors.to(torch.bfloat16) for vectors in variants])


def seconds(function, repeats: int = 1) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def batch_seconds(search, queries: torch.Tensor, repeats: int = 3) -> float:
    """Median seconds of ``repeats`` calls with every query, after one warm-up call."""
    search(queries)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        search(queries)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def lone(search, queries: torch.Tensor) -> float:
    """Median seconds of one query alone, over the given queries (after a warm-up)."""
    search(queries[:1])
    times = []
    for query in queries:
        start = time.perf_counter()
        search(query.unsqueeze(0))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def batch_beside_peak(search, queries: torch.Tensor, shape: tuple[int, int, int], repeats: int = 3) -> tuple[float, float]:
    """Median seconds of a batch call and, timed just before each, the matmul rate of ``shape`` (the fastest of the
    peak shapes at the run's start, on the same threads; FLOP/s, the best of 3 runs): this VM's cores flip between
    ~0.5 and ~1.15 TFLOP/s each, independently, within seconds, so a peak from the run's ends can be from another
    moment than the batch."""
    search(queries)
    peaks, searches = [], []
    for _ in range(repeats):
        peaks.append(machine.matmul_flops(COMPUTE, *shape))
        start = time.perf_counter()
        search(queries)
        searches.append(time.perf_counter() - start)
    return statistics.median(searches), statistics.median(peaks)


def stored_prefix(index: MultiVectorIndex, r_c: int) -> list[torch.Tensor]:
    """The bytes a lone query at document budget ``r_c`` reads from ``index`` (bf16, one segment each): the first
    r_c ranks of every segment's rank-major vectors, as mapped from disk (views, nothing copied)."""
    return [segment.vectors[:r_c] for segment in index._segments]


def lone_beside_reads(search, queries: torch.Tensor, stored: list[torch.Tensor], r_q: int) -> tuple[float, float, float]:
    """Median seconds of one query alone and, timed just before each, of reading the very bytes it reads (the faster
    of an int16 maximum and an fp32 sum over them, :func:`machine.read_bandwidth`'s two loops), and of the matmul
    alone over them (its first ``r_q`` vectors in the compute dtype, ~4M products a call, ``torch.mv`` for one, as
    the index calls them; nothing else): ratios this host's drift between the run's ends does not move, and the
    second says how much of the gap is the matmul's own read rate."""
    def read() -> float:
        best = float("inf")
        for reduce in (lambda t: t.view(torch.int16).amax(), lambda t: t.view(torch.float32).sum()):
            start = time.perf_counter()
            for part in stored:
                reduce(part)
            best = min(best, time.perf_counter() - start)
        return best

    def products(query: torch.Tensor) -> float:
        vectors = query[:r_q].to(COMPUTE)
        start = time.perf_counter()
        for part in stored:
            rows = part.reshape(-1, part.shape[-1])
            step = max(1 << 16, (1 << 22) // r_q)
            for begin in range(0, len(rows), step):
                chunk = rows[begin : begin + step]
                if r_q == 1:
                    torch.mv(chunk, vectors[0])
                else:
                    chunk @ vectors.T
        return time.perf_counter() - start

    search(queries[:1])
    read()
    products(queries[0])
    reads, matmuls, searches = [], [], []
    for query in queries:
        reads.append(read())
        matmuls.append(products(query))
        start = time.perf_counter()
        search(query.unsqueeze(0))
        searches.append(time.perf_counter() - start)
    return statistics.median(searches), statistics.median(reads), statistics.median(matmuls)


def budget_bytes(n_documents: int, r_c: int, dim: int) -> int:
    """Bytes of the document vectors a lone query at document budget ``r_c`` reads (bf16)."""
    return n_documents * r_c * dim * 2


def limits(read_sizes: list[int]) -> dict:
    """Per thread count: the read bandwidth at each of ``read_sizes`` bytes (what lone queries read; plus 1 GiB,
    out of cache) and the matmul peak (best of several shapes)."""
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        peak, rates = machine.peak_matmul_flops(COMPUTE)
        out[str(threads)] = {"read_bytes_per_s": {str(size): machine.read_bandwidth(size)
                                                  for size in sorted({*read_sizes, 1 << 30})},
                             "peak_flops": peak, "peak_shape": max(rates, key=rates.get)}
    return out


def best_limits(first: dict, last: dict) -> dict:
    """The higher of each limit measured at the start and at the end of the run: this VM's speed drifts (its bf16
    peak has read 0.43 and 1.25 TFLOP/s on the same day), and a limit caught in a slow moment flatters every
    fraction taken against it. For the same reason 2 threads' limits are never taken below 1 thread's (two threads
    can do at least what one does; this host's second core has measured slower than the first for a whole run,
    which put a 2-thread batch at 1.18 of "the peak")."""
    best = {threads: {"read_bytes_per_s": {size: max(rate, last[threads]["read_bytes_per_s"][size])
                                           for size, rate in limit["read_bytes_per_s"].items()},
                      "peak_flops": max(limit["peak_flops"], last[threads]["peak_flops"])}
            for threads, limit in first.items()}
    one, two = best["1"], best["2"]
    two["peak_flops"] = max(two["peak_flops"], one["peak_flops"])
    two["read_bytes_per_s"] = {size: max(rate, one["read_bytes_per_s"][size])
                               for size, rate in two["read_bytes_per_s"].items()}
    return best


def measure(index: MultiVectorIndex, documents: torch.Tensor, queries: torch.Tensor, budget: tuple[int, int],
            threads: int, batch: bool = True, segmented: MultiVectorIndex | None = None,
            peak_shape: str | None = None) -> dict:
    """Lone-query and batch seconds of metaembed and plain torch at one budget and thread count (``segmented``: the
    same documents in several segments, lone queries only; ``peak_shape``: "m x k x n" to time the batch beside)."""
    torch.set_num_threads(threads)
    index.threads = threads
    resident = resident_documents(documents, budget[1], COMPUTE)  # held in the compute dtype, as a user would
    # block size: the fastest here, now (for a lone query only, when no batch is timed)
    plain = tuned_plain_torch(resident, queries if batch else queries[:1], budget, 10, COMPUTE)[0]
    ours = lambda q: index.search(q, k=10, budget=budget)  # noqa: E731
    arrays = lambda q: index.search(q, k=10, budget=budget, arrays=True)  # noqa: E731
    if threads > 1:  # let the 1-or-2-threads choice settle for this shape, on this machine's current load
        for _ in range(SETTLE):
            ours(queries[:1])
            if segmented is not None:
                segmented.search(queries[:1], k=10, budget=budget)
            if batch:
                ours(queries)
    lone_runs = [("plain", plain), ("metaembed", ours)] + ([("metaembed_arrays", arrays)] if batch else [])
    if segmented is not None:
        segmented.threads = threads
        lone_runs.append(("metaembed_segments", lambda q: segmented.search(q, k=10, budget=budget)))
    row = {"budget": list(budget), "threads": threads,
           "lone_ms": {name: 1e3 * lone(f, queries[:10]) for name, f in lone_runs}}
    if not batch:  # memory-bound lone queries: also against reads of the same bytes, interleaved with them
        searched, read, products = lone_beside_reads(ours, queries[:10], stored_prefix(index, budget[1]), budget[0])
        row["lone_beside_reads_ms"] = {"metaembed": 1e3 * searched, "read": 1e3 * read, "matmul": 1e3 * products}
    if batch:
        row["batch_ms_per_query"] = {name: 1e3 * batch_seconds(f, queries) / len(queries)
                                     for name, f in (("plain", plain), ("metaembed", ours))}
        if peak_shape is not None:
            searched, peak = batch_beside_peak(ours, queries, tuple(int(x) for x in peak_shape.split("x")))
            row["batch_beside_peak"] = {"metaembed_ms_per_query": 1e3 * searched / len(queries), "peak_flops": peak}
    return row


def with_fractions(row: dict, n_documents: int, dim: int, machine_limits: dict) -> dict:
    """``row`` with its fractions of the machine's limits: a lone query's bytes / time / the read bandwidth at that
    many bytes, a batch's FLOPs / time / the matmul peak, on the row's thread count."""
    (r_q, r_c), limit = row["budget"], machine_limits[str(row["threads"])]
    bytes_read = budget_bytes(n_documents, r_c, dim)
    bandwidth = limit["read_bytes_per_s"][str(bytes_read)]  # measured at the same size
    row["lone_bandwidth_fraction"] = {name: bytes_read / (ms / 1e3) / bandwidth for name, ms in row["lone_ms"].items()}
    if "lone_beside_reads_ms" in row:
        beside = row["lone_beside_reads_ms"]
        row["lone_fraction_of_reads_beside"] = beside["read"] / beside["metaembed"]
        if "matmul" in beside:
            row["matmul_fraction_of_reads_beside"] = beside["read"] / beside["matmul"]
    if "batch_ms_per_query" in row:
        flops = 2 * r_q * n_documents * r_c * dim
        row["batch_peak_fraction"] = {name: flops / (ms / 1e3) / limit["peak_flops"]
                                      for name, ms in row["batch_ms_per_query"].items()}
    if "batch_beside_peak" in row:
        beside = row["batch_beside_peak"]
        row["batch_fraction_of_peak_beside"] = flops / (beside["metaembed_ms_per_query"] / 1e3) / beside["peak_flops"]
    return row


def loaded(index: MultiVectorIndex, documents: torch.Tensor, queries: torch.Tensor, budget: tuple[int, int],
           rounds: int = 3) -> dict:
    """1 and 2 threads measured in alternation, ``rounds`` times (the load varies): the median of each figure."""
    runs = {1: [], 2: []}
    for _ in range(rounds):
        for threads in (1, 2):
            runs[threads].append(measure(index, documents, queries, budget, threads))
    return {str(threads): {kind: {name: statistics.median(run[kind][name] for run in rows) for name in rows[0][kind]}
                           for kind in ("lone_ms", "batch_ms_per_query")} for threads, rows in runs.items()}


LOADED_PAIRS = 20
"""Pairs per shape in the paired comparison under load (:func:`loaded_pairs`)."""


def loaded_pairs(index: MultiVectorIndex, queries: torch.Tensor, budget: tuple[int, int], batch: bool,
                 pairs: int = LOADED_PAIRS) -> dict:
    """metaembed on 2 threads against 1 under load, paired: each pair runs both back to back in random order (a lone
    query, or 100 queries), after 6 of each to settle the thread choice; the median and quartiles of the pairs'
    2-thread / 1-thread ratios. Runs minutes apart (:func:`loaded`) differ by more than the thread count does here:
    the busy process and each core's own speed move within seconds."""
    order = random.Random(0)

    def run(threads: int, i: int) -> float:
        torch.set_num_threads(threads)
        index.threads = threads
        chosen = queries[:100] if batch else queries[i % len(queries)].unsqueeze(0)
        start = time.perf_counter()
        index.search(chosen, k=10, budget=budget)
        return time.perf_counter() - start

    for i in range(SETTLE):
        run(2, i)
        run(1, i)
    times: dict[int, list[float]] = {1: [], 2: []}
    for i in range(pairs):
        for threads in order.sample([1, 2], 2):
            times[threads].append(run(threads, i))
    ratios = sorted(two / one for one, two in zip(times[1], times[2]))
    return {"one_ms": 1e3 * statistics.median(times[1]), "two_ms": 1e3 * statistics.median(times[2]),
            "ratio_median": statistics.median(ratios), "ratio_quartiles": [ratios[pairs // 4], ratios[3 * pairs // 4]],
            "pairs": pairs}


def orientation() -> list[dict]:
    torch.set_num_threads(1)
    documents = torch.randn(4000, 384).to(COMPUTE)
    rows = []
    for m in (1, 16, 64, 1600):
        queries = torch.randn(m, 384).to(COMPUTE)
        rows.append({"m": m, "n": 4000, "queries_first_us": 1e6 * seconds(lambda: queries @ documents.T, 20),
                     "documents_first_us": 1e6 * seconds(lambda: documents @ queries.T, 20)})
        if m == 1:
            rows[-1]["mv_us"] = 1e6 * seconds(lambda: torch.mv(documents, queries[0]), 20)
    return rows


def markdown(results: dict) -> str:
    lim, start, end = results["limits"], results["limits_at_start"], results["limits_at_end"]

    def read_rates(threads: str) -> str:
        return ", ".join(f"{rate / 1e9:.1f} GB/s at {int(size) / 1e6:,.0f} MB"
                         for size, rate in lim[threads]["read_bytes_per_s"].items())
    lines = ["# Exact search against the roofline and plain torch", "",
             f"Run {results['started']}. Machine limits measured in this run: read bandwidth (the faster of an fp32 sum and an int16 maximum, best of 3) "
             f"{read_rates('1')} on 1 thread, {read_rates('2')} on 2; "
             f"{results['compute']} matmul peak {lim['1']['peak_flops'] / 1e12:.2f} TFLOP/s on 1 thread, "
             f"{lim['2']['peak_flops'] / 1e12:.2f} on 2 (best of {len(machine.PEAK_SHAPES)} shapes; each limit the higher of "
             f"its measures at the start and the end of the run, and 2 threads' never below 1 thread's: peak {start['1']['peak_flops'] / 1e12:.2f} and "
             f"{end['1']['peak_flops'] / 1e12:.2f} on 1 thread). "
             f"CPU: {results['cpu']}; metaembed and plain torch compute in {results['compute']} "
             f"({'native bf16' if results['compute'] == 'bf16' else 'no native bf16 here: bf16 would be emulated'}).", "",
             f"10,000 real documents (64 x 384, bf16 index on disk), queries 16 x 384: the index as added in "
             f"{results['segments']} parts ({results['segments']} segments), and a copy compacted into one segment in "
             f"{results['compact_s']:.1f} s (`MultiVectorIndex.compact`; every figure but the 5-segment column is the "
             "compacted index). Plain torch holds exactly the budget's vectors in RAM.", "",
             "## Quiet machine", "",
             "| budget | threads | lone: plain (ms) | lone: metaembed (ms) | metaembed / plain | arrays (ms) | "
             f"lone: {results['segments']} segments (ms) | "
             "lone, fraction of bandwidth (metaembed / plain) | batch: plain (ms/q) | batch: metaembed (ms/q) | "
             f"batch, fraction of {results['compute']} peak (metaembed / plain) | "
             "batch beside the peak: metaembed (ms/q) / peak then (TFLOP/s) | fraction of that peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["quiet"]:
        lone_ms, frac = r["lone_ms"], r["lone_bandwidth_fraction"]
        batch, peak = r["batch_ms_per_query"], r["batch_peak_fraction"]
        lines.append(f"| ({r['budget'][0]},{r['budget'][1]}) | {r['threads']} | {lone_ms['plain']:.2f} | "
                     f"{lone_ms['metaembed']:.2f} | {lone_ms['metaembed'] / lone_ms['plain']:.2f} | "
                     f"{lone_ms['metaembed_arrays']:.2f} | {lone_ms['metaembed_segments']:.2f} | "
                     f"{frac['metaembed']:.2f} / {frac['plain']:.2f} | "
                     f"{batch['plain']:.3f} | {batch['metaembed']:.3f} | {peak['metaembed']:.2f} / {peak['plain']:.2f} | "
                     + (f"{r['batch_beside_peak']['metaembed_ms_per_query']:.3f} / "
                        f"{r['batch_beside_peak']['peak_flops'] / 1e12:.2f} | {r['batch_fraction_of_peak_beside']:.2f} |"
                        if "batch_beside_peak" in r else "| |"))
    if results.get("large"):
        lines += ["", f"## {results['large_documents']:,} documents: lone queries, memory-bound", "",
                  f"The same queries over {results['large_documents']:,} documents (each real one and "
                  f"{LARGE_COPIES - 1} seeded variants, noise {LARGE_NOISE}; a bf16 index in one segment, "
                  "{:.1f} GB on disk); plain torch holds the budget's vectors in RAM.".format(results["large_bytes"] / 1e9), "",
                  "| budget | threads | bytes read (MB) | read bandwidth there (GB/s) | lone: plain (ms) | "
                  "lone: metaembed (ms) | metaembed / plain | fraction of bandwidth (metaembed / plain) | "
                  "beside reads of its bytes: metaembed / read (ms) | fraction of those reads | "
                  "the matmul alone beside them (ms) | its fraction of those reads |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["large"]:
            lone_ms, frac = r["lone_ms"], r["lone_bandwidth_fraction"]
            nbytes = budget_bytes(results["large_documents"], r["budget"][1], results["dim"])
            rate = lim[str(r["threads"])]["read_bytes_per_s"][str(nbytes)]
            lines.append(f"| ({r['budget'][0]},{r['budget'][1]}) | {r['threads']} | {nbytes / 1e6:,.0f} | "
                         f"{rate / 1e9:.1f} | {lone_ms['plain']:.1f} | {lone_ms['metaembed']:.1f} | "
                         f"{lone_ms['metaembed'] / lone_ms['plain']:.2f} | {frac['metaembed']:.2f} / {frac['plain']:.2f} | "
                         + (f"{r['lone_beside_reads_ms']['metaembed']:.1f} / {r['lone_beside_reads_ms']['read']:.1f} | "
                            f"{r['lone_fraction_of_reads_beside']:.2f} |" if "lone_beside_reads_ms" in r else "| |")
                         + (f" {r['lone_beside_reads_ms']['matmul']:.1f} | {r['matmul_fraction_of_reads_beside']:.2f} |"
                            if "matmul_fraction_of_reads_beside" in r else " | |"))
    lines += ["", "## Under load (another process keeps one core busy with matmuls; 1 and 2 threads alternate, 3 rounds, "
              "medians)", "",
              "| budget | what | plain, 1 thread | plain, 2 threads | metaembed, 1 thread | metaembed, 2 threads | "
              "metaembed: 2 threads / 1 thread |", "|---|---|---|---|---|---|---|"]
    for budget, rows in results["loaded"].items():
        one, two = rows["1"], rows["2"]
        lines.append(f"| {budget} | lone (ms) | {one['lone_ms']['plain']:.2f} | {two['lone_ms']['plain']:.2f} | "
                     f"{one['lone_ms']['metaembed']:.2f} | {two['lone_ms']['metaembed']:.2f} | "
                     f"{two['lone_ms']['metaembed'] / one['lone_ms']['metaembed']:.2f} |")
        if "batch_ms_per_query" in one:
            lines.append(f"| {budget} | batch (ms/q) | {one['batch_ms_per_query']['plain']:.3f} | "
                         f"{two['batch_ms_per_query']['plain']:.3f} | {one['batch_ms_per_query']['metaembed']:.3f} | "
                         f"{two['batch_ms_per_query']['metaembed']:.3f} | "
                         f"{two['batch_ms_per_query']['metaembed'] / one['batch_ms_per_query']['metaembed']:.2f} |")
    if results.get("loaded_pairs"):
        lines += ["", f"## Under load, paired (metaembed: each pair runs 1 and 2 threads back to back in random order, "
                  f"{LOADED_PAIRS} pairs per row, after {SETTLE} of each)", "",
                  "| budget | what | 1 thread (ms, median) | 2 threads (ms, median) | 2 threads / 1 thread: paired median "
                  "(quartiles) |", "|---|---|---|---|---|"]
        for budget, rows in results["loaded_pairs"].items():
            for what, row in rows.items():
                low, high = row["ratio_quartiles"]
                lines.append(f"| {budget} | {what} | {row['one_ms']:.2f} | {row['two_ms']:.2f} | "
                             f"{row['ratio_median']:.2f} ({low:.2f}-{high:.2f}) |")
    lines += ["", f"## The matmul orientation ({results['compute']}, 1 thread, 4,000 documents in RAM, microseconds)", "",
              "| query vectors | queries @ docs.T | docs @ queries.T | torch.mv(docs, query) |", "|---|---|---|---|"]
    lines += [f"| {r['m']} | {r['queries_first_us']:.0f} | {r['documents_first_us']:.0f} | "
              f"{r['mv_us']:.0f} |" if "mv_us" in r else f"| {r['m']} | {r['queries_first_us']:.0f} | "
              f"{r['documents_first_us']:.0f} | |" for r in results["orientation"]]
    lines += ["", "- lone = median of 10 queries alone after a warm-up; batch = the same 100 queries in one call, median of 3.",
              "- fraction of bandwidth = bytes of the budget's document vectors / time / read bandwidth measured at "
              "that many bytes (the faster of two streaming reductions) (a lone query is memory-bound; a small index reads from the cache, faster than a "
              "1 GiB buffer from memory, so it is not measured against the slower rate); fraction of peak = FLOPs / time / matmul peak (a batch is compute-bound).",
              "- beside reads of its bytes (100,000 documents): each lone query is timed right after a read of the "
              "very bytes it reads (the index's first r_c ranks, mapped from disk; the faster of the two reductions), "
              "query by query, so the host's speed at that moment is in both; fraction = read time / search time "
              "(medians). The fraction of bandwidth takes the best rate of the run's two ends instead. The matmul "
              "alone: the same bytes times the query's first r_q vectors (`torch.mv` for one), ~4M products a call, "
              "nothing else, timed between the read and the search: the part of the gap that is the matmul's own.",
              "- batch beside the peak: each of 3 batch calls is timed right after the matmul shape that was "
              "fastest at the run's start, on the same threads (best of 3), so the host's speed at that moment is "
              "in both (this VM's cores each flip between ~0.5 and ~1.15 TFLOP/s within seconds); fraction = batch "
              "FLOP/s / that peak (medians). The fraction of peak takes the best peak of the run's two ends instead.",
              "- metaembed on 2 threads is timed after a few searches of each shape: it runs a search on 1 or 2 "
              "threads, whichever recent searches of that size found faster (`metaembed.index.threadchoice`).",
              "- 2-core VM: ratios within this run, not absolute times across runs."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", nargs="+", default=[f"{r_q},{r_c}" for r_q, r_c in PAPER_BUDGETS],
                        help="r_q,r_c to measure (default every paper budget)")
    parser.add_argument("--results", default="kernel", help="name of the results files in benchmarks/results")
    parser.add_argument("--no-large", dest="large", action="store_false",
                        help="skip the 100,000-document lone queries (a 4.9 GB index, built once)")
    args = parser.parse_args()
    budgets = [tuple(int(x) for x in budget.split(",")) for budget in args.budgets]
    model, trained = real_data.default_model()
    data = real_data.encoded_corpus(model, trained, 10_000, 1000)
    documents, queries = data["documents"], data["queries"][:100].float()
    source = real_data.vectors_key(model, trained, 10_000, 1000)  # the index is rebuilt when the vectors change
    if not (INDEX / "manifest.json").is_file() or not SOURCE.is_file() or SOURCE.read_text() != source:
        build_in_parts(documents)
        SOURCE.write_text(source)
    segmented = MultiVectorIndex.open(INDEX)
    shutil.rmtree(COMPACTED, ignore_errors=True)
    shutil.copytree(INDEX, COMPACTED)
    start = time.perf_counter()
    with MultiVectorIndex.open(COMPACTED, mode="a") as writer:
        writer.compact()
    compact_s = time.perf_counter() - start
    index = MultiVectorIndex.open(COMPACTED)
    for opened in (index, segmented):
        opened.search(queries[:1], k=10, budget=(16, 64))  # checks every rank once, outside the timings
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "segments": len(segmented._segments),
               "cpu": cpu_model_name(), "compute": "bf16" if COMPUTE == torch.bfloat16 else "fp32",
               "compact_s": compact_s}
    large_documents_ = large_documents(documents, source) if args.large else None
    large = MultiVectorIndex.open(LARGE) if args.large else None
    if large is not None:
        large.search(queries[:1], k=10, budget=(16, 64))  # checks every rank once, outside the timings
        results.update(large_documents=len(large), large_bytes=large.bytes_per_document() * len(large))
    results["dim"] = index.dim
    read_sizes = [budget_bytes(len(opened), r_c, index.dim) for opened in (index, large) if opened is not None
                  for _, r_c in budgets]
    at_start = limits(read_sizes)
    quiet = [measure(index, documents, queries, budget, threads, segmented=segmented,
                     peak_shape=at_start[str(threads)]["peak_shape"]) for budget in budgets for threads in (1, 2)]
    large_rows = [measure(large, large_documents_, queries, budget, threads, batch=False)
                  for budget in budgets for threads in (1, 2)] if large is not None else []
    del large_documents_
    busy = subprocess.Popen([sys.executable, "-c", BUSY_CORE])
    try:
        time.sleep(2)
        results["loaded"] = {f"({b[0]},{b[1]})": loaded(index, documents, queries, b) for b in budgets}
        results["loaded_pairs"] = {f"({b[0]},{b[1]})": {what: loaded_pairs(index, queries, b, what == "batch")
                                                         for what in ("lone", "batch")} for b in budgets}
    finally:
        busy.kill()
    results["orientation"] = orientation()
    results["limits_at_start"], results["limits_at_end"] = at_start, limits(read_sizes)
    results["limits"] = best_limits(at_start, results["limits_at_end"])
    results["quiet"] = [with_fractions(row, len(index), index.dim, results["limits"]) for row in quiet]
    results["large"] = [with_fractions(row, len(large), index.dim, results["limits"]) for row in large_rows]
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = ROOT / "results"
    (out / f"{args.results}.json").write_text(json.dumps(results, indent=1))
    (out / f"{args.results}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
