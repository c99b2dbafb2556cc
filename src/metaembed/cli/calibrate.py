"""``metaembed calibrate``: calibrate an index's ``budget="auto"`` on judged dev queries and store it in the index
(:func:`metaembed.calibrate_auto_margin` does the work; this module reads the flags, encodes and prints)."""

from __future__ import annotations

from pathlib import Path

import typer

from metaembed.cli._errors import CommandError, index_model, load_model, open_index


def calibrate_command(
    index: Path = typer.Option(..., "--index", "-i", help="An index folder written by `metaembed index`."),
    data: Path = typer.Option(..., "--data", "-d", help="A BEIR folder whose queries and qrels judge documents of the index."),
    model: str = typer.Option(None, "--model", "-m", help="The MetaEmbed model (default: the one the index records)."),
    split: str = typer.Option("dev", "--split", help="The qrels split to calibrate on (never the split you report)."),
    target: float = typer.Option(0.95, "--target", help="The share to keep (see --keep), between 0 and 1."),
    keep: str = typer.Option("gain", "--keep", help="gain: of what --max-budget adds over (1,1) in nDCG@10; metric: of "
                             "--max-budget's nDCG@10."),
    max_budget: str = typer.Option(None, "--max-budget", help="The largest budget auto climbs to (default: all vectors)."),
    candidate_recall: float = typer.Option(0.99, "--candidate-recall", help="Stage-1 candidates: the fewest holding "
                                           "this share of --max-budget's top 10."),
    batch_size: int = typer.Option(32, "--batch-size", help="Query encoding batch size."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the calibration without storing it in the index."),
) -> None:
    """Find the auto margin and candidate count on judged queries and store them: `metaembed search --budget auto`
    and `metaembed serve` then use them."""
    from metaembed.budgets import Budget
    from metaembed.data.beir import load_beir
    from metaembed.evaluation.encoding import QUERY, encode_items
    from metaembed.index.calibration import calibrate_auto_margin

    try:
        task = load_beir(data, split=split)
    except (OSError, ValueError) as error:
        raise CommandError(str(error), "--data") from None
    opened = open_index(index, mode="r" if dry_run else "a")
    with opened:
        judged = {q: grades for q, grades in task.qrels.items() if q in task.queries}
        if not any(doc in opened for grades in judged.values() for doc in grades):
            raise CommandError(f"none of the documents the {split} qrels of {data} judge are in {index}", "--data")
        model_path, _ = index_model(model, opened, index)
        encoder = load_model(model_path)
        ids = list(judged)
        encoded, _ = encode_items(encoder, QUERY, ids, [task.queries[q] for q in ids], batch_size=batch_size,
                                  prompt=task.query_prompt, where=f"{data} {split} queries")
        try:
            top = Budget.parse(max_budget) if max_budget else None
        except ValueError as error:
            raise CommandError(str(error), "--max-budget") from None
        try:
            result = calibrate_auto_margin(opened, encoded.vectors, encoded.ids, judged, target=target, keep=keep,
                                           max_budget=top, candidate_recall=candidate_recall)
        except ValueError as error:
            flag = next((f for f in ("--target", "--keep", "--max-budget") if f.strip("-").replace("-", "_") in str(error)),
                        "--max-budget" if "larger than" in str(error) else None)
            raise CommandError(str(error), flag) from None
        if not dry_run:
            result.store(opened)
    shares = ", ".join(f"({b}) {n}" for b, n in result.stopped.items())
    typer.echo(f"{len(encoded.ids)} {split} queries; nDCG@10 at ({Budget(1, 1)}) {result.first:.4f}, at "
               f"({result.max_budget}) {result.reference:.4f}, every query climbed on {result.candidates} candidates "
               f"{result.ceiling:.4f}; goal {result.goal:.4f} ({target:g} of the {keep})")
    typer.echo(f"auto: margin {result.margin:.4f}, {result.candidates} candidates -> nDCG@10 {result.achieved:.4f} at "
               f"{result.mean_cost / result.fixed_cost:.1%} of ({result.max_budget})'s dot products; stopped at {shares}"
               + ("" if result.reached else "; goal NOT reached even with every query at the max budget"))
    typer.echo("dry run: nothing stored" if dry_run else f"stored in {index}: `metaembed search --budget auto` uses it")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
