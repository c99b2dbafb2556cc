"""budget_curve.png, drawn to be read honestly: quality against budget with the 95% intervals of the paired
differences and every baseline as a horizontal line, on an axis that starts at 0 or says on its label where
it starts; index bytes per document and search latency (median, whisker to p90) on log scales, since budgets
grow geometrically; the machine's load while timing in the latency panel's title."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

GROUP_ORDER = ("classification", "vqa", "retrieval", "grounding", "ind", "ood", "overall")
_BASELINE_STYLES = ("--", ":", "-.")


def short_name(name: str, limit: int = 40) -> str:
    """A model name that fits a plot title or a table note: the last parts of a long path."""
    if len(name) <= limit:
        return name
    parts = name.rstrip("/").split("/")
    short = parts[-1][-limit:]
    for part in reversed(parts[:-1]):
        if len(part) + len(short) + 5 > limit:
            break
        short = f"{part}/{short}"
    return f".../{short}"


def human_bytes(value: float) -> str:
    """``768 B``, ``3 KiB``, ``1.5 MiB``."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def quality_axis_limits(values: list[float]) -> tuple[float, float]:
    """(bottom, top) of the quality axis in %: from 0 when the values span much of it, else zoomed on them."""
    low, high = min(values), max(values)
    if low <= 0 or high - low >= 0.4 * high:
        return 0.0, min(100.0, high + max(2.0, 0.08 * high))
    pad = max(1.0, 0.25 * (high - low))
    return max(0.0, math.floor(low - pad)), min(100.0, math.ceil(high + pad))


def budget_curve_figure(results: dict[str, Any]) -> Any:
    """The figure of budget_curve.png: quality, index bytes per document and latency against budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    budgets = results["budget_list"]
    headline = results["headline"]
    positions = list(range(len(budgets)))
    labels = [f"({b})" for b in budgets]
    entries = [results["budgets"][b] for b in budgets]
    baselines = results.get("baselines", {})
    figure, (quality_axis, bytes_axis, latency_axis) = plt.subplots(1, 3, figsize=(16, 4.8))

    drawn: list[float] = []
    if "groups" in entries[0]:
        for group in GROUP_ORDER:
            if group in entries[0]["groups"]:
                values = [100 * e["groups"][group]["mean"] for e in entries]
                drawn += values
                quality_axis.plot(positions, values, marker="o", linewidth=3 if group == "overall" else 1.2, label=group)
    else:
        tasks = list(results["tasks"])
        if len(tasks) > 1:
            for name in tasks[:10]:
                values = [100 * (e["tasks"][name].get(headline) or 0) for e in entries]
                drawn += values
                quality_axis.plot(positions, values, marker=".", alpha=0.6, label=name)
        overall = [100 * (e["overall"].get(headline) or 0) for e in entries]
        drawn += overall
        quality_axis.plot(positions, overall, marker="o", linewidth=3, color="black", label="mean" if len(tasks) > 1 else headline)
        comparisons = results.get("paired", {}).get("comparisons", {})
        for position, budget in zip(positions[1:], budgets[1:]):
            c = comparisons.get(f"({budget}) - ({budgets[0]})")
            if c:  # the 95% interval of this budget's difference from the first, drawn from the first's value
                low, high = overall[0] + 100 * c["ci95_low"], overall[0] + 100 * c["ci95_high"]
                drawn += [low, high]
                quality_axis.errorbar(position, overall[0] + 100 * c["difference"], yerr=[[100 * c["difference"] - 100 * c["ci95_low"]],
                                      [100 * c["ci95_high"] - 100 * c["difference"]]], fmt="none", ecolor="tab:blue", capsize=4,
                                      label="95% interval of Δ vs first" if position == 1 else None)
    for (name, baseline), style in zip(baselines.items(), _BASELINE_STYLES):
        value = baseline["overall"].get(headline)
        if value is not None:
            drawn.append(100 * value)
            quality_axis.axhline(100 * value, color="tab:green", linestyle=style, label=f"baseline {short_name(name, 24)}: {100 * value:.2f}")
    bottom, top = quality_axis_limits(drawn)
    quality_axis.set_ylim(bottom, top)
    quality_axis.set_ylabel(f"{headline} (%)" + (f" — axis zoomed: starts at {bottom:g}" if bottom > 0 else ""))
    quality_axis.set_title(f"quality: {short_name(results['model']['name'])}", fontsize=10)
    quality_axis.legend(fontsize=7)

    sizes = [e["index_bytes_per_document"] for e in entries]
    bytes_axis.plot(positions, sizes, marker="o", color="tab:gray", label="MetaEmbed (bf16 index)")
    for position, size in zip(positions, sizes):
        bytes_axis.annotate(human_bytes(size), (position, size), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    marks = set(sizes)
    for (name, baseline), style in zip(baselines.items(), _BASELINE_STYLES):
        marks.add(baseline["index_bytes_per_document"])
        bytes_axis.axhline(baseline["index_bytes_per_document"], color="tab:green", linestyle=style,
                           label=f"baseline {short_name(name, 24)}: {human_bytes(baseline['index_bytes_per_document'])}")
    bytes_axis.set_yscale("log")
    bytes_axis.set_yticks(sorted(marks))
    bytes_axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: human_bytes(value)))
    bytes_axis.yaxis.set_minor_formatter(NullFormatter())
    bytes_axis.set_ylim(min(marks) / 1.6, max(marks) * 1.8)
    bytes_axis.set_ylabel("index bytes per document (log scale)")
    bytes_axis.set_title("index size", fontsize=10)
    bytes_axis.legend(fontsize=7, loc="upper left")

    for key, marker, color, label in (("latency_ms_single_query", "o", "tab:red", "one query at a time"),
                                      ("latency_ms_per_query", "s", "tab:orange", "batched, per query")):
        medians = [e.get(key) for e in entries]
        if all(m is None for m in medians):
            continue
        medians = [m or float("nan") for m in medians]
        p90 = [e.get(f"{key}_p90") or m for e, m in zip(entries, medians)]
        latency_axis.errorbar(positions, medians, yerr=[[0] * len(medians), [max(0.0, h - m) for h, m in zip(p90, medians)]],
                              marker=marker, color=color, capsize=3, label=f"{label} (median, whisker to p90)")
        for (name, baseline), style in zip(baselines.items(), _BASELINE_STYLES):
            if baseline.get(key):
                latency_axis.axhline(baseline[key], color=color, linestyle=style, alpha=0.6, label=f"baseline {short_name(name, 24)}, {label}")
    latency_axis.set_yscale("log")
    latency_axis.set_ylabel("search ms per query (log scale)")
    machine = results.get("machine") or {}
    load = (machine.get("load_average_start") or [None])[0]
    latency_axis.set_title("search latency" + (f" (load {load:.1f} on {machine.get('cpu_count')} CPUs)" if load is not None else ""), fontsize=10)
    if latency_axis.get_legend_handles_labels()[0]:
        latency_axis.legend(fontsize=7, loc="best")
    else:  # evaluated without timings (--latency-repeats 0)
        latency_axis.text(0.5, 0.5, "not measured", transform=latency_axis.transAxes, ha="center", va="center")

    for axis in (quality_axis, bytes_axis, latency_axis):
        axis.set_xticks(positions, labels)
        axis.set_xlabel("budget (r_q, r_c)")
        axis.grid(alpha=0.3, which="both" if axis is not quality_axis else "major")
    figure.tight_layout()
    return figure


def plot_budget_curve(results: dict[str, Any], path: str | Path) -> Path:
    """Write :func:`budget_curve_figure` to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    figure = budget_curve_figure(results)
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
