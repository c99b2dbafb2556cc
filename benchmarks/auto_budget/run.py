"""Quality and cost of ``budget="auto"`` (per-query test-time scaling) against the fixed budgets, on a BEIR folder.

    .venv/bin/python benchmarks/auto_budget/run.py --model PATH --data BEIR_FOLDER [--max-budget 16,64]

The corpus is encoded once at the full document budget and the dev and test queries once at the full query
budget; the documents go into a MultiVectorIndex (bf16). Fixed budgets: exact search at every rung of the
paper's ladder clipped to ``--max-budget``. Auto: for each target share of what the max budget adds over (1,1) in
dev nDCG@k (``keep="gain"``, the default) and of the max budget's dev nDCG@k (``keep="metric"``), the stage-1
candidates and the margin from ``calibrate_auto_margin`` on the DEV queries, then ``search(budget="auto")`` on the
TEST queries; also the uncalibrated defaults (margin 0.09, max(100, 10 k) candidates) and margin inf (every query
climbs: the candidates' ceiling).
Cost is SearchResult.cost, query x document dot products. Writes JSON, .md and .png (default
benchmarks/results/auto_budget.*).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import metaembed  # noqa: E402
from metaembed import MetaEmbed, MultiVectorIndex  # noqa: E402
from metaembed.budgets import Budget  # noqa: E402
from metaembed.data.beir import load_beir  # noqa: E402
from metaembed.data.item import Item
from metaembed.data.tasks import RetrievalTask  # noqa: E402
from metaembed.evaluation import evaluate_run  # noqa: E402
from metaembed.evaluation.stats import paired_bootstrap  # noqa: E402
from metaembed.index.adaptive import DEFAULT_AUTO_MARGIN, auto_ladder, default_candidates  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"


def limit(dev: RetrievalTask, test: RetrievalTask, n_queries: int | None, n_docs: int | None) -> dict[str, Item]:
    """Keep the first ``n_queries`` of each split, and the documents they judge plus the first others up to ``n_docs``."""
    for task in (dev, test):
        if n_queries:
            task.queries = dict(list(task.queries.items())[:n_queries])
            task.qrels = {q: task.qrels[q] for q in task.queries}
    corpus = test.corpus
    if n_docs:
        judged = {d for task in (dev, test) for grades in task.qrels.values() for d in grades}
        others = [d for d in corpus if d not in judged][: max(0, n_docs - len(judged))]
        keep = judged | set(others)
        corpus = {d: item for d, item in corpus.items() if d in keep}
    return corpus


def encode(model: MetaEmbed, side: str, items: list) -> torch.Tensor:
    """Vectors (n, R, D) of every item at the model's full budget of ``side``."""
    method = model.encode_query if side == "query" else model.encode_document
    with torch.no_grad():
        return method([item.to_model_input() for item in items], batch_size=64, show_progress_bar=True)


def evaluate(results: list, query_ids: list[str], qrels: dict, k: int, rungs: list[Budget]) -> dict:
    """Means of nDCG@k and recall@k, per-query nDCG@k, mean cost, and the share of queries stopping at each rung."""
    run = {q: r.ids for q, r in zip(query_ids, results)}
    means, per_query = evaluate_run(run, qrels, [f"ndcg@{k}", f"recall@{k}"])
    used = [str(Budget(*r.budget)) for r in results]
    return {"ndcg": means[f"ndcg@{k}"], "recall": means[f"recall@{k}"],
            "mean_cost": sum(r.cost for r in results) / len(results),
            "stopped": {str(b): used.count(str(b)) / len(used) for b in rungs},
            "per_query_ndcg": {q: v[f"ndcg@{k}"] for q, v in per_query.items()}}


def finite(x: float) -> float | str:
    return x if math.isfinite(x) else "inf"


def data_name(folder: str) -> str:
    """The data folder's name, with its parent's when it is just "beir"."""
    path = Path(folder)
    return f"{path.parent.name}/{path.name}" if path.name == "beir" else path.name


