"""``metaembed train CONFIG.yaml [--setting value ...]``: MMR training; every config setting is also a flag.

One CPU or GPU::

    metaembed train cfg.yaml
    metaembed train cfg.yaml --lora --batch-size 64 --max-steps 1000 --resume

Many GPUs: ``torchrun --nproc_per_node 8 -m metaembed.training cfg.yaml`` (the same arguments; see
:mod:`metaembed.training.flags`, where both read them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from metaembed.training.flags import train_command, train_from_flags


def _train(config: Path | None = None, **flags: Any) -> None:
    """Train, then print where the model and metrics are (bad settings or data: the group's ``error:`` line)."""
    typer.echo(train_from_flags(config, **flags))


def register(app: typer.Typer) -> None:
    app.command("train")(train_command(_train))
