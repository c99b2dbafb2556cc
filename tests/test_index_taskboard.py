"""The task board a search's threads share: every task's result exactly once, backups of stalled tasks by the
caller, late results dropped, a helper's error raised by the caller."""

from __future__ import annotations

import threading
import time

import pytest

from metaembed.index.taskboard import TaskBoard, run_as_caller, run_helper


def test_the_caller_backs_up_a_stalled_task_and_a_late_result_is_dropped():
    board = TaskBoard(5)
    took, release, late = threading.Event(), threading.Event(), []

    def stalled(task):
        took.set()
        release.wait(timeout=60)
        return ("helper", task)

    helper_task = board.take()
    helper = threading.Thread(target=lambda: late.append(board.deliver(helper_task, stalled(helper_task))))
    helper.start()
    took.wait(timeout=60)
    consumed = []
    run_as_caller(board, lambda task: ("caller", task), consumed.extend)
    assert sorted(task for task, _ in consumed) == [0, 1, 2, 3, 4]  # every task once
    assert dict(consumed)[helper_task] == ("caller", helper_task)  # the caller's backup, not waiting
    release.set()
    helper.join()
    assert late == [False] and board.drain() == []  # the helper's late result was dropped


def test_each_task_is_taken_once_and_backed_up_at_most_once():
    board = TaskBoard(3)
    assert [board.take() for _ in range(4)] == [0, 1, 2, None]
    assert board.deliver(1, "one") and not board.deliver(1, "again")
    # no task time known yet: the unfinished ones are backed up at once, each once
    assert [board.straggler(), board.straggler(), board.straggler()] == [0, 2, None]
    assert board.drain() == [(1, "one")] and board.drain() == []


def test_a_helpers_error_is_raised_by_the_caller():
    board = TaskBoard(4)

    def broken(task):
        raise OSError(5, f"Input/output error reading task {task}")

    helper = threading.Thread(target=run_helper, args=(board, broken))
    helper.start()
    helper.join()  # it took task 0 and failed; the task stays open
    with pytest.raises(OSError, match="Input/output error reading task 0"):
        run_as_caller(board, lambda task: task, lambda results: None)


def test_helpers_and_caller_together_consume_every_result_once():
    board = TaskBoard(200)
    helpers = [threading.Thread(target=run_helper, args=(board, lambda task: task * 2)) for _ in range(3)]
    for helper in helpers:
        helper.start()
    consumed = []
    run_as_caller(board, lambda task: task * 2, consumed.extend)
    for helper in helpers:
        helper.join()
    assert sorted(consumed) == [(task, task * 2) for task in range(200)]


def test_the_caller_waits_for_a_helper_expected_to_finish_before_a_backup_would():
    """Task 1 is started by the helper 0.2 s after the caller's task 0, and both take 0.4 s: when the caller is done
    (0.4 s) the helper is expected at 0.6 s, before a backup would end (0.8 s), so the caller waits and no task runs
    twice (the old rule backed task 1 up at once: three runs)."""
    board = TaskBoard(2)
    runs = []

    def run(task):
        runs.append((threading.current_thread().name, task))
        time.sleep(0.4)
        return task

    def helper():
        time.sleep(0.2)
        run_helper(board, run)

    thread = threading.Thread(target=helper, name="helper")
    thread.start()
    consumed = []
    run_as_caller(board, run, consumed.extend)
    thread.join()
    assert sorted(consumed) == [(0, 0), (1, 1)]
    assert sorted(runs) == [("MainThread", 0), ("helper", 1)]


def test_a_helper_much_slower_than_expected_is_backed_up_after_patience():
    """The helper's first task takes as long as the caller's, its second stalls: the caller waits at most PATIENCE
    times the helper's usual time, then backs the stalled task up and finishes without it."""
    board = TaskBoard(3)
    second_taken, release, late = threading.Event(), threading.Event(), []

    def helper():
        first = board.take()
        time.sleep(0.1)
        board.deliver(first, ("helper", first))
        second = board.take()
        second_taken.set()
        release.wait(timeout=60)
        late.append(board.deliver(second, ("helper", second)))

    thread = threading.Thread(target=helper)
    thread.start()
    second_taken.wait(timeout=60)
    consumed = []

    def run(task):
        time.sleep(0.1)
        return ("caller", task)

    run_as_caller(board, run, consumed.extend)
    release.set()
    thread.join()
    assert dict(consumed) == {0: ("helper", 0), 1: ("caller", 1), 2: ("caller", 2)}
    assert late == [False]  # the stalled helper's result came after the backup's and was dropped
