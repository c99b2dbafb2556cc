"""How many of an item's tokens a trained model should read at inference: its training length or the backbone's own.

    .venv/bin/python benchmarks/mmr_training/inference_length.py [--model metaembed-quickstart/train/model]

The quickstart trains on 128 tokens (fast on a CPU); all-MiniLM-L6-v2 embeds 256 as a sentence-transformers model.
This evaluates one trained model at several lengths on three sets, next to the plain backbone (mean pooling,
cosine, 256 tokens) on the same queries:

- in domain: the quickstart's own test set (Debian binary summary -> its source package's descriptions);
- across domains: the Python standard library's docs, dense documents (``metaembed.data.pydocs.DENSE``: a member's
  summary -> the module part that documents it), never trained on;
- two facets: the same documents, each query two summaries of members of one document joined by "; " (up to 5
  pairs per document, seeded): a query that asks for two things the document holds.

Writes benchmarks/results/inference_length.{json,md}: nDCG@10 x100 per budget, and paired 95% bootstrap intervals
against the training length and against the backbone.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))

from metaembed import MetaEmbed, evaluate  # noqa: E402
from metaembed.data.pydocs import DENSE, build_pydocs_retrieval_set  # noqa: E402
from metaembed.evaluation.baselines import BACKBONE  # noqa: E402
from metaembed.evaluation.stats import paired_bootstrap  # noqa: E402
from metaembed.jsonl import numbered_lines, parse_json_object  # noqa: E402

COMPARED = ("1,1", "16,64")


def read_jsonl(path: Path) -> list[dict]:
    return [parse_json_object(line) for _, line in numbered_lines(path)]


def two_facet_set(beir: Path, out: Path, pairs_per_document: int = 5, seed: int = 0) -> Path:
    """A BEIR folder over ``beir``'s corpus whose queries each join two test queries of one document."""
    texts = {row["_id"]: row["text"] for row in read_jsonl(beir / "queries.jsonl")}
    by_document: dict[str, list[str]] = defaultdict(list)
    for line in (beir / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query, document, _ = line.split("\t")
        by_document[document].append(query)
    rng, queries, qrels = random.Random(seed), [], []
    for document, ids in sorted(by_document.items()):
        pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]]
        for a, b in rng.sample(pairs, min(pairs_per_document, len(pairs))):
            queries.append({"_id": f"{a}+{b}", "text": f"{texts[a]}; {texts[b]}"})
            qrels.append(f"{a}+{b}\t{document}\t1")
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    shutil.copy(beir / "corpus.jsonl", out / "corpus.jsonl")
    (out / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (out / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    return out


def per_query(out: Path) -> dict[str, dict[str, float]]:
    """system -> query id -> nDCG@10 from an evaluation's per_query.jsonl."""
    values: dict[str, dict[str, float]] = defaultdict(dict)
    for row in read_jsonl(out / "per_query.jsonl"):
        values[row["system"]][row["query_id"]] = row["ndcg@10"]
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "metaembed-quickstart" / "train" / "model"))
    parser.add_argument("--in-domain", default=str(ROOT / "metaembed-quickstart" / "data" / "beir"),
                        help="the model's own test set (BEIR folder)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 448])
    parser.add_argument("--work-dir", default="/tmp/metaembed-inference-length")
    parser.add_argument("--out", default="inference_length")
    args = parser.parse_args()

    work = Path(args.work_dir)
    pydocs = work / "pydocs-dense"
    if not (pydocs / "beir" / "qrels" / "test.tsv").is_file():
        build_pydocs_retrieval_set(pydocs, seed=0, num_test_queries=1000, num_dev_queries=200, corpus_size=1, **DENSE)
    sets = {"in domain: Debian sources": Path(args.in_domain), "across: Python docs (dense)": pydocs / "beir",
            "two facets: Python docs (dense)": two_facet_set(pydocs / "beir", work / "pydocs-two-facets")}
    model = MetaEmbed.from_pretrained(args.model)
    trained_length = model.max_seq_length
    results: dict = {"model": args.model, "trained_length": trained_length, "sets": {}}
    for name, data in sets.items():
        runs = {}
        for length in args.lengths:
            model.max_seq_length = length
            out = work / "eval" / f"{name.split(':')[0].replace(' ', '_')}-{length}"
            summary = evaluate(model, data, out_dir=out, baselines={"backbone": BACKBONE}, model_name=f"{length} tokens")
            runs[length] = per_query(out)
            backbone = summary["baselines"]["backbone"]
        first = args.lengths[0]
        table = {length: {b: 100 * sum(v.values()) / len(v) for b, v in run.items()} for length, run in runs.items()}
        paired = {}
        for length in args.lengths:
            for budget in COMPARED:
                paired[f"{length} tokens ({budget}) - backbone"] = paired_bootstrap(runs[length][budget], runs[length]["backbone"])
                if length != first:
                    paired[f"{length} - {first} tokens ({budget})"] = paired_bootstrap(runs[length][budget], runs[first][budget])
        results["sets"][name] = {"data": str(data), "queries": len(runs[first]["1,1"]), "ndcg@10": table,
                                 "backbone": backbone.get("description", "mean pooling, cosine"), "paired": paired}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(results, indent=1, default=str))
    (RESULTS / f"{args.out}.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = ["# Inference length: the training length or the backbone's own", "",
             f"Model: `{results['model']}` (trained on {results['trained_length']} tokens of an item). nDCG@10 x100; "
             "`backbone` = plain all-MiniLM-L6-v2 (mean pooling, cosine, 256 tokens) on the same queries. Intervals: "
             "paired 95% bootstrap over the queries (differences x100).", ""]
    for name, result in results["sets"].items():
        table = result["ndcg@10"]
        budgets = [b for b in next(iter(table.values())) if b != "backbone"]
        lines += [f"## {name} ({result['queries']} queries)", "",
                  "| tokens read | " + " | ".join(f"({b})" for b in budgets) + " | backbone |",
                  "|---" * (len(budgets) + 2) + "|"]
        for length, row in table.items():
            lines.append(f"| {length} | " + " | ".join(f"{row[b]:.2f}" for b in budgets) + f" | {row['backbone']:.2f} |")
        lines += ["", "| comparison | difference | 95% interval |", "|---|---|---|"]
        for comparison, p in result["paired"].items():
            lines.append(f"| {comparison} | {100 * p['difference']:+.2f} | [{100 * p['ci95_low']:+.2f}, {100 * p['ci95_high']:+.2f}] |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
