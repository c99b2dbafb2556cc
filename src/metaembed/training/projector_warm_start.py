"""Warm start of a composed vision-language model's projector, fitted in closed form before training.

A freshly composed VLM (vision tower -> new projector -> language model) starts blind: its projector writes
image tokens the language model cannot read, and on a few thousand image-text pairs training must learn the
whole alignment through the language model (on Debian's clip art, 600 GPU steps reach nDCG@10 ~9). The warm
start gives the projector a linear path that maps each cell of the vision grid to the *mean input word
embedding of the caption* its image is paired with: a ridge regression from the tower's pooled features to the
captions' bag of word embeddings, over the training pairs. The language model then reads an image as a blur of
the words that describe such images, and training starts from a model that already retrieves (zero-shot on the
clip-art set: nDCG@10 ~6 instead of ~0.5). The MLP beside the linear path starts at zero and learns the rest.

The language model's input side loses much of what a ridge fitted straight into its *output* space keeps (frozen
towers + such a map: nDCG@10 ~13 on the clip art). So, on request (``image_readout``) and for a model whose first
vector is the mean of an item's own token states, the warm start also fits the VLM's *image readout* (a linear map
of each grid cell added to the language model's output at that cell's token): a ridge from pooled features to what
the item's mean misses of its caption's mean, ``(caption mean - image mean) / (share of the item's tokens that are
image cells)``. It is off by default: an image+text item's mean then leans on its many image cells, and documents
whose text carries the match lose much of it (README, Benchmarks).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from metaembed.data.item import Item
from metaembed.inputs import prepare_items
from metaembed.model.meta_pooling import MetaTokenPooling
from metaembed.model.vlm.pooled import pooled_grid_features
from metaembed.ridge import RIDGE_STRENGTH, explained_variance, fit_ridge, held_out_strength

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class WarmStartReport:
    """What the warm start fitted: pairs and distinct images used, the ridge strength, the fraction of the
    targets' variance the projector's fit explains on those pairs (R^2), and the image readout's (None: not fitted)."""

    pairs: int
    images: int
    strength: float
    r2: float
    readout_r2: float | None = None
    readout_strength: float | None = None
    held_out_r2: dict[str, dict[float, float]] | None = None
    """With strengths chosen on held-out images: each fit's held-out R^2 per strength tried."""

    def summary(self) -> str:
        readout = "" if self.readout_r2 is None else (f"; image readout strength {self.readout_strength:.3g}, "
                                                      f"R^2 {self.readout_r2:.3f}")
        chosen = "" if self.held_out_r2 is None else " (strengths chosen on held-out images)"
        return (f"projector warm start: ridge over {self.pairs} image-text pairs ({self.images} images), "
                f"strength {self.strength:.3g}, R^2 {self.r2:.3f}{readout}{chosen}")


def image_caption_pairs(examples: Sequence, max_images: int) -> list[tuple[Item, str]]:
    """(image item, caption) of every example whose query and positive are an image alone and a text alone (either
    way round), at most ``max_images`` distinct images (the first met)."""
    pairs: list[tuple[Item, str]] = []
    seen: set[str] = set()
    for example in examples:
        for image_side, text_side in ((example.query, example.positive), (example.positive, example.query)):
            image_alone = image_side.image is not None and not image_side.text
            if not image_alone or text_side.image is not None or not (text_side.text or "").strip():
                continue
            key = repr(image_side.image)
            if key not in seen:
                if len(seen) >= max_images:
                    continue
                seen.add(key)
            pairs.append((image_side, text_side.text))
    return pairs


def _vlm(model):
    """The composed vision-language module inside a MetaEmbed model, or None for any other backbone."""
    from metaembed.model.vlm.modeling import MetaEmbedVLMModel

    module = model.backbone.model
    return module if isinstance(module, MetaEmbedVLMModel) else None


@torch.no_grad()
def _caption_word_means(vlm, tokenizer, captions: list[str]) -> torch.Tensor:
    """(captions, hidden): the mean input word embedding of each caption's tokens (no special tokens)."""
    table = vlm.get_input_embeddings().weight.detach().float().cpu()
    rows = []
    for caption in captions:
        ids = tokenizer(caption, add_special_tokens=False, truncation=True, max_length=128)["input_ids"]
        rows.append(table[ids].mean(dim=0) if ids else table.mean(dim=0))
    return torch.stack(rows)


