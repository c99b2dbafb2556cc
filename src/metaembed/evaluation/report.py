"""Write a sweep's results: results.json (everything), results.md (every metric, latency median and p90, the
machine's load), budget_curve.png (:mod:`metaembed.evaluation.plot`); and the short table printed on a terminal
(:func:`terminal_table`: the headline metric, its paired differences with intervals, bytes and latency, within
100 columns). TREC runs and per-query metrics are written during the sweep (:mod:`metaembed.evaluation.runs`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metaembed.evaluation.plot import GROUP_ORDER, plot_budget_curve, short_name
from metaembed.model.card import BudgetCurve

MAX_TASK_COLUMNS = 6
TERMINAL_WIDTH = 100


def _format(value: Any, scale: float = 100.0) -> str:
    return "—" if value is None else f"{value * scale:.2f}"


def _bytes(value: int) -> str:
    return f"{value / 1024:.1f} KiB" if value >= 1024 else f"{value} B"


def _spread(entry: dict[str, Any], key: str) -> str:
    """``0.33 / 0.41``: the median and p90 milliseconds of a latency figure."""
    median, p90 = entry.get(key), entry.get(f"{key}_p90")
    return _format(median, 1.0) + ("" if p90 is None else f" / {p90:.2f}")


SHORT_LABEL = 14
"""The longest baseline name a table row shows as it is (longer ones become ``baseline N``)."""


def _difference(comparison: dict[str, Any] | None, decimals: int = 2) -> str:
    """``+1.23 [+0.40, +2.10]`` in points, or ``-0.10 [-0.50, +0.30] noise`` when the interval spans zero."""
    if not comparison:
        return "—"
    text = (f"{100 * comparison['difference']:+.{decimals}f} [{100 * comparison['ci95_low']:+.{decimals}f}, "
            f"{100 * comparison['ci95_high']:+.{decimals}f}]")
    return text + (" noise" if comparison["ci95_low"] <= 0 <= comparison["ci95_high"] else "")


def _delta_columns(results: dict[str, Any]) -> list[tuple[str, Any]]:
    """(header, budget -> comparison) for the paired differences: vs the first budget and vs the first baseline."""
    budgets = results["budget_list"]
    comparisons = results.get("paired", {}).get("comparisons", {})
    first_baseline = next(iter(results.get("baselines", {})), None)
    columns: list[tuple[str, Any]] = []
    if comparisons:
        if len(budgets) > 1:
            columns.append((f"Δ vs ({budgets[0]})", lambda b: comparisons.get(f"({b}) - ({budgets[0]})")))
        if first_baseline:
            label = first_baseline if len(first_baseline) <= SHORT_LABEL else "baseline"
            columns.append((f"Δ vs {label}", lambda b: comparisons.get(f"({b}) - {first_baseline}")))
    return columns


def _headline_value(results: dict[str, Any], entry: dict[str, Any]) -> Any:
    groups = entry.get("groups")
    if groups and "overall" in groups:
        return groups["overall"]["mean"]
    return entry.get("overall", {}).get(results["headline"])


def results_table(results: dict[str, Any]) -> str:
    """A Markdown table: one row per budget, then one per baseline; the headline metric per task (or MMEB
    group), the overall metrics, paired differences of the headline metric (vs the first budget and vs the
    first baseline, 95% bootstrap intervals), and the cost columns (latency: median / p90 ms). Quality values
    are percentages."""
    headline = results["headline"]
    budgets = results["budget_list"]
    task_names = list(results["tasks"])
    first = results["budgets"][budgets[0]]
    columns: list[tuple[str, Any]] = []
    if "groups" in first:
        for group in GROUP_ORDER:
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
    delta_columns = _delta_columns(results)
    header = ["budget (r_q,r_c)", *[name for name, _ in columns], *[name for name, _ in delta_columns],
              "index bytes/doc", "ms/query batched (median / p90)", "ms/query single (median / p90)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]

    def row(label: str, entry: dict[str, Any], deltas: list[str]) -> None:
        cells = [label, *[_format(_safe(get, entry)) for _, get in columns], *deltas,
                 _bytes(entry["index_bytes_per_document"]), _spread(entry, "latency_ms_per_query"),
                 _spread(entry, "latency_ms_single_query")]
        lines.append("| " + " | ".join(cells) + " |")

    for budget in budgets:
        row(f"({budget})", results["budgets"][budget], [_difference(get(budget)) for _, get in delta_columns])
    for name, entry in results.get("baselines", {}).items():
        row(f"baseline: {name}", entry, ["" for _ in delta_columns])
    return "\n".join(lines)


def _safe(get, entry: dict[str, Any]) -> Any:
    """A column's value, or None where the row has no such value (a baseline has no per-task or group cells)."""
    try:
        return get(entry)
    except (KeyError, TypeError):
        return None


