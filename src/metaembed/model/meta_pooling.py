"""Keep only the meta token positions of the backbone's last hidden states: the multi-vector embedding."""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.base.modules import Module


class MetaTokenPooling(Module):
    """Gathers ``token_embeddings`` (batch, seq, H) at ``meta_positions`` (batch, R) into (batch, R, H).

    The attention mask becomes all ones over the R vectors, so sentence-transformers' encode loop and
    losses see exactly R vectors per item, in meta-token order (vector 1 first: budgets are prefixes).
    When the features carry ``own_token_mask`` (batch, seq) (a model with ``first_vector="mean"``), vector 1 is
    the mean of the item's own token states (the backbone's mean pooling) and the meta tokens follow it.
    """

    config_keys: list[str] = []

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        hidden = features["token_embeddings"]
        positions = features.pop("meta_positions").to(hidden.device)
        index = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        vectors = hidden.gather(1, index)
        own = features.pop("own_token_mask", None)
        if own is not None:
            weights = own.to(device=hidden.device, dtype=hidden.dtype).unsqueeze(-1)
            mean = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
            vectors = torch.cat([mean.unsqueeze(1), vectors], dim=1)
        features["token_embeddings"] = vectors
        features["attention_mask"] = torch.ones(vectors.shape[:2], dtype=torch.long, device=hidden.device)
        return features

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.save_config(output_path)
