"""The task board a search's threads share: every task's result exactly once, backups of stalled tasks by the
caller, late results dropped, a helper's error raised by the caller."""

from __future__ import annotations

import threading

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
    assert [board.backup(), board.backup(), board.backup()] == [0, 2, None]
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
