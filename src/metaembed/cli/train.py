"""``metaembed train CONFIG.yaml [--setting value ...]``: MMR training; every config setting is also a flag.

One CPU or GPU::

    metaembed train cfg.yaml
    metaembed train cfg.yaml --lora --batch-size 64 --max-steps 1000 --resume

Many GPUs (DDP; the MMR loss all-gathers documents so each process scores against the global batch)::

    torchrun --nproc_per_node 8 -m metaembed.training cfg.yaml
    accelerate launch --num_processes 8 -m metaembed.training cfg.yaml
    # several nodes: torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 8 -m metaembed.training cfg.yaml

``python -m metaembed.training`` is this same command (``torchrun`` needs a module or script to run).
"""

from __future__ import annotations

import inspect
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Optional

import typer

from metaembed.training.config import TrainConfig


def _flag_type(annotation: Any) -> Any:
    """The CLI type of a config field: lists and dicts come as comma-separated text."""
    text = str(annotation)
    if text.startswith(("list", "dict")) or "list[" in text or "dict[" in text:
        return Optional[str]
    base = {"int": int, "float": float, "bool": bool, "str": str}
    for name, kind in base.items():
        if text == name or text.startswith(name + " |") or text == f"{name} | None":
            return Optional[kind]
    return Optional[str]


def parse_flag_value(name: str, raw: Any, annotation: str) -> Any:
    """Turn a flag's text into the field's type: ``--groups "1,1;2,4"``, ``--mmeb-subsets "A=1,B=2"``."""
    if not isinstance(raw, str):
        return raw
    if annotation.startswith("list[str]") and name == "groups":
        return [part.strip() for part in raw.split(";") if part.strip()]
    if annotation.startswith("list[str]"):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if annotation.startswith("list[float]"):
        return [float(part) for part in raw.split(",") if part.strip()]
    if annotation.startswith("dict["):
        mapping = {}
        for part in raw.split(","):
            key, _, value = part.partition("=")
            mapping[key.strip()] = float(value) if value.strip() else 1.0
        return mapping
    return raw


def _config_fields() -> list[Any]:
    hints = typing.get_type_hints(TrainConfig)
    return [(f, hints[f.name]) for f in fields(TrainConfig)]


def _help_for(name: str) -> str:
    default = next(f for f in fields(TrainConfig) if f.name == name)
    value = default.default if default.default is not MISSING else default.default_factory()  # type: ignore[misc]
    return f"(config: {name}; default {value!r})"


def train_command(config: Optional[Path] = None, **flags: Any) -> None:
    """Train a MetaEmbed model with the Matryoshka Multi-Vector Retrieval loss (settings from CONFIG, then flags)."""
    from metaembed.training.run import train

    annotations = {f.name: str(f.type) for f, _ in _config_fields()}
    overrides = {
        name: parse_flag_value(name, value, annotations[name]) for name, value in flags.items() if value is not None
    }
    try:
        settings = TrainConfig.from_yaml(config, **overrides) if config is not None else TrainConfig.from_dict(overrides)
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        result = train(settings)
    except (ValueError, FileNotFoundError) as error:  # bad data or settings: a message, not a traceback
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"trained {result.global_step} steps; model: {result.model_path}; metrics: {result.metrics_path}")


def _signature() -> inspect.Signature:
    parameters = [
        inspect.Parameter(
            "config", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=typer.Argument(None, help="YAML config file"),
            annotation=Optional[Path],
        )
    ]
    for config_field, hint in _config_fields():
        flag = "--" + config_field.name.replace("_", "-")
        kind = _flag_type(hint if not isinstance(config_field.type, str) else config_field.type)
        if kind is Optional[bool]:
            option = typer.Option(None, f"{flag}/--no-{config_field.name.replace('_', '-')}", help=_help_for(config_field.name))
        else:
            option = typer.Option(None, flag, help=_help_for(config_field.name))
        parameters.append(
            inspect.Parameter(config_field.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        )
    return inspect.Signature(parameters)


def _command(config: Optional[Path] = None, **flags: Any) -> None:
    train_command(config, **flags)


_command.__signature__ = _signature()  # type: ignore[attr-defined]
_command.__doc__ = train_command.__doc__


def register(app: typer.Typer) -> None:
    app.command("train")(_command)


def main() -> None:
    """Entry point of ``python -m metaembed.training`` (what torchrun and accelerate launch)."""
    standalone = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    standalone.command()(_command)
    standalone(args=sys.argv[1:], prog_name="metaembed-train")
