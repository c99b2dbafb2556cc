"""Arm (f) of the multimodal benchmark: both towers frozen, one linear map between them
(metaembed.evaluation.frozen_towers, the yardstick the quickstart's image half also reports).

The simplest image-text retriever a user could write from the same two pretrained towers, and the yardstick a
trained vision-language model must beat to show its training pays: an image is MobileNetV2's average-pooled
feature vector, a text is the language model's mean-pooled sentence embedding (cosine), and a ridge regression
fitted on the training pairs maps image features into the text space. The ridge strength is chosen on the dev
queries (never on test). An image+text document is the sum of its two unit vectors (late fusion).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from metaembed.evaluation.frozen_towers import FrozenTowers

RIDGE_STRENGTHS = (0.015, 0.05, 0.15, 0.5, 1.5)
"""Relative ridge strengths tried on dev (fractions of the features' variance per channel; see metaembed.ridge)."""
IMAGE_TASKS = ("text-to-image", "image-to-text", "text-to-image-text")


def _training_pairs(train_jsonl: Path) -> tuple[list[Path], list[str]]:
    """(image, caption) of every training row whose one side is an image alone and the other a text alone."""
    images, texts = [], []
    for line in train_jsonl.read_text().splitlines():
        row = json.loads(line)
        query, positive = row["query"], row["positive"]
        for image_side, text_side in ((query, positive), (positive, query)):
            if isinstance(image_side, dict) and set(image_side) == {"image"} and isinstance(text_side, str):
                images.append(train_jsonl.parent / image_side["image"])
                texts.append(text_side)
    return images, texts


def evaluate_frozen_linear(language_path: str, vision_path: str, data, metrics: tuple[str, ...], batch_size: int) -> dict:
    """Arm (f)'s results per task (budget "1,1") and per-query nDCG@10, in the shape of the other arms'."""
    from metaembed.data.beir import load_beir
    from metaembed.evaluation.metrics import evaluate_run

    towers = FrozenTowers(language_path, vision_path, device="cuda" if torch.cuda.is_available() else "cpu")
    train_images, train_texts = _training_pairs(Path(data.train_jsonl))
    tasks = {name: load_beir(Path(data.beir) / name) for name in IMAGE_TASKS}
    task_dev = {name: load_beir(Path(data.beir) / name, split="dev") for name in IMAGE_TASKS[:2]}
    encoded: dict[tuple[float, str, str], torch.Tensor] = {}  # per fitted strength, split, task and side

    def run(task, key: str) -> dict[str, list[str]]:
        document_ids, query_ids = list(task.corpus), [q for q in task.queries if q in task.qrels]
        sides = []
        for name, items, ids in (("documents", task.corpus, document_ids), ("queries", task.queries, query_ids)):
            cache_key = (towers.strength, key, name)
            if cache_key not in encoded:
                encoded[cache_key] = towers.encode_items([items[i] for i in ids], batch_size)
            sides.append(encoded[cache_key])
        documents, queries = sides
        top = torch.topk(queries @ documents.T, k=min(100, len(document_ids)), dim=1).indices.tolist()
        return {query_id: [document_ids[j] for j in ranked] for query_id, ranked in zip(query_ids, top)}

    best, best_score = None, -math.inf
    chosen: dict[float, float] = {}
    for strength in RIDGE_STRENGTHS:
        towers.fit(train_images, train_texts, strength, batch_size)
        scores = [evaluate_run(run(task, f"dev/{name}"), task.qrels, metrics=("ndcg@10",))[0]["ndcg@10"]
                  for name, task in task_dev.items()]
        chosen[strength] = round(sum(scores) / len(scores), 4)
        if chosen[strength] > best_score:
            best, best_score = strength, chosen[strength]
    towers.fit(train_images, train_texts, best, batch_size)
    results: dict[str, dict] = {}
    per_query: dict[str, dict] = {}
    for name, task in tasks.items():
        means, values = evaluate_run(run(task, f"test/{name}"), task.qrels, metrics=metrics)
        results[name] = {"1,1": {m: round(means[m], 4) for m in metrics}}
        per_query[name] = {"1,1": {query_id: value["ndcg@10"] for query_id, value in values.items()}}
    return {"tasks": results, "per_query_ndcg": per_query, "ridge_strength": best, "dev_ndcg_by_strength": chosen,
            "training_pairs": len(train_texts)}
