"""Read ViDoRe benchmarks from local copies (parquet files or ``datasets.save_to_disk`` folders).

Two layouts:
- v1 QA layout (e.g. ``vidore/docvqa_test_subsampled``): one table with ``query``, ``image``,
  ``image_filename`` (and answer, page, ...). Documents are the distinct ``image_filename`` pages;
  queries are the distinct non-empty ``query`` strings; a query is relevant to every page it was asked on.
- BEIR layout (v1 ``*_beir``, v2, v3): tables ``corpus`` (``corpus-id``, ``image``), ``queries``
  (``query-id``, ``query``) and ``qrels`` (``query-id``, ``corpus-id``, ``score``).
Headline metric: nDCG@5 for v1/v2, nDCG@10 for v3 (a folder name containing ``v3``), as their papers report.
An image cell is a ``{"bytes", "path"}`` struct (the Hugging Face Image feature), raw bytes, or a path
relative to the dataset folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metaembed.data.beir import DataFormatError, build_qrels
from metaembed.data.tables import find_table, is_saved_dataset, parquet_files, read_rows
from metaembed.data.item import Item
from metaembed.data.tasks import DataIssues, RetrievalTask

QA_COLUMNS = ("query", "image", "image_filename")


def vidore_headline(path: Path) -> str:
    return "ndcg@10" if "v3" in path.name.lower() else "ndcg@5"


def is_vidore_beir(path: Path) -> bool:
    return all(find_table(path, name) is not None for name in ("corpus", "queries", "qrels"))


def _qa_table(path: Path) -> Path | list[Path] | None:
    if is_saved_dataset(path):
        return path
    for base in (path, path / "data"):
        files = parquet_files(base, "test") if base.is_dir() else []
        if files:
            return files
    return None


def is_vidore_qa(path: Path) -> bool:
    """A folder (or save_to_disk folder) whose table has the QA columns."""
    table = _qa_table(path)
    if table is None:
        return False
    import pyarrow.parquet as pq

    if isinstance(table, list):
        names = pq.read_schema(table[0]).names
    else:
        from metaembed.data.tables import read_table

        names = read_table(table, "test").column_names
    return all(column in names for column in QA_COLUMNS)


def _image_source(cell: Any, root: Path, where: str) -> bytes | Path | None:
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"])
        cell = cell.get("path")
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell)
    if isinstance(cell, str) and cell:
        return (root / cell).resolve()
    return None


def load_vidore_qa(path: str | Path, split: str | None = "test", *, name: str | None = None) -> RetrievalTask:
    """Read a ViDoRe v1 QA-layout dataset into a retrieval task over its distinct pages."""
    root = Path(path)
    table = _qa_table(root)
    if table is None:
        raise DataFormatError(f"{root}: no ViDoRe QA table (parquet with columns {list(QA_COLUMNS)}) found")
    rows = read_rows(table, split, list(QA_COLUMNS))
    issues = DataIssues()
    corpus: dict[str, Item] = {}
    queries: dict[str, Item] = {}
    query_id_of: dict[str, str] = {}
    qrel_rows = []
    for number, row in enumerate(rows):
        where = f"{root} row {number}"
        page = row.get("image_filename")
        if not page:
            issues.add("empty_item", f"{where}: no image_filename; row skipped")
            continue
        page = str(page)
        if page not in corpus:
            image = _image_source(row.get("image"), root, where)
            if image is None:
                issues.add("empty_item", f"{where}: page {page!r} has no image; skipped")
                continue
            corpus[page] = Item(image=image)
        query = (row.get("query") or "").strip()
        if not query:
            continue  # pages without a question are corpus-only, as in the ViDoRe evaluation
        if query not in query_id_of:
            query_id_of[query] = f"q{len(query_id_of)}"
            queries[query_id_of[query]] = Item(text=query)
        qrel_rows.append((number, query_id_of[query], page, 1))
    if not corpus:
        raise DataFormatError(f"{root}: the corpus is empty (no row with an image); nothing to search")
    qrels = build_qrels(qrel_rows, corpus, queries, issues, str(root))
    return RetrievalTask(
        name=name or root.name, corpus=corpus, queries={q: queries[q] for q in qrels}, qrels=qrels,
        source=str(root), headline=vidore_headline(root), issues=issues,
    )


def load_vidore_beir(path: str | Path, split: str | None = "test", *, name: str | None = None) -> RetrievalTask:
    """Read a ViDoRe BEIR-layout dataset (corpus / queries / qrels tables)."""
    root = Path(path)
    tables = {n: find_table(root, n) for n in ("corpus", "queries", "qrels")}
    missing = [n for n, t in tables.items() if t is None]
    if missing:
        raise DataFormatError(f"{root}: no {missing} table(s); a ViDoRe BEIR folder has corpus/, queries/ and qrels/")
    issues = DataIssues()
    corpus: dict[str, Item] = {}
    for number, row in enumerate(read_rows(tables["corpus"], split, ["corpus-id"])):
        document_id = str(row["corpus-id"])
        image = _image_source(row.get("image"), root, f"{root}/corpus row {number}")
        text = row.get("text") if image is None else None
        if image is None and not text:
            issues.add("empty_item", f"{root}/corpus row {number}: document {document_id!r} has no image or text; skipped")
            continue
        if document_id in corpus:
            issues.add("duplicate_id", f"{root}/corpus row {number}: duplicate corpus-id {document_id!r}; the first is kept")
            continue
        corpus[document_id] = Item(text=text, image=image)
    if not corpus:
        raise DataFormatError(f"{root}/corpus: the corpus is empty; nothing to search")
    queries: dict[str, Item] = {}
    for number, row in enumerate(read_rows(tables["queries"], split, ["query-id", "query"])):
        text = (row.get("query") or "").strip()
        if not text:
            issues.add("empty_item", f"{root}/queries row {number}: query {row['query-id']!r} is empty; skipped")
            continue
        queries.setdefault(str(row["query-id"]), Item(text=text))
    qrel_rows = [
        (number, str(row["query-id"]), str(row["corpus-id"]), int(row.get("score", 1) if row.get("score") is not None else 1))
        for number, row in enumerate(read_rows(tables["qrels"], split, ["query-id", "corpus-id"]))
    ]
    qrels = build_qrels(qrel_rows, corpus, queries, issues, f"{root}/qrels")
    return RetrievalTask(
        name=name or root.name, corpus=corpus, queries={q: queries[q] for q in qrels}, qrels=qrels,
        source=str(root), headline=vidore_headline(root), issues=issues,
    )


def load_vidore(path: str | Path, split: str | None = "test", *, name: str | None = None) -> RetrievalTask:
    """Either ViDoRe layout, detected from the folder."""
    root = Path(path)
    if is_vidore_beir(root):
        return load_vidore_beir(root, split, name=name)
    if is_vidore_qa(root):
        return load_vidore_qa(root, split, name=name)
    raise DataFormatError(f"{root}: neither ViDoRe layout (QA table with {list(QA_COLUMNS)}, or corpus/queries/qrels tables)")
