"""``metaembed eval``: quality and cost of a MetaEmbed model at every budget, on BEIR, MMEB or ViDoRe data."""

from __future__ import annotations

from pathlib import Path

import typer

from metaembed.budgets import PAPER_BUDGETS, Budget

DEFAULT_BUDGETS = " ".join(f"{q},{c}" for q, c in PAPER_BUDGETS)


def parse_budget_arguments(values: list[str]) -> list[Budget]:
    """Budgets from ``--budgets 1,1 2,4``, ``--budgets "1,1 2,4"`` or repeated ``--budgets``; a clear error otherwise."""
    budgets = []
    for value in values:
        for part in value.replace(";", " ").split():
            try:
                budgets.append(Budget.parse(part))
            except ValueError as error:
                raise typer.BadParameter(str(error), param_hint="--budgets") from None
    return budgets


def eval_command(
    context: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="A saved MetaEmbed model folder (or hub id)."),
    data: Path = typer.Option(..., "--data", "-d", help="A BEIR folder, an MMEB subset folder or root, a ViDoRe dataset, or a folder of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Where results.json, results.md and budget_curve.png go."),
    format: str = typer.Option(None, "--format", "-f", help="beir, mmeb or vidore (detected when not given)."),
    budgets: list[str] = typer.Option(None, "--budgets", "-b", help=f"Budgets r_q,r_c (space separated). Default: {DEFAULT_BUDGETS}, clipped to the model."),
    split: str = typer.Option(None, "--split", help="The qrels split (default: test)."),
    images: Path = typer.Option(None, "--images", help="The unpacked image folder of MMEB-eval."),
    subset: list[str] = typer.Option(None, "--subset", help="Evaluate only these datasets/subsets under --data (repeatable)."),
    batch_size: int = typer.Option(32, help="Encoding batch size."),
    cache_dir: Path = typer.Option(None, help="Encoding cache (default: $METAEMBED_CACHE or ~/.cache/metaembed)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Encode again and do not store encodings."),
    score_dtype: str = typer.Option("float32", help="MaxSim compute dtype: float32 (exact ranking) or bfloat16 (faster)."),
    baseline: list[str] = typer.Option(None, "--baseline", help="A single-vector sentence-transformers model (folder or hub id; "
                                       "a plain backbone gets mean pooling) scored beside the budgets with paired intervals (repeatable)."),
) -> None:
    """Encode the data once at the model's full budget, then report quality and cost at every budget."""
    import torch

    from metaembed.data.beir import DataFormatError
    from metaembed.evaluation.report import results_table
    from metaembed.evaluation.run import evaluate
    from metaembed.evaluation.sweep import SweepSettings

    # `--budgets 1,1 2,4`: the values after the first land in the extra arguments; take those that are budgets.
    extra = list(context.args)
    unexpected = [arg for arg in extra if not _looks_like_budget(arg)]
    if unexpected:
        raise typer.BadParameter(f"unexpected argument(s) {unexpected}")
    chosen = parse_budget_arguments([*(budgets or []), *extra]) if (budgets or extra) else None
    if score_dtype not in ("float32", "bfloat16"):
        raise typer.BadParameter("use float32 or bfloat16", param_hint="--score-dtype")
    settings = SweepSettings(
        batch_size=batch_size, cache_dir=cache_dir, use_cache=not no_cache, score_dtype=getattr(torch, score_dtype),
    )
    try:
        results = evaluate(
            model, data, chosen, out, format=format, split=split, image_root=images, subsets=subset or None, settings=settings,
            baselines={name: name for name in baseline or []},
        )
    except (ValueError, DataFormatError, FileNotFoundError, OSError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(results_table(results))
    skipped = results["skipped"]["counts"]
    if skipped:
        typer.echo(f"skipped (see results.json): {skipped}")
    typer.echo(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'budget_curve.png'}")


def _looks_like_budget(value: str) -> bool:
    try:
        Budget.parse(value)
        return True
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(eval_command)
