"""How one search's tasks are shared among threads without waiting on a slow one: each task is handed out once,
and when none is left the calling thread runs again the tasks still in another thread's hands (a *backup*, as
MapReduce does with stragglers). The first result of a task counts; a later one is dropped. So the caller never
waits for a helper that its core's other work has descheduled: a search on 2 threads takes at most one task longer
than the caller alone would need for what is left, and a small search can use a second thread without risk."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


class TaskBoard:
    """Tasks ``0 .. n - 1`` of one search: workers :meth:`take` them, the caller also :meth:`backup` s the ones still
    running once none is left, and every finished result is :meth:`deliver` ed once, to be :meth:`drain` ed by the
    caller."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._next = 0
        self._done = [False] * count
        self._backed_up = [False] * count
        self._delivered: list[tuple[int, Any]] = []
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """The next task nobody has started, or None."""
        with self._lock:
            if self._next >= self._count:
                return None
            self._next += 1
            return self._next - 1

    def backup(self) -> int | None:
        """A task started by another worker and not yet finished (each once), or None: the caller's to run again."""
        with self._lock:
            for task in range(self._next):
                if not self._done[task] and not self._backed_up[task]:
                    self._backed_up[task] = True
                    return task
            return None

    def deliver(self, task: int, result: Any) -> bool:
        """Record a task's result if it is the first; returns whether it was."""
        with self._lock:
            if self._done[task]:
                return False
            self._done[task] = True
            self._delivered.append((task, result))
            return True

    def fail(self, error: BaseException) -> None:
        """A helper's error: raised by the caller's :meth:`drain` (the task it was running stays open for a backup)."""
        with self._lock:
            self._errors.append(error)

    def drain(self) -> list[tuple[int, Any]]:
        """The results delivered since the last drain, and raise a helper's error if there is one."""
        with self._lock:
            if self._errors:
                raise self._errors[0]
            delivered, self._delivered = self._delivered, []
            return delivered


def run_helper(board: TaskBoard, run: Callable[[int], Any]) -> None:
    """A helper thread's loop: take tasks until none is left, delivering each result (a late one is dropped)."""
    try:
        while (task := board.take()) is not None:
            board.deliver(task, run(task))
    except BaseException as error:  # noqa: BLE001 - handed to the caller, which raises it
        board.fail(error)


def run_as_caller(board: TaskBoard, run: Callable[[int], Any], consume: Callable[[Sequence[tuple[int, Any]]], None]) -> None:
    """The calling thread's loop: take tasks, then back up those still running elsewhere, until every task has a
    result; ``consume`` gets the results as they come (its own and the helpers')."""
    # when take and backup both give None, every task has been started and each is done or was backed up (and so
    # run to its end) by this thread: every task has a result
    while (task := board.take()) is not None or (task := board.backup()) is not None:
        board.deliver(task, run(task))
        consume(board.drain())
    consume(board.drain())
