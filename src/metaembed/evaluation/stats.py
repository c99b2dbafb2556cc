"""Paired comparisons between two systems run on the same queries.

A difference of 0.5 nDCG@10 on 2,000 queries may be noise: resampling the *queries* (keeping each query's
pair of values together) gives an interval for the difference itself, not for either mean.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def paired_bootstrap(
    first: Mapping[str, float], second: Mapping[str, float], resamples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Mean of ``first - second`` over the shared queries, with a 95% percentile bootstrap interval.

    ``first`` and ``second`` map query id -> the metric of one system. Seeded: the same inputs give the
    same interval. ``within_noise`` is true when the interval contains zero.
    """
    shared = sorted(set(first) & set(second))
    if not shared:
        raise ValueError("the two runs share no query")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    differences = np.array([first[q] - second[q] for q in shared], dtype=np.float64)
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[samples].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "difference": round(float(differences.mean()), 4),
        "ci95_low": round(float(low), 4),
        "ci95_high": round(float(high), 4),
        "queries": len(shared),
        "within_noise": bool(low <= 0 <= high),
    }
