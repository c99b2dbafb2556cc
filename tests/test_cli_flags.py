"""Commands spell their shared flags alike (``-m/--model``, ``-i/--index``, ``-o/--out``, ``-b/--budget``); old
spellings that the README documented still work, hidden and with a warning; budget lists are spelt one way."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from metaembed.cli import app
from metaembed.cli._flags import rename_flags

SHARED = {"--model": "-m", "--index": "-i", "--out": "-o", "--budget": "-b"}
"""A long flag and the short name it has in every command that takes it."""
OLD_SPELLINGS = ("--budgets", "--work-dir")


def commands() -> dict[str, object]:
    """Every command of the CLI by name (``cache clear`` as such), as click builds them."""
    root = typer.main.get_command(app)
    found = {}
    for name, command in root.commands.items():
        found[name] = command
        for sub_name, sub in getattr(command, "commands", {}).items():
            found[f"{name} {sub_name}"] = sub
    return found


def invoke(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def option_names() -> dict[str, list[list[str]]]:
    """Each command's options, as lists of the names one option has; ``train``'s from its ``HfArgumentParser``."""
    from metaembed.training.flags import train_parser

    found = {name: [list(param.opts) for param in command.params] for name, command in commands().items()}
    found["train"] = [list(action.option_strings) for action in train_parser()._actions]
    return found


def test_shared_flags_have_one_spelling_everywhere():
    seen = {flag: [] for flag in SHARED}
    for name, options in option_names().items():
        for opts in options:
            for flag, short in SHARED.items():
                if flag in opts:
                    assert short in opts, f"{name}: {flag} has no {short} ({opts})"
                    seen[flag].append(name)
            assert not set(opts) & set(OLD_SPELLINGS), f"{name} still shows {opts}"
    assert {"eval", "index", "search", "serve", "train", "quickstart"} <= set(seen["--model"])
    assert {"search", "serve"} <= set(seen["--index"])
    assert {"eval", "index", "train", "quickstart"} <= set(seen["--out"])
    assert {"eval", "search"} <= set(seen["--budget"])


def test_old_spellings_are_hidden_from_help():
    for command in ("eval", "quickstart"):
        result = invoke(command, "--help")
        assert result.exit_code == 0, result.output
        assert "--budgets" not in result.output and "--work-dir" not in result.output, result.output


def test_rename_flags_rewrites_old_spellings_only():
    renamed = {"--budgets": "--budget"}
    args = ["--budgets", "1,1", "2,4", "--budgets=4,8", "--budgetsx", "--", "--budgets"]
    assert rename_flags(args, renamed) == (
        ["--budget", "1,1", "2,4", "--budget=4,8", "--budgetsx", "--", "--budgets"], ["--budgets"])
    assert rename_flags(["--query", "x"], renamed) == (["--query", "x"], [])


def test_eval_old_budgets_flag_still_works_with_a_warning(tmp_path):
    """``--budgets`` (the README's spelling before) reaches the same parsing as ``--budget``: a bad budget is the
    same one-line error, named with the flag's one spelling, after a deprecation warning."""
    common = ["eval", "--model", tmp_path / "m", "--data", tmp_path, "--out", tmp_path / "o"]
    for flag in ("--budget", "-b", "--budgets"):
        result = invoke(*common, flag, "7")
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert lines[-1] == "error: --budget: budget '7' must have two parts, r_q and r_c (e.g. '4,8')", lines
        assert ("warning: --budgets is deprecated, use --budget" in lines) == (flag == "--budgets"), lines
        assert "Traceback" not in result.output


def test_eval_budget_lists_are_read_alike(tmp_path):
    """``--budget 1,1 2,4``, ``--budget "1,1 2,4"``, ``--budget "1,1;2,4"`` and the flag repeated give one list;
    the first refusal after parsing (a missing model) shows that parsing passed."""
    common = ["eval", "--model", tmp_path / "no-model", "--data", tmp_path, "--out", tmp_path / "o"]
    for budgets in (["1,1", "2,4"], ["1,1 2,4"], ["1,1;2,4"], ["1,1", "-b", "2,4"]):
        result = invoke(*common, "--budget", *budgets)
        assert result.exit_code == 2 and result.stderr.strip().splitlines()[-1].startswith("error: --model:"), result.output


def test_train_groups_take_the_same_list_spelling():
    from metaembed.training.flags import config_from_args

    for groups in (["1,1 2,4 4,8"], ["1,1;2,4;4,8"], [" 1,1 ; 2,4  4,8 "], ["1,1", "2,4", "4,8"], ["1,1;2,4", "4,8"]):
        assert config_from_args(["--groups", *groups]).groups == ["1,1", "2,4", "4,8"]


def test_train_takes_model_and_out_short_flags(monkeypatch, tmp_path):
    import metaembed.training.flags as flags

    def describe(args, prog="metaembed train"):
        settings = flags.config_from_args(args, prog)
        return f"model={settings.model} out={settings.output_dir} groups={settings.groups}"

    monkeypatch.setattr(flags, "train_from_args", describe)
    for args in (["-m", "bb", "-o", tmp_path], ["--model", "bb", "--out", tmp_path], ["--model", "bb", "--output-dir", tmp_path],
                 ["--model", "bb", "--output_dir", tmp_path]):
        result = invoke("train", *args, "--groups", "1,1 2,4")
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == f"model=bb out={tmp_path} groups=['1,1', '2,4']"


def test_quickstart_out_and_its_old_spelling(monkeypatch, tmp_path):
    import metaembed.quickstart

    seen = []

    class Recorder:
        def __init__(self, settings) -> None:
            seen.append(settings)

        def run(self) -> None:
            pass

    monkeypatch.setattr(metaembed.quickstart, "Quickstart", Recorder)
    for args in (["-o", tmp_path / "a", "-m", "m1"], ["--out", tmp_path / "b"], ["--work-dir", tmp_path / "c"]):
        result = invoke("quickstart", *args)
        assert result.exit_code == 0, result.output
        assert ("warning: --work-dir is deprecated, use --out" in result.stderr) == ("--work-dir" in args)
    assert [Path(s.work_dir).name for s in seen] == ["a", "b", "c"] and seen[0].model == "m1"
