"""The demo command runs the real MiniLM-based model and prints a table per budget."""

from __future__ import annotations

from typer.testing import CliRunner

from metaembed.cli import app


def test_demo_prints_scores_for_every_budget(minilm_path):
    result = CliRunner().invoke(app, ["demo", "--backbone", minilm_path, "-q", "compress files", "-d", "gzip", "-d", "vim"])
    assert result.exit_code == 0, result.output
    for budget in ["(1, 1)", "(2, 4)", "(4, 8)", "(8, 16)", "(16, 64)"]:
        assert f"budget (r_q, r_c) = {budget}" in result.output
    assert "compress files" in result.output and "doc 1: vim" in result.output
