"""Find out which benchmark format a path holds and read it into tasks.

A path is one dataset (a BEIR folder, an MMEB subset folder, a ViDoRe dataset) or a folder of such
datasets (the 36 MMEB subsets, several ViDoRe sets, several BEIR sets): each child becomes one task.
"""

from __future__ import annotations

from pathlib import Path

from metaembed.data.beir import DataFormatError, is_beir_folder, load_beir
from metaembed.data.mmeb import is_mmeb_subset, load_mmeb_subset
from metaembed.data.tasks import Task
from metaembed.data.vidore import is_vidore_beir, is_vidore_qa, load_vidore

FORMATS = ("beir", "mmeb", "vidore")


def detect_single(path: Path) -> str | None:
    """The format of one dataset folder, or None."""
    if not path.is_dir():
        return None
    if is_beir_folder(path):
        return "beir"
    if is_mmeb_subset(path):
        return "mmeb"
    if is_vidore_beir(path) or is_vidore_qa(path):
        return "vidore"
    return None


def detect_format(path: str | Path) -> tuple[str, list[Path]]:
    """(format, dataset folders) for a dataset folder or a folder of datasets of one format."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or folder")
    single = detect_single(path)
    if single is not None:
        return single, [path]
    children = sorted(child for child in path.iterdir() if child.is_dir() and not child.name.startswith("."))
    found = {child: detect_single(child) for child in children}
    formats = {fmt for fmt in found.values() if fmt is not None}
    if not formats:
        raise DataFormatError(
            f"{path}: not a BEIR folder (corpus.jsonl, queries.jsonl, qrels/), an MMEB subset (test-*.parquet with "
            "qry_text, tgt_text...), a ViDoRe dataset (QA parquet or corpus/queries/qrels), nor a folder of them"
        )
    if len(formats) > 1:
        raise DataFormatError(f"{path}: holds datasets of several formats ({sorted(formats)}); point at one kind, or pass --format")
    return formats.pop(), [child for child, fmt in found.items() if fmt is not None]


def load_tasks(
    path: str | Path,
    format: str | None = None,
    *,
    split: str | None = None,
    image_root: str | Path | None = None,
    subsets: list[str] | None = None,
) -> tuple[str, list[Task]]:
    """Read every dataset under ``path`` (format detected unless given); ``subsets`` keeps only those names."""
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    detected, folders = detect_format(path)
    if format is not None and format != detected:
        raise DataFormatError(f"{path}: --format {format} given, but the folder holds {detected} data")
    if subsets:
        wanted = set(subsets)
        unknown = wanted - {folder.name for folder in folders}
        if unknown:
            raise DataFormatError(f"{path}: no dataset named {sorted(unknown)}; found {[f.name for f in folders]}")
        folders = [folder for folder in folders if folder.name in wanted]
    tasks: list[Task] = []
    for folder in folders:
        if detected == "beir":
            tasks.append(load_beir(folder, split))
        elif detected == "mmeb":
            tasks.append(load_mmeb_subset(folder, image_root, split=split or "test"))
        else:
            tasks.append(load_vidore(folder, split or "test"))
    return detected, tasks
