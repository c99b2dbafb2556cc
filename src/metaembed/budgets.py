"""Budgets: how many query and document vectors (r_q, r_c) a score uses, always a prefix of the encoding."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

PAPER_BUDGETS: tuple[tuple[int, int], ...] = ((1, 1), (2, 4), (4, 8), (8, 16), (16, 64))
"""The nested (r_q, r_c) groups of the paper's Matryoshka Multi-Vector Retrieval training."""


class Budget(NamedTuple):
    """A retrieval budget: the first ``query`` query vectors against the first ``document`` document vectors."""

    query: int
    document: int

    def __str__(self) -> str:
        return f"{self.query},{self.document}"

    @classmethod
    def parse(cls, value: str | Iterable[int] | "Budget") -> "Budget":
        """Read ``"4,8"``, ``"4x8"``, ``(4, 8)`` or a Budget; both parts must be positive integers."""
        if isinstance(value, Budget):
            return value
        if isinstance(value, str):
            parts = value.replace("x", ",").replace("(", "").replace(")", "").split(",")
            try:
                numbers = [int(part.strip()) for part in parts]
            except ValueError:
                raise ValueError(f"budget {value!r} is not of the form 'r_q,r_c' (e.g. '4,8')") from None
        else:
            numbers = list(value)
        if len(numbers) != 2:
            raise ValueError(f"budget {value!r} must have two parts, r_q and r_c (e.g. '4,8')")
        budget = cls(int(numbers[0]), int(numbers[1]))
        if budget.query < 1 or budget.document < 1:
            raise ValueError(f"budget {value!r}: both r_q and r_c must be at least 1")
        return budget


def split_budget_list(text: str) -> list[str]:
    """The budgets of a list as written on the command line, ``"1,1 2,4"`` or ``"1,1;2,4"`` -> ``["1,1", "2,4"]``:
    the one spelling of a budget list (``metaembed eval --budget``, ``metaembed train --groups``)."""
    return text.replace(";", " ").split()


def check_vector_budget(budget: int | None, available: int, side: str, what: str = "meta tokens") -> int:
    """Resolve an optional per-side budget against how many vectors exist, with a clear error when it cannot be met."""
    if budget is None:
        return available
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise ValueError(
            f"{side} budget must be a positive int (the number of {side} vectors), got {budget!r}"
            + (" — pass r_q to encode_query and r_c to encode_document" if isinstance(budget, (tuple, list)) else "")
        )
    if budget < 1:
        raise ValueError(f"{side} budget must be at least 1, got {budget}")
    if budget > available:
        raise ValueError(f"{side} budget {budget} is larger than the {available} {side} {what} available")
    return budget


def clip_budgets(
    budgets: Iterable[tuple[int, int]], max_query: int, max_document: int
) -> list[Budget]:
    """Clip each budget to what a model has, dropping the duplicates clipping creates (order kept)."""
    clipped: list[Budget] = []
    for r_q, r_c in budgets:
        budget = Budget(min(r_q, max_query), min(r_c, max_document))
        if budget not in clipped:
            clipped.append(budget)
    return clipped


AUTO = "auto"
"""The budget value that asks for per-query test-time scaling (see :mod:`metaembed.index.adaptive`)."""


def is_auto(value: object) -> bool:
    """Whether a budget value is ``"auto"`` (any case, surrounding spaces ignored)."""
    return isinstance(value, str) and value.strip().lower() == AUTO


def parse_budget_or_auto(value: str | Iterable[int] | Budget) -> Budget | str:
    """``"auto"`` as :data:`AUTO`, anything else through :meth:`Budget.parse`, with an error that names both forms."""
    if is_auto(value):
        return AUTO
    try:
        return Budget.parse(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{error}; or 'auto' (per query: (1,1) first, more only where the top two are close)") from None
