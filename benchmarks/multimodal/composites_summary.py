"""Composite runs side by side, compared query by query: which meta attention makes the image budget pay, and is
its full budget above the single vector from the same towers and the frozen towers?

Each run is a ``composites.py`` evaluation folder (its ``per_query.jsonl``); every run scored the same 500 test
queries on the same 300 composites, so any two systems pair up query by query (95% bootstrap intervals).

    C=/tmp/metaembed-multimodal-benchmark/composites    # the runs behind multimodal_composites_summary.md:
    .venv/bin/python benchmarks/multimodal/composites_summary.py \\
        --run regions_200=$C/a_mmr_document_regions_meta_lr_0.0001_steps_200/eval \\
        --run full_200=$C/a_mmr_full_meta_lr_0.0001_steps_200/eval \\
        --run single_200=$C/c_single_vector_meta_lr_0.0001_steps_200/eval \\
        --run regions_60=$C/a_mmr_document_regions_meta_lr_0.0001_steps_60/eval \\
        --run full_meta_lr_1e3_60=$C/a_mmr_meta_lr_0.001_steps_60/eval \\
        --compare regions_200:16,64-regions_200:1,1 --compare regions_200:4,8-regions_200:1,1 \\
        --compare regions_200:16,64-full_200:16,64 --compare regions_200:1,1-full_200:1,1 \\
        --compare regions_200:16,64-single_200:1,1 --compare regions_200:16,64-regions_200:frozen_towers \\
        --compare full_200:16,64-full_200:1,1 --compare full_200:16,64-single_200:1,1 \\
        --compare single_200:1,1-single_200:frozen_towers --compare regions_200:16,64-regions_60:16,64
Writes benchmarks/results/<--results>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from metaembed.budgets import PAPER_BUDGETS, Budget
from metaembed.evaluation.frozen_towers import FROZEN_TOWERS
from metaembed.evaluation.runs import PER_QUERY_FILE
from metaembed.evaluation.stats import paired_bootstrap

METRIC = "ndcg@10"
BUDGETS = [str(Budget(*b)) for b in PAPER_BUDGETS]


def per_query(eval_dir: Path) -> dict[str, dict[str, float]]:
    """system -> query id -> nDCG@10 of one run's evaluation folder."""
    path = eval_dir / PER_QUERY_FILE
    if not path.is_file():
        raise SystemExit(f"--run {eval_dir}: no {PER_QUERY_FILE} there (is it a composites.py eval folder?)")
    systems: dict[str, dict[str, float]] = defaultdict(dict)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        systems[row["system"]][row["query_id"]] = row[METRIC]
    return systems


def system_of(runs: dict[str, dict[str, dict[str, float]]], spec: str) -> dict[str, float]:
    """The per-query scores named ``RUN:SYSTEM`` (e.g. ``regions:16,64``, ``full:frozen_towers``)."""
    run, _, system = spec.partition(":")
    if run not in runs or system not in runs[run]:
        known = ", ".join(f"{name}:{s}" for name, systems in runs.items() for s in systems)
        raise SystemExit(f"--compare {spec}: no such run:system (known: {known})")
    return runs[run][system]


def plot(runs: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.8))
    for name, systems in runs.items():
        budgets = [b for b in BUDGETS if b in systems]
        means = [100 * sum(systems[b].values()) / len(systems[b]) for b in budgets]
        if len(budgets) > 1:
            axis.plot(range(len(budgets)), means, "o-", label=name)
        else:
            axis.axhline(means[0], linestyle="--", color="grey", label=f"{name} ({budgets[0]})")
    towers = next((systems[FROZEN_TOWERS] for systems in runs.values() if FROZEN_TOWERS in systems), None)
    if towers:
        axis.axhline(100 * sum(towers.values()) / len(towers), linestyle=":", color="black", label="frozen towers")
    axis.set_xticks(range(len(BUDGETS)), [f"({b})" for b in BUDGETS])
    axis.set_xlabel("budget (r_q, r_c)")
    axis.set_ylabel("nDCG@10 x100")
    axis.set_title("Text -> composite of four images")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="NAME=EVAL_DIR of a composites.py run (NAME without '-' or ':')")
    parser.add_argument("--compare", action="append", default=[], help="RUN:SYSTEM-RUN:SYSTEM (first minus second)")
    parser.add_argument("--results", default="multimodal_composites_summary")
    args = parser.parse_args(argv)
    runs = {}
    for entry in args.run:
        name, separator, folder = entry.partition("=")
        if not separator or "-" in name or ":" in name:
            raise SystemExit(f"--run {entry}: expected NAME=EVAL_DIR, a NAME without '-' or ':'")
        runs[name] = per_query(Path(folder))
    comparisons = {}
    for spec in args.compare:
        first, separator, second = spec.partition("-")
        if not separator:
            raise SystemExit(f"--compare {spec}: expected RUN:SYSTEM-RUN:SYSTEM")
        comparisons[spec] = paired_bootstrap(system_of(runs, first), system_of(runs, second))
    means = {name: {system: round(sum(scores.values()) / len(scores), 4) for system, scores in systems.items()}
             for name, systems in runs.items()}
    out = Path(__file__).resolve().parents[1] / "results" / args.results
    out.with_suffix(".json").write_text(json.dumps({"runs": dict(entry.partition("=")[::2] for entry in args.run),
                                                    "ndcg@10": means, "comparisons": comparisons}, indent=2) + "\n")
    lines = ["# Text -> composite of four images: the runs side by side (nDCG@10 x100)", "",
             "| run | " + " | ".join(f"({b})" for b in BUDGETS) + " | frozen towers |", "|---|" + "---|" * (len(BUDGETS) + 1)]
    for name, row in means.items():
        cells = [f"{100 * row[b]:.1f}" if b in row else "" for b in [*BUDGETS, FROZEN_TOWERS]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| comparison | difference | 95% interval | queries |", "|---|---|---|---|"]
    for spec, p in comparisons.items():
        lines.append(f"| {spec} | {100 * p['difference']:+.2f} | [{100 * p['ci95_low']:+.2f}, {100 * p['ci95_high']:+.2f}] "
                     f"| {p['queries']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(runs, out.with_suffix(".png"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
