"""User errors on the command line are one line ``error: FLAG: ...`` with exit status 2 and no traceback:
a missing, corrupt or locked index, an empty query, a bad --top-k, an --query-image that is not an image; `index`
with a missing model or corpus or settings the index cannot take; `python -m metaembed.training` likewise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from metaembed.cli import app
from metaembed.index import MultiVectorIndex
from metaembed.model import MetaEmbed

TEXTS = ["a text editor", "gzip compresses files", "a json parser", "an image viewer", "a music player"]


@pytest.fixture(scope="module")
def built(tiny_bert_path, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny text-only model and an index of five documents that records it."""
    root = tmp_path_factory.mktemp("cli_errors")
    model = MetaEmbed.from_backbone(tiny_bert_path, num_query_meta_tokens=4, num_document_meta_tokens=8)
    model.save_pretrained(str(root / "model"))
    with MultiVectorIndex.create(root / "ix", model.embedding_dim, 8, properties={"model": str(root / "model")}) as index:
        index.add([f"doc{i}" for i in range(len(TEXTS))], model.encode_document(TEXTS))
    return root / "model", root / "ix"


def invoke(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def assert_user_error(result, starts: str, *contains: str) -> str:
    """Exit 2, a last stderr line starting with ``starts`` and holding ``contains`` (the only error line: what is
    above it is model-loading progress), no exception escaping."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith(starts), result.stderr
    assert sum("error" in line.lower() for line in lines) == 1, result.stderr
    for text in contains:
        assert text in lines[-1], lines[-1]
    assert "Traceback" not in result.output
    return lines[-1]


def test_missing_corrupt_and_locked_index(built, tmp_path):
    model, index = built
    missing = tmp_path / "nothing"
    assert_user_error(invoke("search", "--index", missing, "--query", "json"), "error: --index:", str(missing))
    assert_user_error(invoke("serve", "--index", missing, "--model", model), "error: --index:", str(missing))

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "manifest.json").write_text('{"version": 1, "segm')  # torn
    assert_user_error(invoke("search", "--index", corrupt, "--query", "json", "--model", model),
                      "error: --index:", "manifest")

    with MultiVectorIndex.open(index, mode="a"):  # another writer holds the lock
        assert_user_error(invoke("serve", "--index", index, "--model", model), "error: --index:", "open for writing")


def test_bad_model_names_model(built, tmp_path):
    _, index = built
    assert_user_error(invoke("search", "--index", index, "--query", "json", "--model", tmp_path / "no-model"),
                      "error: --model:", "no-model")


def test_query_and_top_k_errors_name_their_flag(built):
    _, index = built
    for empty in ("", "   "):
        assert_user_error(invoke("search", "--index", index, "--query", empty), "error: --query:", "empty")
    assert_user_error(invoke("search", "--index", index, "--query", "json", "--top-k", 0),
                      "error: --top-k:", "at least 1, got 0")
    assert_user_error(invoke("search", "--index", index, "--query", "json", "--top-k", -1, "--cascade", 5),
                      "error: --top-k:", "got -1")
    assert_user_error(invoke("search", "--index", index, "--query", "json", "--cascade", -2), "error: --cascade:")
    assert_user_error(invoke("search", "--index", index, "--query", "json", "--budget", "2,9"),
                      "error: --budget:", "r_c=9 is larger than the 8")
    ok = invoke("search", "--index", index, "--query", "json", "--top-k", 2, "--cascade", 3, "--json")
    assert ok.exit_code == 0, ok.output


def test_query_image_must_be_an_image(built, tmp_path):
    _, index = built
    assert_user_error(invoke("search", "--index", index, "--query-image", "/etc/passwd"),
                      "error: --query-image:", "'/etc/passwd'", "not a readable image")
    fake = tmp_path / "fake.png"
    fake.write_text("not a png")
    assert_user_error(invoke("search", "--index", index, "--query-image", fake),
                      "error: --query-image:", str(fake), "not a readable image")
    assert_user_error(invoke("search", "--index", index, "--query-image", tmp_path / "gone.jpg"),
                      "error: --query-image:", "gone.jpg", "does not exist")
    real = tmp_path / "photo"  # an image by its content, whatever its name
    Image.new("RGB", (8, 8), "red").save(real, format="PNG")
    assert_user_error(invoke("search", "--index", index, "--query-image", real),
                      "error: --query-image:", "text-only")


def test_index_errors_name_their_flag(built, tmp_path):
    """``metaembed index``: a missing model or corpus, a bad --dtype or --document-budget, an --out built otherwise."""
    model, index = built
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a", "text": "a text editor"}\n')
    out = tmp_path / "ix"
    assert_user_error(invoke("index", "--model", tmp_path / "no-model", "--corpus", corpus, "--out", out),
                      "error: --model:", "no such model folder", "no-model")
    assert_user_error(invoke("index", "--model", model, "--corpus", tmp_path / "none.jsonl", "--out", out),
                      "error: --corpus:", "none.jsonl", "does not exist")
    assert_user_error(invoke("index", "--model", model, "--corpus", corpus, "--out", out, "--dtype", "fp8"),
                      "error: --dtype:", "bfloat16, float32, int8 or pq")
    assert_user_error(invoke("index", "--model", model, "--corpus", corpus, "--out", out, "--document-budget", 9),
                      "error: --document-budget:", "more than the model's 8")
    assert_user_error(invoke("index", "--model", model, "--corpus", corpus, "--out", index, "--document-budget", 4),
                      "error: --out:", "was built with")


def test_eval_bad_budget_is_one_line(built, tmp_path):
    model, _ = built
    assert_user_error(invoke("eval", "--model", model, "--data", tmp_path, "--out", tmp_path / "o", "--budget", "1"),
                      "error: --budget:", "budget '1' must have two parts")


def test_debug_shows_the_exception(tmp_path):
    result = invoke("--debug", "search", "--index", tmp_path / "nothing", "--query", "json")
    assert result.exit_code != 0 and not isinstance(result.exception, SystemExit)
    assert "no index at" in str(result.exception)


def test_console_script_prints_one_line(tmp_path):
    """The installed ``metaembed`` command: one stderr line, exit status 2."""
    metaembed = Path(sys.executable).parent / "metaembed"
    completed = subprocess.run([str(metaembed), "search", "--index", str(tmp_path / "nothing"), "--query", "json"],
                               capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.strip().splitlines() == [
        f"error: --index: no index at {tmp_path / 'nothing'} ({tmp_path / 'nothing' / 'manifest.json'} does not exist)"]


@pytest.mark.parametrize("command", [
    ["metaembed", "index", "--model", "{tmp}/no-model", "--corpus", "{tmp}/c.jsonl", "--out", "{tmp}/ix"],
    ["metaembed", "serve", "--index", "{tmp}/nothing", "--model", "{tmp}/no-model"],
    [sys.executable, "-m", "metaembed.training", "--loss", "huge"],
])
def test_commands_print_one_error_line_and_exit_2(command, tmp_path):
    """Installed commands (and ``python -m metaembed.training``, which torchrun runs): one stderr line, exit 2."""
    (tmp_path / "c.jsonl").write_text('{"id": "a", "text": "x"}\n')
    program = str(Path(sys.executable).parent / command[0]) if command[0] == "metaembed" else command[0]
    argv = [program, *(part.format(tmp=tmp_path) for part in command[1:])]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in completed.stderr, lines



def test_output_into_a_closed_pipe_is_quiet(monkeypatch):
    """``metaembed ... | head``: when the reader leaves early, writing raises BrokenPipeError; that is no user
    error (no ``error:`` line, not exit 2) but click's quiet exit, status 1."""
    import metaembed.evaluation.cache

    class ClosedPipe:
        def __init__(self, *args) -> None:
            pass

        def models(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(metaembed.evaluation.cache, "EncodingCache", ClosedPipe)
    result = invoke("cache")
    assert result.exit_code == 1 and "error" not in result.output.lower(), result.output
