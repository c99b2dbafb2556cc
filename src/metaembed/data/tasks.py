"""What an evaluation reader produces: retrieval tasks of :class:`~metaembed.data.item.Item` over a shared corpus,
candidate-list tasks (MMEB), and the record of everything that was skipped and why."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Union

from metaembed.data.item import Item


@dataclass
class DataIssues:
    """Problems found in the data, each counted by kind with a message naming the file and line or id.

    Nothing is dropped silently: every skip is counted here, printed once as a warning (up to
    ``print_limit`` per kind), and written to results.json.
    """

    counts: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    print_limit: int = 5
    quiet: bool = False

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.messages) < 1000:
            self.messages.append(message)
        if not self.quiet and self.counts[kind] <= self.print_limit:
            print(f"warning: {message}", file=sys.stderr)
            if self.counts[kind] == self.print_limit:
                print(f"warning: further '{kind}' problems are counted but not printed", file=sys.stderr)

    def merge(self, other: "DataIssues") -> None:
        for kind, count in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + count
        self.messages.extend(other.messages[: max(0, 1000 - len(self.messages))])

    def as_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "messages": list(self.messages)}


@dataclass
class RetrievalTask:
    """Queries searched against one shared corpus, judged by graded qrels (BEIR and ViDoRe)."""

    name: str
    corpus: dict[str, Item]
    queries: dict[str, Item]
    qrels: dict[str, dict[str, int]]
    source: str
    headline: str = "ndcg@10"
    issues: DataIssues = field(default_factory=DataIssues)
    query_prompt: str | None = None
    document_prompt: str | None = None

    @property
    def kind(self) -> str:
        return "retrieval"


@dataclass
class CandidateTask:
    """Each query ranks its own candidate list whose first entry is the positive (MMEB); metric: precision@1."""

    name: str
    queries: list[Item]
    candidates: list[list[Item]]
    source: str
    headline: str = "p@1"
    issues: DataIssues = field(default_factory=DataIssues)

    @property
    def kind(self) -> str:
        return "candidates"


Task = Union[RetrievalTask, CandidateTask]