def _baseline_labels(results: dict[str, Any]) -> dict[str, str]:
    """Short row labels for baselines: the name when it is short, else ``baseline N``."""
    names = list(results.get("baselines", {}))
    return {name: name if len(name) <= SHORT_LABEL else f"baseline {n}" for n, name in enumerate(names, start=1)}


def _baseline_note(name: str, label: str, entry: dict[str, Any], limit: int, tasks: int = 1) -> str:
    source = entry.get("source") or name
    ran = len(entry.get("tasks") or {}) or tasks
    about = f" [on {ran} of the {tasks} tasks]" if ran < tasks else ""
    about += f" ({entry['description']})" if entry.get("description") else ""
    text = f"{label}: {short_name(source, max(20, limit - len(label) - len(about) - 2))}{about}"
    return text[:limit]


def compact_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the short table: per budget and baseline the headline metric, its paired
    differences with 95% intervals, index bytes per document and one-query latency."""
    budgets = results["budget_list"]
    headline = results["headline"]
    label = ("mean " if len(results["tasks"]) > 1 and "groups" not in results["budgets"][budgets[0]] else "") + headline
    delta_columns = _delta_columns(results)
    labels = _baseline_labels(results)
    header = ["budget", label, *[name for name, _ in delta_columns], "bytes/doc", "ms/query"]
    rows = []
    for budget in budgets:
        entry = results["budgets"][budget]
        rows.append([f"({budget})", _format(_headline_value(results, entry)),
                     *[_difference(get(budget), 1) for _, get in delta_columns],
                     _bytes(entry["index_bytes_per_document"]), _format(entry.get("latency_ms_single_query"), 1.0)])
    for name, entry in results.get("baselines", {}).items():
        rows.append([labels[name], _format(_headline_value(results, entry)), *["" for _ in delta_columns],
                     _bytes(entry["index_bytes_per_document"]), _format(entry.get("latency_ms_single_query"), 1.0)])
    return header, rows


def compact_notes(results: dict[str, Any], width: int = TERMINAL_WIDTH) -> list[str]:
    """What the short table's rows and numbers are, one line each (at most ``width`` characters)."""
    headline = results["headline"]
    labels = _baseline_labels(results)
    notes = [_baseline_note(name, labels[name], entry, width, len(results["tasks"]))
             for name, entry in results.get("baselines", {}).items()]
    notes += [f"no {name} baseline: {info.get('skipped')}"[:width] for name, info in results.get("baselines_not_run", {}).items()]
    paired = results.get("paired", {}).get("comparisons", {})
    if paired:
        queries = next(iter(paired.values()))["queries"]
        notes.append(f"Δ: paired {headline} difference in points, 95% bootstrap interval over {queries} queries; noise: spans 0")
    notes.append(f"ms/query: one query alone, bf16 index search, median of {_repeats(results, 'single')} "
                 "(p90, batched: results.md)")
    load_note = _load_note(results)
    if load_note:
        notes.append(load_note[:width])
    return notes


def terminal_table(results: dict[str, Any]) -> str:
    """The table printed after a run, at most 100 columns wide (:func:`compact_table`); notes below say what
    the rows and numbers are; a run of several tasks then gets :func:`task_table`. Everything else is in results.md."""
    header, body = compact_table(results)
    per_task = task_table(results)
    return "\n".join([*_aligned([header, *body], right={1, len(header) - 2, len(header) - 1}),
                      *compact_notes(results), *([""] + per_task if per_task else [])])


