"""Matryoshka Multi-Vector Retrieval (MMR) loss: one InfoNCE per nested budget group, from one forward.

The query-major similarity tensor ``sim[q, i, c, j] = <E_q[i], E_c[j]>`` between every query vector
and every document vector of the (global) batch is computed ONCE, up to the largest group's prefixes.
Each group (r_q, r_c) is then a prefix reduction of it: ``scores_g = sum_{i<r_q} max_{j<r_c} sim``.
So the backbone runs once per item and the matmul once per step whatever the number of groups; the
extra cost of the small groups is only their max/sum/cross-entropy over slices of that tensor.

:class:`MMRLoss` wraps a sentence-transformers multi-vector contrastive loss the way
``MatryoshkaLoss`` wraps a single-vector one, and reuses its machinery: the merged document forward
and mini-batching of ``MultiVectorMultipleNegativesRankingLoss``, the GradCache passes of
``CachedMultiVectorMultipleNegativesRankingLoss`` (by decorating its ``calculate_loss``) and the
cross-device all-gather of either (``gather_across_devices=True``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.gradcache import uses_gradient_cache
from sentence_transformers.base.losses.merged_forward import embed_columns_padded
from sentence_transformers.multi_vector_encoder.losses import MultiVectorMultipleNegativesRankingLoss
from sentence_transformers.util import all_gather, cat_padded_token_embeddings, get_rank, is_dist_initialized
from torch import Tensor, nn

from metaembed.budgets import PAPER_BUDGETS, Budget, clip_budgets
from metaembed.scoring import query_prefix_weights
from metaembed.training.defaults import DEFAULT_TEMPERATURE, DISTILL_TEACHERS, MMR_NESTINGS
from metaembed.training.regularizers import (
    BackboneTeacher,
    anchor_loss,
    distillation_loss,
    mean_pooled,
    self_similarity,
    teacher_best_sentence,
    teacher_late_interaction,
    window_means,
)


_SCORE_BLOCK_ELEMENTS = 1 << 26
"""Default bound on one query chunk's similarity block (queries x R_q x documents x R_c), ~256 MB fp32."""


