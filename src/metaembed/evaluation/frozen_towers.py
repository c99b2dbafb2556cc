"""The frozen-towers baseline of image tasks: two pretrained towers left as they are, one ridge map between them.

The simplest image-text retriever a user could build from the towers a composed MetaEmbed VLM starts from, and the
yardstick it must beat for its training to show: a text is the language model's mean-pooled sentence vector
(cosine), an image is the vision tower's pooled feature grid mapped into that space by a ridge regression fitted on
training (image, caption) pairs, and an image+text item is the sum of its two unit vectors (late fusion). Scored
beside the budgets as a single-vector baseline (:mod:`metaembed.evaluation.baselines`) on tasks with images, where
a text-only backbone cannot run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from metaembed.ridge import explained_variance, fit_ridge

FROZEN_TOWERS = "frozen_towers"
"""The baseline's name in reports."""
FROZEN_TOWERS_STRENGTH = 0.05
"""The relative ridge strength (see metaembed.ridge) the multimodal benchmark chose on the clip-art set's dev
queries among 0.015 to 1.5 (benchmarks/multimodal/frozen_linear.py)."""


class FrozenTowers:
    """A single-vector retriever over any mix of text and image items: see the module docstring."""

    accepts_images = True

    def __init__(self, language_model: str | Path, vision_tower: str | Path, device: str = "cpu") -> None:
        from transformers import AutoImageProcessor, AutoModel
        from transformers.utils import logging as hf_logging

        from metaembed.evaluation.baselines import load_single_vector_model

        self.language_model, self.vision_tower = str(language_model), str(vision_tower)
        self.text_model = load_single_vector_model(language_model)
        self.text_model.to(device)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the tower's classification head is left out on purpose: no load report
        try:
            self.tower = AutoModel.from_pretrained(self.vision_tower).to(device).eval()
            self.image_processor = AutoImageProcessor.from_pretrained(self.vision_tower)
        finally:
            hf_logging.set_verbosity(verbosity)
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.strength: float | None = None
        self.fit_r2: float | None = None
        self.fitted_pairs: int | None = None
        self._pooled: dict[str, torch.Tensor] = {}

    @classmethod
    def of_model(cls, model: Any, device: str = "cpu") -> "FrozenTowers":
        """The frozen towers a MetaEmbed model with a composed vision-language backbone was composed from (its config
        records them); a clear error for any other backbone."""
        config = getattr(getattr(getattr(model, "backbone", None), "model", None), "config", None)
        vision, language = (getattr(config, "vision_tower_source", None), getattr(config, "language_model_source", None))
        if vision is None or language is None:
            what = ("was composed before its towers were recorded (compose it again)"
                    if getattr(config, "model_type", None) == "metaembed_vlm" else
                    "has no composed vision-language backbone (MetaEmbed.from_backbone(..., vision_tower=...))")
            raise ValueError(f"the frozen-towers yardstick rebuilds the two towers a model was composed from; this model {what}")
        return cls(language, vision, device=device)

    # ------------------------------------------------------------------------------------ fitting
    def fit_pairs_file(self, train_jsonl: str | Path, strength: float = FROZEN_TOWERS_STRENGTH, batch_size: int = 32,
                       progress: bool = False) -> "FrozenTowers":
        """Fit on every (image alone, text alone) pair of a training file in ``metaembed train``'s JSONL; returns self."""
        from metaembed.training.data import read_jsonl
        from metaembed.training.projector_warm_start import image_caption_pairs

        pairs = image_caption_pairs(read_jsonl(Path(train_jsonl))[0], max_images=10**9)
        if not pairs:
            raise ValueError(f"{train_jsonl}: no pair of an image alone and a text alone to fit the frozen towers on")
        return self.fit([item.image for item, _ in pairs], [caption for _, caption in pairs], strength, batch_size, progress)

    def fit(self, images: Sequence[Any], captions: Sequence[str], strength: float = FROZEN_TOWERS_STRENGTH,
            batch_size: int = 32, progress: bool = False) -> "FrozenTowers":
        """Fit the ridge map from ``images``' pooled features to their ``captions``' sentence vectors (row i pairs
        image i with caption i); returns self."""
        if len(images) != len(captions) or not images:
            raise ValueError(f"fit needs as many images as captions, and some: got {len(images)} and {len(captions)}")
        features = self.image_features(images, batch_size, progress)
        targets = self.encode_texts(list(captions), batch_size, progress)
        self.weight, self.bias = fit_ridge(features, targets, strength)
        self.strength, self.fitted_pairs = strength, len(captions)
        self.fit_r2 = explained_variance(targets, features.double() @ self.weight + self.bias)
        return self

    # ------------------------------------------------------------------------------------ encoding
    def encode_texts(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """(n, D) unit sentence vectors of the language model (its own pooling, cosine)."""
        return self.text_model.encode(texts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
                                      show_progress_bar=progress).float().cpu()

    def image_features(self, images: Sequence[Any], batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """(n, channels) pooled tower features; an image file is computed once per instance (keyed by its inode, so
        the hard links a set's task folders share count once)."""
        from metaembed.model.vlm.pooled import pooled_grid_features

        # a file by its identity, an image in memory by its position in this call
        keys = [_file_key(image) if isinstance(image, (str, Path)) else f"call:{i}" for i, image in enumerate(images)]
        found = {key: self._pooled[key] for key in set(keys) if key in self._pooled}
        missing = {key: images[i] for i, key in enumerate(keys) if key not in found}  # each key once
        if missing:
            computed = pooled_grid_features(self.tower, self.image_processor, list(missing.values()), batch_size,
                                            progress, desc="frozen towers: images")
            found.update(zip(missing, computed))
            self._pooled.update({key: row for key, row in zip(missing, computed) if not key.startswith("call:")})
        return torch.stack([found[key] for key in keys])

    def encode_items(self, items: Sequence[Any], batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """(n, D) unit vectors of :class:`~metaembed.data.item.Item`-like objects (``text``, ``image``): a text, a
        mapped image, or the normalised sum of both."""
        if self.weight is None:
            raise RuntimeError("FrozenTowers.encode_items needs a fitted map: call fit(images, captions) first")
        vectors = torch.zeros(len(items), self.weight.shape[1], dtype=torch.float64)
        with_image = [i for i, item in enumerate(items) if getattr(item, "image", None) is not None]
        if with_image:
            mapped = self.image_features([items[i].image for i in with_image], batch_size, progress).double()
            vectors[with_image] += torch.nn.functional.normalize(mapped @ self.weight + self.bias, dim=-1)
        with_text = [i for i, item in enumerate(items) if (getattr(item, "text", None) or "").strip()]
        if with_text:
            vectors[with_text] += self.encode_texts([items[i].text for i in with_text], batch_size, progress).double()
        return torch.nn.functional.normalize(vectors, dim=-1).float()

    def describe(self) -> str:
        """What this baseline is, in words, for reports."""
        from metaembed.evaluation.baselines import describe_single_vector_model

        fitted = ("not fitted" if self.weight is None else
                  f"fitted on {self.fitted_pairs} training pairs, ridge strength {self.strength:g}, fit R^2 {self.fit_r2:.2f}")
        return (f"frozen towers: {self.vision_tower} (pooled grid) -> ridge map -> {self.language_model} "
                f"({describe_single_vector_model(self.text_model)}); image+text = the sum of both ({fitted})")


def _file_key(path: str | Path) -> str:
    """A file's identity: its device and inode, size and modification time (a rewritten file is a new key)."""
    try:
        status = Path(path).stat()
    except OSError:
        return str(path)  # load_image names the missing file when it is read
    return f"{status.st_dev}:{status.st_ino}:{status.st_size}:{status.st_mtime_ns}"
