"""``metaembed search``: encode one query and search a MultiVectorIndex at a budget chosen now."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def search_command(
    index: Path = typer.Option(..., "--index", "-i", help="An index folder written by `metaembed index`."),
    model: str = typer.Option(None, "--model", "-m", help="The MetaEmbed model (default: the one the index was built with)."),
    query: str = typer.Option(None, "--query", "-q", help="Query text."),
    query_image: Path = typer.Option(None, "--query-image", help="Query image file."),
    budget: str = typer.Option(None, "--budget", "-b", help="r_q,r_c, e.g. 4,8 (default: all query and stored document vectors), "
                               "or auto: (1,1) first, larger budgets only while the top two are too close to call."),
    max_budget: str = typer.Option(None, "--max-budget",
                                   help="With --budget auto: the largest budget to climb to (default: all vectors)."),
    auto_margin: float = typer.Option(None, "--auto-margin", help="With --budget auto: escalate while (score 1 - score 2) / r_q "
                                      "is below this (default: the index's calibrated value, else 0.09; inf: always)."),
    top_k: int = typer.Option(10, "--top-k", "-k", help="How many documents to return."),
    cascade: int = typer.Option(0, "--cascade", help="Rerank this many first-stage candidates found at (1,1) instead of exact "
                                "search (0: exact); with --budget auto, how many (1,1) candidates escalated queries rerank "
                                "(0: max(100, 10 k))."),
    as_json: bool = typer.Option(False, "--json", help="Print the hits as JSON."),
) -> None:
    """Print the top-k documents for a text or image query."""
    from metaembed.budgets import AUTO, Budget, parse_budget_or_auto
    from metaembed.index import MultiVectorIndex
    from metaembed.model import MetaEmbed

    if (query is None) == (query_image is None):
        raise typer.BadParameter("give exactly one of --query or --query-image")
    if query_image is not None and not query_image.is_file():
        raise typer.BadParameter(f"{query_image} does not exist", param_hint="--query-image")
    try:
        chosen = parse_budget_or_auto(budget) if budget else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--budget") from None
    auto = chosen == AUTO
    if not auto and (max_budget is not None or auto_margin is not None):
        raise typer.BadParameter("--max-budget and --auto-margin only apply to --budget auto", param_hint="--budget")
    try:
        top = Budget.parse(max_budget) if max_budget else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--max-budget") from None
    opened = MultiVectorIndex.open(index, mode="r")
    model_path = model or opened.properties.get("model")
    if not model_path:
        raise typer.BadParameter("the index records no model: pass --model", param_hint="--model")
    encoder = MetaEmbed.from_pretrained(model_path)
    if encoder.embedding_dim != opened.dim:
        raise typer.BadParameter(f"model {model_path} makes {encoder.embedding_dim}-dim vectors, the index has {opened.dim}",
                                 param_hint="--model")
    for asked, hint in ((top, "--max-budget"), (None if auto else chosen, "--budget")):
        if asked is not None and asked.query > encoder.num_query_meta_tokens:
            raise typer.BadParameter(
                f"query budget {asked.query} is more than the model's {encoder.num_query_meta_tokens} query meta tokens",
                param_hint=hint)
    if auto:
        top = top or Budget(encoder.num_query_meta_tokens, opened.max_document_vectors)
        try:
            vectors = encoder.encode_query([str(query_image) if query_image else query], budget=top.query)
            results = opened.search(vectors, k=top_k, budget=AUTO, max_budget=top, auto_margin=auto_margin,
                                    candidates=cascade or None)
        except ValueError as error:
            hints = {"auto_margin": "--auto-margin", "max_budget": "--max-budget", "candidates": "--cascade", "k must": "--top-k"}
            hint = next((flag for word, flag in hints.items() if word in str(error)), "--budget")
            raise typer.BadParameter(str(error), param_hint=hint) from None
        used = results[0].budget
        _print(results[0], top_k, as_json, f"auto -> {used} (up to {top})", {"requested_budget": AUTO, "max_budget": list(top)})
        return
    try:
        chosen = chosen or Budget(encoder.num_query_meta_tokens, opened.max_document_vectors)
        vectors = encoder.encode_query([str(query_image) if query_image else query], budget=chosen.query)
        if cascade:
            results = opened.cascade_search(vectors, k=top_k, budget=chosen, candidates=max(cascade, top_k))
        else:
            results = opened.search(vectors, k=top_k, budget=chosen)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--budget") from None
    _print(results[0], top_k, as_json, str(chosen), {})


def _print(result, top_k: int, as_json: bool, budget_text: str, extra: dict) -> None:
    """The hits as one JSON line (with the budget used and its cost in dot products) or as a table."""
    hits = result.hits()
    if as_json:
        payload = {"budget": list(result.budget), **extra, "cost": result.cost, "hits": hits}
        typer.echo(json.dumps(payload, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"top {top_k} at budget {budget_text}", caption=f"{result.cost:,} dot products" if result.cost else None)
    for column in ("rank", "score", "id", "metadata"):
        table.add_column(column)
    for rank, hit in enumerate(hits, start=1):
        table.add_row(str(rank), f"{hit['score']:.4f}", hit["id"], json.dumps(hit["metadata"], ensure_ascii=False)[:80])
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("search")(search_command)
