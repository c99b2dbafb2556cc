"""Training settings from a YAML file and flags: every :class:`TrainConfig` setting is also a flag
(``--batch-size 64``, ``--groups "1,1 2,4"``, ``--lora/--no-lora``); ``-m`` is short for ``--model``, and
``-o``/``--out`` (the output folder of every ``metaembed`` command) for ``--output-dir``.

``python -m metaembed.training CONFIG.yaml [--flags]`` (what ``torchrun`` and ``accelerate launch`` run) and the
``metaembed train`` command both read their arguments here. Many GPUs (DDP; the MMR loss all-gathers documents so
each process scores against the global batch)::

    torchrun --nproc_per_node 8 -m metaembed.training cfg.yaml
    accelerate launch --num_processes 8 -m metaembed.training cfg.yaml
    # several nodes: torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 8 -m metaembed.training cfg.yaml
"""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Optional

import typer

from metaembed.budgets import split_budget_list
from metaembed.training.config import TrainConfig

USER_ERRORS = (ValueError, OSError)
"""What bad settings or data raise: reported as one ``error: ...`` line with exit status 2."""


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
    """Turn a flag's text into the field's type: ``--groups "1,1 2,4"`` (or ``"1,1;2,4"``), ``--mmeb-subsets "A=1,B=2"``."""
    if not isinstance(raw, str):
        return raw
    if annotation.startswith("list[str]") and name == "groups":
        return split_budget_list(raw)
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


def config_from_flags(config: Path | None, **flags: Any) -> TrainConfig:
    """The settings of CONFIG (a YAML file, optional), then the flags given (None: not given) over them."""
    annotations = {f.name: str(f.type) for f, _ in _config_fields()}
    overrides = {
        name: parse_flag_value(name, value, annotations[name]) for name, value in flags.items() if value is not None
    }
    return TrainConfig.from_yaml(config, **overrides) if config is not None else TrainConfig.from_dict(overrides)


def train_from_flags(config: Path | None = None, **flags: Any) -> str:
    """Train with the settings of CONFIG and the flags; the line that says what was written."""
    from metaembed.training.run import train

    result = train(config_from_flags(config, **flags))
    return f"trained {result.global_step} steps; model: {result.model_path}; metrics: {result.metrics_path}"


EXTRA_NAMES: dict[str, tuple[str, ...]] = {"model": ("-m",), "output_dir": ("--out", "-o")}
"""Names a setting's flag has besides ``--setting-name``: those every ``metaembed`` command gives its model and
its output folder."""


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
            option = typer.Option(None, flag, *EXTRA_NAMES.get(config_field.name, ()), help=_help_for(config_field.name))
        parameters.append(
            inspect.Parameter(config_field.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        )
    return inspect.Signature(parameters)


def train_command(run: Callable[..., None]) -> Callable[..., None]:
    """``run(config, **flags)`` with the signature typer reads: CONFIG and one option per setting."""

    def command(config: Optional[Path] = None, **flags: Any) -> None:
        run(config, **flags)

    command.__signature__ = _signature()  # type: ignore[attr-defined]
    command.__doc__ = "Train a MetaEmbed model with the Matryoshka Multi-Vector Retrieval loss (settings from CONFIG, then flags)."
    return command


def _train_and_report(config: Path | None = None, **flags: Any) -> None:
    try:
        typer.echo(train_from_flags(config, **flags))
    except USER_ERRORS as error:  # bad settings or data: one line, not a traceback
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m metaembed.training`` (what torchrun and accelerate launch)."""
    standalone = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    standalone.command()(train_command(_train_and_report))
    standalone(args=sys.argv[1:] if argv is None else argv, prog_name="metaembed-train")
