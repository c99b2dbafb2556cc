"""Training MetaEmbed models with the Matryoshka Multi-Vector Retrieval (MMR) loss."""

from metaembed.training.mmr_loss import DEFAULT_TEMPERATURE, MMRLoss, mmr_group_losses

__all__ = ["DEFAULT_TEMPERATURE", "MMRLoss", "mmr_group_losses"]
