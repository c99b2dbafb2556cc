"""The ``metaembed`` command line. Each module in this package that defines ``register(app)`` adds its
command(s) to the app, so a command lives in one file next to nothing else (``demo.py``, ``train.py``, ...)."""

from __future__ import annotations

import importlib
import os
import pkgutil

import typer

app = typer.Typer(
    name="metaembed",
    help="MetaEmbed: multimodal retrieval at a budget chosen at query time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
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
