"""Progress on the command line: ours shows (tqdm bars of encoding and scoring, rich status lines), while
transformers' own bars ("Loading weights" at every model load) do not. Hub downloads keep their bars."""

from __future__ import annotations

from typing import Any

import click
from typer.core import TyperCommand


def _silent_bar(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A transformers tqdm bar created disabled (it still iterates and counts)."""
    return factory(*args, **{**kwargs, "disable": True})


class QuietLibraryCommand(TyperCommand):
    """A ``metaembed`` command that runs with transformers' progress bars off, and puts them back after."""

    def invoke(self, ctx: click.Context) -> Any:
        if any(arg in ("-h", "--help") for arg in ctx.args):  # a command that parses its own flags (train) prints help
            return super().invoke(ctx)
        from transformers.utils import logging as hf_logging  # only when a command runs: `--help` stays light

        if hasattr(hf_logging, "set_tqdm_hook"):
            previous = hf_logging.set_tqdm_hook(_silent_bar)
            try:
                return super().invoke(ctx)
            finally:
                hf_logging.set_tqdm_hook(previous)
        was_enabled = hf_logging.is_progress_bar_enabled()  # transformers < 5.x without hooks: its switch
        hf_logging.disable_progress_bar()
        try:
            return super().invoke(ctx)
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()
