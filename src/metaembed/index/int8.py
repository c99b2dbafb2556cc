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