def markdown(out: dict) -> str:
    s = out["settings"]
    lines = [f"# budget=\"auto\" vs fixed budgets: {data_name(s['data'])}, {s['test_queries']} test queries, "
             f"{s['documents']:,} documents", "",
             f"Model {s['model']}, max budget ({s['max_budget']}), k={s['k']}; auto margins calibrated on "
             f"{s['dev_queries']} dev queries. Cost: dot products per query (fixed ({s['max_budget']}): "
             f"{out['fixed'][-1]['mean_cost']:,.0f}).", "",
             "| search | margin | candidates | nDCG@10 | recall@10 | dot products / query | nDCG vs max | cost vs max | "
             f"dev nDCG vs max | stopped at {' / '.join(f'({b})' for b in s['ladder'])} | Δ nDCG vs max [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in out["fixed"]:
        lines.append(f"| fixed ({row['budget']}) | | | {row['ndcg']:.4f} | {row['recall']:.4f} | {row['mean_cost']:,.0f} | "
                     f"{row['ndcg_ratio']:.3f} | {row['cost_ratio']:.3f} | | | |")
    for row in out["auto"]:
        margin = row["margin"] if isinstance(row["margin"], str) else f"{row['margin']:.4f}"
        stops = " / ".join(f"{v:.0%}" for v in row["stopped"].values())
        dev = f"{row['dev_achieved_ndcg'] / row['dev_reference_ndcg']:.3f}" if row.get("dev_reference_ndcg") else ""
        ci = row["bootstrap_vs_max"]
        lines.append(f"| {row['label']} | {margin} | {row['candidates']} | {row['ndcg']:.4f} | {row['recall']:.4f} | "
                     f"{row['mean_cost']:,.0f} | "
                     f"{row['ndcg_ratio']:.3f} | {row['cost_ratio']:.3f} | {dev} | {stops} | "
                     f"{ci['difference']:+.4f} [{ci['ci95_low']:+.4f}, {ci['ci95_high']:+.4f}] |")
    unreached = [row["label"] for row in out["auto"] if row.get("reached") is False]
    if unreached:
        lines += ["", f"Not reached on dev (margin inf, every query climbs): {', '.join(unreached)}."]
    return "\n".join(lines) + "\n"


def plot(out: dict, path: Path) -> None:
    """x: mean dot products per query (log); y: test nDCG@k; fixed budgets as a labelled line, auto points marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    fixed = out["fixed"]
    axis.plot([r["mean_cost"] for r in fixed], [r["ndcg"] for r in fixed], "o-", color="tab:blue", label="fixed budget")
    for r in fixed:
        axis.annotate(f"({r['budget']})", (r["mean_cost"], r["ndcg"]), textcoords="offset points", xytext=(4, -12), fontsize=8)
    markers = {"target": ("*", "tab:red"), "metric target": ("P", "tab:purple"), "default": ("D", "tab:green"),
               "inf": ("s", "tab:gray")}
    for kind, (marker, color) in markers.items():
        rows = [r for r in out["auto"] if r["kind"] == kind]
        axis.scatter([r["mean_cost"] for r in rows], [r["ndcg"] for r in rows], marker=marker, color=color, s=70, zorder=3,
                     label={"target": "auto, calibrated: a share of the gain over (1,1)",
                            "metric target": "auto, calibrated: a share of the max budget's nDCG",
                            "default": f"auto, default margin {DEFAULT_AUTO_MARGIN}",
                            "inf": "auto, margin inf (all climb)"}[kind])
    points: dict[tuple[float, float], list[str]] = {}  # targets landing on the same point share one label
    for r in out["auto"]:
        if r["kind"] == "target":
            points.setdefault((r["mean_cost"], r["ndcg"]), []).append(f"{r['target']:g}")
    for point, targets in points.items():
        axis.annotate("target " + ", ".join(targets), point, textcoords="offset points", xytext=(5, 4), fontsize=8,
                      color="tab:red")
    axis.axhline(fixed[-1]["ndcg"], color="tab:blue", linestyle=":", alpha=0.6)
    values = [r["ndcg"] for r in fixed + out["auto"]]
    bottom = math.floor(min(values) * 10) / 10
    axis.set_ylim(bottom, min(1.0, math.ceil((max(values) + 0.01) * 20) / 20))
    axis.set_xscale("log")
    axis.set_xlabel("mean dot products per query (log scale)")
    axis.set_ylabel(f"test nDCG@{out['settings']['k']} (axis starts at {bottom:.1f})")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8, loc="lower right")
    s = out["settings"]
    axis.set_title(f"budget=\"auto\" vs fixed: {data_name(s['data'])}, {s['test_queries']} test queries, "
                   f"{s['documents']:,} docs", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A saved MetaEmbed folder.")
    parser.add_argument("--data", required=True, help="A BEIR folder with qrels/dev.tsv and qrels/test.tsv.")
    parser.add_argument("--max-length", type=int, default=128, help="Text tokens per item (meta tokens come on top).")
    parser.add_argument("--max-budget", type=Budget.parse, default=Budget(16, 64))
    parser.add_argument("--targets", type=float, nargs="+", default=[0.9, 0.95, 0.98, 0.99])
    parser.add_argument("--keep", nargs="+", choices=["gain", "metric"], default=["gain", "metric"],
                        help="what each target is a share of (calibrate_auto_margin's keep)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--results", type=Path, default=RESULTS / "auto_budget.json")
    parser.add_argument("--limit-queries", type=int, help="First N queries of each split (a quick check only).")
    parser.add_argument("--limit-docs", type=int, help="N documents, the judged ones first (a quick check only).")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    dev, test = load_beir(args.data, "dev"), load_beir(args.data, "test")
    corpus = limit(dev, test, args.limit_queries, args.limit_docs)
    k, top = args.k, args.max_budget

    model = MetaEmbed.from_pretrained(args.model)
    model.eval()
    model.max_seq_length = args.max_length
    if top.query > model.num_query_meta_tokens or top.document > model.num_document_meta_tokens:
        raise SystemExit(f"--max-budget {top} exceeds the model's ({model.num_query_meta_tokens},"
                         f"{model.num_document_meta_tokens}) meta tokens")
    start = time.perf_counter()
    documents = encode(model, "document", list(corpus.values()))
    dev_q, test_q = (encode(model, "query", list(task.queries.values())) for task in (dev, test))
    encode_seconds = time.perf_counter() - start
    dev_ids, test_ids = list(dev.queries), list(test.queries)

    rungs = auto_ladder(top)

    def score(results: list) -> dict:
        return evaluate(results, test_ids, test.qrels, k, rungs)

    with tempfile.TemporaryDirectory(prefix="auto-budget-") as folder, \
            MultiVectorIndex.create(Path(folder) / "index", documents.shape[-1], top.document) as index:
        index.add(list(corpus), documents)
        fixed = [{"budget": str(b), **score(index.search(test_q, k, b))} for b in rungs]
        reference = fixed[-1]
        margins: list[tuple[str, str, float | None, object]] = []
        for keep in args.keep:
            for target in args.targets:
                calibration = metaembed.calibrate_auto_margin(index, dev_q, dev_ids, dev.qrels, target=target, keep=keep,
                                                              max_budget=top, metric=f"ndcg@{k}")
                margins.append((f"auto, {target:g} of the {'gain' if keep == 'gain' else 'max nDCG'}",
                                "target" if keep == "gain" else "metric target", target, calibration))
        margins += [(f"auto, default margin {DEFAULT_AUTO_MARGIN}", "default", None, DEFAULT_AUTO_MARGIN),
                    ("auto, margin inf", "inf", None, math.inf)]
        auto = []
        for label, kind, target, source in margins:
            margin = source if isinstance(source, float) else source.margin
            candidates = default_candidates(k) if isinstance(source, float) else source.candidates
            row = {"label": label, "kind": kind, "target": target, "margin": finite(margin), "candidates": candidates,
                   **score(index.search(test_q, k, "auto", max_budget=top, auto_margin=margin, candidates=candidates))}
            if not isinstance(source, float):
                row.update(keep=source.keep, reached=source.reached, dev_reference_ndcg=source.reference,
                           dev_first_ndcg=source.first, dev_goal_ndcg=source.goal, dev_achieved_ndcg=source.achieved,
                           dev_mean_cost=source.mean_cost, dev_stopped_counts=source.stopped)
            auto.append(row)

    for row in fixed + auto:
        row["ndcg_ratio"] = row["ndcg"] / reference["ndcg"] if reference["ndcg"] else float("nan")
        row["cost_ratio"] = row["mean_cost"] / reference["mean_cost"]
    for row in auto:
        row["bootstrap_vs_max"] = paired_bootstrap(row["per_query_ndcg"], reference["per_query_ndcg"])
    out = {
        "settings": {"model": str(Path(args.model).resolve()), "data": str(Path(args.data).resolve()),
                     "max_length": args.max_length, "max_budget": str(top), "k": k, "targets": args.targets,
                     "limit_queries": args.limit_queries, "limit_docs": args.limit_docs, "documents": len(corpus),
                     "dev_queries": len(dev_ids), "test_queries": len(test_ids), "index_dtype": "bfloat16",
                     "ladder": [str(b) for b in rungs], "default_auto_margin": DEFAULT_AUTO_MARGIN,
                     "machine_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "encode_seconds": round(encode_seconds, 1), "started": started,
                     "finished": time.strftime("%Y-%m-%d %H:%M:%S")},
        "fixed": fixed, "auto": auto,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(out, indent=1))
    table = markdown(out)
    args.results.with_suffix(".md").write_text(table)
    plot(out, args.results.with_suffix(".png"))
    print(table)


if __name__ == "__main__":
    main()
