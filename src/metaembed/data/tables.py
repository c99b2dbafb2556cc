"""Read tabular benchmark files without the ``datasets`` library: parquet files, folders of parquet shards,
and folders written by ``datasets.save_to_disk`` (Arrow IPC streams), as lists of row dicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def is_saved_dataset(path: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and any((path / name).is_file() for name in ("state.json", "dataset_info.json", "dataset_dict.json"))


def _read_saved_dataset(path: Path, split: str | None) -> pa.Table:
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        chosen = split if split in splits else (splits[0] if len(splits) == 1 else None)
        if chosen is None:
            raise ValueError(f"{path}: a DatasetDict with splits {splits} and no {split!r}: choose one with --split")
        return _read_saved_dataset(path / chosen, None)
    files = sorted(path.glob("*.arrow"))
    if (path / "state.json").is_file():
        state = json.loads((path / "state.json").read_text())
        files = [path / entry["filename"] for entry in state.get("_data_files", [])] or files
    if not files:
        raise ValueError(f"{path}: a saved dataset folder without .arrow files")
    tables = []
    for file in files:
        with pa.memory_map(str(file)) as source:
            try:
                tables.append(pa.ipc.open_stream(source).read_all())
            except pa.ArrowInvalid:
                tables.append(pa.ipc.open_file(source).read_all())
    return pa.concat_tables(tables)


def parquet_files(folder: Path, split: str | None = None) -> list[Path]:
    """Parquet shards in ``folder``; with several splits present, those whose name starts with ``split``."""
    files = sorted(folder.glob("*.parquet"))
    if split is not None:
        matching = [f for f in files if f.name.startswith(f"{split}-") or f.name.startswith(f"{split}.") or f.stem == split]
        if matching:
            return matching
    return files


def read_table(path: str | Path | list[Path], split: str | None = None) -> pa.Table:
    """A parquet file, a list of them, a folder of parquet shards, or a save_to_disk folder, as one Arrow table."""
    if isinstance(path, list):
        return pa.concat_tables([pq.read_table(f) for f in path], promote_options="default")
    path = Path(path)
    if path.is_file():
        return pq.read_table(path)
    if is_saved_dataset(path):
        return _read_saved_dataset(path, split)
    files = parquet_files(path, split) if path.is_dir() else []
    if not files:
        raise ValueError(f"{path}: no parquet files or saved dataset found")
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def read_rows(path: str | Path | list[Path], split: str | None = None, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a table as dicts, checking that ``columns`` exist (the error names the file and the columns it has)."""
    table = read_table(path, split)
    if columns:
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; it has {table.column_names}")
    return table.to_pylist()


def find_table(root: Path, name: str) -> Path | list[Path] | None:
    """Where the table ``name`` (corpus, queries, qrels) of a BEIR-style dataset lives under ``root``:
    ``name/`` (parquet shards or saved dataset), ``name.parquet``, ``name-*.parquet`` or ``data/name-*.parquet``."""
    folder = root / name
    if folder.is_dir() and (is_saved_dataset(folder) or list(folder.glob("*.parquet"))):
        return folder
    if (root / f"{name}.parquet").is_file():
        return root / f"{name}.parquet"
    for base in (root, root / "data"):
        shards = sorted(base.glob(f"{name}-*.parquet")) + sorted(base.glob(f"{name}_*.parquet"))
        if shards:
            return shards
    return None
