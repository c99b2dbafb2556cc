"""Image-text items -> family-based train/dev/test split -> BEIR task folders and training JSONL.

The layout every image set writes (the sources are in :mod:`metaembed.data.image_sets`)::

    OUT/images/ab/<pixel sha>.png        normalised images, shared by the training files
    OUT/train.jsonl, OUT/dev.jsonl       {"query", "positive", "negatives"}: items with images relative to OUT
    OUT/beir/text-to-image/              query = caption, document = image
    OUT/beir/image-to-text/              query = image, document = caption
    OUT/beir/text-to-image-text/         query = description or keywords, document = image + title/category
    OUT/stats.json                       written last

Each ``beir/<task>`` is a BEIR folder (corpus.jsonl, queries.jsonl, qrels/dev.tsv, qrels/test.tsv) with its
own ``images/`` of hard links (copies where links fail): the BEIR reader refuses image paths that leave
the folder, and a link costs no space. ``metaembed eval OUT/beir`` finds the three tasks.

Split (as :mod:`metaembed.data.debian_sources`): items sharing a family key (a title, a file-name stem,
near-duplicate pixels) are one family, and a family lands in one split whole, so no image, caption or
near-copy is shared across splits. Families larger than ``max_eval_family`` go to training (a query
among twenty near-identical images has no single answer). Each task's corpus holds the test and dev items
plus distractors from families used neither in training nor as queries, ``corpus_size`` items in all.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from metaembed.data.debian import _write_jsonl
from metaembed.data.debian_sources import group_by_shared_keys

TASKS = ("text-to-image", "image-to-text", "text-to-image-text")


class ImageDataError(RuntimeError):
    """The image sources cannot give the set asked for; the message says what is missing."""


@dataclass
class ImageTextItem:
    """One image with its texts, before and after rendering."""

    key: str
    """Stable, unique name (``openclipart/animals/dog_01``): sort order and ids derive from it."""
    source: Path
    """The file to render (SVG or raster)."""
    caption: str
    """Short text naming the image: text -> image query, image -> text document."""
    doc_text: str
    """Text that goes with the image in an image+text document (caption and category)."""
    query_text: str | None
    """Text -> image+text query (a description or keywords, never a copy of ``doc_text``), or None."""
    category: str
    """Hard negatives come from the same category."""
    family_keys: tuple[str, ...]
    """Items sharing any key are one family."""
    image: str | None = None
    """The rendered image, relative to the output folder (``images/ab/<sha>.png``), once rendered."""
    links: list[int] = field(default_factory=list)
    """Indices of near-duplicate items (same family), found after rendering."""


def normalise_text(text: str) -> str:
    """Lower case, runs of non-alphanumerics as one space: the key captions are deduplicated by."""
    return " ".join(re.split(r"[^0-9a-z]+", text.lower())).strip()


def dedup_by_caption(items: Sequence[ImageTextItem]) -> tuple[list[ImageTextItem], dict[str, int]]:
    """Keep the first item (in key order) of each normalised caption; a query text that more than one item
    carries is dropped from all of them (it would have several right answers). Returns kept items and counts."""
    kept: list[ImageTextItem] = []
    seen: set[str] = set()
    for item in sorted(items, key=lambda i: i.key):
        caption = normalise_text(item.caption)
        if caption not in seen:
            seen.add(caption)
            kept.append(item)
    queries: dict[str, int] = defaultdict(int)
    for item in kept:
        if item.query_text:
            queries[normalise_text(item.query_text)] += 1
    ambiguous = 0
    for item in kept:
        if item.query_text and (queries[normalise_text(item.query_text)] > 1 or normalise_text(item.query_text) in seen):
            item.query_text, ambiguous = None, ambiguous + 1
    return kept, {"duplicate_caption": len(items) - len(kept), "ambiguous_query_dropped": ambiguous}


def families(items: Sequence[ImageTextItem]) -> list[list[int]]:
    """Item indices grouped into families: items sharing a family key or linked as near-duplicates (a link
    i -> j is the key ``near:i`` on both), in key order of their first member."""
    keys = [list(item.family_keys) for item in items]
    for index, item in enumerate(items):
        for other in item.links:
            keys[index].append(f"near:{index}")
            keys[other].append(f"near:{index}")
    return sorted(group_by_shared_keys(keys), key=lambda group: items[group[0]].key)


@dataclass
class Split:
    """Item indices per split; distractors are corpus-only."""

    test: list[int]
    dev: list[int]
    distractors: list[int]
    train: list[int]


def split_families(groups: list[list[int]], *, seed: int, num_test: int, num_dev: int, corpus_size: int,
                   max_eval_family: int) -> Split:
    """Shuffle families with ``seed``; test and dev take whole families (at most ``max_eval_family`` items)
    until they hold their number of items, then distractors up to ``corpus_size`` (a corpus may fall short of it
    by less than a family); the rest is training."""
    if corpus_size < num_test + num_dev:
        raise ValueError(f"corpus_size {corpus_size} is smaller than the {num_test + num_dev} test + dev items it must hold")
    order = list(groups)
    random.Random(seed).shuffle(order)
    split = Split([], [], [], [])
    for group in order:
        if len(group) > max_eval_family:
            split.train.extend(group)
        elif len(split.test) < num_test:
            split.test.extend(group)
        elif len(split.dev) < num_dev:
            split.dev.extend(group)
        elif len(split.test) + len(split.dev) + len(split.distractors) + len(group) <= corpus_size:
            split.distractors.extend(group)
        else:
            split.train.extend(group)
    # Whole families may overshoot test and dev by part of their last family: that excess becomes distractors
    # (in the corpus, its query not asked; still on the evaluation side of the split).
    split.distractors.extend(split.test[num_test:] + split.dev[num_dev:])
    del split.test[num_test:], split.dev[num_dev:]
    if len(split.test) < num_test or len(split.dev) < num_dev or not split.train:
        raise ImageDataError(
            f"only {sum(map(len, groups))} usable images in {len(groups)} families: not enough for {num_test} test + "
            f"{num_dev} dev images, a {corpus_size}-image corpus and a training split (ask for fewer, or more images)"
        )
    return split


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_beir_tasks(out_dir: Path, items: Sequence[ImageTextItem], split: Split) -> dict[str, dict[str, int]]:
    """Write the three BEIR task folders under ``out_dir/beir``; returns per-task query and corpus counts."""
    corpus_members = sorted(split.test + split.dev + split.distractors, key=lambda i: items[i].key)
    written: dict[str, dict[str, int]] = {}
    for task in TASKS:
        root = out_dir / "beir" / task
        (root / "qrels").mkdir(parents=True, exist_ok=True)
        corpus_rows = []
        for index in corpus_members:
            item = items[index]
            row: dict = {"_id": f"d-{index}", "title": ""}
            if task != "image-to-text":
                _link_or_copy(out_dir / item.image, root / item.image)
                row["image"] = item.image
            if task != "text-to-image":
                row["text"] = item.caption if task == "image-to-text" else item.doc_text
            corpus_rows.append(row)
        _write_jsonl(root / "corpus.jsonl", corpus_rows)
        asked = {name: [i for i in members if task != "text-to-image-text" or items[i].query_text]
                 for name, members in (("test", split.test), ("dev", split.dev))}
        queries = []
        for index in asked["test"] + asked["dev"]:
            item = items[index]
            if task == "image-to-text":
                _link_or_copy(out_dir / item.image, root / item.image)
                queries.append({"_id": f"q-{index}", "image": item.image})
            else:
                queries.append({"_id": f"q-{index}", "text": item.caption if task == "text-to-image" else item.query_text})
        _write_jsonl(root / "queries.jsonl", queries)
        for name, members in asked.items():
            with (root / "qrels" / f"{name}.tsv").open("w", encoding="utf-8") as handle:
                handle.write("query-id\tcorpus-id\tscore\n")
                handle.writelines(f"q-{i}\td-{i}\t1\n" for i in members)
        written[task] = {"test_queries": len(asked["test"]), "dev_queries": len(asked["dev"]), "corpus": len(corpus_rows)}
    return written


def hard_negative(index: int, pool: Sequence[int], items: Sequence[ImageTextItem], family_of: dict[int, int],
                  rng: random.Random) -> int | None:
    """Another family's item from the same category, else the same top-level category, else any (None if none)."""
    item = items[index]
    top = item.category.split("/", 1)[0]
    for wanted in (lambda o: items[o].category == item.category, lambda o: items[o].category.split("/", 1)[0] == top, lambda o: True):
        options = [o for o in pool if family_of[o] != family_of[index] and wanted(o)]
        if options:
            return options[rng.randrange(len(options))]
    return None


