"""Write a sweep's results: results.json (everything), results.md (the table) and budget_curve.png
(quality against budget, next to what each budget costs: index bytes per document and search latency)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_TASK_COLUMNS = 6
_GROUP_ORDER = ("classification", "vqa", "retrieval", "grounding", "ind", "ood", "overall")


def _format(value: Any, scale: float = 100.0) -> str:
    return "—" if value is None else f"{value * scale:.2f}"


def _bytes(value: int) -> str:
    return f"{value / 1024:.1f} KiB" if value >= 1024 else f"{value} B"


def _difference(comparison: dict[str, Any] | None) -> str:
    """``+1.23 [+0.40, +2.10]`` in points, or ``-0.10 [-0.50, +0.30] noise`` when the interval spans zero."""
    if not comparison:
        return "—"
    text = (f"{100 * comparison['difference']:+.2f} [{100 * comparison['ci95_low']:+.2f}, "
            f"{100 * comparison['ci95_high']:+.2f}]")
    return text + (" noise" if comparison["ci95_low"] <= 0 <= comparison["ci95_high"] else "")


def results_table(results: dict[str, Any]) -> str:
    """A Markdown table: one row per budget, then one per baseline; the headline metric per task (or MMEB
    group), the overall metrics, paired differences of the headline metric (vs the first budget and vs the
    first baseline, 95% bootstrap intervals), and the cost columns. Quality values are percentages."""
    headline = results["headline"]
    budgets = results["budget_list"]
    task_names = list(results["tasks"])
    first = results["budgets"][budgets[0]]
    columns: list[tuple[str, Any]] = []
    if "groups" in first:
        for group in _GROUP_ORDER:
            if group in first["groups"]:
                info = first["groups"][group]
                columns.append((f"{group} ({info['n']}/{info['of']})", lambda e, g=group: e["groups"][g]["mean"]))
    else:
        if len(task_names) > 1:
            for name in task_names[:MAX_TASK_COLUMNS]:
                columns.append((f"{name} {headline}", lambda e, n=name: e["tasks"][n].get(headline)))
        overall_metrics = [m for m in results["settings"]["metrics"] if m in first["overall"]] or list(first["overall"])
        label = "mean " if len(task_names) > 1 else ""
        for metric in overall_metrics:
            columns.append((f"{label}{metric}", lambda e, m=metric: e["overall"].get(m)))
    comparisons = results.get("paired", {}).get("comparisons", {})
    baselines = results.get("baselines", {})
    first_baseline = next(iter(baselines), None)
    delta_columns = []
    if comparisons:
        delta_columns.append((f"Δ vs ({budgets[0]})", lambda b: comparisons.get(f"({b}) - ({budgets[0]})")))
        if first_baseline:
            delta_columns.append(("Δ vs baseline", lambda b: comparisons.get(f"({b}) - {first_baseline}")))
    header = ["budget (r_q,r_c)", *[name for name, _ in columns], *[name for name, _ in delta_columns],
              "index bytes/doc", "ms/query (batched)", "ms/query (single)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]

    def row(label: str, entry: dict[str, Any], deltas: list[str]) -> None:
        cells = [label, *[_format(_safe(get, entry)) for _, get in columns], *deltas]
        cells.append(_bytes(entry["index_bytes_per_document"]))
        cells.append(_format(entry["latency_ms_per_query"], 1.0))
        cells.append(_format(entry["latency_ms_single_query"], 1.0))
        lines.append("| " + " | ".join(cells) + " |")

    for budget in budgets:
        row(f"({budget})", results["budgets"][budget], [_difference(get(budget)) for _, get in delta_columns])
    for name, entry in baselines.items():
        row(f"baseline: {name}", entry, ["" for _ in delta_columns])
    return "\n".join(lines)


def _safe(get, entry: dict[str, Any]) -> Any:
    """A column's value, or None where the row has no such value (a baseline has no per-task or group cells)."""
    try:
        return get(entry)
    except (KeyError, TypeError):
        return None


def results_markdown(results: dict[str, Any]) -> str:
    """results.md: what was evaluated, the table, and what was skipped."""
    model = results["model"]
    data = results.get("data", {})
    lines = [
        f"# Budget sweep: {model['name']}",
        "",
        f"- data: `{data.get('path', '?')}` (format {data.get('format', '?')}, split {data.get('split', '-')})",
        f"- model: R_q={model['num_query_meta_tokens']}, R_c={model['num_document_meta_tokens']}, D={model['embedding_dim']}, fingerprint `{model['fingerprint'][:16]}`",
        f"- headline metric: {results['headline']} (values in %); index bytes assume a bf16 index (r_c x D x 2)",
        "",
    ]
    for name, task in results["tasks"].items():
        lines.append(f"- task `{name}`: {task['num_queries']} queries, {task['num_documents']} documents" + (f", skipped {task['skipped']}" if task["skipped"] else ""))
    lines += ["", results_table(results), ""]
    return "\n".join(lines)


