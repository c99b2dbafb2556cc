"""Arm (f) of the multimodal benchmark: both towers frozen, one linear map between them.

The simplest image-text retriever a user could write from the same two pretrained towers, and the yardstick a
trained vision-language model must beat to show its training pays: an image is MobileNetV2's average-pooled
feature vector, a text is the language model's mean-pooled sentence embedding (cosine), and a ridge regression
fitted on the training pairs maps image features into the text space. The ridge strength is chosen on the dev
queries (never on test). An image+text document is the sum of its two unit vectors (late fusion).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import torch

from metaembed.training.projector_warm_start import fit_ridge

RIDGE_STRENGTHS = (0.015, 0.05, 0.15, 0.5, 1.5)
"""Relative ridge strengths tried on dev (fractions of the features' variance per channel; see fit_ridge)."""
IMAGE_TASKS = ("text-to-image", "image-to-text", "text-to-image-text")


@functools.cache
def _tower(vision_path: str, device: str):
    """The vision tower without its classification head (whose weights are left out on purpose: no load report)."""
    from transformers import AutoImageProcessor, AutoModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoModel.from_pretrained(vision_path).to(device).eval(), AutoImageProcessor.from_pretrained(vision_path)
    finally:
        hf_logging.set_verbosity(verbosity)


def _images(paths: list[Path], vision_path: str, batch_size: int, device: str) -> torch.Tensor:
    """(images, channels): the vision tower's last feature grid averaged over its cells."""
    from PIL import Image

    tower, processor = _tower(vision_path, device)
    out = []
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            images = []
            for path in paths[start:start + batch_size]:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
            out.append(tower(pixel_values=pixels).last_hidden_state.float().mean(dim=(2, 3)).cpu())
    return torch.cat(out)


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
    from sentence_transformers import SentenceTransformer

    from metaembed.data.beir import load_beir
    from metaembed.evaluation.metrics import evaluate_run

    device = "cuda" if torch.cuda.is_available() else "cpu"
    text_model = SentenceTransformer(language_path, device=device)

    def texts(values: list[str]) -> torch.Tensor:
        return text_model.encode(values, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True).float().cpu()

    pooled: dict[str, torch.Tensor] = {}

    def image_features(paths: list[Path]) -> torch.Tensor:
        """Pooled features of these images, each computed once (a set names its images by their pixels' hash, and
        each task folder links the same files: the name is the key)."""
        missing = {Path(p).name: Path(p) for p in paths if Path(p).name not in pooled}
        if missing:
            pooled.update(zip(missing, _images(list(missing.values()), vision_path, batch_size, device)))
        return torch.stack([pooled[Path(p).name] for p in paths])

    train_images, train_texts = _training_pairs(Path(data.train_jsonl))
    train_features = image_features(train_images)
    caption_vectors = texts(train_texts)
    tasks = {name: load_beir(Path(data.beir) / name) for name in IMAGE_TASKS}
    task_dev = {name: load_beir(Path(data.beir) / name, split="dev") for name in IMAGE_TASKS[:2]}

    def side(items: dict, ids: list[str], folder: Path, weight: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Unit vectors of items: text, image (mapped), or their fused sum."""
        matrix, offset = weight
        with_image = [i for i in ids if items[i].image]
        vectors = torch.zeros(len(ids), matrix.shape[1], dtype=torch.float64)
        if with_image:
            mapped = image_features([folder / items[i].image for i in with_image]).double() @ matrix + offset
            rows = torch.tensor([ids.index(i) for i in with_image])
            vectors[rows] += torch.nn.functional.normalize(mapped, dim=-1)
        with_text = [i for i in ids if (items[i].text or "").strip()]
        if with_text:
            rows = torch.tensor([ids.index(i) for i in with_text])
            vectors[rows] += texts([items[i].text for i in with_text]).double()
        return torch.nn.functional.normalize(vectors, dim=-1).float()

    def run(task, folder: Path, weight) -> dict[str, list[str]]:
        document_ids, query_ids = list(task.corpus), [q for q in task.queries if q in task.qrels]
        documents = side(task.corpus, document_ids, folder, weight)
        queries = side(task.queries, query_ids, folder, weight)
        top = torch.topk(queries @ documents.T, k=min(100, len(document_ids)), dim=1).indices.tolist()
        return {query_id: [document_ids[j] for j in ranked] for query_id, ranked in zip(query_ids, top)}

    best, best_score = None, -math.inf
    chosen: dict[float, float] = {}
    for strength in RIDGE_STRENGTHS:
        weight = fit_ridge(train_features, caption_vectors, strength)
        scores = [evaluate_run(run(task, Path(data.beir) / name, weight), task.qrels, metrics=("ndcg@10",))[0]["ndcg@10"]
                  for name, task in task_dev.items()]
        chosen[strength] = round(sum(scores) / len(scores), 4)
        if chosen[strength] > best_score:
            best, best_score = strength, chosen[strength]
    weight = fit_ridge(train_features, caption_vectors, best)
    results: dict[str, dict] = {}
    per_query: dict[str, dict] = {}
    for name, task in tasks.items():
        means, values = evaluate_run(run(task, Path(data.beir) / name, weight), task.qrels, metrics=metrics)
        results[name] = {"1,1": {m: round(means[m], 4) for m in metrics}}
        per_query[name] = {"1,1": {query_id: value["ndcg@10"] for query_id, value in values.items()}}
    return {"tasks": results, "per_query_ndcg": per_query, "ridge_strength": best, "dev_ndcg_by_strength": chosen,
            "training_pairs": len(train_texts)}