class _ContiguousGradient(torch.autograd.Function):
    """Identity whose backward passes the gradient on as a contiguous tensor."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, gradient: Tensor) -> Tensor:
        return gradient.contiguous()


def gather_with_grad(tensor: Tensor) -> Tensor:
    """All processes' ``tensor`` concatenated; the backward sums every process's gradient into its own part.

    ``torch.distributed.nn.all_gather`` (under sentence-transformers' ``all_gather``) on gloo emulates its
    reduce-scatter backward with scatters into ``empty_like(gradient)``, which keeps the strides of a
    non-contiguous gradient (as the MaxSim einsum's is) and so scrambles it: hand it a contiguous one.
    """
    if not is_dist_initialized():
        return tensor
    return _ContiguousGradient.apply(all_gather(tensor, with_grad=True))


def group_name(budget: Budget) -> str:
    """The key a group's loss is logged under, e.g. ``loss_4x8``."""
    return f"loss_{budget.query}x{budget.document}"


def inner_group(group: Budget, groups: Sequence[Budget]) -> Budget | None:
    """The largest other group nested inside ``group`` (no more vectors on either side), if any."""
    inside = [g for g in groups if g != group and g.query <= group.query and g.document <= group.document]
    return max(inside, key=lambda g: (g.query * g.document, g.query), default=None)


def boosted_prefix_max(similarity: Tensor, group: Budget, inner: Budget | None) -> Tensor:
    """(n_q, r_q, n_c) max over ``group``'s document vectors of ``similarity`` (n_q, R_q, n_c, R_c), with the
    block ``inner`` already has detached: the same values, gradients only through the vectors ``inner`` lacks."""
    block = similarity[:, : group.query, :, : group.document]
    if inner is not None:
        frozen = torch.zeros(group.query, 1, group.document, dtype=torch.bool, device=similarity.device)
        frozen[: inner.query, :, : inner.document] = True
        block = torch.where(frozen, block.detach(), block)
    return block.amax(dim=-1)


def mmr_group_scores(
    queries: Tensor, documents: Tensor, groups: Sequence[Budget], normalize_by_query: bool = True,
    nesting: str = "shared",
) -> list[Tensor]:
    """Every group's MaxSim scores (n_q, n_c), from ``queries`` (n_q, R_q, D) and ``documents`` (n_c, R_c, D).

    The similarity is computed once, up to the largest prefixes any group needs, and reduced once, in fp32
    even under bf16 autocast: a bf16 dot product is off by ~0.004, which a 0.03 temperature makes 0.13 in
    the logits, and this matmul is a tiny part of a training step. ``nesting`` (see
    :data:`~metaembed.training.defaults.MMR_NESTINGS`) changes the gradients only, never the scores.
    """
    if nesting not in MMR_NESTINGS:
        raise ValueError(f"nesting must be one of {', '.join(MMR_NESTINGS)}, got {nesting!r}")
    max_query = max(group.query for group in groups)
    boundaries = sorted({group.document for group in groups})
    with torch.autocast(queries.device.type, enabled=False):
        similarity = torch.einsum(
            "qid,cjd->qicj", queries[:, :max_query].float(), documents[:, : boundaries[-1]].float()
        )  # (n_q, r_q, n_c, r_c)
    if nesting == "boosted":
        scores = [boosted_prefix_max(similarity, group, inner_group(group, groups)).sum(dim=1) for group in groups]
        return _normalized(scores, queries, groups, max_query) if normalize_by_query else scores
    # Max over each block of document vectors between consecutive group boundaries (split, not slices:
    # its backward writes one full-size gradient, however many groups), then running maxima give the
    # max over every prefix. Everything after the split is R_c times smaller than the similarity.
    block_sizes = [end - start for start, end in zip([0, *boundaries[:-1]], boundaries)]
    prefix_max: dict[int, Tensor] = {}
    running = None
    for boundary, block in zip(boundaries, similarity.split(block_sizes, dim=-1)):
        block_max = block.amax(dim=-1)
        running = block_max if running is None else torch.maximum(running, block_max)
        prefix_max[boundary] = running  # (n_q, r_q, n_c)
    scores = [prefix_max[group.document][:, : group.query].sum(dim=1) for group in groups]
    return _normalized(scores, queries, groups, max_query) if normalize_by_query else scores


def _normalized(scores: list[Tensor], queries: Tensor, groups: Sequence[Budget], max_query: int) -> list[Tensor]:
    """Each group's scores divided by its queries' total weight at r_q (r_q for unit vectors)."""
    weights = query_prefix_weights(queries[:, :max_query].detach())  # (n_q, r_q): r at r unit vectors
    return [score / weights[:, group.query - 1, None] for score, group in zip(scores, groups)]


def mmr_group_losses(
    queries: Tensor,
    documents: Tensor,
    labels: Tensor,
    groups: Sequence[Budget],
    temperature: float,
    normalize_by_query: bool = True,
    nesting: str = "shared",
) -> Tensor:
    """Summed (not averaged) InfoNCE loss of every group, shape (len(groups),).

    ``queries`` (n_q, R_q, D) and ``documents`` (n_c, R_c, D) are unit vectors; ``labels`` (n_q,) is the
    column of each query's positive. Every other document (in-batch and hard negatives) is a negative.
    """
    scores = mmr_group_scores(queries, documents, groups, normalize_by_query, nesting)
    return torch.stack([F.cross_entropy(score / temperature, labels, reduction="sum") for score in scores])


class MMRLoss(nn.Module):
    """Matryoshka Multi-Vector Retrieval loss over nested (r_q, r_c) budget groups.

    Args:
        model: the :class:`~metaembed.MetaEmbed` model being trained.
        loss: the multi-vector contrastive loss to wrap: a ``MultiVectorMultipleNegativesRankingLoss``
            (default), a ``CachedMultiVectorMultipleNegativesRankingLoss`` (GradCache: memory bounded by its
            ``mini_batch_size``), either with ``gather_across_devices=True`` for negatives across processes.
            Its embedding settings are used; its ``scale`` is set to ``1 / temperature``.
        groups: the budget groups, default the paper's (1,1),(2,4),(4,8),(8,16),(16,64), clipped to the
            model's meta token counts (duplicates created by clipping are dropped).
        weights: one weight per group, default all 1. The total is ``sum_g w_g * L_g / len(groups)``.
        temperature: scores (MaxSim sums) are divided by it before the softmax. Default 0.03.
        normalize_by_query: divide each group's scores by its r_q (mean instead of sum over query
            vectors). Default on: with raw sums the (16,64) group's logits span 16x the (1,1) group's at
            one temperature; on the MMR benchmark (benchmarks/mmr_training) normalising scored higher at
            every budget. Ranking at search time is unaffected: r_q is the same for every document.
        teacher: the frozen backbone (:class:`~metaembed.training.regularizers.BackboneTeacher`) for the anchor.
        anchor_weight: weight of the backbone anchor: ``1 - cos`` between each item's first vector and the
            frozen backbone's mean-pooled embedding of it (queries and documents averaged). Default 0 (off).
        diversity_weight: weight of the mean cosine between an item's own vectors. Default 0 (off).
        distill_weight: weight of late-interaction distillation: each group's softmax over a query's
            candidates learns the frozen backbone's token-level MaxSim ranking of them (KL). Default 0 (off).
        nesting: ``shared`` (the paper: every group trains every vector of its prefix) or ``boosted`` (a group
            trains only the vectors its largest nested group lacks; see
            :data:`~metaembed.training.defaults.MMR_NESTINGS`). Default ``shared``.
        distill_teacher: ``tokens`` (the backbone's token-level MaxSim) or ``sentences`` (the document's best
            sentence, each encoded alone, against the query's pooled embedding). Default ``tokens``.
        distill_temperature: the teacher's softmax temperature. Default: ``temperature``.
        The plain (non-cached) wrapped loss only: the GradCache path does not carry the extra terms.

    ``only_largest = True`` (set by :class:`~metaembed.training.trainer.LargestGroupFirstCallback` for a run's
    first steps) makes the loss the largest group's InfoNCE alone; every group is still logged.

    After each forward, ``last_group_losses`` maps ``loss_{r_q}x{r_c}`` to that group's (unweighted)
    mean InfoNCE over the local queries, detached, for logging.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module | None = None,
        groups: Iterable[tuple[int, int] | str | Budget] | None = None,
        weights: Sequence[float] | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        normalize_by_query: bool = True,
        teacher: BackboneTeacher | None = None,
        anchor_weight: float = 0.0,
        diversity_weight: float = 0.0,
        distill_weight: float = 0.0,
        distill_temperature: float | None = None,
        distill_teacher: str = "tokens",
        nesting: str = "shared",
    ) -> None:
        super().__init__()
        if nesting not in MMR_NESTINGS:
            raise ValueError(f"nesting must be one of {', '.join(MMR_NESTINGS)}, got {nesting!r}")
        self.nesting = nesting
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        for name, value in (("anchor_weight", anchor_weight), ("diversity_weight", diversity_weight),
                            ("distill_weight", distill_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
            if name != "diversity_weight" and value > 0 and teacher is None:
                raise ValueError(f"{name} > 0 needs the frozen backbone: pass teacher=BackboneTeacher(...)")
        if distill_temperature is not None and not distill_temperature > 0:
            raise ValueError(f"distill_temperature must be positive, got {distill_temperature}")
        if distill_teacher not in DISTILL_TEACHERS:
            raise ValueError(f"distill_teacher must be one of {', '.join(DISTILL_TEACHERS)}, got {distill_teacher!r}")
        self.model = model
        self.loss = loss if loss is not None else MultiVectorMultipleNegativesRankingLoss(model)
        if not hasattr(self.loss, "gather_across_devices"):
            raise TypeError(
                f"MMRLoss wraps a sentence-transformers multi-vector contrastive loss "
                f"(MultiVectorMultipleNegativesRankingLoss or its Cached variant), got {type(self.loss).__name__}"
            )
        requested = [Budget.parse(group) for group in (groups if groups is not None else PAPER_BUDGETS)]
        if not requested:
            raise ValueError("MMRLoss needs at least one budget group")
        max_query = getattr(model, "num_query_meta_tokens", None)
        max_document = getattr(model, "num_document_meta_tokens", None)
        if max_query is not None and max_document is not None:
            self.groups = clip_budgets(requested, max_query, max_document)
        else:
            self.groups = list(dict.fromkeys(requested))
        if weights is None:
            weights = [1.0] * len(self.groups)
        weights = [float(weight) for weight in weights]
        if len(weights) != len(self.groups):
            raise ValueError(
                f"got {len(weights)} group weights for {len(self.groups)} groups "
                f"({', '.join(str(g) for g in self.groups)} after clipping to the model's meta tokens)"
            )
        if any(weight < 0 for weight in weights):
            raise ValueError(f"group weights must be non-negative, got {weights}")
        self.weights = weights
        self.only_largest = False
        self.temperature = float(temperature)
        self.normalize_by_query = normalize_by_query
        self.teacher = teacher if anchor_weight > 0 or distill_weight > 0 else None
        self.anchor_weight = float(anchor_weight)
        self.diversity_weight = float(diversity_weight)
        self.distill_weight = float(distill_weight)
        self.distill_temperature = float(distill_temperature) if distill_temperature is not None else self.temperature
        self.distill_teacher = distill_teacher
        # The wrapped loss's own scoring is bypassed; keep its reported scale consistent with ours.
        self.loss.scale = 1.0 / self.temperature
        self.last_group_losses: dict[str, Tensor] = {}
        self.uses_gradient_cache = uses_gradient_cache(self.loss)
        if self.uses_gradient_cache:
            # GradCache back-propagates from a hook after forward returns: plug our scoring into the
            # step that turns its cached embeddings into the loss (as MatryoshkaLoss does).
            self.loss.calculate_loss = self._calculate_cached_loss
            if self.anchor_weight or self.diversity_weight or self.distill_weight:
                raise ValueError(
                    "anchor_weight, diversity_weight and distill_weight need the plain loss, not the cached (GradCache) one"
                )

    # ------------------------------------------------------------------------------------ config
    @property
    def gather_across_devices(self) -> bool:
        return bool(self.loss.gather_across_devices)

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "loss": type(self.loss).__name__,
            "groups": [list(group) for group in self.groups],
            "weights": self.weights,
            "temperature": self.temperature,
            "normalize_by_query": self.normalize_by_query,
            "anchor_weight": self.anchor_weight,
            "diversity_weight": self.diversity_weight,
            "distill_weight": self.distill_weight,
            "distill_temperature": self.distill_temperature,
            "distill_teacher": self.distill_teacher,
            "nesting": self.nesting,
            "gather_across_devices": self.gather_across_devices,
        }

    def active_weights(self) -> list[float]:
        """The group weights this step: ``weights``, or with ``only_largest`` the largest group's alone (weighted
        ``len(groups)``, so the total is exactly that group's loss)."""
        if not self.only_largest:
            return self.weights
        largest = max(range(len(self.groups)), key=lambda index: (self.groups[index].query * self.groups[index].document,
                                                                   self.groups[index].query))
        return [float(len(self.groups)) if index == largest else 0.0 for index in range(len(self.groups))]

    # ----------------------------------------------------------------------------------- forward
    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        """Columns: query, positive, then any hard negatives; returns the weighted group loss."""
        if self.uses_gradient_cache:
            return self.loss(sentence_features, labels)
        features = [dict(feature) for feature in sentence_features]
        if len(features) < 2:
            raise ValueError("MMRLoss needs at least a query column and a positive document column")
        query_features = features[0]
        # The frozen backbone sees the same items before the model's forward adds its own outputs to them.
        references = teacher_scores = None
        if self.teacher is not None:
            by_tokens = self.distill_weight and self.distill_teacher == "tokens"
            states = [self.teacher.token_states(feature) for feature in features] if self.anchor_weight or by_tokens else []
            references = [self._anchor_reference(hidden, mask, side) for (hidden, mask), side
                          in zip(states, ["query"] + ["document"] * (len(states) - 1))] if self.anchor_weight else None
            if by_tokens:
                teacher_scores = teacher_late_interaction(states)
            elif self.distill_weight:
                teacher_scores = teacher_best_sentence(
                    self.teacher(query_features), [self.teacher.sentence_vectors(feature) for feature in features[1:]])
        query_outputs = self.model(query_features, task=query_features.get("task", "query"))
        queries = query_outputs["token_embeddings"]
        _require_fixed_vectors(query_outputs["attention_mask"], "query")
        documents, masks = embed_columns_padded(
            self.model, features[1:], getattr(self.loss, "mini_batch_size", None), task_default="document"
        )
        for mask in masks:
            _require_fixed_vectors(mask, "document")
        score_chunk = getattr(self.loss, "score_mini_batch_size", None)
        total = self.loss_from_embeddings(queries, documents, score_chunk=score_chunk, teacher_scores=teacher_scores)
        return total + self._regularizers(queries, documents, references)

    def _anchor_reference(self, hidden: Tensor, mask: Tensor, side: str) -> Tensor:
        """What the anchor pulls an item towards: its mean-pooled backbone embedding (first vector), or with
        nested-window meta tokens, the mean of each vector's window (every vector)."""
        backbone = self.model[0]
        if getattr(backbone, "reads_windows", None) is not None and backbone.reads_windows(side):
            return window_means(hidden, mask, backbone.num_meta_tokens(side))
        return mean_pooled(hidden, mask)

    def _regularizers(self, queries: Tensor, documents: Sequence[Tensor], references: list[Tensor] | None) -> Tensor:
        """The weighted anchor and diversity terms (0 when both are off); logged beside the group losses."""
        total = queries.new_zeros((), dtype=torch.float32)
        if references is not None:
            anchor = (anchor_loss(queries, references[0])
                      + sum(anchor_loss(column, ref) for column, ref in zip(documents, references[1:])) / len(documents)) / 2
            self.last_group_losses["loss_anchor"] = anchor.detach()
            total = total + self.anchor_weight * anchor
        if self.diversity_weight:
            spread = (self_similarity(queries) + sum(self_similarity(column) for column in documents) / len(documents)) / 2
            self.last_group_losses["loss_self_similarity"] = spread.detach()
            total = total + self.diversity_weight * spread
        return total

    def _calculate_cached_loss(
        self, reps: list[list[Tensor]], masks_chunks: list[list[Tensor]], *, with_backward: bool = False
    ) -> Tensor:
        """The cached loss's ``calculate_loss``: reps[column][mini_batch] -> the MMR loss (backward per chunk)."""
        columns = [cat_padded_token_embeddings(chunks, masks) for chunks, masks in zip(reps, masks_chunks)]
        for _, mask in columns:
            _require_fixed_vectors(mask, "query or document")
        queries = columns[0][0]
        documents = [embeddings for embeddings, _ in columns[1:]]
        return self.loss_from_embeddings(
            queries, documents, score_chunk=self.loss.score_mini_batch_size, with_backward=with_backward
        )

    def loss_from_embeddings(
        self,
        queries: Tensor,
        document_columns: Sequence[Tensor],
        *,
        score_chunk: int | None = None,
        with_backward: bool = False,
        teacher_scores: Tensor | None = None,
    ) -> Tensor:
        """The MMR loss from embeddings: queries (B, R_q, D), one (B, R_c, D) tensor per document column.

        Documents are laid out query-major (row b's column n at ``b * N + n``), gathered across processes
        when the wrapped loss says so (gradients flow back to the process that owns them).
        ``teacher_scores`` (B, B * N), in the same layout over this process's documents, adds the weighted
        distillation term: each group learns the teacher's ranking of the local candidates.
        """
        batch_size = queries.shape[0]
        columns = list(document_columns)
        if self.gather_across_devices:
            columns = [gather_with_grad(column) for column in columns]
        per_row = len(columns)
        documents = torch.stack(columns, dim=1).flatten(0, 1)
        labels = torch.arange(batch_size, device=queries.device) * per_row
        local = slice(0, batch_size * per_row)  # this process's documents among the (gathered) columns
        if self.gather_across_devices:
            labels = labels + get_rank() * batch_size * per_row
            local = slice(local.start + get_rank() * batch_size * per_row, local.stop + get_rank() * batch_size * per_row)

        weights = torch.tensor(self.active_weights(), dtype=torch.float32, device=queries.device)
        if score_chunk is None:
            r_q = max(group.query for group in self.groups)
            r_c = max(group.document for group in self.groups)
            score_chunk = max(1, _SCORE_BLOCK_ELEMENTS // max(1, r_q * documents.shape[0] * r_c))
        totals, group_sums, distill_sums = [], [], []
        for begin in range(0, batch_size, score_chunk):
            end = min(begin + score_chunk, batch_size)
            # Divide inside the graph so gradients are those of the batch mean.
            scores = mmr_group_scores(queries[begin:end], documents, self.groups, self.normalize_by_query, self.nesting)
            chunk_losses = torch.stack(
                [F.cross_entropy(score / self.temperature, labels[begin:end], reduction="sum") for score in scores]
            ) / batch_size
            total = (weights * chunk_losses).sum() / len(self.groups)
            if teacher_scores is not None:
                distill = torch.stack([
                    distillation_loss(score[:, local], teacher_scores[begin:end], self.temperature, self.distill_temperature)
                    for score in scores
                ]) / batch_size
                total = total + self.distill_weight * (weights * distill).sum() / len(self.groups)
                distill_sums.append(distill.detach())
            if with_backward:
                total.backward()
                total, chunk_losses = total.detach(), chunk_losses.detach()
            totals.append(total)
            group_sums.append(chunk_losses.detach())
        per_group = torch.stack(group_sums).sum(dim=0)
        self.last_group_losses = {group_name(group): per_group[index] for index, group in enumerate(self.groups)}
        if distill_sums:
            self.last_group_losses["loss_distill"] = torch.stack(distill_sums).sum(dim=0).mean()
        return torch.stack(totals).sum()


def _require_fixed_vectors(mask: Tensor, side: str) -> None:
    if not bool(mask.bool().all()):
        raise ValueError(
            f"MMRLoss needs a fixed number of {side} vectors per item (MetaEmbed's meta tokens); "
            "the model returned a padded multi-vector output"
        )
