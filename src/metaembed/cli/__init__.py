"""The ``metaembed`` command line. Each module in this package that defines ``register(app)`` adds its
command(s) to the app, so a command lives in one file next to nothing else (``demo.py``, ``train.py``, ...).

A user's mistake (a missing index, a bad argument, a file that is not an image) is reported by the command
group as one line ``error: ...`` with exit status 2; ``metaembed --debug COMMAND ...`` shows the traceback.
Every command runs with transformers' own progress bars ("Loading weights") off; ours show. Commands spell their
common flags alike (``-m/--model``, ``-i/--index``, ``-o/--out``, ``-b/--budget``: see ``_flags.py``).

Importing this package (what ``metaembed --help`` does) loads neither torch nor sentence-transformers: a command
imports the library parts it needs inside its function, when it runs."""

from __future__ import annotations

import importlib
import os
import pkgutil

import typer
from typer.core import TyperCommand

from metaembed.cli._errors import ErrorReportingGroup
from metaembed.cli._flags import MetaembedCommand

app = typer.Typer(
    cls=ErrorReportingGroup,
    name="metaembed",
    help="MetaEmbed: multimodal retrieval at a budget chosen at query time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", envvar="METAEMBED_DEBUG",
                               help="Show the Python traceback of an error instead of one 'error:' line."),
) -> None:
    """MetaEmbed: multimodal retrieval at a budget chosen at query time."""


def _register_commands() -> None:
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
    for command in app.registered_commands:  # typer's plain command class becomes ours: their bars off
        if command.cls in (None, TyperCommand):
            command.cls = MetaembedCommand


_register_commands()


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
