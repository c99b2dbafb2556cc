"""Whether a search runs on one thread or on the index's N, learned from the searches' own times: on an idle 2-core
machine N pays (a lone (1,1) query over 10,000 documents on torch's threads: torch.mv 0.49 -> 0.29 ms; a (16,64)
one shared with a helper: ~1.7x), on a busy one it can cost (three runnable threads on two cores: the caller itself
loses its core part of the time, and a parallel region waits for its slowest, possibly descheduled, thread). The
kernel's count of runnable threads (/proc/loadavg) cannot tell which: it also counts torch's own workers, which spin
for milliseconds after each parallel region. So each search size keeps the recent times of both choices, takes the
faster, and tries the other now and then to notice when the machine changes. The other choice's record ages: a try
replaces it with the try's own time, and a held choice that becomes slower than that record (the machine changed
since it was made) has the other tried at once."""

from __future__ import annotations

import statistics
import threading
from collections import deque

_RECENT = 5
"""Times kept per (size, choice): their median ignores a one-off stall (a page fault, a descheduled thread)."""
_FIRST_SAMPLES = 3
"""Each choice runs this many times (alternating) before either is preferred: the first run on torch's threads
pays for waking them. Later a try of the slower choice is one search, whose time replaces that choice's record (a
median of old times would not move: one new time among 4 old ones)."""
_SWITCH_BELOW = 0.9
"""Once a choice is held, the other takes over only when its recent median is below this fraction of the held one's:
two close medians on a noisy machine would otherwise swap back and forth (under load, a lone (16,64) search flipped
to 2 threads on a lucky run of samples and then took 39-105 ms against 42-45 on one), and each swap runs searches
on the worse choice until its median turns again."""
_FIRST_TRY = 8
"""Searches of a size between tries of the slower choice at first, and again whenever the faster one changes."""
_LAST_TRY = 512
"""The longest gap between tries: each try that confirms the faster choice doubles the gap up to this, so a busy
machine pays for few slow tries (one in 512 at most, once settled), and a machine that became idle is noticed within
512 searches of a size."""


class ThreadChoice:
    """Per search size (document vectors read and query vectors, each to a power of two, the number of tasks it is
    cut into, and whether helpers share them): the recent seconds of searches run on one thread and on ``threads``,
    and which to run next."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[tuple[int, ...], deque[float]] = {}
        self._tries: dict[tuple[int, ...], _Tries] = {}

    @staticmethod
    def size(document_vectors: int, query_vectors: int, tasks: int = 1, helpers: bool = False) -> tuple[int, ...]:
        """The size class of a search: bit lengths of its document and query vector counts, its task count, and
        whether its tasks go to helper threads (else the caller runs them, on torch's own threads or one)."""
        return document_vectors.bit_length(), query_vectors.bit_length(), tasks, int(helpers)

    def choose(self, size: tuple[int, ...], threads: int, first: int = 1) -> int:
        """1 or ``threads`` for the next search of ``size``: each choice runs _FIRST_SAMPLES times first
        (alternating, ``first`` first), then the faster of their recent medians (a held choice gives way only to
        one clearly faster: _SWITCH_BELOW), except now and then (every 8th search, the gap doubling up to 512 while
        the faster choice stays the same) the other, whose record becomes that search's time. When the held
        choice's recent median exceeds the other's, which was recorded before the machine changed (quiet then,
        loaded now), the other is measured afresh at once (when it falls behind, not while it stays behind)."""
        if threads <= 1:
            return 1
        second = 1 if first == threads else threads
        with self._lock:
            sampled = self._seconds.get((*size, first), ()), self._seconds.get((*size, second), ())
            if size not in self._tries and min(map(len, sampled)) < _FIRST_SAMPLES:
                return first if len(sampled[0]) <= len(sampled[1]) else second
            if not all(sampled):  # a try is running (another search's): its choice has no record until it ends
                return first if sampled[0] else second
            seconds = {1: statistics.median(self._seconds[(*size, 1)]),
                       threads: statistics.median(self._seconds[(*size, threads)])}
            tries = self._tries.setdefault(size, _Tries())
            held = tries.faster if tries.faster in seconds else min(seconds, key=seconds.get)
            challenger = 1 if held == threads else threads
            was_ahead, tries.ahead = tries.ahead, seconds[held] <= seconds[challenger]
            if was_ahead and not tries.ahead:  # the held choice just fell behind the other's (older) record
                return self._measure_afresh(size, challenger)
            faster = challenger if seconds[challenger] < _SWITCH_BELOW * seconds[held] else held
            other = 1 if faster == threads else threads
            return self._measure_afresh(size, other) if tries.due(faster) else faster

    def _measure_afresh(self, size: tuple[int, ...], choice: int) -> int:
        """Drop ``choice``'s times for ``size`` (lock held), so the time of the search about to run on it is its
        record; returns it, to run now."""
        self._seconds[(*size, choice)].clear()
        return choice

    def record(self, size: tuple[int, ...], threads: int, seconds: float) -> None:
        """A search of ``size`` run on ``threads`` threads took ``seconds``."""
        with self._lock:
            self._seconds.setdefault((*size, threads), deque(maxlen=_RECENT)).append(seconds)


class _Tries:
    """When one size next tries the slower choice."""

    def __init__(self) -> None:
        self.faster: int | None = None
        self.gap = _FIRST_TRY
        self.left = _FIRST_TRY
        self.ahead: bool | None = None
        """Whether the held choice's median was at or below the other's at the last comparison (None: none yet)."""

    def due(self, faster: int) -> bool:
        """Count a search whose faster choice is ``faster``; whether it is the one to try the other."""
        if faster != self.faster:
            self.faster, self.gap, self.left = faster, _FIRST_TRY, _FIRST_TRY
        self.left -= 1
        if self.left > 0:
            return False
        self.gap = min(_LAST_TRY, 2 * self.gap)
        self.left = self.gap
        return True


THREAD_CHOICE = ThreadChoice()
"""The process's record (searches on one machine share what they learn about its load)."""
