"""Training settings from a YAML file and flags, parsed by transformers' ``HfArgumentParser`` over
:class:`TrainConfig`: every setting is a flag (``--batch_size 64`` or ``--batch-size 64``; lists as several values,
``--groups 1,1 2,4``; booleans ``--lora``, ``--lora false``, and ``--no_x`` for those on by default), its help
is the field's ``metadata["help"]``; ``-m`` is short for ``--model``, and ``-o``/``--out`` (the output folder of
every ``metaembed`` command) for ``--output_dir``. A YAML file given first holds the settings the flags start from.

``python -m metaembed.training CONFIG.yaml [--flags]`` (what ``torchrun`` and ``accelerate launch`` run) and the
``metaembed train`` command both read their arguments here. Many GPUs (DDP; the MMR loss all-gathers documents so
each process scores against the global batch)::

    torchrun --nproc_per_node 8 -m metaembed.training cfg.yaml
    accelerate launch --num_processes 8 -m metaembed.training cfg.yaml
    # several nodes: torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 8 -m metaembed.training cfg.yaml

The parser comes from transformers' lazy top-level package, which loads no torch; importing it still costs ~1.4 s
(it scans its model files), so ``--help`` is printed without importing transformers at all (:func:`train_help`):
from ``train_help.txt`` shipped beside this file (rendered at 80 columns for ``metaembed train``, used when its key
-- these sources, the installed transformers version, the program name and the width -- matches), else from the
user's cache, else rendered once and cached. ``make help-text`` renders the shipped file again after the settings
change (a test says when it is stale).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from metaembed.training.config import TrainConfig, read_yaml_settings
from metaembed.user_cache import cache_folder

HELP_FLAGS = ("-h", "--help")
HELP_COLUMNS = 80
"""The widest help (as click caps it): a terminal at least this wide gets the shipped text."""
SHIPPED_HELP = Path(__file__).with_name("train_help.txt")
_HELP_SOURCES = ("config.py", "defaults.py", "flags.py")
"""The files the help text is made from (with budgets.py and the transformers version): its cache key."""

USER_ERRORS = (ValueError, OSError)
"""What bad settings or data raise: reported as one ``error: ...`` line with exit status 2."""

DESCRIPTION = ("Train a MetaEmbed model with the Matryoshka Multi-Vector Retrieval loss: the settings of CONFIG "
               "(a YAML file, e.g. a run's train_config.yaml), then the flags over them.")


def train_parser(prog: str = "metaembed train") -> Any:
    """The ``HfArgumentParser`` of :class:`TrainConfig` plus the optional ``CONFIG`` file; its usage errors raise
    ``ValueError`` (the command line's one ``error:`` line) instead of exiting."""
    from transformers import HfArgumentParser

    class TrainArgumentParser(HfArgumentParser):
        def error(self, message: str) -> Any:  # argparse would print the usage and exit
            raise ValueError(f"{message} (see '{self.prog} --help')")

    parser = TrainArgumentParser(TrainConfig, prog=prog, description=DESCRIPTION, allow_abbrev=False)
    parser.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                        help="YAML file of settings (give it first); the flags win over it")
    return parser


def help_columns() -> int:
    """The help's width: the terminal's (``COLUMNS`` first, as argparse reads it), at most :data:`HELP_COLUMNS`."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = shutil.get_terminal_size().columns
    return max(20, min(columns, HELP_COLUMNS))


def help_key(prog: str, columns: int) -> str:
    """What the help text is made from, hashed: its sources, the transformers version, the program and the width."""
    here = Path(__file__).parent
    key = hashlib.sha256()
    for source in [*(here / name for name in _HELP_SOURCES), here.parent / "budgets.py"]:
        key.update(source.read_bytes())
    try:
        transformers_version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        transformers_version = "?"
    key.update(f"{transformers_version}|{prog}|{columns}".encode())
    return key.hexdigest()[:24]


def render_train_help(prog: str, columns: int) -> str:
    """The parser's ``--help`` text at ``columns`` wide (argparse keeps 2 spare, as it does for a terminal)."""
    parser = train_parser(prog)
    formatter = parser.formatter_class
    parser.formatter_class = lambda prog: formatter(prog, width=columns - 2)
    return parser.format_help()


def write_shipped_help(path: Path = SHIPPED_HELP) -> Path:
    """Render ``metaembed train --help`` at :data:`HELP_COLUMNS` into the shipped file, its key on the first line."""
    prog = "metaembed train"
    path.write_text(f"key {help_key(prog, HELP_COLUMNS)}\n" + render_train_help(prog, HELP_COLUMNS), encoding="utf-8")
    return path


def _shipped_help(key: str) -> str | None:
    try:
        first, text = SHIPPED_HELP.read_text(encoding="utf-8").split("\n", 1)
    except (OSError, ValueError):
        return None
    return text if first == f"key {key}" else None


def train_help(prog: str = "metaembed train") -> str:
    """The parser's ``--help`` text without importing transformers when it was rendered before for the same
    sources, transformers version, program name and width: shipped with the package, or in the user's cache
    (else rendered now and cached)."""
    columns = help_columns()
    key = help_key(prog, columns)
    shipped = _shipped_help(key)
    if shipped is not None:
        return shipped
    cached = cache_folder("help", f"train-{key}.txt")
    try:
        return cached.read_text(encoding="utf-8")
    except OSError:
        pass
    text = render_train_help(prog, columns)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = cached.with_name(f".{cached.name}.{os.getpid()}")
        staging.write_text(text, encoding="utf-8")
        staging.replace(cached)  # atomic: a concurrent reader sees the old state or the whole text
    except OSError:  # a read-only cache folder only costs the speed-up
        pass
    return text


def config_from_args(args: Sequence[str], prog: str = "metaembed train") -> TrainConfig:
    """The :class:`TrainConfig` of a command line: CONFIG's settings (when given), then the flags over them."""
    args = list(args)
    if any(arg in HELP_FLAGS for arg in args[: args.index("--") if "--" in args else len(args)]):
        sys.stdout.write(train_help(prog))
        raise SystemExit(0)  # what argparse does after printing help
    parser = train_parser(prog)
    config_file = parser.parse_args(args).config
    if config_file is not None:
        parser.set_defaults(**read_yaml_settings(config_file))
    config, _ = parser.parse_args_into_dataclasses(args=args, look_for_args_file=False)
    return config


def train_from_args(args: Sequence[str], prog: str = "metaembed train") -> str:
    """Train with the settings of a command line; the line that says what was written."""
    config = config_from_args(args, prog)  # --help and bad flags end here, before the model stack loads
    from metaembed.training.run import train

    result = train(config)
    return f"trained {result.global_step} steps; model: {result.model_path}; metrics: {result.metrics_path}"


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m metaembed.training`` (what torchrun and accelerate launch)."""
    try:
        print(train_from_args(sys.argv[1:] if argv is None else argv, prog="python -m metaembed.training"))
    except USER_ERRORS as error:  # bad settings or data: one line, not a traceback
        print("error: " + " ".join(line.strip() for line in str(error).splitlines() if line.strip()), file=sys.stderr)
        raise SystemExit(2) from None
