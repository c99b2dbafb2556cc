"""``metaembed compact``: merge an index's segments into one and drop its deleted documents
(:meth:`metaembed.index.MultiVectorIndex.compact` does the work; this module reads the flag and prints)."""

from __future__ import annotations

from pathlib import Path

import typer

from metaembed.cli._errors import CommandError, one_line, open_index


def compact_command(
    index: Path = typer.Option(..., "--index", "-i", help="The index folder to compact (takes its writer lock)."),
) -> None:
    """Merge every segment of INDEX into one, freeing the bytes of deleted documents: searches then read one large
    segment instead of many small ones. Every stored byte is checked first; a crash leaves the index as it was."""
    from metaembed.index.errors import IndexError_

    opened = open_index(index, mode="a")
    try:
        before_segments, before_bytes = len(opened.manifest["segments"]), opened.stored_bytes()
        merged = opened.compact()
        after_bytes = opened.stored_bytes()
    except IndexError_ as error:
        raise CommandError(one_line(error), "--index") from None
    finally:
        opened.close()
    if not merged:
        typer.echo(f"{index}: already one segment with no deleted documents ({len(opened)} documents)")
        return
    typer.echo(f"{index}: {before_segments} segments merged into {len(opened.manifest['segments'])}: "
               f"{len(opened)} documents, {after_bytes / 1e6:.3g} MB (was {before_bytes / 1e6:.3g} MB)")


def register(app: typer.Typer) -> None:
    app.command("compact")(compact_command)
