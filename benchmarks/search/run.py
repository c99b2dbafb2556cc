"""Search benchmark: exact and cascade MaxSim on the embedded index vs a plain torch baseline, at the paper's
budgets, on real-encoded (Debian descriptions, MiniLM MetaEmbed) and synthetic vectors.

    .venv/bin/python benchmarks/search/run.py [--quick]

Writes benchmarks/results/search.json and search.md. The machine is shared: compare ratios measured in the
same run (our time vs the baseline and vs the roofline), not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))
import machine  # noqa: E402
from baseline import plain_torch_topk  # noqa: E402
import real_data  # noqa: E402

from metaembed.budgets import PAPER_BUDGETS  # noqa: E402
from metaembed.index import MultiVectorIndex  # noqa: E402
from metaembed.index.search import default_compute_dtype  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "data" / "search_indexes"
RESULTS = ROOT / "results"


def unit(*shape: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def build(name: str, dim: int, stored: int, chunks, dtype: str = "bfloat16") -> tuple[MultiVectorIndex, float]:
    path = WORK / name
    shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    with MultiVectorIndex.create(path, dim, stored, dtype=dtype) as index:
        for ids, vectors in chunks:
            index.add(ids, vectors)
    seconds = time.perf_counter() - start
    return MultiVectorIndex.open(path), seconds


def recall_at_10(results, truth) -> float:
    return statistics.mean(len(set(r.ids[:10]) & set(t.ids[:10])) / max(1, len(t.ids[:10])) for r, t in zip(results, truth))


def roofline_seconds(limits: dict, n_queries: int, n_docs: int, budget, dim: int, bytes_per_value: int, dtype) -> float:
    r_q, r_c = budget
    data_bytes = n_docs * r_c * dim * bytes_per_value
    flops = 2 * n_queries * r_q * n_docs * r_c * dim
    peak = limits["bf16_matmul_flops"] if dtype == torch.bfloat16 else limits["fp32_matmul_flops"]
    return max(data_bytes / limits["read_bandwidth_bytes_per_s"], flops / peak)


def bench_dataset(name: str, index: MultiVectorIndex, queries: torch.Tensor, budgets, limits: dict,
                  baseline_docs: torch.Tensor | None, baseline_max_rc: int, cascade_ks=(), quick=False) -> dict:
    n, dim, stored = len(index), index.dim, index.max_document_vectors
    dtype = default_compute_dtype(torch.bfloat16)
    rows = []
    ids = index.ids if baseline_docs is not None else []  # storage order = the baseline tensor's row order
    for budget in tqdm(budgets, desc=name):
        r_q, r_c = budget
        row: dict = {"budget": list(budget)}
        one = queries[:1]
        row["exact_latency_s"] = machine.timed(lambda: index.search(one, k=10, budget=budget))
        start = time.perf_counter()
        exact = index.search(queries, k=10, budget=budget)
        row["exact_throughput_qps"] = len(queries) / (time.perf_counter() - start)
        row["bytes_read_per_query"] = n * r_c * dim * 2
        row["exact_latency_roofline_fraction"] = roofline_seconds(limits, 1, n, budget, dim, 2, dtype) / row["exact_latency_s"]
        row["exact_throughput_roofline_fraction"] = (
            roofline_seconds(limits, len(queries), n, budget, dim, 2, dtype) * row["exact_throughput_qps"] / len(queries))
        if baseline_docs is not None and r_c <= baseline_max_rc:
            plain = lambda q: plain_torch_topk(baseline_docs, q, budget, k=10, compute_dtype=dtype)
            row["baseline_latency_s"] = machine.timed(lambda: plain(one))
            start = time.perf_counter()
            _, rows_found = plain(queries)
            row["baseline_throughput_qps"] = len(queries) / (time.perf_counter() - start)
            row["baseline_recall_at_10_vs_exact"] = statistics.mean(
                len({ids[r] for r in found.tolist()} & set(t.ids[:10])) / 10 for found, t in zip(rows_found, exact))
            row["baseline_latency_roofline_fraction"] = (
                roofline_seconds(limits, 1, n, budget, dim, 2, dtype) / row["baseline_latency_s"])
            row["baseline_throughput_roofline_fraction"] = (
                roofline_seconds(limits, len(queries), n, budget, dim, 2, dtype) * row["baseline_throughput_qps"] / len(queries))
            row["speedup_latency_vs_baseline"] = row["baseline_latency_s"] / row["exact_latency_s"]
            row["speedup_throughput_vs_baseline"] = row["exact_throughput_qps"] / row["baseline_throughput_qps"]
        for k_candidates in cascade_ks:
            for first_stage in ("exact", "hnsw"):
                if first_stage == "hnsw" and (k_candidates != max(cascade_ks) or quick):
                    continue
                search = lambda q: index.cascade_search(q, k=10, budget=budget, candidates=k_candidates,
                                                        first_stage=first_stage)
                latency = machine.timed(lambda: search(one))
                start = time.perf_counter()
                results = search(queries)
                throughput = len(queries) / (time.perf_counter() - start)
                row.setdefault("cascade", []).append({
                    "first_stage": f"{first_stage} (1,1)", "candidates": k_candidates,
                    "latency_s": latency, "throughput_qps": throughput, "recall_at_10_vs_exact": recall_at_10(results, exact),
                    "speedup_latency_vs_exact": row["exact_latency_s"] / latency,
                    "speedup_throughput_vs_exact": throughput / row["exact_throughput_qps"],
                })
        rows.append(row)
    return {"name": name, "documents": n, "dim": dim, "stored_document_vectors": stored,
            "index_bytes_per_document": index.bytes_per_document(), "compute_dtype": str(dtype), "budgets": rows}


def real_chunks(documents: torch.Tensor, copies: int, noise: float):
    """The real vectors, then ``copies - 1`` augmented copies (small Gaussian noise, renormalised), as id chunks."""
    n = len(documents)
    for copy in range(copies):
        vectors = documents.float()
        if copy:
            vectors = torch.nn.functional.normalize(vectors + noise * unit(*vectors.shape, seed=copy), dim=-1)
        yield [f"c{copy}-{i}" for i in range(n)], vectors


def synthetic_chunks(n: int, stored: int, dim: int, chunk: int = 50_000):
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        yield [f"s{start + i}" for i in range(count)], unit(count, stored, dim, seed=start + 1)


def cascade_sweep(index: MultiVectorIndex, queries: torch.Tensor, budget=(16, 64),
                  first_stages=((1, 1), (2, 4), (4, 8)), ks=(100, 1000, 4000)) -> dict:
    """Cascade speed-up and recall@10 vs exact at ``budget`` for several first-stage budgets and candidate counts."""
    one = queries[:1]
    exact_latency = machine.timed(lambda: index.search(one, k=10, budget=budget), repeat=1)
    start = time.perf_counter()
    exact = index.search(queries, k=10, budget=budget)
    exact_qps = len(queries) / (time.perf_counter() - start)
    rows = []
    for first in tqdm(first_stages, desc="cascade sweep"):
        for k_candidates in ks:
            search = lambda q: index.cascade_search(q, k=10, budget=budget, candidates=k_candidates, first_stage_budget=first)
            latency = machine.timed(lambda: search(one))
            start = time.perf_counter()
            results = search(queries)
            qps = len(queries) / (time.perf_counter() - start)
            rows.append({"first_stage_budget": list(first), "candidates": k_candidates, "latency_s": latency,
                         "throughput_qps": qps, "speedup_latency_vs_exact": exact_latency / latency,
                         "speedup_throughput_vs_exact": qps / exact_qps, "recall_at_10_vs_exact": recall_at_10(results, exact)})
    return {"budget": list(budget), "documents": len(index), "exact_latency_s": exact_latency,
            "exact_throughput_qps": exact_qps, "rows": rows}


def fast_plaid_status() -> dict:
    """fast-plaid is measured only if installing it leaves torch alone and it runs on CPU."""
    dry = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "fast-plaid"], capture_output=True, text=True)
    would = next((line for line in dry.stdout.splitlines() if line.startswith("Would install")), "")
    if "torch-" in would:
        torch_pin = [part for part in would.split() if part.startswith("torch-")]
        return {"included": False, "reason": f"pip install fast-plaid would replace torch 2.13.0 CPU with {torch_pin} "
                "plus CUDA 13 packages (cuda-toolkit, cudnn, nccl ...): not installable here without breaking the project"}
    return {"included": False, "reason": "installs without touching torch, but was not measured in this version", "pip": would}


def int8_quality(documents: torch.Tensor, queries: torch.Tensor) -> dict:
    """Recall@10 and score error of int8 storage (per-vector scales) against bf16, on the real vectors."""
    ids = [f"d{i}" for i in range(len(documents))]
    bf16, _ = build("real-bf16", documents.shape[-1], documents.shape[1], [(ids, documents.float())])
    int8, _ = build("real-int8", documents.shape[-1], documents.shape[1], [(ids, documents.float())], dtype="int8")
    rows = []
    for budget in PAPER_BUDGETS:
        a = bf16.search(queries, k=10, budget=budget)
        b = int8.search(queries, k=10, budget=budget)
        rows.append({"budget": list(budget), "recall_at_10_vs_bf16": recall_at_10(b, a),
                     "max_abs_top1_score_difference": max(abs(x.scores[0] - y.scores[0]) for x, y in zip(a, b))})
    return {"documents": len(documents), "bytes_per_document_bf16": bf16.bytes_per_document(),
            "bytes_per_document_int8": int8.bytes_per_document(), "budgets": rows}


def markdown(results: dict) -> str:
    limits = results["machine"]
    lines = [
        "# Search benchmark", "",
        f"Machine (measured in this run): read {limits['read_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, "
        f"peak fp32 matmul {limits['fp32_matmul_flops'] / 1e9:.0f} GFLOP/s, peak bf16 matmul {limits['bf16_matmul_flops'] / 1e9:.0f} GFLOP/s "
        f"(native bf16: {limits['native_bf16_matmul']}, capability {limits['cpu_capability']}), {limits['threads']} threads.", "",
    ]
    for data in results["datasets"]:
        lines += [f"## {data['name']}: {data['documents']:,} documents, D={data['dim']}, {data['stored_document_vectors']} stored vectors, "
                  f"{data['index_bytes_per_document']:.0f} bytes/doc, compute {data['compute_dtype']}", "",
                  "| budget | exact 1q (ms) | roofline frac 1q | exact 100q (q/s) | roofline frac 100q | baseline 1q (ms) / 100q (q/s) | baseline roofline frac 1q / 100q | speed-up 1q / 100q vs baseline | cascade K (first stage): speed-up 1q, 100q, recall@10 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in data["budgets"]:
            baseline = (f"{row['baseline_latency_s'] * 1e3:.1f} / {row['baseline_throughput_qps']:.1f}",
                        f"{row['baseline_latency_roofline_fraction']:.2f} / {row['baseline_throughput_roofline_fraction']:.2f}",
                        f"{row['speedup_latency_vs_baseline']:.2f}x / {row['speedup_throughput_vs_baseline']:.2f}x") \
                if "baseline_latency_s" in row else ("-", "-", "-")
            cascade = "; ".join(f"K={c['candidates']} ({c['first_stage']}): {c['speedup_latency_vs_exact']:.1f}x, "
                                f"{c['speedup_throughput_vs_exact']:.1f}x, {c['recall_at_10_vs_exact']:.3f}" for c in row.get("cascade", [])) or "-"
            lines.append(f"| {tuple(row['budget'])} | {row['exact_latency_s'] * 1e3:.1f} | {row['exact_latency_roofline_fraction']:.2f} | "
                         f"{row['exact_throughput_qps']:.1f} | {row['exact_throughput_roofline_fraction']:.2f} | {baseline[0]} | {baseline[1]} | {baseline[2]} | {cascade} |")
        lines.append("")
    quality = results.get("int8_quality")
    if quality:
        lines += [f"## int8 storage (per-vector scales) vs bf16 on {quality['documents']:,} real documents: "
                  f"{quality['bytes_per_document_int8']:.0f} vs {quality['bytes_per_document_bf16']:.0f} bytes/doc", "",
                  "| budget | recall@10 vs bf16 | max top-1 score difference |", "|---|---|---|"]
        lines += [f"| {tuple(r['budget'])} | {r['recall_at_10_vs_bf16']:.3f} | {r['max_abs_top1_score_difference']:.4f} |" for r in quality["budgets"]]
        lines.append("")
    sweep = results.get("cascade_sweep")
    if sweep:
        lines += [f"## Cascade sweep at budget {tuple(sweep['budget'])} on {sweep['documents']:,} real-encoded documents "
                  f"(exact: {sweep['exact_latency_s'] * 1e3:.0f} ms/query alone, {sweep['exact_throughput_qps']:.2f} q/s batched)", "",
                  "| first stage | K | latency (ms) | speed-up 1q | speed-up 100q | recall@10 vs exact |", "|---|---|---|---|---|---|"]
        lines += [f"| exact {tuple(r['first_stage_budget'])} | {r['candidates']} | {r['latency_s'] * 1e3:.1f} | "
                  f"{r['speedup_latency_vs_exact']:.1f}x | {r['speedup_throughput_vs_exact']:.1f}x | {r['recall_at_10_vs_exact']:.3f} |"
                  for r in sweep["rows"]]
        lines.append("")
    lines += [f"fast-plaid: {results['fast_plaid']['reason']}", ""] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Small sizes, to check the script end to end.")
    parser.add_argument("--model", help="MetaEmbed model for the real vectors (default: the quickstart's trained model).")
    parser.add_argument("--model-label", help="How the results name the model (default: its path).")
    parser.add_argument("--only-cascade-sweep", action="store_true",
                        help="Re-run only the cascade sweep on the existing real-100k index and update search.json.")
    args = parser.parse_args()
    model_path, trained = (args.model, True) if args.model else real_data.default_model()
    if args.only_cascade_sweep:
        out = RESULTS / "search.json"
        results = json.loads(out.read_text())
        source = WORK / "real-100k.source.json"
        built_from = json.loads(source.read_text())["key"] if source.is_file() else None
        key = real_data.vectors_key(model_path, trained)
        if built_from != key:  # checked before encoding anything
            raise SystemExit(f"{WORK / 'real-100k'} was built from other vectors than {model_path}'s "
                             f"({built_from or 'unknown'} vs {key}): its queries would not match; run the whole "
                             "benchmark (or pass the --model it was built with)")
        index = MultiVectorIndex.open(WORK / "real-100k", verify=False)
        results["cascade_sweep"] = cascade_sweep(index, real_data.encoded_corpus(model_path, trained)["queries"])
        results["cascade_sweep"]["run"] = f"separate invocation (--only-cascade-sweep) at {time.strftime('%Y-%m-%d %H:%M:%S')}"
        out.write_text(json.dumps(results, indent=1))
        out.with_suffix(".md").write_text(markdown(results))
        print(markdown(results))
        return
    scale = 10 if args.quick else 1
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick, "datasets": []}
    results["machine"] = limits = machine.measure()
    results["fast_plaid"] = fast_plaid_status()
    budgets = list(PAPER_BUDGETS)

    real = real_data.encoded_corpus(model_path, trained)
    meta_tokens = "MMR-trained" if trained else "untrained meta tokens"
    documents, queries = real["documents"], real["queries"]
    if args.quick:
        documents = documents[:2000]
    copies = 10
    index, seconds = build("real-100k", 384, 64, real_chunks(documents, copies, noise=0.01))
    (WORK / "real-100k.source.json").write_text(json.dumps({"key": real["key"], "model": model_path}) + "\n")
    real_baseline_docs = torch.cat([vectors.bfloat16() for _, vectors in real_chunks(documents, copies, noise=0.01)])
    start = time.perf_counter()
    index.build_hnsw()  # built once, before the cascade timings reuse it
    hnsw_seconds = time.perf_counter() - start
    data = bench_dataset(f"real-{len(index) // 1000}k (Debian descriptions x{copies}, MiniLM MetaEmbed, {meta_tokens})",
                         index, queries, budgets, limits, baseline_docs=real_baseline_docs, baseline_max_rc=64,
                         cascade_ks=(100, 1000), quick=args.quick)
    data["build_seconds"] = seconds
    data["hnsw_build_seconds"] = hnsw_seconds
    del real_baseline_docs
    results["cascade_sweep"] = cascade_sweep(index, queries)
    results["datasets"].append(data)
    del index
    results["int8_quality"] = int8_quality(documents, queries)

    synthetic = [  # (name, n, dim, stored, budgets, baseline up to r_c)
        ("synthetic-100k-D128", 100_000 // scale, 128, 64, budgets, 64),
        ("synthetic-100k-D384", 100_000 // scale, 384, 16, [b for b in budgets if b[1] <= 16], 16),
        ("synthetic-1M-D128", 1_000_000 // scale, 128, 8, [b for b in budgets if b[1] <= 8], 8),
    ]
    for name, n, dim, stored, chosen, baseline_rc in synthetic:
        index, seconds = build(name, dim, stored, synthetic_chunks(n, stored, dim))
        baseline_docs = torch.cat([vectors[:, :baseline_rc].bfloat16() for _, vectors in synthetic_chunks(n, stored, dim)])
        data = bench_dataset(name, index, unit(100, 16, dim, seed=12345), chosen, limits, baseline_docs, baseline_rc,
                             quick=args.quick)
        data["build_seconds"] = seconds
        results["datasets"].append(data)
        del index, baseline_docs
        shutil.rmtree(WORK / name, ignore_errors=True)

    results["notes"] = [
        f"real: the 10,000 passages of the Debian summary -> description test corpus (metaembed.data.debian) encoded "
        f"by {args.model_label or model_path} ({meta_tokens}); augmented to 100k by 9 noisy copies (N(0, 0.01) per component, renormalised). "
        "Queries: 100 of its test queries (package summaries).",
        "synthetic: random unit vectors; 100k D=384 stores 16 vectors/doc and 1M D=128 stores 8 vectors/doc to fit the "
        "24 GiB shared machine (1M x 64 x 128 bf16 would be 16 GiB); budgets above the stored r_c are not run there.",
        "baseline: the best plain torch a user could write (benchmarks/search/baseline.py): the same vectors as one bf16 "
        "(n, r_c, D) tensor in RAM, all queries of a call at once, blocks of documents as one matmul each in the index's "
        "compute dtype, max, sum, running top-10; the same 100 queries batched; its recall@10 against the index's exact "
        "results checks that both compute the same thing.",
        "roofline: max(bytes read / measured read bandwidth, FLOPs / peak matmul FLOP/s of the compute dtype, the best of "
        f"{len(machine.PEAK_SHAPES)} shapes); "
        "the compute dtype is bf16 on CPUs with native bf16 matmul (AVX512-BF16/AMX), fp32 on others (bf16 is emulated there).",
        "latency = median of 3 runs after a warm-up (page cache warm); throughput = one run of 100 queries batched.",
        "2-core VM: absolute times are noisy, ratios within the run less so.",
    ]
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = RESULTS / ("search_quick.json" if args.quick else "search.json")
    out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
