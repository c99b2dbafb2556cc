"""Real vectors for the search benchmark: the Debian summary -> description test set (metaembed.data.debian),
encoded by a MetaEmbed model over all-MiniLM-L6-v2.

The model should be MMR-trained (default: the quickstart's, ``make quickstart``): cascade search relies on a
document's first vectors predicting its full score, which is what MMR training teaches. Without a trained
model the untrained meta tokens are used and the result says so. Encodings are cached under
benchmarks/data/ (git-ignored), keyed by the model folder's files (a model retrained in place is encoded again) and sizes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "benchmarks" / "data" / "search"
QUICKSTART_MODEL = ROOT / "metaembed-quickstart" / "train" / "model"


def default_model() -> tuple[str, bool]:
    """(model, trained): the quickstart's MMR-trained model when it exists, else MiniLM with fresh meta tokens."""
    if (QUICKSTART_MODEL / "modules.json").is_file():
        return str(QUICKSTART_MODEL), True
    from metaembed.model.pretrained import minilm_path

    return minilm_path(), False


def encoded_corpus(model_path: str, trained: bool, n_documents: int = 10_000, n_queries: int = 100,
                   batch_size: int = 64) -> dict:
    """Document vectors (n, 64, 384) of the test corpus and query vectors (n_queries, 16, 384) of its queries."""
    key = vectors_key(model_path, trained, n_documents, n_queries)
    path = CACHE / f"debian_{n_documents}_{n_queries}_{key}.pt"
    if path.exists():
        return torch.load(path) | {"key": key}
    from metaembed import MetaEmbed

    task = test_task(n_documents, n_queries)
    if trained:
        model = MetaEmbed.from_pretrained(model_path)
    else:
        model = MetaEmbed.from_backbone(model_path, 16, 64, max_seq_length=64)
    model.eval()
    with torch.inference_mode():
        documents = model.encode_document([item.text for item in task.corpus.values()], batch_size=batch_size,
                                          show_progress_bar=True)
        queries = model.encode_query([item.text for item in list(task.queries.values())[:n_queries]],
                                     batch_size=batch_size)
    data = {"documents": documents.to(torch.bfloat16), "queries": queries, "model": model_path, "trained": trained}
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data | {"key": key}


def test_task(n_documents: int = 10_000, n_queries: int = 100):
    """The Debian test task the vectors encode (corpus in order, queries first): its ids and relevance judgments."""
    from metaembed.data.beir import load_beir
    from metaembed.data.debian import build_debian_retrieval_set

    # the split of benchmarks/mmr_training (same sizes and seed): its trained models never saw this corpus
    paths = build_debian_retrieval_set(CACHE / f"debian-{n_documents}", num_test_queries=max(n_queries, 2000),
                                       num_dev_queries=200, corpus_size=n_documents)
    return load_beir(paths.beir, split="test")


def vectors_key(model_path: str, trained: bool, n_documents: int = 10_000, n_queries: int = 100) -> str:
    """The encodings' cache key: the model folder's path and its files' sizes and modification times (a model
    retrained at the same path gets new vectors, not the old ones), the sizes and whether the model is trained."""
    folder = Path(model_path).resolve()
    files = sorted(f for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else []
    fingerprint = "|".join(f"{f.relative_to(folder)}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    return hashlib.sha256(f"{folder}|{fingerprint}|{trained}|{n_documents}|{n_queries}".encode()).hexdigest()[:12]
