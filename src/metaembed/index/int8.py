"""Symmetric int8 with one fp32 scale per slice: what int8 storage and pq's per-document directions keep."""

from __future__ import annotations

import torch
from torch import Tensor


def symmetric_int8(values: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """``values ~= codes * scales`` with int8 |codes| <= 127 and one fp32 scale per slice along ``dim`` (kept as
    size 1, so it broadcasts back)."""
    values = values.float()
    scales = values.abs().amax(dim=dim, keepdim=True).clamp_min(1e-12) / 127.0
    return torch.round(values / scales).clamp_(-127, 127).to(torch.int8), scales


def int8_products(rows: Tensor, vectors: Tensor) -> Tensor:
    """``rows`` (N, D) int8 (any row stride) @ ``vectors`` (c, D)^T as (N, c) fp32, in int8 arithmetic
    (``torch._int_mm``): the rows are never converted, which for a few vectors is ~4-5x faster than converting them
    to bf16 and multiplying (10,000 x 384: ~0.42 against ~2.2 ms on one core). Each vector goes in as two int8
    parts, its code at scale s (:func:`symmetric_int8`) and the code of what that leaves at s / 254, so every element
    is within s / 508 of its value: finer than bf16 for all but elements under 1/64 of the vector's largest. Up to
    ~32 vectors (64 int8 columns) this costs what one vector does; past a few hundred columns the int8 matmul is
    slower than bf16 on a CPU, so callers keep it to few vectors."""
    high, scales = symmetric_int8(vectors)  # (c, D), (c, 1)
    rest = vectors.float() / scales - high.float()  # in [-0.5, 0.5]
    low = torch.round(rest * 254).clamp_(-127, 127).to(torch.int8)
    products = torch._int_mm(rows, torch.cat([high, low]).T).float()  # (N, 2c): exact in fp32 (|x| <= 127^2 D)
    count = len(vectors)
    return products[:, :count].add_(products[:, count:], alpha=1 / 254).mul_(scales.T)
