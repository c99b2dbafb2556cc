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

HEAVY = ("torch", "sentence_transformers", "transformers")
COMMANDS = [[], ["demo"], ["eval"], ["index"], ["quickstart"], ["search"], ["serve"], ["cache"], ["cache", "clear"],
            ["train"]]
"""``train`` last: its help comes from transformers' ``HfArgumentParser``, which loads transformers' lazy top-level
package (no torch, no sentence-transformers); every other command's help loads none of the three."""

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


def _run_fresh(cache, commands=COMMANDS) -> dict:
    code = _FRESH_PROCESS.format(heavy=HEAVY, commands=commands)
    env = {**os.environ, "METAEMBED_CACHE": str(cache), "COLUMNS": "100"}
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fresh_process(tmp_path_factory) -> dict:
    """What a fresh interpreter imported while building the command line and printing every command's help (an
    empty user cache), and what a second one imported (the train help cached by the first)."""
    cache = tmp_path_factory.mktemp("user_cache")
    first = _run_fresh(cache)
    first["second"] = _run_fresh(cache, commands=[["train"]])
    return first


def test_help_of_every_command_imports_no_model_stack(fresh_process):
    assert fresh_process["after_help"] == ["transformers"], f"--help imported {fresh_process['after_help']}"
    for command, (exit_code, output, imported) in fresh_process["helps"].items():
        assert exit_code == 0, (command, output)
        assert "usage: metaembed" in output.lower() and "Traceback" not in output, (command, output)
        assert imported == (["transformers"] if command == "train" else []), (command, imported)


def test_train_help_is_printed_from_the_cache_the_second_time(fresh_process):
    """The train help is rendered by HfArgumentParser once (importing transformers), then read from the user cache."""
    second = fresh_process["second"]
    assert second["helps"]["train"][2] == [], "a cached train --help still imported " + str(second["helps"]["train"][2])
    assert second["helps"]["train"][:2] == fresh_process["helps"]["train"][:2]  # exit code and the same text
    assert "--num_query_meta_tokens" in second["helps"]["train"][1]


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
        "__version__", "QdrantMultiVectorIndex", "MMRLoss", "TrainConfig", "train", "evaluate", "calibrate_auto_margin"]
    assert (metaembed.MetaEmbed, metaembed.MultiVectorIndex, metaembed.maxsim) == (MetaEmbed, MultiVectorIndex, maxsim)
    assert (metaembed.Budget, metaembed.PAPER_BUDGETS, metaembed.MMRLoss) == (Budget, PAPER_BUDGETS, MMRLoss)
    assert metaembed.training.DEFAULT_TEMPERATURE == DEFAULT_TEMPERATURE == metaembed.TrainConfig().temperature
    from metaembed import MetaEmbed as imported  # `from metaembed import X` goes through the same lookup

    assert imported is MetaEmbed
