"""The 36 MMEB evaluation subsets (VLM2Vec's names) grouped as the paper reports them: four meta-tasks
(classification 10, VQA 10, retrieval 12, visual grounding 4), in-distribution 20 / out-of-distribution 16."""

from __future__ import annotations

from collections.abc import Mapping

MMEB_META_TASKS: dict[str, tuple[str, ...]] = {
    "classification": (
        "ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397",
        "Place365", "ImageNet-A", "ImageNet-R", "ObjectNet", "Country211",
    ),
    "vqa": (
        "OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W",
        "ScienceQA", "VizWiz", "GQA", "TextVQA",
    ),
    "retrieval": (
        "VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t", "MSCOCO_t2i", "MSCOCO_i2t", "NIGHTS", "WebQA",
        "FashionIQ", "Wiki-SS-NQ", "OVEN", "EDIS",
    ),
    "grounding": ("MSCOCO", "RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing"),
}

MMEB_OUT_OF_DISTRIBUTION: frozenset[str] = frozenset({
    "Place365", "ImageNet-A", "ImageNet-R", "ObjectNet", "Country211",
    "ScienceQA", "VizWiz", "GQA", "TextVQA",
    "FashionIQ", "Wiki-SS-NQ", "OVEN", "EDIS",
    "RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing",
})

MMEB_SUBSETS: tuple[str, ...] = tuple(name for names in MMEB_META_TASKS.values() for name in names)
MMEB_IN_DISTRIBUTION: frozenset[str] = frozenset(MMEB_SUBSETS) - MMEB_OUT_OF_DISTRIBUTION


def mmeb_meta_task(subset: str) -> str | None:
    """The meta-task of a subset name, or None for a name outside MMEB."""
    return next((task for task, names in MMEB_META_TASKS.items() if subset in names), None)


def mmeb_group_means(scores: Mapping[str, float]) -> dict[str, dict[str, float | int]]:
    """Mean score per meta-task, IND, OOD and overall over the MMEB subsets present in ``scores``;
    each entry carries ``n`` (subsets present) and ``of`` (subsets in the full benchmark)."""
    groups: dict[str, tuple[str, ...]] = {
        **MMEB_META_TASKS,
        "ind": tuple(s for s in MMEB_SUBSETS if s in MMEB_IN_DISTRIBUTION),
        "ood": tuple(s for s in MMEB_SUBSETS if s in MMEB_OUT_OF_DISTRIBUTION),
        "overall": MMEB_SUBSETS,
    }
    means: dict[str, dict[str, float | int]] = {}
    for group, names in groups.items():
        present = [scores[name] for name in names if name in scores]
        if present:
            means[group] = {"mean": sum(present) / len(present), "n": len(present), "of": len(names)}
    return means
