"""How one search's tasks are shared among threads without waiting on a slow one: each task is handed out once,
and when none is left the calling thread runs again the tasks still in another thread's hands (a *backup*, as
MapReduce does with stragglers). The first result of a task counts; a later one is dropped. So the caller does not
wait long for a helper that its core's other work has descheduled, and a small search can use a second thread
without much risk.

A backup is not free: once started the caller runs it to its end, even when the helper finishes first. So the
caller backs a task up only when its backup would finish before the helper is expected to (from the helper's own
task times in this search, else the caller's), or once the helper has taken :data:`PATIENCE` times that long;
otherwise it waits. Backing up at once cost a lone (2,4) query over 100,000 documents on 2 threads a quarter of its
time (the last task run twice: 20 instead of 15 ms)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

PATIENCE = 1.5
"""How many times its expected duration a helper's task may run before the caller backs it up anyway."""


class TaskBoard:
    """Tasks ``0 .. n - 1`` of one search: workers :meth:`take` them, the caller also backs up the ones still
    running once none is left (:meth:`straggler`), and every finished result is
    :meth:`deliver` ed once, to be :meth:`drain` ed by the caller. The board times each task, by the thread that ran
    it, to judge when a backup pays."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._next = 0
        self._done = [False] * count
        self._backed_up = [False] * count
        self._delivered: list[tuple[int, Any]] = []
        self._errors: list[BaseException] = []
        self._started = [0.0] * count
        self._runner = [0] * count
        self._running: dict[int, tuple[int, float]] = {}  # thread -> (task, start) of its run in progress
        self._seconds: dict[int, list[float]] = {}  # thread -> durations of the tasks it finished
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def take(self) -> int | None:
        """The next task nobody has started, or None."""
        with self._lock:
            if self._next >= self._count:
                return None
            task, self._next = self._next, self._next + 1
            self._started[task], self._runner[task] = time.perf_counter(), threading.get_ident()
            self._running[threading.get_ident()] = (task, self._started[task])
            return task

    def straggler(self) -> int | None:
        """The next task started by another worker for the caller to run again, or None once every started task is
        done (or backed up) or a helper failed. A running task is backed up when the backup would finish before the
        task is expected to (its runner's median task time so far, else the caller's), or once it has run
        :data:`PATIENCE` times that long; until then the caller waits for it."""
        me = threading.get_ident()
        with self._changed:
            while not self._errors:
                now, wake = time.perf_counter(), None
                own = self._typical(me)
                for task in range(self._next):
                    if self._done[task] or self._backed_up[task]:
                        continue
                    expected = self._typical(self._runner[task]) or own
                    if own is None or expected is None or now + own < self._started[task] + expected:
                        return self._back_up(task)
                    deadline = self._started[task] + PATIENCE * expected
                    if now >= deadline:
                        return self._back_up(task)
                    wake = deadline if wake is None else min(wake, deadline)
                if wake is None:
                    return None
                self._changed.wait(timeout=wake - now)
            return None

    def _back_up(self, task: int) -> int:
        """Mark ``task`` backed up by the calling thread (lock held) and return it."""
        self._backed_up[task] = True
        self._running[threading.get_ident()] = (task, time.perf_counter())
        return task

    def _typical(self, thread: int) -> float | None:
        """The median seconds of ``thread``'s finished tasks in this search (lock held), None before its first."""
        seconds = self._seconds.get(thread)
        return statistics.median(seconds) if seconds else None

    def deliver(self, task: int, result: Any) -> bool:
        """Record a task's result if it is the first; returns whether it was. The delivering thread's time on it
        counts as one of its task times."""
        with self._changed:
            me = threading.get_ident()
            running = self._running.pop(me, None)
            if running is not None and running[0] == task:
                self._seconds.setdefault(me, []).append(time.perf_counter() - running[1])
            self._changed.notify_all()
            if self._done[task]:
                return False
            self._done[task] = True
            self._delivered.append((task, result))
            return True

    def fail(self, error: BaseException) -> None:
        """A helper's error: raised by the caller's :meth:`drain` (the task it was running stays open for a backup)."""
        with self._changed:
            self._errors.append(error)
            self._changed.notify_all()

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
    """The calling thread's loop: take tasks, then back up those still running elsewhere when that pays
    (:meth:`TaskBoard.straggler`), until every task has a result; ``consume`` gets the results as they come (its
    own and the helpers')."""
    # when take and straggler both give None, every task has been started and each is done or was backed up (and
    # so run to its end) by this thread: every task has a result (or a helper failed, and drain raises its error)
    while (task := board.take()) is not None or (task := board.straggler()) is not None:
        board.deliver(task, run(task))
        consume(board.drain())
    consume(board.drain())
