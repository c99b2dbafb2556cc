"""What a training run records in the model it trains (``MetaEmbed.training_record``, saved in the model's
``metaembed_config.json``): the MMR groups and temperature that ``metaembed serve`` offers and the model card shows,
a few settings, what the data was, and a few real example items for the card."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metaembed.budgets import Budget
from metaembed.model.card import example_item
from metaembed.model.saved_config import Item, TrainingRecord
from metaembed.training.config import TrainConfig

EXAMPLES_KEPT = 3


def training_record(config: TrainConfig, examples: Sequence[Any], groups: Sequence[Budget]) -> TrainingRecord:
    """The record of a run of ``config`` over ``examples`` (objects with ``query`` and ``positive`` items, each
    with ``text`` and ``image``) that trained the budget ``groups`` (the loss's, clipped to the model's meta
    tokens): the first few distinct queries and their positives become the card's examples."""
    settings: dict[str, Any] = {
        "steps": config.max_steps if config.max_steps > 0 else f"{config.num_epochs:g} epochs",
        "batch size": config.batch_size * config.gradient_accumulation_steps,
        "hard negatives": config.num_negatives,
        "learning rate": f"{config.resolved_learning_rate:g}",
        "scores divided by r_q": config.normalize_by_query,
        "loss": config.loss + (", LoRA" if config.lora else ""),
    }
    if config.group_weights:
        settings["group weights"] = list(config.group_weights)
    if config.largest_group_first_steps:
        settings["largest group alone, first steps"] = config.largest_group_first_steps
    if config.mmr_nesting != "shared":
        settings["group nesting"] = config.mmr_nesting
    for name in ("anchor_weight", "diversity_weight", "distill_weight"):
        if getattr(config, name):
            settings[name.replace("_", " ")] = getattr(config, name)
    if config.distill_weight:
        settings["distillation teacher"] = config.distill_teacher
    data = [Path(path).name for path in config.train_jsonl]
    if config.mmeb_root:
        data.append("MMEB-train: " + ", ".join(config.mmeb_subsets))
    queries: list[Item] = []
    documents: list[Item] = []
    for example in examples:
        query = _item(example.query)
        document = _item(example.positive)
        if query is None or document is None or query in queries or document in documents:
            continue
        queries.append(query)
        documents.append(document)
        if len(queries) == EXAMPLES_KEPT:
            break
    return TrainingRecord(groups=list(groups), temperature=config.temperature, settings=settings, data=data,
                          example_queries=queries, example_documents=documents)


def _item(item: Any) -> Item | None:
    image = getattr(item, "image", None)
    return example_item(getattr(item, "text", None), str(image) if isinstance(image, (str, Path)) else None)