def plot_budget_curve(results: dict[str, Any], path: str | Path) -> Path:
    """budget_curve.png: left, the headline metric against budget (overall and per task); right, index
    bytes per document (bars) and single-query search latency (line) per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = results["budget_list"]
    headline = results["headline"]
    positions = list(range(len(budgets)))
    labels = [f"({b})" for b in budgets]
    figure, (quality_axis, cost_axis) = plt.subplots(1, 2, figsize=(12, 4.5))

    entries = [results["budgets"][b] for b in budgets]
    if "groups" in entries[0]:
        for group in _GROUP_ORDER:
            if group in entries[0]["groups"]:
                values = [100 * e["groups"][group]["mean"] for e in entries]
                quality_axis.plot(positions, values, marker="o", linewidth=3 if group == "overall" else 1.2, label=group)
    else:
        tasks = list(results["tasks"])
        if len(tasks) > 1:
            for name in tasks[:10]:
                quality_axis.plot(positions, [100 * (e["tasks"][name].get(headline) or 0) for e in entries], marker=".", alpha=0.6, label=name)
        quality_axis.plot(positions, [100 * (e["overall"].get(headline) or 0) for e in entries], marker="o", linewidth=3, color="black", label="mean" if len(tasks) > 1 else headline)
        comparisons = results.get("paired", {}).get("comparisons", {})
        if comparisons:  # 95% interval of each budget's difference from the first, drawn around its mean
            first = 100 * (entries[0]["overall"].get(headline) or 0)
            for position, budget in zip(positions[1:], budgets[1:]):
                c = comparisons.get(f"({budget}) - ({budgets[0]})")
                if c:
                    quality_axis.vlines(position, first + 100 * c["ci95_low"], first + 100 * c["ci95_high"], color="black", alpha=0.5)
        for (name, baseline), style in zip(results.get("baselines", {}).items(), ("--", ":", "-.")):
            value = baseline["overall"].get(headline)
            if value is not None:
                quality_axis.axhline(100 * value, color="tab:green", linestyle=style, label=f"baseline: {_short_name(name, 30)}")
    quality_axis.set_xticks(positions, labels)
    quality_axis.set_xlabel("budget (r_q, r_c)")
    quality_axis.set_ylabel(f"{headline} (%)")
    quality_axis.set_title(f"quality against budget: {_short_name(results['model']['name'])}"
                           + ("\n(bars: 95% interval of the difference from the first budget)" if results.get("paired") else ""),
                           fontsize=10)
    quality_axis.grid(alpha=0.3)
    quality_axis.legend(fontsize=8)

    kib = [e["index_bytes_per_document"] / 1024 for e in entries]
    cost_axis.bar(positions, kib, color="tab:gray", alpha=0.6, label="index KiB / document (bf16)")
    cost_axis.set_xticks(positions, labels)
    cost_axis.set_xlabel("budget (r_q, r_c)")
    cost_axis.set_ylabel("index KiB per document")
    latency_axis = cost_axis.twinx()
    latency_axis.plot(positions, [e["latency_ms_single_query"] or 0 for e in entries], marker="o", color="tab:red", label="search ms / query (single)")
    latency_axis.plot(positions, [e["latency_ms_per_query"] or 0 for e in entries], marker="s", color="tab:orange", label="search ms / query (batched)")
    latency_axis.set_ylabel("search latency (ms per query)")
    handles = cost_axis.get_legend_handles_labels()
    more = latency_axis.get_legend_handles_labels()
    cost_axis.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, loc="upper left")
    cost_axis.set_title("cost of each budget")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_results(results: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, results.md and budget_curve.png into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    markdown_path = out_dir / "results.md"
    markdown_path.write_text(results_markdown(results), encoding="utf-8")
    plot_path = plot_budget_curve(results, out_dir / "budget_curve.png")
    return {"json": json_path, "markdown": markdown_path, "plot": plot_path}


def _short_name(name: str, limit: int = 40) -> str:
    """A model name that fits a plot title: the last parts of a long path."""
    if len(name) <= limit:
        return name
    parts = name.rstrip("/").split("/")
    short = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) + len(short) + 5 > limit:
            break
        short = f"{part}/{short}"
    return f".../{short}"
