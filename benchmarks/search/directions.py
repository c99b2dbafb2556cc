"""What pq's per-document directions cost a search, side by side: nested directions (a search at r_c reads the
first min(r_c, k)), the same index read as before nesting (all k at every budget), and codes only.

    .venv/bin/python benchmarks/search/directions.py [--queries 100]

Uses the two pq indexes ``compressed.py`` builds from the 10,000 real-encoded documents (its default storage,
5 directions, and "48 B/vector, no directions"; run it first), and a copy of the first whose manifest lacks
``nested_basis``, as an index written before nesting reads. Per paper budget, interleaved in 3 rounds: the median
of 10 lone queries and the best 100-query batch (ms a query), the ratios nested / all k and nested / codes only,
and the share of top-10 keys the nested reading and the all-k reading agree on (1.0: the same scores).
Writes benchmarks/results/search_directions.{json,md}.
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
import compressed  # noqa: E402
import machine  # noqa: E402
import real_data  # noqa: E402

from metaembed.budgets import PAPER_BUDGETS  # noqa: E402
from metaembed.hardware import cpu_model_name  # noqa: E402
from metaembed.index import MultiVectorIndex  # noqa: E402
from metaembed.index.manifest import manifest_checksum  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
NESTED = compressed.WORK / "pq_48_B_vector___5_directions__default_"
CODES_ONLY = compressed.WORK / "pq_48_B_vector__no_directions"
ALL_DIRECTIONS = compressed.WORK / "all_directions_copy"


def unnested_copy(source: Path, target: Path) -> Path:
    """A copy of ``source`` read as an index written before nesting: all k directions at every budget."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    if not manifest["pq"].pop("nested_basis", False):
        raise SystemExit(f"{source} has no nested directions: re-run compressed.py with this checkout")
    manifest["checksum"] = manifest_checksum(manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    for path in (NESTED, CODES_ONLY):
        if not (path / "manifest.json").is_file():
            raise SystemExit(f"{path} is missing: run benchmarks/search/compressed.py first")
    model_path, trained = real_data.default_model()
    queries = real_data.encoded_corpus(model_path, trained, 10_000, 1000)["queries"][: args.queries].float()
    indexes = {"nested": MultiVectorIndex.open(NESTED),
               "all k": MultiVectorIndex.open(unnested_copy(NESTED, ALL_DIRECTIONS)),
               "codes only": MultiVectorIndex.open(CODES_ONLY)}
    rows = {}
    for budget in PAPER_BUDGETS:
        lone: dict[str, list[float]] = {name: [] for name in indexes}
        batch: dict[str, list[float]] = {name: [] for name in indexes}
        found = {name: index.search(queries, k=10, budget=budget, arrays=True) for name, index in indexes.items()}
        agree = float((found["nested"].keys == found["all k"].keys).mean())
        for round_ in range(3):
            names = list(indexes)[round_:] + list(indexes)[:round_]  # each index goes first once
            for name in names:
                index = indexes[name]
                for i in range(10):
                    lone[name].append(machine.timed(
                        lambda i=i: index.search(queries[i : i + 1], k=10, budget=budget, arrays=True), repeat=1))
                batch[name].append(machine.timed(
                    lambda: index.search(queries, k=10, budget=budget, arrays=True), repeat=1) / len(queries))
        lone_ms = {name: 1e3 * statistics.median(times) for name, times in lone.items()}
        batch_ms = {name: 1e3 * min(times) for name, times in batch.items()}
        rows[f"{budget[0]},{budget[1]}"] = {
            "lone_ms": lone_ms, "batch_ms_per_query": batch_ms, "top10_keys_agree": agree,
            "lone_nested_vs_all_k": lone_ms["nested"] / lone_ms["all k"],
            "lone_nested_vs_codes_only": lone_ms["nested"] / lone_ms["codes only"],
            "batch_nested_vs_all_k": batch_ms["nested"] / batch_ms["all k"],
            "batch_nested_vs_codes_only": batch_ms["nested"] / batch_ms["codes only"],
            "scored_bytes_per_document": {name: index.scored_bytes_per_document(budget[1])
                                          for name, index in indexes.items()}}
        print(budget, rows[f"{budget[0]},{budget[1]}"], flush=True)
    write({"date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(), "queries": len(queries),
           "cpu": cpu_model_name(), "model": str(model_path),
           "trained": trained, "budgets": rows})


def write(results: dict) -> None:
    (RESULTS / "search_directions.json").write_text(json.dumps(results, indent=1))
    lines = [f"# What pq's directions cost a search ({results['date']})", "",
             f"10,000 real-encoded documents x 64 x 384, pq 48 B/vector; the default 5 directions per document read "
             f"nested (the first min(r_c, 5)), the same index read as before nesting (all 5), and codes only; "
             f"{results['cpu']}, {results['threads']} threads, {results['queries']} queries, interleaved, 3 rounds, each index first in one (lone: median of 10 "
             "queries a round; batch: best round).", "",
             "| budget | scored bytes/doc nested / all k / codes | lone ms nested / all k / codes | lone nested vs all k | "
             "lone nested vs codes | batch ms/query nested / all k / codes | batch nested vs all k | "
             "batch nested vs codes | top-10 agree |", "|---|---|---|---|---|---|---|---|---|"]
    for budget, row in results["budgets"].items():
        size, lone, batch = row["scored_bytes_per_document"], row["lone_ms"], row["batch_ms_per_query"]
        lines.append(
            f"| ({budget}) | {size['nested']:,} / {size['all k']:,} / {size['codes only']:,} | "
            f"{lone['nested']:.2f} / {lone['all k']:.2f} / {lone['codes only']:.2f} | {row['lone_nested_vs_all_k']:.2f} | "
            f"{row['lone_nested_vs_codes_only']:.2f} | {batch['nested']:.3f} / {batch['all k']:.3f} / "
            f"{batch['codes only']:.3f} | {row['batch_nested_vs_all_k']:.2f} | {row['batch_nested_vs_codes_only']:.2f} | "
            f"{row['top10_keys_agree']:.4f} |")
    (RESULTS / "search_directions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
