"""The flags every command spells alike, and the old spellings that still work.

Every command that loads a MetaEmbed model takes it as ``-m/--model``, reads an index from ``-i/--index``, writes
to ``-o/--out`` and chooses budgets with ``-b/--budget`` (``r_q,r_c``, e.g. ``4,8``; a list is several of them,
``--budget 1,1 2,4`` or ``--budget 1,1 --budget 2,4``). A flag renamed to fit is kept as a hidden, deprecated
alias: it works as before (hidden from ``--help``) and says once on stderr what to write instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import click
import typer

from metaembed.cli._progress import QuietLibraryCommand


def rename_flags(args: Sequence[str], renamed: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """``args`` with every old flag of ``renamed`` (old -> new) written the new way (``--old v`` and ``--old=v``),
    and the old flags that were used; nothing after ``--`` (the end of the options) is touched."""
    rewritten: list[str] = []
    used: list[str] = []
    for position, argument in enumerate(args):
        if argument == "--":
            rewritten.extend(args[position:])
            break
        name, equals, value = argument.partition("=")
        if name in renamed:
            rewritten.append(renamed[name] + equals + value)
            if name not in used:
                used.append(name)
        else:
            rewritten.append(argument)
    return rewritten, used


class MetaembedCommand(QuietLibraryCommand):
    """A ``metaembed`` command: transformers' bars off while it runs, and its deprecated flag spellings
    (:attr:`renamed_flags`, old -> new) accepted with a warning."""

    renamed_flags: ClassVar[Mapping[str, str]] = {}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args, used = rename_flags(args, self.renamed_flags)
        for old in used:
            typer.echo(f"warning: {old} is deprecated, use {self.renamed_flags[old]}", err=True)
        return super().parse_args(ctx, args)


def command_class(renamed_flags: Mapping[str, str]) -> type[MetaembedCommand]:
    """The command class of a command whose old flag spellings (old -> new) still work, hidden and deprecated."""
    attributes: dict[str, Any] = {"renamed_flags": dict(renamed_flags)}
    return type("MetaembedCommandWithRenamedFlags", (MetaembedCommand,), attributes)
