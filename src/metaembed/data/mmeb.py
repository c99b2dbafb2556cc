"""Read MMEB evaluation subsets as VLM2Vec publishes them (``TIGER-Lab/MMEB-eval``).

One folder per subset with ``test-*.parquet``; columns ``qry_text`` (the instruction, with ``<|image_1|>``
where the query has an image), ``qry_img_path`` (relative path or empty), ``tgt_text`` and
``tgt_img_path`` (lists: the query's own candidates, the positive at index 0). Images live in a
separately unpacked folder (``image_root``); a relative path is looked up as ``image_root/path`` and then
``image_root/<subset>/path``.

The ``<|image_1|>`` placeholder is removed (:func:`~metaembed.data.item.strip_image_placeholder`) and the item
is passed as ``{"text": ..., "image": path}``: the backbone's own processor (chat template) inserts its native
image token, so the same data works for every VLM family instead of assuming Phi-3-V's token.
"""

from __future__ import annotations

from pathlib import Path

from metaembed.data.beir import DataFormatError
from metaembed.data.item import Item, strip_image_placeholder
from metaembed.data.tables import parquet_files, read_rows
from metaembed.data.tasks import CandidateTask, DataIssues

MMEB_COLUMNS = ("qry_text", "qry_img_path", "tgt_text", "tgt_img_path")


def is_mmeb_subset(path: Path) -> bool:
    files = parquet_files(path, "test") if path.is_dir() else []
    if not files:
        return False
    import pyarrow.parquet as pq

    return all(column in pq.read_schema(files[0]).names for column in MMEB_COLUMNS)


def _resolve_image(relative: str, image_root: Path | None, subset: str, where: str) -> Path:
    if image_root is None:
        raise DataFormatError(f"{where}: the data has images ({relative!r}) but no image folder was given (--images DIR)")
    direct = (image_root / relative).resolve()
    if direct.exists():
        return direct
    nested = (image_root / subset / relative).resolve()
    return nested if nested.exists() else direct  # a missing file is reported when it is encoded


def load_mmeb_subset(path: str | Path, image_root: str | Path | None = None, *, split: str = "test", name: str | None = None) -> CandidateTask:
    """Read one MMEB subset folder into a :class:`CandidateTask`."""
    root = Path(path)
    subset = name or root.name
    files = parquet_files(root, split)
    if not files:
        raise DataFormatError(f"{root}: no {split}-*.parquet file (an MMEB subset folder has test-*.parquet)")
    images = Path(image_root) if image_root is not None else None
    issues = DataIssues()
    queries: list[Item] = []
    candidates: list[list[Item]] = []
    for number, row in enumerate(read_rows(files, split, list(MMEB_COLUMNS))):
        where = f"{root} row {number}"

        def item(text: str | None, image: str | None) -> Item | None:
            text = strip_image_placeholder(text)
            image_path = _resolve_image(image, images, subset, where) if image else None
            return Item(text=text, image=image_path) if (text or image_path) else None

        query = item(row["qry_text"], row["qry_img_path"])
        texts, image_paths = list(row["tgt_text"] or []), list(row["tgt_img_path"] or [])
        if len(image_paths) < len(texts):
            image_paths += [""] * (len(texts) - len(image_paths))
        if len(texts) < len(image_paths):
            texts += [""] * (len(image_paths) - len(texts))
        targets = [item(t, p) for t, p in zip(texts, image_paths)]
        if query is None:
            issues.add("empty_item", f"{where}: query has neither text nor image; skipped")
            continue
        if not targets or targets[0] is None:
            issues.add("empty_item", f"{where}: no positive candidate (tgt_text/tgt_img_path[0] empty); skipped")
            continue
        if len(targets) < 2:
            issues.add("single_candidate", f"{where}: only one candidate; precision@1 is trivially 1 for it")
        usable = [t for t in targets if t is not None]
        if len(usable) < len(targets):
            issues.add("empty_item", f"{where}: {len(targets) - len(usable)} empty candidate(s) dropped")
        queries.append(query)
        candidates.append(usable)
    if not queries:
        raise DataFormatError(f"{root}: no usable rows; nothing to evaluate")
    return CandidateTask(name=subset, queries=queries, candidates=candidates, source=str(root), issues=issues)