def _aligned(rows: list[list[str]], right: set[int]) -> list[str]:
    """Text rows padded into columns (the columns in ``right`` right-aligned)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(width) if i in right else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths))).rstrip()
            for row in rows]


def task_table(results: dict[str, Any], max_tasks: int = 4) -> list[str]:
    """Per task (a run of 2 to ``max_tasks`` retrieval tasks): the headline metric of every budget and baseline
    (— where a baseline did not run), then the largest budget minus the first and minus each baseline, paired
    within the task with 95% intervals. A mean over tasks hides a baseline that ran on some of them only."""
    tasks = list(results["tasks"])
    by_task = results.get("paired", {}).get("by_task", {})
    if not 2 <= len(tasks) <= max_tasks or "groups" in results["budgets"][results["budget_list"][0]]:
        return []
    headline = results["headline"]
    rows = [[f"per task: {headline}", *tasks]]
    for budget in results["budget_list"]:
        entry = results["budgets"][budget]["tasks"]
        rows.append([f"({budget})", *[_format(entry[task].get(headline)) for task in tasks]])
    for name, entry in results.get("baselines", {}).items():
        rows.append([name, *[_format((entry.get("tasks") or {}).get(task, {}).get(headline)) for task in tasks]])
    first, last = results["budget_list"][0], results["budget_list"][-1]
    others = [f"({first})"] if last != first else []
    for other in [*others, *results.get("baselines", {})]:
        key = f"({last}) - {other}"
        if any(key in by_task.get(task, {}) for task in tasks):
            rows.append([f"Δ {key}", *[_difference(by_task.get(task, {}).get(key), 1) if key in by_task.get(task, {})
                                       else "—" for task in tasks]])
    return _aligned(rows, right=set(range(1, len(tasks) + 1)))


def budget_curve(results: dict[str, Any]) -> BudgetCurve:
    """The short table of a run and what was measured, for a model card (``MetaEmbed.attach_budget_curve``)."""
    header, rows = compact_table(results)
    data = results.get("data", {})
    tasks = results["tasks"]
    what = f"`{data['path']}`" if data.get("path") else ", ".join(f"`{name}`" for name in tasks)
    split = f" ({data['split']} split)" if data.get("split") else ""
    sizes = "; ".join(f"{task['num_queries']} queries, {task['num_documents']} documents" for task in tasks.values())
    notes = [f"Measured on {what}{split}: {sizes}", *compact_notes(results, width=1000)]
    return BudgetCurve(metric=results["headline"], header=header, rows=rows, notes=notes)


def _repeats(results: dict[str, Any], kind: str) -> Any:
    """How many timings a latency figure of the first budget is the median of."""
    first = results["budgets"][results["budget_list"][0]]
    return (first.get("latency_repeats") or {}).get(kind, "?")


def _load_note(results: dict[str, Any]) -> str | None:
    machine = results.get("machine") or {}
    start, end, cpus = machine.get("load_average_start"), machine.get("load_average_end"), machine.get("cpu_count")
    if not start:
        return None
    busy = cpus and max(start[0], (end or start)[0]) > cpus
    return (f"machine load (1 min) {start[0]:.2f} at start, {(end or start)[0]:.2f} at end, on {cpus} CPUs"
            + ("; busy: latencies are inflated" if busy else ""))


def results_markdown(results: dict[str, Any]) -> str:
    """results.md: what was evaluated, the table, baselines, latency conditions, per-query files, what was skipped."""
    model = results["model"]
    data = results.get("data", {})
    settings = results.get("settings", {})
    lines = [
        f"# Budget sweep: {model['name']}",
        "",
        f"- data: `{data.get('path', '?')}` (format {data.get('format', '?')}, split {data.get('split', '-')})",
        f"- model: R_q={model['num_query_meta_tokens']}, R_c={model['num_document_meta_tokens']}, D={model['embedding_dim']}, fingerprint `{model['fingerprint'][:16]}`"
        + (f", backbone `{model['backbone']}`" if model.get("backbone") else ""),
        f"- headline metric: {results['headline']} (values in %); index bytes assume a bf16 index (r_c x D x 2)",
        "- latency: searches through a bf16 MultiVectorIndex of the documents (an exact search, as `metaembed search` runs "
        "it; the rankings above come from the evaluation's own fp32 scorer); "
        f"median / p90 ms per query over {_repeats(results, 'batched')} timed passes over all queries (batched) "
        f"and {_repeats(results, 'single')} one-query searches (up to {settings.get('latency_queries', '?')} queries, each "
        f"{settings.get('latency_repeats', '?')} times); {settings.get('torch_threads', '?')} torch threads",
    ]
    load_note = _load_note(results)
    if load_note:
        lines.append(f"- {load_note}")
    for name, entry in results.get("baselines", {}).items():
        lines.append(f"- baseline `{name}`: `{entry.get('source', name)}`" + (f" ({entry['description']})" if entry.get("description") else ""))
    for name, info in results.get("baselines_not_run", {}).items():
        lines.append(f"- baseline `{name}` not run: {info.get('skipped')}")
    lines.append("")
    for name, task in results["tasks"].items():
        lines.append(f"- task `{name}`: {task['num_queries']} queries, {task['num_documents']} documents" + (f", skipped {task['skipped']}" if task["skipped"] else ""))
    lines += ["", results_table(results), ""]
    if results.get("runs"):
        lines += ["Per query: `per_query.jsonl` (every metric of every query and system); TREC runs (ties ranked by "
                  "document id, descending, as trec_eval does) and the qrels used:", ""]
        for task, files in results["runs"].items():
            lines.append(f"- `{task}`: " + ", ".join(f"`{path}`" for path in files.values()))
        lines.append("")
    return "\n".join(lines)


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
