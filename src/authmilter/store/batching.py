"""`BatchingStore`: the `Store` a worker uses, over one backend per connection.

Records: `submit` puts them on a bounded per-process queue and returns at once; a
writer thread takes them off in batches (``batch_size``, or whatever arrived within
``flush_interval_s`` of the first) and commits each batch in one transaction. When the
database is unreachable the thread keeps its batch and retries with backoff while the
queue fills; once full, `submit` drops records and says so. The reply to the MTA never
waits for any of this.

Journal (``journal_dir``): before a record is queued it is appended to this worker's
journal file (store.journal), so a worker killed with records still queued loses
none of them: the next worker's writer thread replays dead workers' journals (`start`).
Every row carries a unique ``uid`` and inserts ignore a uid already present, which makes
replaying a line twice harmless.

Keyed state: `get`/`put` run in the caller's thread on a second connection guarded by
a lock, within ``timeout_ms``. After a failure, reads fail fast for `RETRY_S` instead
of paying a connection timeout per message.

Fork: connections and threads belong to the process that made them. Every entry point
compares ``os.getpid()`` with the owner's and, in a new process, starts over with
fresh connections; the inherited ones are kept referenced but never touched (closing
a psycopg connection in a child would end the parent's session on the shared socket).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..records import MessageRecord
from . import journal as jnl
from .base import Backend, StoreError, StoreStatus
from .journal import Entry, Journal
from .rows import to_row
from .schema import MIGRATIONS, Migration

log = logging.getLogger("authmilter.store")

RETRY_S = 1.0            # after a failed read, reads fail fast this long
WRITE_BACKOFF_MAX_S = 30.0
PURGE_INTERVAL_S = 60.0  # expired keyed state is deleted this often (reads ignore it anyway)
WARN_INTERVAL_S = 60.0   # at most one "records dropped" / "write failed" warning per interval
CLOSE_FLUSH_S = 5.0

_ABANDONED: list[object] = []   # other processes' connections: referenced, never closed
_INSTANCES: weakref.WeakSet[BatchingStore] = weakref.WeakSet()
# Tests only: a file whose existence makes the next replay stop after its first batch
# (and remove the file), so a test can kill a worker in the middle of a replay.
_TEST_REPLAY_PAUSE = os.environ.get("AUTHMILTER_TEST_REPLAY_PAUSE", "")


@dataclass(eq=False)
class _Marker:
    """A flush (or stop) request travelling through the queue behind the records."""

    stop: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    error: str = ""


class BatchingStore:
    def __init__(self, connect: Callable[[float], Backend], name: str, *, timeout_s: float = 0.2,
                 batch_size: int = 100, flush_interval_s: float = 1.0, queue_size: int = 10000,
                 write_timeout_s: float = 5.0, keep_records_s: float = 0.0,
                 migrations: tuple[Migration, ...] = MIGRATIONS, journal_dir: str = "",
                 journal_fsync: bool = False) -> None:
        self.name = name                     # redacted URL, for logs
        self._connect = connect              # timeout_s -> a new Backend (StoreError on failure)
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.queue_size = queue_size
        self.write_timeout_s = write_timeout_s
        self.keep_records_s = keep_records_s   # 0: records are kept until someone deletes them
        self.migrations = migrations
        self.journal_dir = journal_dir       # "": records live in memory only until written
        self.journal_fsync = journal_fsync
        self._journal: Journal | None = None
        self._guard = threading.Lock()       # writer start
        self._fresh_process()
        _INSTANCES.add(self)

    def _fresh_process(self) -> None:
        self._pid = os.getpid()
        if self._journal is not None:
            self._journal.abandon()
        self._journal = None
        self._token = os.urandom(16).hex()       # uid = token-sequence: unique across processes and hosts
        self._seq = itertools.count(1)
        self._replay_pending = False
        self.replayed = 0                    # records replayed from dead workers' journals
        self._queue: queue.Queue[Entry | _Marker] = queue.Queue(self.queue_size)
        self._writer: threading.Thread | None = None
        self._closed = False
        self._reader: Backend | None = None
        self._rlock = threading.Lock()
        self._retry_at = 0.0
        self._last_error = ""
        self._migrated = False
        self.dropped = 0                     # records lost: queue full or unwritable
        self.written = 0
        self._write_dropped = 0              # of those, dropped by the writer (see flush)
        self._drop_error = ""
        self._warned_at = 0.0

    def _after_fork(self) -> None:
        """In a new process: forget the parent's connections and threads (see above)."""
        if self._reader is not None:
            _ABANDONED.append(self._reader)
        self._guard = threading.Lock()
        self._fresh_process()

    def _own(self) -> None:
        # os.register_at_fork covers os.fork(); this covers any other way a process
        # could be copied (cheap: one getpid per call).
        if self._pid != os.getpid():
            self._after_fork()

    # -- schema ----------------------------------------------------------------------------------
    def init(self) -> int:
        """Create or migrate the schema on a short-lived connection; returns its version.

        Called by ``authmilter store init`` and by the master at start-up, before it forks:
        nothing stays open afterwards.
        """
        backend = self._connect(max(self.timeout_s, self.write_timeout_s))
        try:
            return self._migrate(backend)
        finally:
            backend.close()

    def _migrate(self, backend: Backend) -> int:
        try:
            return backend.migrate(self.migrations)
        except backend.errors as exc:
            raise StoreError(f"{self.name}: schema migration failed: {exc}",
                             transient=backend.is_transient(exc)) from None

    # -- records ---------------------------------------------------------------------------------
    def start(self) -> None:
        """A worker's start: open its journal and start the writer thread, which first
        replays the journals of dead workers (their records were promised already)."""
        self._own()
        if self._closed:
            return
        if self.journal_dir:
            self._open_journal()
            self._replay_pending = True
        self._start_writer()

    def _open_journal(self) -> Journal | None:
        if self._journal is None:
            with self._guard:
                if self._journal is None:
                    try:
                        os.makedirs(self.journal_dir, mode=0o700, exist_ok=True)
                        self._journal = Journal(self.journal_dir, self.journal_fsync)
                    except OSError as exc:
                        self._warn(logging.ERROR, f"store {self.name}: cannot open a journal in "
                                                  f"{self.journal_dir}: {exc}")
        return self._journal

    def submit(self, records: Iterable[MessageRecord]) -> None:
        self._own()
        if self._closed:
            raise StoreError("store closed")
        self._start_writer()
        journal = self._open_journal() if self.journal_dir else None
        if journal is None:
            # Without a journal the writer thread converts (off the reply path).
            entries = [Entry(r, 0) for r in records]
        else:
            rows = [self._row(r) for r in records]
            entries = [Entry(row, 0) for row in rows]
            try:
                entries = journal.append(rows)
            except OSError as exc:   # a full disk: the records still go to the queue
                self._warn(logging.ERROR, f"store {self.name}: journal write failed: {exc}")
        lost = 0
        for entry in entries:
            try:
                self._queue.put_nowait(entry)
            except queue.Full:
                lost += 1
        if lost:
            self.dropped += lost
            raise StoreError(f"record queue full ({self.queue_size}); {lost} record(s) dropped "
                             f"({self.dropped} so far)")

    def flush(self, timeout_s: float = CLOSE_FLUSH_S) -> None:
        self._own()
        if self._writer is None:
            return
        before = self._write_dropped
        self._request(_Marker(), timeout_s)
        # The writer handles the queue in order, so a drop counted before the marker came
        # back belongs to a record submitted before this flush.
        if self._write_dropped > before:
            raise StoreError(f"{self._write_dropped - before} record(s) could not be written: {self._drop_error}")

    def _request(self, marker: _Marker, timeout_s: float) -> None:
        try:
            self._queue.put(marker, timeout=timeout_s)
        except queue.Full:
            raise StoreError(f"flush timed out: record queue full ({self.queue_size})") from None
        if not marker.done.wait(timeout_s):
            raise StoreError(f"flush not done within {timeout_s:g}s ({self._queue.qsize()} record(s) waiting)")
        if marker.error:
            raise StoreError(marker.error)

    def _start_writer(self) -> None:
        if self._writer is not None:
            return
        with self._guard:
            if self._writer is None:
                thread = threading.Thread(target=self._write_loop_guarded, name="store-writer", daemon=True)
                thread.start()
                self._writer = thread

    def _write_loop_guarded(self) -> None:
        try:
            self._write_loop()
        except Exception as exc:  # our bug: said once here; submit then reports the full queue
            log.error("store %s: writer stopped by an internal error: %s", self.name, _describe(exc),
                      exc_info=exc)

    def _write_loop(self) -> None:
        backend: Backend | None = None
        if self._replay_pending:
            backend = self._replay(backend)
        batch: list[Entry] = []
        markers: list[_Marker] = []
        due = 0.0                      # when the current batch must be written
        backoff = 0.0
        next_purge = time.monotonic() + PURGE_INTERVAL_S
        while True:
            now = time.monotonic()
            wait = max(0.0, due - now) if batch else max(0.0, next_purge - now)
            if not markers:
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    item = None
                # take whatever else is already queued, up to one batch
                while item is not None:
                    if isinstance(item, _Marker):
                        markers.append(item)
                        break
                    if not batch:
                        due = time.monotonic() + self.flush_interval_s
                    batch.append(item)
                    if len(batch) >= self.batch_size:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
            now = time.monotonic()
            if batch and (markers or len(batch) >= self.batch_size or now >= due):
                backend, error = self._write(backend, batch)
                if error is None:
                    batch, backoff = [], 0.0
                elif markers:
                    # Someone waits (flush, close): report instead of retrying forever.
                    for m in markers:
                        m.error = error
                        m.done.set()
                    if any(m.stop for m in markers):
                        self.dropped += len(batch) + self._queue.qsize()
                        log.warning("store %s: closing with %d record(s) unwritten: %s",
                                    self.name, len(batch) + self._queue.qsize(), error)
                        _close(backend)
                        return
                    markers = []
                    due = time.monotonic() + max(backoff, 0.5)
                else:
                    backoff = min(WRITE_BACKOFF_MAX_S, max(0.5, backoff * 2))
                    due = time.monotonic() + backoff
            if markers and not batch:
                stop = any(m.stop for m in markers)
                for m in markers:
                    m.done.set()
                markers = []
                if stop:
                    _close(backend)
                    return
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + PURGE_INTERVAL_S
                backend = self._purge(backend)
                if self._replay_pending:      # the database was down at the last attempt
                    backend = self._replay(backend)

    def _row(self, record: MessageRecord) -> tuple[object, ...]:
        return (*to_row(record), f"{self._token}-{next(self._seq)}")

    def _write(self, backend: Backend | None, batch: list[Entry]) -> tuple[Backend | None, str | None]:
        """Commit one batch of queued records, then tell the journal how far it got."""
        for i, e in enumerate(batch):
            if isinstance(e.row, MessageRecord):   # converted once; a retry reuses the row and its uid
                batch[i] = Entry(self._row(e.row), 0)
        backend, error = self._insert(backend, [e.row for e in batch])  # type: ignore[misc]
        if error is None and self._journal is not None:
            end = max(e.end for e in batch)
            if end:
                try:
                    self._journal.committed(end)
                except OSError as exc:   # the lines stay; a replay would find them in the database
                    log.warning("store %s: journal %s: %s", self.name, self._journal.path, exc)
        return backend, error

    def _replay(self, backend: Backend | None) -> Backend | None:
        """Write the records in dead workers' journals, then remove those files.

        A journal is claimed with its flock, so two workers never replay the same file
        at once and a live worker's file is never touched. On a transient database
        error the rest waits for the next purge tick (the claimed files stay).
        """
        for path in jnl.orphans(self.journal_dir, self._journal.path if self._journal else ""):
            with jnl.claim(path) as fd:
                if fd is None:
                    continue
                count = 0
                rows: list[tuple[object, ...]] = []
                for row in itertools.chain(jnl.read_rows(fd, path), [None]):
                    if row is not None:
                        rows.append(row)
                    if rows and (row is None or len(rows) >= self.batch_size):
                        backend, error = self._insert(backend, rows)
                        if error is not None:
                            return backend
                        count += len(rows)
                        rows = []
                        _test_pause(path)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                self.replayed += count
                log.info("store %s: replayed %d record(s) from %s", self.name, count, os.path.basename(path))
        self._replay_pending = False
        return backend

    def _insert(self, backend: Backend | None, rows: list[tuple[object, ...]]) -> tuple[Backend | None, str | None]:
        """Commit one batch: (backend to keep, None), or (None, error) to retry later.

        A batch that would fail the same way again (bad data, a schema newer than this
        program) is dropped with an error: it must not block every later batch.
        """
        try:
            if backend is None:
                backend = self._connect(self.write_timeout_s)
                try:
                    self._migrate(backend)
                except BaseException:
                    _close(backend)
                    backend = None
                    raise
            backend.insert_records(rows)
        except Exception as exc:  # noqa: BLE001 - a store problem never leaves this thread
            if isinstance(exc, StoreError):
                transient = exc.transient
            else:
                transient = backend is not None and backend.is_transient(exc)
            text = _describe(exc)
            if transient:
                self._warn(logging.WARNING, f"store {self.name}: writing {len(rows)} record(s) failed, "
                                            f"will retry: {text}")
                _close(backend)
                return None, text
            self.dropped += len(rows)
            self._write_dropped += len(rows)
            self._drop_error = text
            self._warn(logging.ERROR, f"store {self.name}: {len(rows)} record(s) dropped: {text}")
            return backend, None
        self.written += len(rows)
        return backend, None

    def _purge(self, backend: Backend | None) -> Backend | None:
        """Expired keys and, with a retention, old records: every worker does it every
        PURGE_INTERVAL_S; the deletes are indexed and usually find nothing."""
        now = time.time()
        try:
            if backend is None:
                backend = self._connect(self.write_timeout_s)
                self._migrate(backend)
            backend.purge(now, now - self.keep_records_s if self.keep_records_s > 0 else None)
            return backend
        except Exception as exc:  # noqa: BLE001 - retried at the next interval
            log.debug("store %s: purge failed: %s", self.name, exc)
            _close(backend)
            return None

    def _warn(self, level: int, text: str) -> None:
        """A failing database fails every batch: one line per interval, the rest at DEBUG."""
        now = time.monotonic()
        if not self._warned_at or now - self._warned_at >= WARN_INTERVAL_S:
            self._warned_at = now
            log.log(level, "%s", text)
        else:
            log.debug("%s", text)

    # -- keyed state -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _reading(self, migrate: bool = True) -> Iterator[Backend]:
        self._own()
        if self._closed:
            raise StoreError("store closed")
        self._start_writer()                  # it also purges expired keys
        if not self._rlock.acquire(timeout=self.timeout_s):
            raise StoreError(f"store {self.name}: busy for {self.timeout_s * 1000:g} ms")
        try:
            if self._reader is None:
                if time.monotonic() < self._retry_at:
                    raise StoreError(f"store {self.name} unavailable: {self._last_error}")
                try:
                    self._reader = self._connect(self.timeout_s)
                except StoreError as exc:
                    self._failed(str(exc))
                    raise
            if migrate and not self._migrated:
                try:
                    self._migrate(self._reader)
                except StoreError as exc:
                    _close(self._reader)
                    self._reader = None
                    self._failed(str(exc))
                    raise
                self._migrated = True
            try:
                yield self._reader
            except self._reader.errors as exc:   # the driver's; our own bugs propagate
                text = _describe(exc)
                if self._reader.is_transient(exc):
                    _close(self._reader)
                    self._reader = None
                    self._failed(text)
                raise StoreError(f"store {self.name}: {text}") from None
        finally:
            self._rlock.release()

    def _failed(self, text: str) -> None:
        self._last_error = text
        self._retry_at = time.monotonic() + RETRY_S

    def get(self, key: str) -> bytes | None:
        with self._reading() as backend:
            return backend.get(key, time.time())

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        with self._reading() as backend:
            backend.put(key, bytes(value), time.time() + ttl_s)

    def status(self) -> StoreStatus:
        """Schema version and row counts (``authmilter store status``, tests); creates
        nothing."""
        with self._reading(migrate=False) as backend:
            version, records, keys = backend.status()
        return StoreStatus(self.name, version, records, keys)

    # -- end -------------------------------------------------------------------------------------
    def close(self, timeout_s: float = CLOSE_FLUSH_S) -> None:
        self._own()
        if self._closed:
            return
        self._closed = True
        try:
            if self._writer is not None:
                self._request(_Marker(stop=True), timeout_s)
                self._writer.join(timeout_s)
        except StoreError as exc:
            # Closing is a worker's last act: report, never raise (the writer has
            # already logged how many records stayed unwritten).
            log.warning("store %s: closed with records unwritten: %s", self.name, exc)
        finally:
            with self._rlock:
                _close(self._reader)
                self._reader = None
            if self._journal is not None:
                # Everything committed: the file goes. Otherwise it stays for the next
                # worker to replay.
                if not self._journal.close():
                    log.warning("store %s: journal %s kept for replay", self.name, self._journal.path)


def _test_pause(path: str) -> None:
    if _TEST_REPLAY_PAUSE and os.path.exists(_TEST_REPLAY_PAUSE):
        os.unlink(_TEST_REPLAY_PAUSE)
        log.warning("store: replay of %s paused (AUTHMILTER_TEST_REPLAY_PAUSE)", os.path.basename(path))
        threading.Event().wait()


def _describe(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _close(backend: Backend | None) -> None:
    if backend is None:
        return
    try:
        backend.close()
    except Exception as exc:  # noqa: BLE001 - closing a broken connection may fail too
        log.debug("store: close failed: %s", exc)


def _reset_in_child() -> None:
    # Runs in the child right after fork, while it has a single thread.
    for store in list(_INSTANCES):
        store._after_fork()


os.register_at_fork(after_in_child=_reset_in_child)
