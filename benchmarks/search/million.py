"""A million documents at the full budget on this machine: a pq index of 1M x 64 x 384 vectors.

    .venv/bin/python benchmarks/search/million.py [--copies 100] [--noise 0.5]

bf16 would need 49 GB for these vectors (twice this machine's memory); pq (a bf16 anchor per document and 48-byte
residual codes per vector) needs 3.8 GB, 6.1 GB with the default 5 directions per document (``--basis``; 0 builds
the codes-only index). The
vectors have the structure of real ones: the 10,000 Debian descriptions of ``real_data`` encoded by the
quickstart's MMR-trained model, then ``copies - 1`` noisy variants of each, generated chunk by chunk from seeds
so nothing needs 49 GB: by default each document moves along one random direction of norm ``noise`` shared by all
its vectors (plus a tenth of that per vector), renormalised, so its vectors stay nearly parallel as a trained
model's are (``--noise-kind vector``: independent noise per vector, which breaks that). Measured: build time from vectors (the index's adds, with merging off as for a bulk load, then one
``compact()`` into a single segment; making the variants is timed apart), lone queries over the 100 segments before
compaction, bytes, open time, the first search of each budget (which checks
the ranks it reads) and later ones, lone-query and 100-query latency per budget, recall@10 against exact bf16
MaxSim (computed by streaming the regenerated vectors through plain bf16 matmuls), and nDCG@10 with the original
documents' relevance judgments (the variants count as non-relevant distractors).
Writes benchmarks/results/search_million.{json,md}.
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
import real_data  # noqa: E402

from metaembed.budgets import PAPER_BUDGETS, Budget  # noqa: E402
from metaembed.evaluation.metrics import evaluate_run  # noqa: E402
from metaembed.index import MultiVectorIndex  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "data" / "search_indexes" / "million"
RESULTS = ROOT / "results"
BUDGETS = [Budget(*budget) for budget in PAPER_BUDGETS]


NOISE_KINDS = ("document", "vector")
"""How a variant is perturbed: one direction per document, shared by all its vectors (plus 1/10 of it per vector),
which keeps a MetaEmbed document's vectors nearly parallel as real ones are; or independent noise per vector, which
does not (the first 1M run)."""


def variant_chunk(documents: torch.Tensor, copy: int, noise: float, kind: str = "document") -> torch.Tensor:
    """Copy ``copy`` of every document: the originals for 0, else a seeded noisy variant (fp32 (n, R, D))."""
    vectors = documents.float()
    if copy == 0:
        return vectors
    generator = torch.Generator().manual_seed(copy)
    perturbation = torch.randn(vectors.shape, generator=generator)
    perturbation *= noise / perturbation.norm(dim=-1, keepdim=True)
    if kind == "document":
        perturbation = perturbation[:, :1] + 0.1 * perturbation
    return torch.nn.functional.normalize(vectors + perturbation, dim=-1)


def exact_truth(documents: torch.Tensor, queries: torch.Tensor, copies: int, noise: float, kind: str,
                k: int = 10) -> dict:
    """Exact bf16 MaxSim top-k of every query at every budget over all variants, streamed chunk by chunk."""
    n = len(documents)
    best = {b: (torch.full((len(queries), k), float("-inf")), torch.full((len(queries), k), -1)) for b in BUDGETS}
    for copy in tqdm(range(copies), desc="exact bf16 truth", unit="chunk"):
        chunk = variant_chunk(documents, copy, noise, kind).to(torch.bfloat16)
        for budget in BUDGETS:
            q = queries[:, : budget.query].to(torch.bfloat16).reshape(-1, queries.shape[-1])
            scores = torch.zeros(len(queries), n)
            for start in range(0, n, 2000):
                block = chunk[start : start + 2000, : budget.document]  # (b, r_c, D)
                sims = (q @ block.reshape(-1, block.shape[-1]).T).view(len(queries), budget.query, len(block), budget.document)
                scores[:, start : start + len(block)] = sims.amax(dim=-1).float().sum(dim=1)
            keys = torch.arange(n) + copy * n
            merged_scores = torch.cat([best[budget][0], scores], dim=1)
            merged_keys = torch.cat([best[budget][1], keys.expand(len(queries), -1)], dim=1)
            top, where = merged_scores.topk(k, dim=1)
            best[budget] = (top, merged_keys.gather(1, where))
    return {budget: keys for budget, (_, keys) in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=100, help="variants of each of the 10,000 real documents")
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--noise-kind", choices=NOISE_KINDS, default="document")
    parser.add_argument("--out", default="search_million", help="results file name (without extension)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--subquantizers", type=int, default=None, help="bytes per vector (default: the index's, D / 8)")
    parser.add_argument("--basis", type=int, default=None,
                        help="pq directions per document (default: the index's, 5 at 64 x 384; 0: codes only)")
    parser.add_argument("--reuse-index", action="store_true",
                        help="rerun the searches on the index the last run with these settings built (its build figures kept)")
    args = parser.parse_args()

    model_path, trained = real_data.default_model()
    data = real_data.encoded_corpus(model_path, trained, n_documents=10_000, n_queries=1000)
    task = real_data.test_task(10_000, 1000)
    documents, queries = data["documents"], data["queries"].float()[: args.queries]
    base_ids = list(task.corpus)
    query_ids = list(task.queries)[: args.queries]
    n, stored, dim = documents.shape

    previous = RESULTS / f"{args.out}.json"
    settings = {"copies": args.copies, "noise": args.noise, "noise_kind": args.noise_kind}
    if args.reuse_index:  # the build of the last run with these settings, for a rerun of the searches only
        built = json.loads(previous.read_text())
        if args.basis is not None:  # the directions the index was built with (0 in runs before they existed)
            settings["basis"] = args.basis
            built.setdefault("basis", 0)
        if any(built.get(key) != value for key, value in settings.items()) or not (WORK / "manifest.json").is_file():
            raise SystemExit(f"--reuse-index: {previous} or {WORK} is not a build with {settings}")
        build = {key: built[key] for key in BUILD_FIGURES}
        build["build_reused_from"] = built.get("build_reused_from", built["date"])
        lone_segmented = {key: [None, row[f"lone_query_s_{build['segments_before_compaction']}_segments"]]
                          for key, row in built["budgets"].items()}
    else:
        build, lone_segmented = build_index(documents, queries, base_ids, args)
    segments = build["segments_before_compaction"]

    start = time.perf_counter()
    index = MultiVectorIndex.open(WORK)
    open_seconds = time.perf_counter() - start
    total = len(index)
    truth_file = WORK.with_name(f"million-truth-{args.copies}-{args.noise}-{args.noise_kind}-{len(queries)}.pt")
    if truth_file.is_file():
        truth = {Budget(*budget): keys for budget, keys in torch.load(truth_file).items()}
    else:
        truth = exact_truth(documents, queries, args.copies, args.noise, args.noise_kind)
        torch.save({tuple(budget): keys for budget, keys in truth.items()}, truth_file)
    qrels = {q: task.qrels[q] for q in query_ids}

    rows = {}
    for budget in BUDGETS:
        key = f"{budget.query},{budget.document}"
        first, *lone = lone_seconds(index, queries, budget)
        start = time.perf_counter()
        found = index.search(queries, k=10, budget=budget, arrays=True)
        batch = time.perf_counter() - start
        expected = truth[budget]
        recall = statistics.mean(len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found.keys, expected))
        ranking = {q: [i for i in ids if i is not None] for q, ids in zip(query_ids, index.ids_of(found.keys))}
        exact_ranking = {q: [i for i in ids if i is not None] for q, ids in zip(query_ids, index.ids_of(expected.numpy()))}
        ndcg = evaluate_run(ranking, qrels, ["ndcg@10"])[0]["ndcg@10"]
        exact_ndcg = evaluate_run(exact_ranking, qrels, ["ndcg@10"])[0]["ndcg@10"]
        rows[key] = {"first_search_s": round(first, 3), "lone_query_s": round(statistics.median(lone), 3),
                     f"lone_query_s_{segments}_segments": round(statistics.median(lone_segmented[key][1:]), 3),
                     f"batch_{len(queries)}_s": round(batch, 2), "recall@10_vs_exact_bf16": round(recall, 4),
                     "ndcg@10": round(100 * ndcg, 2), "exact_bf16_ndcg@10": round(100 * exact_ndcg, 2)}
        print(key, rows[key], flush=True)
    results = {"documents": total, "vectors": [stored, dim], "copies": args.copies, "noise": args.noise,
               "noise_kind": args.noise_kind,
               "subquantizers": index.manifest["pq"]["subquantizers"], "basis": index.manifest["pq"].get("basis", 0),
               "queries": len(queries), "model": data["model"],
               "trained": data["trained"], "threads": torch.get_num_threads(), **build,
               "bf16_bytes_would_be": total * stored * dim * 2, "open_seconds": round(open_seconds, 3),
               "budgets": rows, "date": time.strftime("%Y-%m-%d")}
    write(results, args.out)


BUILD_FIGURES = ("build_seconds", "segments_before_compaction", "compact_seconds", "generate_seconds",
                 "build_wall_seconds", "disk_bytes")


def build_index(documents: torch.Tensor, queries: torch.Tensor, base_ids: list[str],
                args: argparse.Namespace) -> tuple[dict, dict]:
    """Build the 1M pq index as a bulk load (merging off, one segment per add, then one compaction); its figures
    (BUILD_FIGURES) and the lone-query seconds of each budget over the segments before compaction."""
    stored, dim = documents.shape[1:]
    shutil.rmtree(WORK, ignore_errors=True)
    build_seconds = generate_seconds = 0.0  # building from vectors; making the synthetic variants is timed apart
    start = time.perf_counter()
    with MultiVectorIndex.create(WORK, dim, stored, dtype="pq", subquantizers=args.subquantizers,
                                 basis=args.basis) as index:
        index.auto_merge = False  # a bulk load: one segment per add, then one compaction (each document rewritten once)
        for copy in tqdm(range(args.copies), desc="building 1M pq", unit="chunk"):
            ids = base_ids if copy == 0 else [f"{i}~{copy}" for i in base_ids]
            made = time.perf_counter()
            vectors = variant_chunk(documents, copy, args.noise, args.noise_kind)
            added = time.perf_counter()
            generate_seconds += added - made
            index.add(ids, vectors)
            build_seconds += time.perf_counter() - added
        closing = time.perf_counter()
    build_seconds += time.perf_counter() - closing
    segments = len(index.manifest["segments"])
    with MultiVectorIndex.open(WORK) as uncompacted:  # lone queries over one segment per add, before compaction
        lone_segmented = {f"{b.query},{b.document}": lone_seconds(uncompacted, queries, b) for b in BUDGETS}
    start_compact = time.perf_counter()
    with MultiVectorIndex.open(WORK, mode="a") as writer:
        writer.compact()
    compact_seconds = time.perf_counter() - start_compact
    wall_seconds = time.perf_counter() - start - sum(sum(v) for v in lone_segmented.values())
    disk = int(subprocess.run(["du", "-sb", str(WORK)], capture_output=True, text=True).stdout.split()[0])
    return {"build_seconds": round(build_seconds, 1), "segments_before_compaction": segments,
            "compact_seconds": round(compact_seconds, 1), "generate_seconds": round(generate_seconds, 1),
            "build_wall_seconds": round(wall_seconds, 1), "disk_bytes": disk}, lone_segmented


def lone_seconds(index: MultiVectorIndex, queries: torch.Tensor, budget: Budget) -> list[float]:
    """Seconds of the first search at ``budget`` (which checks the ranks it reads), then of three lone queries."""
    times = []
    for i in range(4):
        start = time.perf_counter()
        index.search(queries[i : i + 1], k=10, budget=budget)
        times.append(time.perf_counter() - start)
    return times


def write(results: dict, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1))
    lines = [f"# A million documents at the full budget, pq codes ({results['date']})", "",
             f"{results['documents']:,} documents x {results['vectors'][0]} vectors of {results['vectors'][1]} dims "
             f"({results['copies']} variants of 10,000 real-encoded Debian descriptions, noise of norm {results['noise']} "
             f"{'shared by a document' if results.get('noise_kind', 'vector') == 'document' else 'per vector'}), "
             f"a bf16 anchor per document, {results['subquantizers']} code bytes per vector and "
             f"{results.get('basis', 0)} int8 directions per document, {results['threads']} threads, {results['queries']} queries. "
             f"Built from vectors in {(results['build_seconds'] + results.get('compact_seconds', 0)) / 60:.1f} min"
             + (f" ({results['segments_before_compaction']} adds with merging off, one segment each, in "
                f"{results['build_seconds'] / 60:.1f} min, then `compact()` into one segment in "
                f"{results['compact_seconds'] / 60:.1f} min)" if "compact_seconds" in results else "")
             + (f" (making the synthetic variants took {results['generate_seconds'] / 60:.1f} min more, timed apart)"
                if "generate_seconds" in results else "")
             + f"; {results['disk_bytes'] / 2**30:.2f} GiB on "
             f"disk (bf16: {results['bf16_bytes_would_be'] / 2**30:.1f} GiB); opened in {results['open_seconds']:.2f} s."
             + (f" Build figures from the run of {results['build_reused_from']} (`--reuse-index`: the same index, "
                "searched again)." if "build_reused_from" in results else ""), "",
             f"| budget | first search s | lone query s | lone query s, {results.get('segments_before_compaction', '?')} "
             "segments | 100 queries s | recall@10 vs exact bf16 | nDCG@10 (exact bf16) |",
             "|---|---|---|---|---|---|---|"]
    for key, row in results["budgets"].items():
        batch = next(v for k, v in row.items() if k.startswith("batch_"))
        segmented = next((v for k, v in row.items() if k.startswith("lone_query_s_")), "")
        lines.append(f"| ({key}) | {row['first_search_s']} | {row['lone_query_s']} | {segmented} | {batch} | "
                     f"{row['recall@10_vs_exact_bf16']:.3f} | {row['ndcg@10']:.2f} ({row['exact_bf16_ndcg@10']:.2f}) |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
