"""``metaembed quickstart``: the whole MetaEmbed pipeline on this machine's own data, in minutes."""

from __future__ import annotations

from pathlib import Path

import typer

from metaembed.cli._flags import command_class

RENAMED_FLAGS = {"--work-dir": "--out"}
"""Old spellings that still work, hidden and deprecated."""


def quickstart(
    work_dir: Path = typer.Option(Path("metaembed-quickstart"), "--out", "-o",
                                  help="Working folder for data, model, index and results (reused by a second run)."),
    model: str = typer.Option(None, "--model", "-m", help="Use this trained MetaEmbed checkpoint instead of training one."),
    fresh: bool = typer.Option(False, "--fresh", help="Rebuild everything instead of reusing the working folder."),
    data: str = typer.Option("pydocs", help="'pydocs': a Python standard-library module's members, a line each; "
                                            "'sources': a Debian source package's binaries as one multi-facet document; "
                                             "'descriptions': one package's description per document."),
    steps: int = typer.Option(80, help="MMR training steps (of batch 16 + 1 hard negative)."),
    corpus_size: int = typer.Option(2000, help="Documents in the test corpus ('sources', 'descriptions'; 'pydocs' has "
                                    "its test and dev modules')."),
    test_queries: int = typer.Option(500, help="Test queries."),
) -> None:
    """Build a retrieval set from documentation on this machine, fine-tune MiniLM with MMR, index, evaluate every
    budget next to the plain backbone, calibrate budget=auto, print what next."""
    from metaembed.quickstart import Quickstart, QuickstartSettings

    settings = QuickstartSettings(
        work_dir=work_dir, model=model, fresh=fresh, data=data, train_steps=steps, corpus_size=corpus_size, test_queries=test_queries,
    )
    Quickstart(settings).run()


def register(app: typer.Typer) -> None:
    app.command("quickstart", cls=command_class(RENAMED_FLAGS))(quickstart)
