"""Per-query results on disk, so other tools can re-score them: a TREC run file per budget and per baseline,
the judgments that were used (TREC qrels), and every metric of every query (``per_query.jsonl``).

Layout under the output folder (one task; with several, each task's files go in ``runs/<task>/``)::

    runs/budget-1x1.trec   runs/budget-16x64.trec   runs/baseline-backbone.trec   runs/qrels.trec
    per_query.jsonl        {"task", "system", "query_id", "ndcg@10": ..., ...} per line

A run line is ``query_id Q0 doc_id rank score tag`` (the 6-column format of trec_eval, pytrec_eval, ranx),
best first; equal scores are ranked by document id, descending, which is trec_eval's own rule, so
``trec_eval -m ndcg_cut.10 runs/qrels.trec runs/budget-4x8.trec`` gives the means in results.json.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor

RUNS_FOLDER = "runs"
PER_QUERY_FILE = "per_query.jsonl"


def run_file_stem(system: str) -> str:
    """A file-name stem for a system: ``"4,8"`` -> ``budget-4x8``, a baseline name -> ``baseline-<name>``."""
    if re.fullmatch(r"\d+,\d+", system):
        return "budget-" + system.replace(",", "x")
    return "baseline-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", system).strip("_.")[:60] or "model")


class RunWriter:
    """Writes each system's TREC run and per-query metrics as the sweep scores them (nothing held in memory)."""

    def __init__(self, out_dir: str | Path, several_tasks: bool) -> None:
        self.out_dir = Path(out_dir)
        self.several_tasks = several_tasks
        self.files: dict[str, dict[str, str]] = {}
        """task -> system (or ``"qrels"``) -> path relative to the output folder."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.per_query_path = self.out_dir / PER_QUERY_FILE
        self.per_query_path.write_text("", encoding="utf-8")

    def _path(self, task: str, stem: str) -> Path:
        folder = self.out_dir / RUNS_FOLDER / (re.sub(r"[^A-Za-z0-9._-]+", "_", task) if self.several_tasks else "")
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{stem}.trec"

    def _record(self, task: str, key: str, path: Path) -> None:
        self.files.setdefault(task, {})[key] = str(path.relative_to(self.out_dir))

    def write_qrels(self, task: str, qrels: Mapping[str, Mapping[str, int]]) -> Path:
        """``runs/qrels.trec``: the judgments every metric used (queries that could not be scored are left out)."""
        path = self._path(task, "qrels")
        lines = [f"{query} 0 {doc} {grade}\n" for query, judged in qrels.items() for doc, grade in judged.items()]
        path.write_text("".join(lines), encoding="utf-8")
        self._record(task, "qrels", path)
        return path

    def write_run(self, task: str, system: str, query_ids: Sequence[str], document_ids: Sequence[str],
                  columns: Tensor, values: Tensor) -> Path:
        """One system's ranking: ``columns`` (n_q, k) index ``document_ids``, ``values`` are their scores."""
        path = self._path(task, run_file_stem(system))
        tag = "metaembed-" + run_file_stem(system)
        with path.open("w", encoding="utf-8") as handle:
            for query_id, row, scores in zip(query_ids, columns.tolist(), values.tolist()):
                handle.writelines(f"{query_id} Q0 {document_ids[column]} {rank} {score!r} {tag}\n"
                                  for rank, (column, score) in enumerate(zip(row, scores), start=1))
        self._record(task, system, path)
        return path

    def write_per_query(self, task: str, system: str, by_query: Mapping[str, Mapping[str, float]]) -> None:
        """Append one line per query with every metric of ``system``."""
        with self.per_query_path.open("a", encoding="utf-8") as handle:
            for query_id, values in by_query.items():
                handle.write(json.dumps({"task": task, "system": system, "query_id": query_id, **values}) + "\n")
