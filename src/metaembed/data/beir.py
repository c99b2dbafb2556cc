"""Read a BEIR folder: corpus.jsonl, queries.jsonl and qrels/<split>.tsv.

Items may be text (``title`` + ``text``), an image (``image``: a path relative to the folder), or both,
so image retrieval and visual-document sets use the same layout. Problems are reported with file and
line: malformed JSON or a missing ``_id`` stops; a qrels row naming an unknown query or document, a
query without any relevant document, a duplicate id or an item without text or image is skipped and
counted. An empty corpus stops.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from metaembed.data.item import Item
from metaembed.data.rows import EmptyItemError, parse_beir_row
from metaembed.data.tasks import DataIssues, RetrievalTask
from metaembed.inputs import PathOutsideFolderError
from metaembed.jsonl import numbered_lines, parse_json_object


class DataFormatError(ValueError):
    """The data cannot be read; the message names the file (and line) and the problem."""


def is_beir_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file()


def _read_items(path: Path, root: Path, issues: DataIssues, use_title: bool, allow_outside: bool = False) -> dict[str, Item]:
    """The items of a corpus or queries file (:func:`~metaembed.data.rows.parse_beir_row`); a malformed row stops
    the read, a duplicate id or a row without text or image is skipped and counted."""
    items: dict[str, Item] = {}
    for number, line in numbered_lines(path):
        where = f"{path}:{number}"
        try:
            item_id, item, _ = parse_beir_row(parse_json_object(line), base_dir=root, where=where, use_title=use_title,
                                              allow_outside=allow_outside)
        except EmptyItemError as error:
            issues.add("empty_item", f"{where}: {error}; skipped")
            continue
        except PathOutsideFolderError as error:
            raise DataFormatError(str(error)) from None
        except ValueError as error:
            raise DataFormatError(f"{where}: {error}") from None
        if item_id in items:
            issues.add("duplicate_id", f"{where}: duplicate _id {item_id!r}; the first one is kept")
            continue
        items[item_id] = item
    return items


def qrels_splits(path: str | Path) -> list[str]:
    """The splits a BEIR folder has qrels for (file names in qrels/ without .tsv)."""
    return sorted(p.stem for p in (Path(path) / "qrels").glob("*.tsv"))


def resolve_split(path: Path, split: str | None) -> str:
    splits = qrels_splits(path)
    if not splits:
        raise DataFormatError(f"{path / 'qrels'}: no <split>.tsv files (expected e.g. qrels/test.tsv)")
    if split is None:
        return "test" if "test" in splits else splits[0] if len(splits) == 1 else _no_default(path, splits)
    if split not in splits:
        raise DataFormatError(f"{path / 'qrels'}: no qrels for split {split!r}; available: {', '.join(splits)}")
    return split


def _no_default(path: Path, splits: list[str]) -> str:
    raise DataFormatError(f"{path / 'qrels'}: several splits ({', '.join(splits)}) and no 'test': choose one with --split")


def read_qrels(path: Path) -> Iterator[tuple[int, str, str, int]]:
    """(line, query id, document id, grade) from a BEIR qrels TSV (header optional) or a TREC qrels file."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t") if "\t" in line else line.split()
            if not fields or not line.strip():
                continue
            if len(fields) == 4:  # TREC: query 0 document grade
                fields = [fields[0], fields[2], fields[3]]
            if len(fields) != 3:
                raise DataFormatError(f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score', got {line.strip()!r}")
            try:
                grade = int(float(fields[2]))
            except ValueError:
                if number == 1:
                    continue  # header row
                raise DataFormatError(f"{path}:{number}: score {fields[2]!r} is not a number") from None
            yield number, fields[0], fields[1], grade


def load_beir(
    path: str | Path, split: str | None = None, *, name: str | None = None, use_title: bool = True,
    allow_outside_paths: bool = False,
) -> RetrievalTask:
    """Read a BEIR folder into a :class:`RetrievalTask` (only queries with a relevant document are kept).
    Image paths leading outside the folder are refused unless ``allow_outside_paths``."""
    root = Path(path)
    if not is_beir_folder(root):
        raise DataFormatError(f"{root}: not a BEIR folder (needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv)")
    split = resolve_split(root, split)
    issues = DataIssues()
    corpus = _read_items(root / "corpus.jsonl", root, issues, use_title, allow_outside_paths)
    if not corpus:
        raise DataFormatError(f"{root / 'corpus.jsonl'}: the corpus is empty; nothing to search")
    queries = _read_items(root / "queries.jsonl", root, issues, False, allow_outside_paths)
    qrels_path = root / "qrels" / f"{split}.tsv"
    qrels = build_qrels(read_qrels(qrels_path), corpus, queries, issues, str(qrels_path))
    return RetrievalTask(
        name=name or root.name, corpus=corpus, queries={q: queries[q] for q in qrels}, qrels=qrels,
        source=str(root), issues=issues,
    )


def build_qrels(
    rows, corpus: dict[str, Item], queries: dict[str, Item], issues: DataIssues, where: str
) -> dict[str, dict[str, int]]:
    """Check qrels rows against the corpus and queries: unknown ids and queries without a relevant
    document are skipped and counted; returns query -> document -> grade for the usable queries."""
    qrels: dict[str, dict[str, int]] = {}
    for line, query_id, document_id, grade in rows:
        if query_id not in queries:
            issues.add("qrels_unknown_query", f"{where}:{line}: query id {query_id!r} is not in the queries; row skipped")
            continue
        if document_id not in corpus:
            issues.add("qrels_unknown_document", f"{where}:{line}: corpus id {document_id!r} is not in the corpus; row skipped")
            continue
        qrels.setdefault(query_id, {})[document_id] = grade
    for query_id in list(qrels):
        if not any(grade > 0 for grade in qrels[query_id].values()):
            issues.add("query_without_relevant", f"{where}: query {query_id!r} has no relevant document; query skipped")
            del qrels[query_id]
    if not qrels:
        raise DataFormatError(f"{where}: no query has a relevant document in the corpus; nothing to evaluate")
    return qrels
