"""`metaembed --help` stays fast: the package and the command line import lazily (PEP 562), so building the
command line and printing every command's help loads neither torch nor sentence-transformers. Checked by what a
fresh process imported, not by a timer (benchmarks/cli_startup/run.py times it). The public API is unchanged:
every name of ``__all__`` resolves, and ``metaembed.MetaEmbed`` still registers MetaEmbed's folder config with
transformers before anything could load a folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import metaembed
import metaembed.index
import metaembed.training
from metaembed.training import flags

HEAVY = ("torch", "sentence_transformers", "transformers")
COMMANDS = [[], ["demo"], ["eval"], ["index"], ["quickstart"], ["search"], ["serve"], ["cache"], ["cache", "clear"],
            ["train"]]
"""``train`` last: its help is rendered by transformers' ``HfArgumentParser`` (transformers' lazy top-level package,
no torch) unless the shipped or cached text fits; no command's help loads any of the three."""

_FRESH_PROCESS = """
import json, sys
from typer.testing import CliRunner
heavy = {heavy!r}
import metaembed, metaembed.index.errors, metaembed.index.provenance, metaembed.training.config
from metaembed.cli import app
helps = {{}}
for command in {commands!r}:
    result = CliRunner().invoke(app, [*command, "--help"])
    helps[" ".join(command)] = [result.exit_code, result.output, [name for name in heavy if name in sys.modules]]
after_help = [name for name in heavy if name in sys.modules]
model_class = metaembed.MetaEmbed  # the first use of the model imports the stack and registers the folder config
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
print(json.dumps({{"after_help": after_help, "helps": helps, "registered": "metaembed" in CONFIG_MAPPING,
                  "model_class": model_class.__module__ + "." + model_class.__name__}}))
"""


def _run_fresh(cache, commands=COMMANDS, columns: int = 100) -> dict:
    code = _FRESH_PROCESS.format(heavy=HEAVY, commands=commands)
    env = {**os.environ, "METAEMBED_CACHE": str(cache), "COLUMNS": str(columns)}
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fresh_process(tmp_path_factory) -> dict:
    """What a fresh interpreter imported while building the command line and printing every command's help (an
    empty user cache, a wide terminal: the shipped train help), and what two more imported for the train help in a
    60-column terminal (no shipped text: the first renders and caches it, the second reads the cache)."""
    cache = tmp_path_factory.mktemp("user_cache")
    first = _run_fresh(cache)
    first["narrow"] = _run_fresh(cache, commands=[["train"]], columns=60)
    first["narrow_again"] = _run_fresh(cache, commands=[["train"]], columns=60)
    return first


def test_help_of_every_command_imports_no_model_stack(fresh_process):
    assert fresh_process["after_help"] == [], f"--help imported {fresh_process['after_help']}"
    for command, (exit_code, output, imported) in fresh_process["helps"].items():
        assert exit_code == 0, (command, output)
        assert "usage: metaembed" in output.lower() and "Traceback" not in output, (command, output)
        assert imported == [], (command, imported)
    assert fresh_process["helps"]["train"][1] == flags.SHIPPED_HELP.read_text(encoding="utf-8").split("\n", 1)[1]


def test_train_help_is_rendered_once_for_another_width_then_read_from_the_cache(fresh_process):
    narrow, again = fresh_process["narrow"]["helps"]["train"], fresh_process["narrow_again"]["helps"]["train"]
    assert narrow[2] == ["transformers"], "a 60-column train --help was not rendered by HfArgumentParser"
    assert again[2] == [], "a cached train --help still imported " + str(again[2])
    assert again[:2] == narrow[:2] and narrow[0] == 0  # exit code and the same text
    shipped = flags.SHIPPED_HELP.read_text(encoding="utf-8").split("\n", 1)[1]
    assert "--num_query_meta_tokens" in again[1] and len(again[1].splitlines()) > len(shipped.splitlines())  # narrower


def test_the_shipped_train_help_is_the_current_parsers():
    """Stale after a setting changed: run `make help-text` (it rewrites src/metaembed/training/train_help.txt)."""
    key = flags.help_key("metaembed train", flags.HELP_COLUMNS)
    assert flags._shipped_help(key) is not None, "train_help.txt is stale: run `make help-text`"
    assert flags._shipped_help(key) == flags.render_train_help("metaembed train", flags.HELP_COLUMNS)
    assert flags.help_columns() <= flags.HELP_COLUMNS


def test_first_use_of_the_model_registers_its_folder_config(fresh_process):
    assert fresh_process["model_class"] == "metaembed.model.metaembed.MetaEmbed"
    assert fresh_process["registered"], "metaembed.MetaEmbed did not register the 'metaembed' config type"


@pytest.mark.parametrize("package", [metaembed, metaembed.index, metaembed.training], ids=lambda p: p.__name__)
def test_every_public_name_resolves(package):
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        package.not_a_name  # noqa: B018


def test_public_api_is_the_same_objects():
    from metaembed.budgets import PAPER_BUDGETS, Budget
    from metaembed.index.embedded import MultiVectorIndex
    from metaembed.model.metaembed import MetaEmbed
    from metaembed.scoring import maxsim
    from metaembed.training.mmr_loss import DEFAULT_TEMPERATURE, MMRLoss

    assert metaembed.__all__ == [
        "PAPER_BUDGETS", "Budget", "InvalidInputError", "MetaEmbed", "MultiVectorIndex", "SearchResult", "maxsim",
        "__version__", "QdrantMultiVectorIndex", "MMRLoss", "TrainConfig", "train", "evaluate", "calibrate_auto_margin",
        "calibrate_cascade"]
    assert (metaembed.MetaEmbed, metaembed.MultiVectorIndex, metaembed.maxsim) == (MetaEmbed, MultiVectorIndex, maxsim)
    assert (metaembed.Budget, metaembed.PAPER_BUDGETS, metaembed.MMRLoss) == (Budget, PAPER_BUDGETS, MMRLoss)
    assert metaembed.training.DEFAULT_TEMPERATURE == DEFAULT_TEMPERATURE == metaembed.TrainConfig().temperature
    from metaembed import MetaEmbed as imported  # `from metaembed import X` goes through the same lookup

    assert imported is MetaEmbed
