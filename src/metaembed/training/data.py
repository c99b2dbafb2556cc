"""Training data: the JSONL format, the MMEB-train parquet layout, and the bad-row policy.

JSONL, one example per line::

    {"query": ITEM, "positive": ITEM, "negatives": [ITEM, ...],
     "query_instruction": "...", "document_instruction": "..."}

ITEM is a string (text) or ``{"text": ..., "image": "relative/path.png"}`` (read by
:func:`metaembed.data.item.parse_json_item` into an :class:`~metaembed.data.item.Item`); image paths are relative to
the JSONL file. ``negatives`` and the instructions are optional; an instruction is prepended to the
text of that side's items (query; positive and negatives), exactly like a sentence-transformers prompt.

Every bad row (missing or empty query/positive, empty text, unreadable image, bad JSON) is reported
with its file and line number. ``on_bad_row="stop"`` raises :class:`BadRowError` at the first one;
``"skip"`` drops it, and :class:`ReadReport` counts and lists every skipped row.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaembed.data.item import (
    ImageCheck, Item, dataset_item_feature, parse_item, parse_json_item, strip_image_placeholder,
)
from metaembed.jsonl import numbered_lines, parse_json_object

logger = logging.getLogger(__name__)

BAD_ROW_POLICIES = ("stop", "skip")
MMEB_COLUMNS = ("qry", "qry_image_path", "pos_text", "pos_image_path", "neg_text", "neg_image_path")


class BadRowError(ValueError):
    """A training row that cannot be used; the message names the file, the line and the problem."""


@dataclass
class TrainingExample:
    """One training row: a query, its positive document and hard negatives."""

    query: Item
    positive: Item
    negatives: list[Item]
    source: str
    """Where the row came from, ``file:line``, for messages."""


@dataclass
class ReadReport:
    """What a reader kept and skipped: nothing is dropped without a line here."""

    rows_read: int = 0
    rows_kept: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def rows_skipped(self) -> int:
        return len(self.skipped)

    def merge(self, other: "ReadReport") -> None:
        self.rows_read += other.rows_read
        self.rows_kept += other.rows_kept
        self.skipped.extend(other.skipped)

    def summary(self) -> str:
        return f"read {self.rows_read} rows, kept {self.rows_kept}, skipped {self.rows_skipped} bad rows"


def _check_policy(on_bad_row: str) -> None:
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ValueError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {on_bad_row!r}")


def parse_jsonl_row(
    row: Any, *, base_dir: Path, check_images: bool = True, allow_outside_paths: bool = False
) -> tuple[Item, Item, list[Item]]:
    """One JSONL row -> (query, positive, negatives), or ValueError saying what is wrong."""
    if not isinstance(row, Mapping):
        raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
    unknown = set(row) - {"query", "positive", "negatives", "query_instruction", "document_instruction"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    instructions = {}
    for side in ("query", "document"):
        value = row.get(f"{side}_instruction")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{side}_instruction must be a string")
        instructions[side] = value
    common: dict[str, Any] = dict(base_dir=base_dir, check=_check(check_images), allow_outside=allow_outside_paths)
    if "positive" not in row:
        raise ValueError("missing 'positive'")
    query = parse_json_item(row.get("query"), what="query", **common).with_instruction(instructions["query"])
    document = instructions["document"]
    positive = parse_json_item(row["positive"], what="positive", **common).with_instruction(document)
    negatives_value = row.get("negatives") or []
    if not isinstance(negatives_value, list):
        raise ValueError("'negatives' must be a list")
    negatives = [
        parse_json_item(value, what=f"negative {index}", **common).with_instruction(document)
        for index, value in enumerate(negatives_value)
    ]
    return query, positive, negatives


def _check(check_images: bool) -> ImageCheck:
    """The image check of :func:`~metaembed.data.item.resolve_image` for the ``check_images`` setting."""
    return "readable" if check_images else "none"


def read_jsonl(
    path: str | Path, *, on_bad_row: str = "stop", check_images: bool = True, allow_outside_paths: bool = False
) -> tuple[list[TrainingExample], ReadReport]:
    """Read a training JSONL file; bad rows stop the read or are skipped and counted (``on_bad_row``).
    Image paths are relative to the file; paths leaving its folder are bad rows unless ``allow_outside_paths``."""
    _check_policy(on_bad_row)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training file {str(path)!r} does not exist")
    examples: list[TrainingExample] = []
    report = ReadReport()
    for line_number, line in numbered_lines(path):
        report.rows_read += 1
        source = f"{path}:{line_number}"
        try:
            query, positive, negatives = parse_jsonl_row(
                parse_json_object(line), base_dir=path.parent, check_images=check_images,
                allow_outside_paths=allow_outside_paths,
            )
        except ValueError as error:
            _handle_bad_row(report, source, str(error), on_bad_row)
            continue
        examples.append(TrainingExample(query, positive, negatives, source))
        report.rows_kept += 1
    return examples, report


def _handle_bad_row(report: ReadReport, source: str, problem: str, on_bad_row: str) -> None:
    message = f"{source}: {problem}"
    if on_bad_row == "stop":
        raise BadRowError(message + " (set on_bad_row='skip' to skip bad rows)")
    report.skipped.append(message)
    logger.warning("skipping bad row %s", message)


# ----------------------------------------------------------------------------------------- MMEB
def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def mmeb_subset_files(root: Path, subset: str) -> list[Path]:
    """The parquet files of one subset: ``root/<subset>/*.parquet`` or ``root/<subset>.parquet``."""
    folder = root / subset
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files and (root / f"{subset}.parquet").is_file():
        files = [root / f"{subset}.parquet"]
    if not files:
        raise FileNotFoundError(f"MMEB subset {subset!r}: no parquet files in {str(folder)!r} or {str(root / (subset + '.parquet'))!r}")
    return files


def read_mmeb_subset(
    root: str | Path,
    subset: str,
    *,
    image_root: str | Path | None = None,
    on_bad_row: str = "stop",
    check_images: bool = True,
) -> tuple[list[TrainingExample], ReadReport]:
    """Read one MMEB-train subset (VLM2Vec layout); image paths are relative to ``image_root`` (default ``root``)."""
    import pyarrow.parquet as pq

    _check_policy(on_bad_row)
    root = Path(root)
    base_dir = Path(image_root) if image_root is not None else root
    examples: list[TrainingExample] = []
    report = ReadReport()
    for file in mmeb_subset_files(root, subset):
        table = pq.read_table(file)
        missing = [column for column in ("qry", "pos_text") if column not in table.column_names]
        if missing:
            raise BadRowError(f"{file}: not an MMEB-train parquet file, missing columns {missing}")
        columns = {name: table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows for name in MMEB_COLUMNS}
        for index in range(table.num_rows):
            report.rows_read += 1
            source = f"{file}:row {index + 1}"
            row = {name: values[index] for name, values in columns.items()}
            common: dict[str, Any] = dict(base_dir=base_dir, check=_check(check_images), allow_outside=True)
            try:
                if not (row["pos_text"] or row["pos_image_path"]):
                    raise ValueError("missing positive (empty pos_text and pos_image_path)")
                query = parse_item(strip_image_placeholder(row["qry"]), row["qry_image_path"], what="query", **common)
                positive = parse_item(strip_image_placeholder(row["pos_text"]), row["pos_image_path"], what="positive",
                                      **common)
                negative_texts, negative_images = _as_list(row["neg_text"]), _as_list(row["neg_image_path"])
                negatives = []
                for position in range(max(len(negative_texts), len(negative_images))):
                    text = negative_texts[position] if position < len(negative_texts) else None
                    image = negative_images[position] if position < len(negative_images) else None
                    if not (text or image):
                        continue  # MMEB leaves negatives empty for most subsets
                    negatives.append(parse_item(strip_image_placeholder(text), image, what=f"negative {position}",
                                                **common))
            except ValueError as error:
                _handle_bad_row(report, source, str(error), on_bad_row)
                continue
            examples.append(TrainingExample(query, positive, negatives, source))
            report.rows_kept += 1
    return examples, report


def read_mmeb_train(
    root: str | Path,
    subsets: Mapping[str, float] | Sequence[str],
    *,
    image_root: str | Path | None = None,
    num_examples: int | None = None,
    seed: int = 0,
    on_bad_row: str = "stop",
    check_images: bool = True,
) -> tuple[list[TrainingExample], ReadReport]:
    """A mixture of MMEB-train subsets drawn by per-subset weight (a list means equal weights).

    Subset s contributes ``round(num_examples * w_s / sum(w))`` examples (``num_examples`` defaults to
    all kept rows): drawn without replacement while it has rows, then cycled in a new shuffled order.
    """
    weights = dict(subsets) if isinstance(subsets, Mapping) else {name: 1.0 for name in subsets}
    if not weights:
        raise ValueError("read_mmeb_train needs at least one subset")
    if any(not (weight >= 0) for weight in weights.values()) or not sum(weights.values()) > 0:
        raise ValueError(f"subset weights must be non-negative with a positive sum, got {weights}")
    per_subset: dict[str, list[TrainingExample]] = {}
    report = ReadReport()
    for name in weights:
        examples, subset_report = read_mmeb_subset(
            root, name, image_root=image_root, on_bad_row=on_bad_row, check_images=check_images
        )
        if not examples and weights[name] > 0:
            raise BadRowError(f"MMEB subset {name!r} has no usable rows")
        per_subset[name] = examples
        report.merge(subset_report)
    total = num_examples if num_examples is not None else sum(len(rows) for rows in per_subset.values())
    weight_sum = sum(weights.values())
    generator = random.Random(seed)
    mixture: list[TrainingExample] = []
    for name, weight in weights.items():
        count = int(round(total * weight / weight_sum))
        rows = per_subset[name]
        drawn: list[TrainingExample] = []
        for _ in range(math.ceil(count / len(rows)) if rows else 0):
            drawn.extend(generator.sample(rows, len(rows)))
        mixture.extend(drawn[:count])
    generator.shuffle(mixture)
    return mixture, report


# ---------------------------------------------------------------------------------- to a dataset
def negative_columns(count: int) -> list[str]:
    return [f"negative_{index + 1}" for index in range(count)]


def to_dataset(examples: Sequence[TrainingExample], num_negatives: int = 1, seed: int = 0):
    """A ``datasets.Dataset`` with item columns query, positive, negative_1..k.

    Each column is a struct of ``text`` (string) and ``image`` (a :class:`datasets.Image` feature holding the file's
    path, opened by the collator), see :func:`~metaembed.data.item.dataset_item_feature`. Rows with
    fewer than ``num_negatives`` hard negatives are completed with the positives of other, randomly chosen rows
    (seeded), so every row has the same columns; the count is logged.
    """
    from datasets import Dataset, Features

    if not examples:
        raise ValueError("no training examples")
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
    if num_negatives and len(examples) < 2:
        raise ValueError("need at least 2 examples to fill missing negatives from other rows")
    generator = random.Random(seed)
    names = ["query", "positive", *negative_columns(num_negatives)]
    columns: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    filled = 0
    for index, example in enumerate(examples):
        negatives = list(example.negatives[:num_negatives])
        while len(negatives) < num_negatives:
            other = generator.randrange(len(examples) - 1)
            other += other >= index
            negatives.append(examples[other].positive)
            filled += 1
        for name, item in zip(names, [example.query, example.positive, *negatives]):
            columns[name].append(item.to_cell())
    if filled:
        logger.info("filled %d missing hard negatives with positives of other rows", filled)
    return Dataset.from_dict(columns, features=Features({name: dataset_item_feature() for name in names}))


def task_of(example: TrainingExample) -> str:
    """The example's task as its modalities name it, ``"text->image"``, ``"image->text"``, ...: rows of one task share
    a batch when batches are drawn by task."""
    return f"{example.query.modality}->{example.positive.modality}"


def to_task_datasets(examples: Sequence[TrainingExample], num_negatives: int = 1, seed: int = 0):
    """One dataset per task (:func:`task_of`), as a ``datasets.DatasetDict`` keyed by task, or a plain dataset when the
    data holds one task. sentence-transformers' multi-dataset batch sampler then draws every batch from one task, so
    in-batch negatives share the positive's modality (a text query's image positive never competes with texts,
    which a model can tell apart by modality alone). Missing negatives are filled within the task."""
    from datasets import DatasetDict

    by_task: dict[str, list[TrainingExample]] = {}
    for example in examples:
        by_task.setdefault(task_of(example), []).append(example)
    if len(by_task) == 1:
        return to_dataset(examples, num_negatives=num_negatives, seed=seed)
    too_small = {task: len(rows) for task, rows in by_task.items() if len(rows) < 2}
    if too_small and num_negatives:
        raise ValueError(f"batches_by_task: each task needs at least 2 rows, got {too_small}; "
                         "add rows or set batches_by_task to false")
    logger.info("batches drawn by task: %s", ", ".join(f"{task} {len(rows)} rows" for task, rows in sorted(by_task.items())))
    return DatasetDict({task: to_dataset(rows, num_negatives=num_negatives, seed=seed)
                        for task, rows in sorted(by_task.items())})


def cells_to_items(cells: Iterable[Mapping[str, Any]], *, accepts_images: bool, max_image_side: int) -> list[Any]:
    """Model inputs (str, RGB image, or text+image dict) of a batch's item cells, images opened, checked against
    the pixel budget and downscaled by :func:`metaembed.inputs.prepare_item`."""
    from metaembed.inputs import prepare_item

    return [prepare_item(Item.from_cell(cell).to_model_input(), accepts_images=accepts_images,
                         max_image_side=max_image_side) for cell in cells]
