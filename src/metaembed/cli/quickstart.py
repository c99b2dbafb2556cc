"""``metaembed quickstart``: the whole MetaEmbed pipeline on this machine's own data, in minutes."""

from __future__ import annotations

from pathlib import Path

import typer

from metaembed.cli._flags import command_class

RENAMED_FLAGS = {"--work-dir": "--out"}
"""Old spellings that still work, hidden and deprecated."""


def quickstart(
    work_dir: Path = typer.Option(None, "--out", "-o", help="Working folder for data, model, index and results (reused by "
                                  "a second run); default metaembed-quickstart (metaembed-quickstart-images for images)."),
    model: str = typer.Option(None, "--model", "-m", help="Use this trained MetaEmbed checkpoint instead of training one."),
    fresh: bool = typer.Option(False, "--fresh", help="Rebuild everything instead of reusing the working folder."),
    data: str = typer.Option("pydocs", help="'pydocs': a Python standard-library module's members, a line each; "
                                            "'sources': a Debian source package's binaries as one multi-facet document; "
                                             "'descriptions': one package's description per document; "
                                             "'images': clip art and icons <-> captions (the multimodal half: a "
                                             "MobileNetV2 + MiniLM vision-language model)."),
    steps: int = typer.Option(None, help="MMR training steps (of batch 16 + 1 hard negative; default 80; images: 30 of "
                              "batch 32)."),
    corpus_size: int = typer.Option(None, help="Documents in the test corpus ('sources', 'descriptions': default 2000; "
                                    "'pydocs' has its test and dev modules'; 'images': 600 per task)."),
    test_queries: int = typer.Option(None, help="Test queries (default 500; images: 200 per task)."),
) -> None:
    """Build a retrieval set from documentation on this machine (or, with --data images, from Debian's clip art and
    icons), fine-tune with MMR, index, evaluate every budget next to the plain backbone, calibrate budget=auto, print
    what next."""
    from metaembed.quickstart import Quickstart, QuickstartSettings

    settings = QuickstartSettings(
        work_dir=work_dir, model=model, fresh=fresh, data=data, train_steps=steps, corpus_size=corpus_size, test_queries=test_queries,
    )
    Quickstart(settings).run()


def register(app: typer.Typer) -> None:
    app.command("quickstart", cls=command_class(RENAMED_FLAGS))(quickstart)
