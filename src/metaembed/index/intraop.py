"""Whether a search too small to share among worker threads runs on torch's own (intra-op) threads, learned from the
searches' own times: on an idle 2-core machine it pays (a lone (1,1) query over 10,000 documents: torch.mv 0.49 ->
0.29 ms), on a busy one it costs (a parallel region waits for its slowest, possibly descheduled, thread). The kernel's count
of runnable threads (/proc/loadavg) cannot tell which: it also counts torch's own workers, which spin for
milliseconds after each parallel region. So each search size keeps the recent times of both choices, takes the
faster, and tries the other now and then to notice when the machine changes."""

from __future__ import annotations

import statistics
import threading
from collections import deque

_RECENT = 5
"""Times kept per (size, choice): their median ignores a one-off stall (a page fault, a descheduled thread)."""
_FIRST_SAMPLES = 3
"""Each choice runs this many times (alternating) before either is preferred: the first run on torch's threads
pays for waking them."""
_FIRST_TRY = 8
"""Searches of a size between tries of the slower choice at first, and again whenever the faster one changes."""
_LAST_TRY = 512
"""The longest gap between tries: each try that confirms the faster choice doubles the gap up to this, so a busy
machine pays for few slow tries (one in 512 at most, once settled), and a machine that became idle is noticed within
512 searches of a size."""


class IntraOpThreads:
    """Per search size (document vectors read and query vectors, each to a power of two, and the number of tasks
    it is cut into, e.g. one per segment): the recent seconds of searches run on one torch thread and on
    ``threads``, and which to run next."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[tuple[int, ...], deque[float]] = {}
        self._tries: dict[tuple[int, int, int], _Tries] = {}

    @staticmethod
    def size(document_vectors: int, query_vectors: int, tasks: int = 1) -> tuple[int, int, int]:
        """The size class of a search: bit lengths of its document and query vector counts, and its task count."""
        return document_vectors.bit_length(), query_vectors.bit_length(), tasks

    def choose(self, size: tuple[int, int, int], threads: int) -> int:
        """1 or ``threads`` for the next search of ``size``: each choice runs _FIRST_SAMPLES times first
        (alternating), then the faster of their recent medians, except now and then (every 8th search, the gap
        doubling up to 512 while the faster choice stays the same) the other."""
        if threads <= 1:
            return 1
        with self._lock:
            one, many = self._seconds.get((*size, 1), ()), self._seconds.get((*size, threads), ())
            if min(len(one), len(many)) < _FIRST_SAMPLES:
                return 1 if len(one) <= len(many) else threads
            faster, other = (threads, 1) if statistics.median(many) < statistics.median(one) else (1, threads)
            tries = self._tries.setdefault(size, _Tries())
            return other if tries.due(faster) else faster

    def record(self, size: tuple[int, int, int], threads: int, seconds: float) -> None:
        """A search of ``size`` run on ``threads`` torch threads took ``seconds``."""
        with self._lock:
            self._seconds.setdefault((*size, threads), deque(maxlen=_RECENT)).append(seconds)


class _Tries:
    """When one size next tries the slower choice."""

    def __init__(self) -> None:
        self.faster: int | None = None
        self.gap = _FIRST_TRY
        self.left = _FIRST_TRY

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


INTRA_OP_THREADS = IntraOpThreads()
"""The process's record (searches on one machine share what they learn about its load)."""