def training_rows(members: Sequence[int], pool: Sequence[int], items: Sequence[ImageTextItem], family_of: dict[int, int],
                  rng: random.Random) -> Iterator[dict]:
    """Rows of all three tasks for ``members`` (one hard negative each, from ``pool``), shuffled."""
    by_category: dict[str, list[int]] = defaultdict(list)
    for index in pool:
        by_category[items[index].category.split("/", 1)[0]].append(index)
    rows: list[dict] = []
    for index in members:
        item = items[index]
        negative = hard_negative(index, by_category[item.category.split("/", 1)[0]], items, family_of, rng)
        if negative is None:
            negative = hard_negative(index, pool, items, family_of, rng)
        other = items[negative] if negative is not None else None
        rows.append({"query": item.caption, "positive": {"image": item.image},
                     "negatives": [{"image": other.image}] if other else []})
        rows.append({"query": {"image": item.image}, "positive": item.caption, "negatives": [other.caption] if other else []})
        if item.query_text:
            rows.append({"query": item.query_text, "positive": {"text": item.doc_text, "image": item.image},
                         "negatives": [{"text": other.doc_text, "image": other.image}] if other else []})
    rng.shuffle(rows)
    return iter(rows)


def write_training(out_dir: Path, items: Sequence[ImageTextItem], split: Split, groups: list[list[int]], seed: int) -> dict[str, int]:
    """``train.jsonl`` (from training items) and ``dev.jsonl`` (dev items, negatives from dev and distractors)."""
    family_of = {index: number for number, group in enumerate(groups) for index in group}
    rng = random.Random(seed + 1)
    n_train = _write_jsonl(out_dir / "train.jsonl", training_rows(split.train, split.train, items, family_of, rng))
    n_dev = _write_jsonl(out_dir / "dev.jsonl", training_rows(split.dev, split.dev + split.distractors, items, family_of, rng))
    return {"train_examples": n_train, "dev_examples": n_dev}
