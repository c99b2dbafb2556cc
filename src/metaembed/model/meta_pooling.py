"""Keep only the meta token positions of the backbone's last hidden states: the multi-vector embedding."""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.base.modules import Module


class MetaTokenPooling(Module):
    """Gathers ``token_embeddings`` (batch, seq, H) at ``meta_positions`` (batch, R) into (batch, R, H).

    The attention mask becomes all ones over the R vectors, so sentence-transformers' encode loop and
    losses see exactly R vectors per item, in meta-token order (vector 1 first: budgets are prefixes).
    """

    config_keys: list[str] = []

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        hidden = features["token_embeddings"]
        positions = features.pop("meta_positions").to(hidden.device)
        index = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        features["token_embeddings"] = hidden.gather(1, index)
        features["attention_mask"] = torch.ones(positions.shape, dtype=torch.long, device=hidden.device)
        return features

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.save_config(output_path)
