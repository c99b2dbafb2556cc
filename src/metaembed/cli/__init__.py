"""The ``metaembed`` command line. Each module in this package that defines ``register(app)`` adds its
command(s) to the app, so a command lives in one file next to nothing else (``demo.py``, ``train.py``, ...).

A user's mistake (a missing index, a bad argument, a file that is not an image) is reported by the command
group as one line ``error: ...`` with exit status 2; ``metaembed --debug COMMAND ...`` shows the traceback."""

from __future__ import annotations

import importlib
import os
import pkgutil

import typer

from metaembed.cli._errors import ErrorReportingGroup

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


_register_commands()


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