@torch.no_grad()
def _first_vectors(model, items: list, side: str, batch_size: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(items, hidden) raw first vectors (the own-token mean, before normalisation) and (items,) the share of each
    item's mean that its image cells hold, in the order of ``items``.

    Runs the model's modules up to its pooling on batches in the given order (``encode`` sorts by length and
    normalises, so its raw intermediate states cannot be read in order)."""
    backbone, pooling = model[0], next(module for module in model if isinstance(module, MetaTokenPooling))
    image_token_id = backbone.model.config.image_token_id
    prompt = model.prompts.get(side)
    was_training = model.training
    model.eval()
    means, shares = [], []
    try:
        for start in tqdm(range(0, len(items), batch_size), desc=f"image readout: {side} means", unit="batch",
                          disable=not progress):
            prepared = prepare_items(items[start:start + batch_size], accepts_images=model.accepts_images,
                                     max_image_side=model.max_image_side, max_image_pixels=model.max_image_pixels,
                                     max_text_chars=model.max_text_chars(side))
            features = model.preprocess(prepared, prompt=prompt, task=side)
            features = {key: value.to(model.device) if isinstance(value, torch.Tensor) else value
                        for key, value in features.items()}
            states = backbone(features)
            own = states["own_token_mask"].float()  # weights, where the model weighs an image+text item's cells
            cells = own * (states["input_ids"] == image_token_id)
            shares.append((cells.sum(dim=1) / own.sum(dim=1).clamp(min=1)).float().cpu())
            means.append(pooling(states)["token_embeddings"][:, 0].float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(means), torch.cat(shares)


def fit_image_readout(model, images: list[Item], pairs: list[tuple[int, str]], pooled: torch.Tensor,
                      strength: float | None, batch_size: int, progress: bool = False,
                      held_out: dict[str, dict[float, float]] | None = None) -> tuple[float, float]:
    """Fit the image readout of ``model``'s composed VLM (see the module docstring) on ``pairs`` (row of ``images``,
    caption), where row i of ``pooled`` holds ``images[i]``'s pooled tower features; returns (strength, the fit's
    R^2). ``strength`` None: chosen on held-out images (their scores go to ``held_out["image_readout"]``)."""
    readout = _vlm(model).add_image_readout()
    image_inputs = [item.to_model_input() for item in images]
    image_means, shares = _first_vectors(model, image_inputs, "document", batch_size, progress)
    caption_means, _ = _first_vectors(model, [caption for _, caption in pairs], "query", batch_size, progress)
    rows = [row for row, _ in pairs]
    targets = (caption_means - image_means[rows]) / shares[rows].clamp(min=1e-6).unsqueeze(1)
    strength = _strength(strength, pooled[rows], targets, torch.tensor(rows), held_out, "image_readout")
    weight, bias = fit_ridge(pooled[rows], targets, strength)
    with torch.no_grad():
        readout.weight.copy_(weight.T.to(readout.weight.dtype))
        readout.bias.copy_(bias.to(readout.bias.dtype))
    return strength, explained_variance(targets, pooled[rows].double() @ weight + bias)


def _strength(strength: float | None, features: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor,
              held_out: dict[str, dict[float, float]] | None, name: str) -> float:
    """``strength``, or (None) the one whose fit best predicts held-out images (metaembed.ridge.held_out_strength)."""
    if strength is not None:
        return strength
    chosen, scores = held_out_strength(features, targets, groups)
    if held_out is not None:
        held_out[name] = scores
    return chosen


def warm_start_projector(model, examples: Sequence, *, max_images: int = 4096, strength: float | None = RIDGE_STRENGTH,
                         batch_size: int = 32, progress: bool = True,
                         image_readout: bool = False) -> WarmStartReport | None:
    """Fit the projector's linear path of ``model`` (a MetaEmbed over a composed VLM) on the image-caption pairs of
    ``examples`` and zero its MLP's output layer, so training starts from the fitted map; then, with ``image_readout``
    and a model whose first vector is the own-token mean, fit the image readout; see the module docstring.
    ``strength`` (relative, see metaembed.ridge) None: each fit's strength is chosen by 5-fold cross-validation
    over the images (the one that best predicts images it was not fitted on).

    Returns None, changing nothing, when the backbone is not a composed VLM or no example pairs an image alone with
    a text alone (logged)."""
    vlm = _vlm(model)
    if vlm is None:
        return None
    pairs = image_caption_pairs(examples, max_images)
    if not pairs:
        logger.warning("projector warm start skipped: no training example pairs an image alone with a text alone")
        return None
    distinct: dict[str, int] = {}
    images: list[Item] = []
    for item, _ in pairs:
        if repr(item.image) not in distinct:
            distinct[repr(item.image)] = len(images)
            images.append(item)
    processor = model.backbone.processor
    pooled = pooled_grid_features(vlm.vision_tower, processor.image_processor, [item.image for item in images],
                                  batch_size, progress, desc="projector warm start")
    rows = [distinct[repr(item.image)] for item, _ in pairs]
    features = pooled[rows]
    targets = _caption_word_means(vlm, processor.tokenizer, [caption for _, caption in pairs])
    held_out: dict[str, dict[float, float]] | None = {} if strength is None else None
    projector_strength = _strength(strength, features, targets, torch.tensor(rows), held_out, "projector")
    weight, bias = fit_ridge(features, targets, projector_strength)
    r2 = explained_variance(targets, features.double() @ weight + bias)
    projector = vlm.projector
    with torch.no_grad():
        skip = projector.add_linear_skip()
        skip.weight.copy_(weight.T.to(skip.weight.dtype))
        skip.bias.copy_(bias.to(skip.bias.dtype))
        projector.linear_2.weight.zero_()
        projector.linear_2.bias.zero_()
    vlm.config.projector_linear_skip = True
    readout_r2 = readout_strength = None
    if image_readout and model.backbone.first_vector == "mean":
        captions = [(row, caption) for row, (_, caption) in zip(rows, pairs)]
        readout_strength, readout_r2 = fit_image_readout(model, images, captions, pooled, strength, batch_size,
                                                         progress, held_out)
    elif image_readout:
        logger.info("image readout not fitted: it adds to the mean first vector, and this model's first vector is a "
                    "meta token")
    return WarmStartReport(len(pairs), len(images), projector_strength, r2, readout_r2, readout_strength, held_out)
