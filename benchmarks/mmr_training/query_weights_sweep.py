"""Re-weigh a trained model's query vectors at test time: nDCG@10 per budget for several ``query_tail_weight`` values.

A model trained with one tail weight (arm (s) or (t) of run.py) is encoded once; its query vectors are brought back to
unit length and weighted again (metaembed.model.query_weights), so one run shows how sensitive the budget curve is to
the weight, next to the plain backbone on the same queries (paired bootstrap intervals). Test-time only: a weight
other than the trained one is a probe, not a trained model.

    python benchmarks/mmr_training/query_weights_sweep.py MODEL --work-dir /tmp/mmr-pydocs \
        --results benchmarks/results/mmr_training_pydocs_query_weights_sweep.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (PYDOCS_DESCRIPTION, SOURCES_DESCRIPTION, beir_data, encode_arm, evaluate_budgets,  # noqa: E402
                 mean_pooled_reference)
from metaembed.budgets import Budget  # noqa: E402
from metaembed.evaluation.stats import paired_bootstrap  # noqa: E402
from metaembed.model.pretrained import minilm_path  # noqa: E402
from metaembed.model.query_weights import query_vector_weights  # noqa: E402

BUDGETS = [Budget(1, 1), Budget(4, 8), Budget(16, 64)]
SETS = {"pydocs": ("pydocs-1000-200", PYDOCS_DESCRIPTION), "sources": ("debian-sources-1000-3000", SOURCES_DESCRIPTION)}


def sweep(model: str, folder: Path, description: str, weights: list[float], max_length: int) -> dict:
    data = beir_data(description, folder / "beir", None)
    q, d = encode_arm(model, data.query_texts, data.doc_texts, max_length)
    unit = F.normalize(q.float(), dim=-1)
    bq, bd = mean_pooled_reference(minilm_path(), max_length, data.query_texts, data.doc_texts, 64)
    _, plain = evaluate_budgets(bq.cpu(), bd.cpu(), [Budget(1, 1)], data.query_ids, data.doc_ids, data.qrels)
    out = {"data": description, "queries": len(data.query_ids), "documents": len(data.doc_ids),
           "backbone": round(sum(plain["1,1"].values()) / len(plain["1,1"]), 4), "weights": {}}
    for weight in weights:
        weighted = unit * query_vector_weights(unit.shape[1], weight)[:, None]
        metrics, per_query = evaluate_budgets(weighted, d, BUDGETS, data.query_ids, data.doc_ids, data.qrels)
        out["weights"][str(weight)] = {
            "ndcg@10": {budget: values["ndcg@10"] for budget, values in metrics.items()},
            "(16,64) - (1,1)": paired_bootstrap(per_query["16,64"], per_query["1,1"]),
            "(16,64) - backbone": paired_bootstrap(per_query["16,64"], plain["1,1"]),
        }
    return out


def markdown(results: dict) -> str:
    lines = [f"# Query vectors re-weighted at test time: {results['model']}", ""]
    for name, part in results["sets"].items():
        lines += [f"## {name}: {part['data']} ({part['queries']} queries, {part['documents']} documents); "
                  f"backbone (mean pooling, cosine) {100 * part['backbone']:.2f}", "",
                  "| tail weight | (1,1) | (4,8) | (16,64) | (16,64) - (1,1) | (16,64) - backbone |", "|---|---|---|---|---|---|"]
        for weight, row in part["weights"].items():
            cells = [f"{100 * row['ndcg@10'][b]:.2f}" for b in ("1,1", "4,8", "16,64")]
            diffs = [f"{100 * p['difference']:+.2f} [{100 * p['ci95_low']:+.2f}, {100 * p['ci95_high']:+.2f}]"
                     for p in (row["(16,64) - (1,1)"], row["(16,64) - backbone"])]
            lines.append(f"| {weight} | " + " | ".join(cells + diffs) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a trained MetaEmbed folder")
    parser.add_argument("--work-dir", required=True, help="where run.py built its sets")
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--weights", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0, 4.0, 15.0],
                        help="tail weights to probe (R_q - 1 = 15: the paper's equal weights)")
    parser.add_argument("--max-length", type=int, default=448, help="text tokens per item at test")
    parser.add_argument("--label", help="how the results name the model (default: its path)")
    parser.add_argument("--results", required=True, help="JSON path; a .md table is written beside it")
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {"model": args.label or args.model, "max_text_tokens": args.max_length, "sets": {}}
    for name in args.sets:
        folder, description = SETS[name]
        results["sets"][name] = sweep(args.model, Path(args.work_dir) / folder, description, args.weights,
                                      args.max_length)
    path = Path(args.results)
    path.write_text(json.dumps(results, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
