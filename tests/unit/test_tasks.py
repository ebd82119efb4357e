"""tasks.Pool: bounded, never queues, and run_all gives every call's result or error."""
from __future__ import annotations

import threading

import pytest

from authmilter.tasks import Pool


def test_a_full_pool_refuses_instead_of_queueing():
    pool = Pool(2, "t")
    gate = threading.Event()
    running = [pool.try_submit(gate.wait, 30) for _ in range(2)]
    assert all(f is not None for f in running)
    try:
        assert pool.try_submit(lambda: 1) is None          # both threads busy: skipped
    finally:
        gate.set()
    for f in running:
        assert f is not None and f.result(30) is True
    again = pool.try_submit(lambda: 7)                       # slots come back when calls end
    assert again is not None and again.result(30) == 7


def test_run_all_uses_the_caller_thread_when_the_pool_is_full():
    pool = Pool(1, "t")
    gate = threading.Event()
    blocker = pool.try_submit(gate.wait, 30)
    try:
        me = threading.get_ident()
        done = pool.run_all({"a": threading.get_ident, "b": threading.get_ident})
        assert done == {"a": me, "b": me}
    finally:
        gate.set()
    assert blocker is not None and blocker.result(30)


def test_run_all_runs_calls_side_by_side_and_waits_for_all():
    pool = Pool(4, "t")
    started = threading.Barrier(3, timeout=30)     # only passes when three calls run at once

    def call(n: int):  # type: ignore[no-untyped-def]
        return lambda: (started.wait(), n)[1]

    assert pool.run_all({"x": call(1), "y": call(2), "z": call(3)}) == {"x": 1, "y": 2, "z": 3}


def test_run_all_raises_the_first_error_after_every_call_ended():
    pool = Pool(4, "t")
    finished = threading.Event()

    def slow() -> int:
        finished.wait(0.5)
        finished.set()
        return 1

    def boom() -> int:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        pool.run_all({"slow": slow, "boom": boom, "last": lambda: 3})
    assert finished.is_set()


def test_run_all_runs_inline_calls_in_the_caller_thread_and_the_rest_on_the_pool():
    """inline: checks that only wait for answers already in flight cost no hand-off;
    every other call goes to a pool thread (the last one too, as this thread is busy)."""
    pool = Pool(4, "t")
    me = threading.get_ident()
    done = pool.run_all({"spf": threading.get_ident, "dkim": threading.get_ident,
                         "dmarc": threading.get_ident, "arc": threading.get_ident},
                        inline={"spf", "dmarc"})
    assert done["spf"] == me and done["dmarc"] == me
    assert done["dkim"] != me and done["arc"] != me


def test_run_all_all_inline_is_sequential_in_the_caller_thread():
    pool = Pool(4, "t")
    order: list[str] = []
    me = threading.get_ident()

    def call(name: str):
        def run() -> int:
            order.append(name)
            return threading.get_ident()
        return run

    done = pool.run_all({n: call(n) for n in ("a", "b", "c")}, inline={"a", "b", "c"})
    assert order == ["a", "b", "c"] and set(done.values()) == {me}
