"""Compressed storage: product-quantized codes (``dtype="pq"``) against bf16 and int8 on real-encoded vectors.

    .venv/bin/python benchmarks/search/compressed.py [--documents 10000] [--queries 1000]

The Debian test set of ``real_data`` (descriptions as documents, summaries as queries), encoded by the quickstart's
MMR-trained model (``make quickstart`` first; else untrained meta tokens, and the result says so). Each storage is
built from the same vectors; per budget: recall@10 against exact bf16 search, nDCG@10 with a paired bootstrap
interval against bf16, lone-query and 100-query latency as ratios to bf16 measured in the same run (medians,
interleaved), bytes per document. The plain all-MiniLM-L6-v2 (mean pooling, cosine) is scored on the same queries.
Writes benchmarks/results/search_compressed.{json,md,png} (``--results`` another name; ``--storages`` a subset).
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

sys.path.insert(0, str(Path(__file__).parent))
import machine  # noqa: E402
import real_data  # noqa: E402

from metaembed.budgets import PAPER_BUDGETS, Budget  # noqa: E402
from metaembed.evaluation.metrics import evaluate_run  # noqa: E402
from metaembed.evaluation.stats import paired_bootstrap  # noqa: E402
from metaembed.index import MultiVectorIndex  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "data" / "search_indexes" / "compressed"
RESULTS = ROOT / "results"
BUDGETS = [Budget(*budget) for budget in PAPER_BUDGETS]
STORAGES = {
    "bf16": {"dtype": "bfloat16"},
    "int8": {"dtype": "int8"},
    "pq 48 B/vector + 5 directions (default)": {"dtype": "pq"},
    "pq 48 B/vector, no directions": {"dtype": "pq", "basis": 0},
    "pq 96 B/vector, no directions": {"dtype": "pq", "subquantizers": 96, "basis": 0},
    "pq 32 B/vector + 5 directions": {"dtype": "pq", "subquantizers": 32},
    "pq default + bf16 rescore": {"dtype": "pq", "full_precision": True},
}
"""Storages measured: bf16 is the reference every other one is compared with."""


def build(name: str, settings: dict, ids: list[str], documents: torch.Tensor, chunk: int) -> tuple[MultiVectorIndex, float]:
    path = WORK / "".join(c if c.isalnum() else "_" for c in name)
    shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    with MultiVectorIndex.create(path, documents.shape[-1], documents.shape[1], **settings) as index:
        for begin in range(0, len(ids), chunk):
            index.add(ids[begin : begin + chunk], documents[begin : begin + chunk].float())
    seconds = time.perf_counter() - start
    return MultiVectorIndex.open(path), seconds


def ranked(index: MultiVectorIndex, queries: torch.Tensor, budget, k: int = 10) -> list[list[str]]:
    return [result.ids for result in index.search(queries, k=k, budget=budget)]


def plain_backbone_run(task, query_ids: list[str], document_ids: list[str]) -> dict[str, list[str]]:
    """The plain all-MiniLM-L6-v2 (mean pooling, cosine): top-10 per query."""
    from sentence_transformers import SentenceTransformer

    from metaembed.model.pretrained import minilm_path

    model = SentenceTransformer(minilm_path())
    queries = model.encode([task.queries[q].text for q in query_ids], convert_to_tensor=True, normalize_embeddings=True)
    documents = model.encode([task.corpus[d].text for d in document_ids], convert_to_tensor=True,
                             normalize_embeddings=True, show_progress_bar=True, batch_size=64)
    top = (queries @ documents.T).topk(10, dim=1).indices
    return {q: [document_ids[i] for i in row] for q, row in zip(query_ids, top.tolist())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--latency-queries", type=int, default=10, help="lone queries timed per budget")
    parser.add_argument("--chunk", type=int, default=2000, help="documents per add (the first trains a pq codebook)")
    parser.add_argument("--storages", nargs="+", choices=list(STORAGES), default=list(STORAGES),
                        help="a subset to measure (bf16, the reference, is always measured)")
    parser.add_argument("--results", default="search_compressed", help="name of the results files")
    args = parser.parse_args()
    storages = {name: STORAGES[name] for name in STORAGES if name == "bf16" or name in args.storages}

    model_path, trained = real_data.default_model()
    data = real_data.encoded_corpus(model_path, trained, n_documents=args.documents, n_queries=args.queries)
    task = real_data.test_task(args.documents, args.queries)
    document_ids, query_ids = list(task.corpus), list(task.queries)[: args.queries]
    documents, queries = data["documents"], data["queries"].float()
    qrels = {q: task.qrels[q] for q in query_ids}

    indexes, results = {}, {"storages": {}}
    for name, settings in storages.items():
        indexes[name], seconds = build(name, settings, document_ids, documents, args.chunk)
        results["storages"][name] = {"settings": settings, "build_seconds": round(seconds, 2),
                                     "disk_bytes_per_document": round(indexes[name].bytes_per_document(), 1),
                                     "scored_bytes_per_document": indexes[name].scored_bytes_per_document(),
                                     "budgets": {}}
        print(f"built {name} in {seconds:.1f} s", flush=True)

    per_query: dict[tuple[str, str], dict[str, float]] = {}
    for budget in BUDGETS:
        key = f"{budget.query},{budget.document}"
        truth = ranked(indexes["bf16"], queries, budget)
        lone, batch = {name: [] for name in indexes}, {name: [] for name in indexes}
        for repeat in range(3):  # interleaved: a noisy machine slows every storage alike
            for name, index in indexes.items():
                lone[name].append(statistics.median(
                    machine.timed(lambda i=i: index.search(queries[i : i + 1], k=10, budget=budget), repeat=1)
                    for i in range(args.latency_queries)))
                batch[name].append(machine.timed(lambda: index.search(queries[:100], k=10, budget=budget), repeat=1))
        for name, index in indexes.items():
            found = truth if name == "bf16" else ranked(index, queries, budget)
            means, values = evaluate_run(dict(zip(query_ids, found)), qrels, ["ndcg@10"])
            per_query[(name, key)] = {q: v["ndcg@10"] for q, v in values.items()}
            entry = {"recall@10_vs_bf16": round(statistics.mean(len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)), 4),
                     "ndcg@10": round(100 * means["ndcg@10"], 2),
                     "lone_query_ms": round(1000 * min(lone[name]), 2), "batch_100_ms": round(1000 * min(batch[name]), 1)}
            entry["lone_query_vs_bf16"] = round(min(lone[name]) / min(lone["bf16"]), 2)
            entry["batch_100_vs_bf16"] = round(min(batch[name]) / min(batch["bf16"]), 2)
            if name != "bf16":
                entry["ndcg@10_minus_bf16"] = {k: (100 * v if isinstance(v, float) else v) for k, v in paired_bootstrap(
                    per_query[(name, key)], per_query[("bf16", key)]).items()}
            results["storages"][name]["budgets"][key] = entry
        print(key, {name: results["storages"][name]["budgets"][key]["recall@10_vs_bf16"] for name in indexes}, flush=True)

    plain = plain_backbone_run(task, query_ids, document_ids)
    plain_means, plain_values = evaluate_run(plain, qrels, ["ndcg@10"])
    plain_scores = {q: v["ndcg@10"] for q, v in plain_values.items()}
    results["plain_backbone"] = {"ndcg@10": round(100 * plain_means["ndcg@10"], 2), "vs": {
        f"{name} (16,64)": {k: (100 * v if isinstance(v, float) else v) for k, v in
                            paired_bootstrap(per_query[(name, "16,64")], plain_scores).items()}
        for name in storages if name != "pq default + bf16 rescore"}}
    results.update({"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(), "documents": len(document_ids), "queries": len(query_ids),
                    "model": data["model"], "trained": data["trained"], "vectors": list(documents.shape[1:]),
                    "date": time.strftime("%Y-%m-%d")})
    write(results, args.results)


def write(results: dict, file_name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{file_name}.json").write_text(json.dumps(results, indent=1))
    budgets = list(next(iter(results["storages"].values()))["budgets"])
    lines = [f"# Compressed storage on real-encoded vectors ({results['date']})", "",
             f"{results['documents']:,} Debian descriptions x {results['vectors'][0]} vectors of {results['vectors'][1]} "
             f"dims, {results['queries']:,} queries; model {'MMR-trained (quickstart)' if results['trained'] else 'UNTRAINED meta tokens'}; "
             f"{results['threads']} threads. Recall@10 is against exact bf16 search at the same budget; latency is the "
             "ratio to bf16 in the same run (lone query: median of single queries; batch: 100 queries).", "",
             "| storage | bytes/doc scored (disk) | build s | " + " | ".join(f"({b}) recall / nDCG / lone x / batch x" for b in budgets) + " |",
             "|---|---|---|" + "---|" * len(budgets)]
    for name, entry in results["storages"].items():
        cells = [f"{v['recall@10_vs_bf16']:.3f} / {v['ndcg@10']:.2f} / {v['lone_query_vs_bf16']:.2f} / {v['batch_100_vs_bf16']:.2f}"
                 for v in entry["budgets"].values()]
        lines.append(f"| {name} | {entry['scored_bytes_per_document']:,} ({entry['disk_bytes_per_document']:,.0f}) | "
                     f"{entry['build_seconds']} | " + " | ".join(cells) + " |")
    lines += ["", "nDCG@10 minus bf16 at (16,64), paired 95% bootstrap over the queries:", ""]
    for name, entry in results["storages"].items():
        if name != "bf16":
            d = entry["budgets"]["16,64"]["ndcg@10_minus_bf16"]
            lines.append(f"- {name}: {d['difference']:+.2f} [{d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}]")
    plain = results["plain_backbone"]
    lines += ["", f"Plain all-MiniLM-L6-v2 (mean pooling, cosine) on the same queries: nDCG@10 {plain['ndcg@10']:.2f}; "
              "each storage at (16,64) minus it: " + "; ".join(
                  f"{name} {d['difference']:+.2f} [{d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}]" for name, d in plain["vs"].items())]
    (RESULTS / f"{file_name}.md").write_text("\n".join(lines) + "\n")
    plot(results, budgets, RESULTS / f"{file_name}.png")
    print("\n".join(lines))


def plot(results: dict, budgets: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, entry in results["storages"].items():
        values = list(entry["budgets"].values())
        left.plot(budgets, [v["ndcg@10"] for v in values], "o-", label=f"{name} ({entry['scored_bytes_per_document']:,} B/doc)")
        right.plot(budgets, [v["lone_query_ms"] for v in values], "o-", label=name)
    left.axhline(results["plain_backbone"]["ndcg@10"], color="gray", linestyle=":", label="plain MiniLM (1 vector)")
    left.set(xlabel="budget (r_q, r_c)", ylabel="nDCG@10", title="quality by storage")
    right.set(xlabel="budget (r_q, r_c)", ylabel="ms", yscale="log", title="lone query latency")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
