"""``metaembed search``: encode one query and search a MultiVectorIndex at a budget chosen now."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from metaembed.cli._errors import CommandError, index_model, load_model, open_index


def search_command(
    index: Path = typer.Option(..., "--index", "-i", help="An index folder written by `metaembed index`."),
    model: str = typer.Option(None, "--model", "-m", help="The MetaEmbed model (default: the one the index was built "
                              "with, which it records and this command prints)."),
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
                                "(0: the index's calibrated auto_candidates, else max(100, 10 k))."),
    threads: int = typer.Option(None, "--threads", help="Threads a search uses, each on its own blocks of documents "
                                "(default: torch's thread count)."),
    as_json: bool = typer.Option(False, "--json", help="Print the hits as JSON."),
) -> None:
    """Print the top-k documents for a text or image query."""
    from metaembed.budgets import AUTO, Budget

    item, query_flag = query_item(query, query_image)
    _check_counts(top_k, cascade)
    chosen, top = _parse_budgets(budget, max_budget, auto_margin)
    auto = chosen == AUTO
    opened = open_index(index, mode="r", threads=threads)
    model_path, recorded = index_model(model, opened, index)
    encoder = load_model(model_path)
    if not as_json:
        typer.echo(f"index {index}: {len(opened)} documents; model {model_path}"
                   f"{' (the one the index was built with)' if recorded else ''}")
    _check_model(encoder, model_path, opened, query_flag, top, None if auto else chosen)
    limit = top if auto else chosen
    limit = limit or Budget(encoder.num_query_meta_tokens, opened.max_document_vectors)
    vectors = _encode(encoder, item, limit.query, query_flag)
    try:
        if auto:
            results = opened.search(vectors, k=top_k, budget=AUTO, max_budget=limit, auto_margin=auto_margin,
                                    candidates=cascade or None)
        elif cascade:
            results = opened.cascade_search(vectors, k=top_k, budget=limit, candidates=max(cascade, top_k))
        else:
            results = opened.search(vectors, k=top_k, budget=limit)
    except ValueError as error:
        raise CommandError(str(error), _flag_of(str(error))) from None
    if auto:
        used = results[0].budget
        _print(results[0], top_k, as_json, f"auto -> {used} (up to {limit})",
               {"model": model_path, "requested_budget": AUTO, "max_budget": list(limit)})
    else:
        _print(results[0], top_k, as_json, str(limit), {"model": model_path})


def query_item(query: str | None, query_image: Path | None) -> tuple[Any, str]:
    """The query to encode (its text, or the decoded image) and the flag it came from; an empty text, or an
    image argument that is not a readable image file, is a :class:`CommandError` naming the path and the problem."""
    from metaembed.inputs import InvalidInputError, load_image

    if (query is None) == (query_image is None):
        raise CommandError("give exactly one of --query or --query-image")
    if query is not None:
        if not query.strip():
            raise CommandError("the query text is empty", "--query")
        return query, "--query"
    try:
        return load_image(query_image), "--query-image"  # by its content: a path never falls back to text
    except InvalidInputError as error:
        raise CommandError(str(error), "--query-image") from None


def _check_counts(top_k: int, cascade: int) -> None:
    if top_k < 1:
        raise CommandError(f"must be at least 1, got {top_k}", "--top-k")
    if cascade < 0:
        raise CommandError(f"must be 0 (exact search) or a number of candidates, got {cascade}", "--cascade")


def _parse_budgets(budget: str | None, max_budget: str | None, auto_margin: float | None) -> tuple[Any, Any]:
    """(the --budget asked: a Budget, 'auto' or None for all vectors; the --max-budget or None)."""
    from metaembed.budgets import AUTO, Budget, parse_budget_or_auto

    try:
        chosen = parse_budget_or_auto(budget) if budget else None
    except ValueError as error:
        raise CommandError(str(error), "--budget") from None
    if chosen != AUTO and (max_budget is not None or auto_margin is not None):
        raise CommandError("--max-budget and --auto-margin only apply to --budget auto", "--budget")
    try:
        return chosen, Budget.parse(max_budget) if max_budget else None
    except ValueError as error:
        raise CommandError(str(error), "--max-budget") from None


def _check_model(encoder: Any, model_path: str, opened: Any, query_flag: str, *asked: Any) -> None:
    """The model must make the index's vectors, take images when the query is one, and have the query budgets."""
    if encoder.embedding_dim != opened.dim:
        raise CommandError(f"model {model_path} makes {encoder.embedding_dim}-dim vectors, the index has {opened.dim}",
                           "--model")
    if query_flag == "--query-image" and not encoder.accepts_images:
        raise CommandError(f"model {model_path} is text-only: it cannot encode an image query", "--query-image")
    for budget, flag in zip(asked, ("--max-budget", "--budget")):
        if budget is not None and budget.query > encoder.num_query_meta_tokens:
            raise CommandError(
                f"query budget {budget.query} is more than the model's {encoder.num_query_meta_tokens} query meta tokens",
                flag)


def _encode(encoder: Any, item: Any, query_budget: int, query_flag: str) -> Any:
    from metaembed.inputs import InvalidInputError

    try:
        return encoder.encode_query([item], budget=query_budget)
    except InvalidInputError as error:
        raise CommandError(str(error), query_flag) from None


_FLAG_WORDS = {"auto_margin": "--auto-margin", "max_budget": "--max-budget", "candidates": "--cascade", "k must": "--top-k"}


def _flag_of(message: str) -> str:
    """The flag a search error is about (its setting's name in the message), else --budget."""
    return next((flag for word, flag in _FLAG_WORDS.items() if word in message), "--budget")


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
