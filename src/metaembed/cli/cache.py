"""``metaembed cache``: where ``metaembed eval``'s encoding cache is and how large (per model), and
``metaembed cache clear --yes`` to empty it."""

from __future__ import annotations

from pathlib import Path

import typer

cache_app = typer.Typer(help="The encoding cache of `metaembed eval`: with no command, list it (path, entries and size "
                             "per model); `clear` empties it.", no_args_is_help=False)

_CACHE_DIR_HELP = ("The cache folder (default: $METAEMBED_CACHE/encodings or ~/.cache/metaembed/encodings; "
                   "the quickstart's is metaembed-quickstart/cache).")


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


@cache_app.callback(invoke_without_command=True)
def cache_command(
    context: typer.Context,
    cache_dir: Path = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
) -> None:
    """List the encoding cache: one line per model (path, entries, size), then the total."""
    context.obj = {"cache_dir": cache_dir}
    if context.invoked_subcommand is not None:
        return
    from metaembed.evaluation.cache import EncodingCache

    cache = EncodingCache(cache_dir)
    for row in cache.models():
        typer.echo(f"{row['path']}  {row['entries']} entries  {_size(row['bytes'])}")
    total = cache.summary()
    typer.echo(f"{total['path']}: {total['models']} models, {total['entries']} entries, {_size(total['bytes'])}")


@cache_app.command("clear")
def clear_command(
    context: typer.Context,
    cache_dir: Path = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking."),
) -> None:
    """Delete every cached encoding (only the files the cache wrote; anything else in the folder stays)."""
    from metaembed.evaluation.cache import EncodingCache

    cache = EncodingCache(cache_dir or (context.obj or {}).get("cache_dir"))
    summary = cache.summary()
    if not summary["entries"]:
        typer.echo(f"{summary['path']}: already empty")
        return
    what = f"{summary['entries']} entries ({_size(summary['bytes'])}) in {summary['path']}"
    if not yes and not typer.confirm(f"Delete {what}?", default=False):
        typer.echo("nothing deleted (pass --yes to delete without asking)")
        raise typer.Exit(1)
    cache.clear()
    typer.echo(f"deleted {what}")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
