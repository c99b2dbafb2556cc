"""Terms added to the MMR loss so a fine-tuned model keeps what its backbone knew and spreads its vectors.

- **Backbone anchor**: the backbone as the user already has it (frozen, mean pooling, cosine) encodes
  each item; the first meta vector of that item is pulled towards it (``1 - cos``). The (1,1) budget then
  starts from, and stays near, the plain single-vector model, and the later vectors are left to add what
  one general-purpose vector misses.
- **Diversity**: the mean cosine between an item's own vectors. MMR on one-topic data collapses them
  onto one direction (mean cosine 0.94-0.98, see benchmarks/results/mmr_training_investigation.md), which
  makes every budget above (1,1) pay for nothing; this term penalises that.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BackboneTeacher(nn.Module):
    """A frozen copy of the backbone that embeds items as one mean-pooled unit vector, from the same
    features the MetaEmbed model gets (its meta tokens are masked out, so it sees the item alone)."""

    def __init__(self, backbone: nn.Module, meta_token_id_base: int, pad_token_id: int | None) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self.meta_token_id_base = meta_token_id_base
        self.pad_token_id = 0 if pad_token_id is None else pad_token_id

    def train(self, mode: bool = True) -> "BackboneTeacher":
        return super().train(False)  # always in eval mode: no dropout in the reference

    @torch.no_grad()
    def forward(self, features: dict[str, Any]) -> Tensor:
        """(batch, hidden) unit vectors: the mean of the last hidden states over the item's real tokens."""
        input_ids: Tensor = features["input_ids"]
        is_meta = input_ids >= self.meta_token_id_base
        mask = features["attention_mask"].masked_fill(is_meta, 0)
        inputs = {"input_ids": input_ids.masked_fill(is_meta, self.pad_token_id), "attention_mask": mask}
        for key in ("token_type_ids", "position_ids"):
            if key in features:
                inputs[key] = features[key]
        hidden = self.backbone(**inputs).last_hidden_state.float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        return F.normalize(pooled, dim=-1)


def anchor_loss(vectors: Tensor, reference: Tensor) -> Tensor:
    """Mean ``1 - cos`` between each item's first vector (batch, R, D) and its reference (batch, D)."""
    if vectors.shape[-1] != reference.shape[-1]:
        raise ValueError(
            f"the backbone anchor compares the first meta vector ({vectors.shape[-1]} dims) with the backbone's pooled "
            f"embedding ({reference.shape[-1]} dims): it needs a model without a projection (projection_dim None)"
        )
    return 1 - F.cosine_similarity(vectors[:, 0].float(), reference.float(), dim=-1).mean()


def self_similarity(vectors: Tensor) -> Tensor:
    """Mean cosine between different vectors of the same item, over the batch; 0 for one vector per item."""
    count = vectors.shape[1]
    if count < 2:
        return vectors.new_zeros(())
    unit = F.normalize(vectors.float(), dim=-1)
    gram = unit @ unit.transpose(1, 2)  # (batch, R, R)
    off_diagonal = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)
    return (off_diagonal / (count * (count - 1))).mean()
