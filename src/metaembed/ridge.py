"""Closed-form ridge regression between two embedding spaces: the projector warm start and the frozen-towers
baseline fit their linear maps with it."""

from __future__ import annotations

import torch

RIDGE_STRENGTH = 0.15
"""Default ridge strength as a fraction of the features' total variance per channel (trace of the centred Gram
matrix divided by the channel count): scale-free across towers and data sizes. The projector warm start's zero-shot
check on the clip-art set was flat within ~1.5 nDCG@10 between 0.015 and 1.5."""


def fit_ridge(features: torch.Tensor, targets: torch.Tensor, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (channels, out), bias (out,)) of ``features @ weight + bias ~ targets``, centred ridge in closed form
    (float64); ``strength`` is relative (see :data:`RIDGE_STRENGTH`)."""
    features, targets = features.double(), targets.double()
    mean, target_mean = features.mean(dim=0), targets.mean(dim=0)
    centred = features - mean
    gram = centred.T @ centred
    ridge = strength * gram.diagonal().sum() / gram.shape[0]
    regularised = gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype)
    weight = torch.linalg.solve(regularised, centred.T @ (targets - target_mean))
    return weight, target_mean - mean @ weight


def explained_variance(targets: torch.Tensor, fitted: torch.Tensor) -> float:
    """R^2: the fraction of the targets' variance (about their mean) that ``fitted`` explains."""
    targets, fitted = targets.double(), fitted.double()
    residual = ((targets - fitted) ** 2).sum()
    total = ((targets - targets.mean(dim=0)) ** 2).sum().clamp(min=1e-12)
    return float(1 - residual / total)


def held_out_strength(features: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor,
                      strengths: tuple[float, ...] = (0.05, 0.15, 0.5, 1.5, 5.0, 15.0), folds: int = 5,
                      seed: int = 0) -> tuple[float, dict[float, float]]:
    """The relative ridge strength among ``strengths`` whose fits best predict rows they never saw: ``folds``-fold
    cross-validation with every row of one group (e.g. one image's pairs) in the same fold. Returns the strength and
    the held-out R^2 (pooled over the folds) of each."""
    distinct = torch.unique(groups)
    if len(distinct) < folds:
        raise ValueError(f"held-out strength needs at least {folds} groups, got {len(distinct)}")
    order = distinct[torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed))]
    fold_of_group = {int(group): index % folds for index, group in enumerate(order)}
    fold = torch.tensor([fold_of_group[int(group)] for group in groups])
    scores: dict[float, float] = {}
    for strength in strengths:
        predicted = torch.empty_like(targets, dtype=torch.float64)
        for k in range(folds):
            held = fold == k
            weight, bias = fit_ridge(features[~held], targets[~held], strength)
            predicted[held] = features[held].double() @ weight + bias
        scores[strength] = explained_variance(targets, predicted)
    return max(scores, key=scores.get), scores
