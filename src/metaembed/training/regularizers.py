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
  The sentence teacher (``distill_teacher: sentences``) scores a pair by the document's best sentence instead:
  every sentence encoded on its own by the frozen backbone and mean-pooled, against the query's mean-pooled
  embedding. A document that covers several things is then as close to a query as its part about that query
  (on the Python docs set the untrained MiniLM scores 59.5 nDCG@10 with one vector per document, 69.9 with one
  per member line, 448 tokens; benchmarks/mmr_training/teacher_headroom.py --max-length 448), which is what several
  vectors can hold and one cannot.
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

    def __init__(self, backbone: nn.Module, meta_token_id_base: int, pad_token_id: int | None, tokenizer: Any = None,
                 sentence_batch_size: int = 256) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self.meta_token_id_base = meta_token_id_base
        self.pad_token_id = 0 if pad_token_id is None else pad_token_id
        self.tokenizer = tokenizer
        self.sentence_batch_size = sentence_batch_size
        self._sentence_ends: frozenset[int] | None = None
        self._special_ids = frozenset(getattr(tokenizer, "all_special_ids", ()) or ())

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

    def sentence_end_ids(self) -> frozenset[int]:
        """Token ids that end a sentence: those whose text ends in ``.``, ``!`` or ``?`` or holds a line break."""
        if self._sentence_ends is None:
            if self.tokenizer is None:
                raise ValueError("the sentence teacher needs the backbone's tokenizer: BackboneTeacher(..., tokenizer=...)")
            ends = set()
            for token, index in self.tokenizer.get_vocab().items():
                text = self.tokenizer.convert_tokens_to_string([token])
                if "\n" in text or text.rstrip().endswith((".", "!", "?")):
                    ends.add(index)
            self._sentence_ends = frozenset(ends - self._special_ids)
        return self._sentence_ends

    def sentences(self, features: dict[str, Any]) -> list[list[list[int]]]:
        """Each item's text tokens (no special, meta or padding tokens) cut after every sentence end."""
        ends, items = self.sentence_end_ids(), []
        for ids, mask in zip(features["input_ids"].tolist(), features["attention_mask"].tolist()):
            spans, current = [], []
            for token, real in zip(ids, mask):
                if not real or token >= self.meta_token_id_base or token in self._special_ids:
                    continue
                current.append(token)
                if token in ends:
                    spans.append(current)
                    current = []
            items.append([span for span in (*spans, current) if span])
        return items

    @torch.no_grad()
    def sentence_vectors(self, features: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(batch, S, hidden) unit vectors of each item's sentences, each encoded alone (decoded and tokenized again,
        with the tokenizer's special tokens) and mean-pooled, and the (batch, S) mask of the real ones. An item without
        text gets none."""
        items = self.sentences(features)
        spans = [span for item in items for span in item]
        texts = self.tokenizer.batch_decode(spans)
        device = features["input_ids"].device
        flat = torch.zeros(len(texts), self.backbone.config.hidden_size, device=device)
        order = sorted(range(len(texts)), key=lambda i: len(spans[i]))  # like lengths together: little padding
        for start in range(0, len(order), self.sentence_batch_size):
            rows = order[start : start + self.sentence_batch_size]
            inputs = self.tokenizer([texts[i] for i in rows], padding=True, return_tensors="pt")
            inputs = {key: value.to(device) for key, value in inputs.items() if key in ("input_ids", "attention_mask",
                                                                                      "token_type_ids")}
            hidden = self.backbone(**inputs).last_hidden_state.float()
            flat[torch.tensor(rows, device=device)] = mean_pooled(hidden, inputs["attention_mask"].bool())
        count = max([len(item) for item in items] + [1])
        vectors = torch.zeros(len(items), count, flat.shape[-1], device=device)
        present = torch.zeros(len(items), count, dtype=torch.bool, device=device)
        row_start = 0
        for row, item in enumerate(items):
            vectors[row, : len(item)] = flat[row_start : row_start + len(item)]
            present[row, : len(item)] = True
            row_start += len(item)
        return vectors, present

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


def teacher_best_sentence(queries: Tensor, columns: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """The sentence teacher's scores (B, B * N): each query's unit vector (B, H) against the best sentence of every
    document of the columns ((B, S, H) sentence vectors and their (B, S) mask each), laid out query-major like the
    student's documents. A document without a sentence scores -1."""
    width = max(vectors.shape[1] for vectors, _ in columns)
    sentences = torch.stack([F.pad(v, (0, 0, 0, width - v.shape[1])) for v, _ in columns], dim=1).flatten(0, 1)
    present = torch.stack([F.pad(m, (0, width - m.shape[1])) for _, m in columns], dim=1).flatten(0, 1)
    similarity = torch.einsum("qh,csh->qcs", queries.float(), sentences.float())  # (B, B * N, S)
    return similarity.masked_fill(~present[None], -1.0).amax(dim=-1)


def teacher_late_interaction(states: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """The teacher's token-level scores (B, B * N) of the queries (column 0) against every document column,
    laid out query-major like the student's documents (row b's column n at ``b * N + n``)."""
    (query_hidden, query_mask), columns = states[0], states[1:]
    width = max(hidden.shape[1] for hidden, _ in columns)
    hidden = torch.stack([F.pad(h, (0, 0, 0, width - h.shape[1])) for h, _ in columns], dim=1).flatten(0, 1)
    mask = torch.stack([F.pad(m, (0, width - m.shape[1])) for _, m in columns], dim=1).flatten(0, 1)
    return late_interaction_scores(query_hidden, query_mask, hidden, mask)
