"""Keep only the meta token positions of the backbone's last hidden states: the multi-vector embedding."""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.base.modules import Module
from torch import nn


class MetaTokenPooling(Module):
    """Gathers ``token_embeddings`` (batch, seq, H) at ``meta_positions`` (batch, R) into (batch, R, H).

    The attention mask becomes all ones over the R vectors, so sentence-transformers' encode loop and
    losses see exactly R vectors per item, in meta-token order (vector 1 first: budgets are prefixes).
    When the features carry ``own_token_mask`` (batch, seq) (a model with ``first_vector="mean"``), vector 1 is
    the mean of the item's own token states (the backbone's mean pooling) and the meta tokens follow it.

    ``residual_dim`` (the hidden size H; needs ``first_vector="mean"``) makes every meta vector the item's mean
    plus a learned linear map of its meta token's state: ``mean + W h_i``. ``W`` starts at zero, so an untrained
    model scores every budget exactly as the backbone's mean pooling does, and training only adds to it. Where the
    features carry ``meta_reads`` (batch, R - 1, seq) (``meta_attention: document_lines``, ``document_segments`` or
    ``document_regions``), ``mean`` is each meta token's own line or region: the mean of the token states it reads.
    """

    config_keys: list[str] = ["residual_dim"]

    def __init__(self, residual_dim: int | None = None) -> None:
        super().__init__()
        if residual_dim is not None and residual_dim < 1:
            raise ValueError(f"residual_dim must be a positive hidden size, got {residual_dim}")
        self.residual_dim = residual_dim
        self.meta_residual = None
        if residual_dim is not None:
            self.meta_residual = nn.Linear(residual_dim, residual_dim, bias=False)
            nn.init.zeros_(self.meta_residual.weight)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        hidden = features["token_embeddings"]
        positions = features.pop("meta_positions").to(hidden.device)
        index = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        vectors = hidden.gather(1, index)
        own = features.pop("own_token_mask", None)
        reads = features.pop("meta_reads", None)
        if self.meta_residual is not None and own is None:
            raise ValueError("a MetaTokenPooling with residual_dim needs first_vector='mean' (the item's own-token mean)")
        if own is not None:
            weights = own.to(device=hidden.device, dtype=hidden.dtype).unsqueeze(-1)
            mean = ((hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)).unsqueeze(1)
            if self.meta_residual is not None:
                base = mean if reads is None else _masked_means(hidden, reads.to(hidden.device))
                vectors = base + self.meta_residual(vectors.to(self.meta_residual.weight.dtype)).to(hidden.dtype)
            vectors = torch.cat([mean, vectors], dim=1)
        features["token_embeddings"] = vectors
        features["attention_mask"] = torch.ones(vectors.shape[:2], dtype=torch.long, device=hidden.device)
        return features

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.save_config(output_path)
        if self.meta_residual is not None:
            self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             **kwargs: Any) -> "MetaTokenPooling":
        hub = dict(subfolder=subfolder, token=token, cache_folder=cache_folder, revision=revision,
                   local_files_only=local_files_only)
        pooling = super().load(model_name_or_path, **hub, **kwargs)
        if pooling.meta_residual is not None:
            cls.load_torch_weights(model_name_or_path, **hub, model=pooling)
        return pooling


def _masked_means(hidden: torch.Tensor, reads: torch.Tensor) -> torch.Tensor:
    """(batch, R, H): per row of ``reads`` (batch, R, seq), the mean of the ``hidden`` (batch, seq, H) states it marks."""
    weights = reads.to(hidden.dtype)
    return (weights @ hidden) / weights.sum(dim=2, keepdim=True).clamp(min=1)
