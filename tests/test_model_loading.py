"""Every way of loading a saved MetaEmbed folder: MetaEmbed.from_pretrained (no private sentence-transformers API),
MultiVectorEncoder with and without trust_remote_code, SentenceTransformer and AutoModel refused with a clear error,
a missing metaembed named by the folder's requirements, foreign module classes refused, older checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from sentence_transformers import MultiVectorEncoder, SentenceTransformer
from transformers import AutoModel

from metaembed import MetaEmbed
from metaembed.model.loading import NotATransformersModelError
from metaembed.model.meta_transformer import MetaTransformer

ITEMS = ["quick fox", "lazy dog jumps over the fence"]
R_Q, R_C = 2, 4

pytestmark = pytest.mark.usefixtures("one_thread")


class Saved(NamedTuple):
    """A saved folder and the query and document vectors of the model that saved it."""

    folder: Path
    queries: torch.Tensor
    documents: torch.Tensor


@pytest.fixture(scope="module")
def saved(tiny_bert_path, tmp_path_factory) -> Saved:
    model = MetaEmbed.from_backbone(tiny_bert_path, R_Q, R_C, projection_dim=8, device="cpu")
    folder = tmp_path_factory.mktemp("loading") / "model"
    model.save_pretrained(str(folder))
    return Saved(folder, model.encode_query(ITEMS), model.encode_document(ITEMS))


def test_the_saved_folder_keeps_the_backbone_in_its_module_folder(saved):
    folder = saved.folder
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"] for m in modules][:2] == ["metaembed.model.meta_transformer.MetaTransformer",
                                                "metaembed.model.meta_pooling.MetaTokenPooling"]
    assert modules[0]["path"] == "0_MetaTransformer"
    module = folder / "0_MetaTransformer"
    assert {"model.safetensors", "meta_tokens.safetensors", "config.json", "metaembed_config.json"} <= {p.name for p in module.iterdir()}
    assert not (folder / "model.safetensors").exists()
    assert json.loads((folder / "config.json").read_text())["model_type"] == "metaembed"
    requirements = json.loads((folder / "config_sentence_transformers.json").read_text())["requirements"]
    assert requirements["metaembed"]["specifier"].startswith(">=")


def test_from_pretrained_loads_the_same_model_without_private_api(saved):
    assert "_module_classes" not in vars(MetaEmbed)  # no override of sentence-transformers' private class map
    loaded = MetaEmbed.from_pretrained(str(saved.folder), device="cpu")
    assert isinstance(loaded.backbone, MetaTransformer)
    assert (loaded.num_query_meta_tokens, loaded.num_document_meta_tokens, loaded.embedding_dim) == (R_Q, R_C, 8)
    assert torch.equal(loaded.encode_query(ITEMS), saved.queries)
    assert torch.equal(loaded.encode_document(ITEMS), saved.documents)


def test_multi_vector_encoder_with_trust_remote_code_gives_the_same_vectors(saved):
    encoder = MultiVectorEncoder(str(saved.folder), trust_remote_code=True, device="cpu")
    assert type(encoder) is MultiVectorEncoder and isinstance(encoder[0], MetaTransformer)
    assert torch.equal(torch.stack(encoder.encode_query(ITEMS)), saved.queries)
    assert torch.equal(torch.stack(encoder.encode_document(ITEMS)), saved.documents)


def test_multi_vector_encoder_without_the_flag_names_the_metaembed_class(saved):
    with pytest.raises(ValueError, match=r"(?s)metaembed\.model\.meta_transformer\.MetaTransformer.*trust_remote_code=True"):
        MultiVectorEncoder(str(saved.folder), device="cpu")


def test_where_metaembed_is_missing_sentence_transformers_says_to_install_it(saved, monkeypatch):
    import sentence_transformers.util.environment as environment

    real = environment.get_installed_version
    monkeypatch.setattr(environment, "get_installed_version", lambda name: None if name == "metaembed" else real(name))
    with pytest.raises(ImportError, match=r"(?s)metaembed>=.*not installed.*MetaEmbed\.from_pretrained.*pip install"):
        MultiVectorEncoder(str(saved.folder), trust_remote_code=True, device="cpu")


@pytest.mark.parametrize("trust_remote_code", [False, True])
def test_sentence_transformer_refuses_the_folder_naming_metaembed(saved, trust_remote_code):
    with pytest.raises(NotATransformersModelError, match=r"MetaEmbed model.*one pooled vector.*MetaEmbed\.from_pretrained"):
        SentenceTransformer(str(saved.folder), trust_remote_code=trust_remote_code, device="cpu")


def test_transformers_auto_model_refuses_the_folder(saved):
    with pytest.raises(NotATransformersModelError, match="MetaEmbed.from_pretrained"):
        AutoModel.from_pretrained(str(saved.folder))


def test_sentence_transformer_fails_even_where_metaembed_is_not_imported(saved):
    """Without metaembed imported, transformers itself refuses the unknown model type ``metaembed``."""
    code = (
        "import sys\nfrom sentence_transformers import SentenceTransformer\n"
        "assert 'metaembed' not in sys.modules\n"
        f"try:\n    SentenceTransformer({str(saved.folder)!r}, device='cpu')\n"
        "except ValueError as error:\n    print('REFUSED', error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert "REFUSED" in result.stdout and "model type `metaembed`" in result.stdout, result.stdout + result.stderr


def test_from_pretrained_imports_nothing_a_checkpoint_names(saved, tmp_path):
    folder = tmp_path / "foreign"
    shutil.copytree(saved.folder, folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules[1]["type"] = "some_package_that_must_not_be_imported.Pooling"
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="neither MetaEmbed's nor sentence-transformers'"):
        MetaEmbed.from_pretrained(str(folder), device="cpu")
    assert "some_package_that_must_not_be_imported" not in sys.modules


def test_other_folders_are_clear_errors(tiny_bert_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="no modules.json"):
        MetaEmbed.from_pretrained(str(tmp_path / "missing"))
    plain = tmp_path / "plain"
    SentenceTransformer(tiny_bert_path, device="cpu").save_pretrained(str(plain))
    with pytest.raises(ValueError, match="is a Transformer model, not a MetaEmbed checkpoint"):
        MetaEmbed.from_pretrained(str(plain))


def test_checkpoints_saved_with_the_backbone_at_the_top_still_load(tiny_bert_path, tmp_path, monkeypatch):
    model = MetaEmbed.from_backbone(tiny_bert_path, R_Q, R_C, device="cpu")
    monkeypatch.setattr(MetaTransformer, "save_in_root", True)  # the layout before the backbone had its own folder
    model.save_pretrained(str(tmp_path / "old"))
    monkeypatch.undo()
    assert json.loads((tmp_path / "old" / "modules.json").read_text())[0]["path"] == ""
    assert (tmp_path / "old" / "model.safetensors").is_file()
    loaded = MetaEmbed.from_pretrained(str(tmp_path / "old"), device="cpu")
    assert torch.equal(loaded.encode_document(ITEMS), model.encode_document(ITEMS))
    assert loaded.backbone_name_or_path == model.backbone_name_or_path


def test_an_unmerged_lora_model_loads_through_multi_vector_encoder_too(tiny_bert_path, tmp_path):
    """The backbone's folder holds only the adapter; its base model is found without the folder's subfolder."""
    from metaembed.training.lora import apply_lora

    model = MetaEmbed.from_backbone(tiny_bert_path, R_Q, R_C, device="cpu")
    apply_lora(model.backbone.model, rank=4)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)))
    model.save_pretrained(str(tmp_path / "lora"))
    assert (tmp_path / "lora" / "0_MetaTransformer" / "adapter_config.json").is_file()
    encoder = MultiVectorEncoder(str(tmp_path / "lora"), trust_remote_code=True, device="cpu")
    assert torch.equal(torch.stack(encoder.encode_query(ITEMS)), model.encode_query(ITEMS))

