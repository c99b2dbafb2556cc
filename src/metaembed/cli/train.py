"""``metaembed train [CONFIG.yaml] [--setting value ...]``: MMR training; every config setting is also a flag.

One CPU or GPU::

    metaembed train cfg.yaml
    metaembed train cfg.yaml --lora --batch_size 64 --max_steps 1000 --resume
    metaembed train -m sentence-transformers/all-MiniLM-L6-v2 --train_jsonl train.jsonl -o run --groups 1,1 4,8

The flags are transformers' ``HfArgumentParser`` over :class:`~metaembed.training.TrainConfig` (see
:mod:`metaembed.training.flags`): this command hands its arguments, ``--help`` included, to that parser, the
same one ``python -m metaembed.training`` (torchrun, accelerate launch) uses; typer only places the command in the
``metaembed`` group, whose error handler turns a bad flag or setting into one ``error:`` line (exit status 2).
"""

from __future__ import annotations

import typer

HELP = "Train a MetaEmbed model with the MMR loss (settings from CONFIG, then flags; see --help)."


def _train(ctx: typer.Context) -> None:
    """Train, then print where the model and metrics are (bad settings or data: the group's ``error:`` line)."""
    from metaembed.training.flags import train_from_args

    typer.echo(train_from_args(ctx.args))


def register(app: typer.Typer) -> None:
    app.command(
        "train", help=HELP, add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    )(_train)
