"""Bounded thread pools, one set per worker process, for DNS-bound work that may overlap.

Two users: end-of-message runs a message's independent checks side by side
(`CHECKS.run_all`), and the milter adapter warms the DNS cache while the SMTP
transaction goes on (`PREFETCH.try_submit`, see prefetch.py). Neither ever queues
without bound: `try_submit` refuses when every thread is busy, and `run_all` then runs
the call in the caller's thread. Threads do not survive fork(), so the executor is made
in the process that first uses it.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Pool:
    """At most *threads* calls at once; a call beyond that is refused, never queued."""

    def __init__(self, threads: int, name: str) -> None:
        self.threads = threads
        self.name = name
        self._lock = threading.Lock()
        self._pid = -1
        self._executor: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(threads)

    def _get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix=self.name)
                self._slots = threading.BoundedSemaphore(self.threads)
                self._pid = os.getpid()
            return self._executor

    def try_submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any] | None:
        """*fn(*args)* on a free thread of this pool, or None when all are busy."""
        executor = self._get()
        slots = self._slots
        if not slots.acquire(blocking=False):
            return None
        try:
            future = executor.submit(fn, *args)
        except RuntimeError:      # interpreter shutting down
            slots.release()
            return None
        future.add_done_callback(lambda _f: slots.release())
        return future

    def run_all(self, calls: Mapping[str, Callable[[], Any]], inline: frozenset[str] | set[str] = frozenset()
                ) -> dict[str, Any]:
        """Every call's result by name, the calls run side by side: all but the last on
        free threads of this pool, the rest in this thread. Calls named in *inline* run in
        this thread too (one after another: work that only waits for answers already in
        flight gains nothing from a thread but its hand-off). Waits for every call before
        returning or raising; an exception is raised as the call would have raised it
        (the first in *calls* order)."""
        names = list(calls)
        spread = [name for name in names if name not in inline]
        futures: dict[str, Future[Any]] = {}
        for name in spread[:-1] if len(spread) == len(names) else spread:
            future = self.try_submit(calls[name])
            if future is not None:
                futures[name] = future
        results: dict[str, Any] = {}
        errors: dict[str, BaseException] = {}
        for name in names:
            if name in futures:
                continue
            try:
                results[name] = calls[name]()
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the others finished
                errors[name] = exc
        for name, future in futures.items():
            failure = future.exception()
            if failure is not None:
                errors[name] = failure
            else:
                results[name] = future.result()
        for name in names:
            if name in errors:
                raise errors[name]
        return results


# End-of-message checks of the messages in flight in this worker (a few per message).
CHECKS = Pool(32, "checks")
# DNS warm-ups started before end-of-message; skipped when all threads are busy.
PREFETCH = Pool(32, "prefetch")
