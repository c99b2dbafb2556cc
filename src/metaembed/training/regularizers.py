"""Terms added to the MMR loss so a fine-tuned model keeps what its backbone knew and spreads its vectors.

- **Backbone anchor**: the backbone as the user already has it (frozen, mean pooling, cosine) encodes
  each item; the first meta vector of that item is pulled towards it (``1 - cos``). The (1,1) budget then
  starts from, and stays near, the plain single-vector model, and the later vectors are left to add what
  one general-purpose vector misses.
  With nested-window meta tokens every vector is pulled towards the mean of its own window instead, so
  each budget starts from the backbone's own view of the item's parts.
- **Diversity**: the mean cosine between an item's own vectors. MMR on one-topic data collapses them
  onto one direction (mean cosine 0.94-0.98, see benchmarks/results/mmr_training_investigation.md), which
  makes every budget above (1,1) pay for nothing; this term penalises that.
- **Late-interaction distillation**: the same frozen backbone scores every (query, document) pair of the
  batch token by token (ColBERT-style MaxSim over all its token vectors: on the Debian sources set the
  untrained MiniLM scores 87.5 nDCG@10 this way against 78.6 with mean pooling). Each budget group's
  scores learn the teacher's ranking of the candidates (KL between the two softmaxes), so the meta vectors
  are pushed to carry the fine-grained matches one pooled vector cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaembed.model.meta_windows import nested_window_bounds


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
    def token_states(self, features: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The backbone's last hidden states (batch, seq, hidden) of the item alone, and its real-token mask
        (batch, seq): meta tokens and padding are masked out of both the attention and the mask."""
        input_ids: Tensor = features["input_ids"]
        is_meta = input_ids >= self.meta_token_id_base
        mask = features["attention_mask"].masked_fill(is_meta, 0)
        inputs = {"input_ids": input_ids.masked_fill(is_meta, self.pad_token_id), "attention_mask": mask}
        for key in ("token_type_ids", "position_ids"):
            if key in features:
                inputs[key] = features[key]
        return self.backbone(**inputs).last_hidden_state.float(), mask.bool()

    @torch.no_grad()
    def forward(self, features: dict[str, Any]) -> Tensor:
        """(batch, hidden) unit vectors: the mean of the last hidden states over the item's real tokens."""
        return mean_pooled(*self.token_states(features))


def anchor_loss(vectors: Tensor, reference: Tensor) -> Tensor:
    """Mean ``1 - cos`` between each item's first vector (batch, R, D) and its reference (batch, D), or, for
    nested-window meta tokens, between every vector and its own window's reference (batch, R, D)."""
    if vectors.shape[-1] != reference.shape[-1]:
        raise ValueError(
            f"the backbone anchor compares the first meta vector ({vectors.shape[-1]} dims) with the backbone's pooled "
            f"embedding ({reference.shape[-1]} dims): it needs a model without a projection (projection_dim None)"
        )
    if reference.dim() == 3:
        return 1 - F.cosine_similarity(vectors[:, : reference.shape[1]].float(), reference.float(), dim=-1).mean()
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


def late_interaction_scores(queries: Tensor, query_mask: Tensor, documents: Tensor, document_mask: Tensor) -> Tensor:
    """ColBERT-style scores (n_q, n_c): the mean over a query's real tokens of the best cosine with any real
    token of the document. ``queries`` (n_q, S_q, H) and ``documents`` (n_c, S_c, H) are token states (any
    norm), the masks (n, S) say which tokens are real."""
    queries, documents = F.normalize(queries.float(), dim=-1), F.normalize(documents.float(), dim=-1)
    similarity = torch.einsum("qid,cjd->qicj", queries, documents)  # (n_q, S_q, n_c, S_c)
    similarity = similarity.masked_fill(~document_mask[None, None], float("-inf"))
    best = similarity.amax(dim=-1)  # (n_q, S_q, n_c)
    weights = query_mask.to(best.dtype).unsqueeze(-1)
    return (best * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def distillation_loss(student_scores: Tensor, teacher_scores: Tensor, temperature: float, teacher_temperature: float) -> Tensor:
    """Summed over queries: KL(teacher || student) between the softmaxes of each query's candidate scores
    (n_q, n_c), each at its own temperature."""
    teacher = F.log_softmax(teacher_scores.float() / teacher_temperature, dim=-1)
    student = F.log_softmax(student_scores.float() / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="sum")


def mean_pooled(hidden: Tensor, mask: Tensor) -> Tensor:
    """(batch, hidden) unit vectors: token states averaged over the real tokens."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1), dim=-1)


def window_means(hidden: Tensor, mask: Tensor, num_windows: int) -> Tensor:
    """(batch, num_windows, hidden) unit vectors: the token states averaged over each nested window of the
    item's real tokens (the windows nested-window meta tokens read; see metaembed.model.meta_windows)."""
    own_index = mask.long().cumsum(dim=1) - 1  # (batch, seq): position among the real tokens
    starts, stops = nested_window_bounds(num_windows, mask.sum(dim=1))  # (batch, R)
    index = own_index.unsqueeze(1)
    weights = (mask.unsqueeze(1) & (index >= starts.unsqueeze(2)) & (index < stops.unsqueeze(2))).to(hidden.dtype)
    return F.normalize(weights @ hidden / weights.sum(dim=2, keepdim=True).clamp(min=1), dim=-1)


def teacher_late_interaction(states: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """The teacher's token-level scores (B, B * N) of the queries (column 0) against every document column,
    laid out query-major like the student's documents (row b's column n at ``b * N + n``)."""
    (query_hidden, query_mask), columns = states[0], states[1:]
    width = max(hidden.shape[1] for hidden, _ in columns)
    hidden = torch.stack([F.pad(h, (0, 0, 0, width - h.shape[1])) for h, _ in columns], dim=1).flatten(0, 1)
    mask = torch.stack([F.pad(m, (0, width - m.shape[1])) for _, m in columns], dim=1).flatten(0, 1)
    return late_interaction_scores(query_hidden, query_mask, hidden, mask)
