"""The store port: what the rest of authmilter may ask of shared state.

`Store` is the one interface callers see (runtime.store). Message records are
submitted without waiting (a background thread writes them in batches); keyed state
(`get`/`put`, with expiry) is read and written at once, within ``[store] timeout_ms``,
and a failure is a `StoreError` so the caller can apply ``[store] on_store_error``.

`Backend` is one connection to one database (SQLite or PostgreSQL), used by one
thread at a time; `store.batching.BatchingStore` turns backends into a `Store`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import AuthmilterError
from ..records import MessageRecord
from .schema import Migration


class StoreError(AuthmilterError):
    """The store could not do what was asked in time.

    ``transient`` is true for problems that may go away by themselves (a database
    server down, a lock held too long), false for ones an admin must fix (a file that
    cannot be created, a schema newer than this program).
    """

    def __init__(self, message: str, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class StoreStatus:
    url: str               # redacted
    schema_version: int
    records: int
    keys: int              # unexpired keyed-state entries


class Store(Protocol):
    """Shared state of all workers (and, with PostgreSQL, of all MX hosts)."""

    def submit(self, records: Iterable[MessageRecord]) -> None:
        """Queue records for the background writer; never waits. StoreError when the
        bounded queue is full (the records are dropped)."""

    def start(self) -> None:
        """A worker's start: open its record journal and have the writer replay the
        journals dead workers left (store.journal). Never waits on the database."""

    def flush(self, timeout_s: float = 5.0) -> None:
        """Write everything submitted so far; StoreError if not done in *timeout_s*."""

    def get(self, key: str) -> bytes | None:
        """The unexpired value under *key*, or None; StoreError on failure or timeout."""

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        """Set *key* to *value* for *ttl_s* seconds; StoreError on failure or timeout."""

    def close(self) -> None:
        """Flush pending records (bounded wait), stop the writer, close connections.
        Never raises: records that could not be written are logged."""


class Backend(Protocol):
    """One database connection; not shared between threads or processes."""

    errors: tuple[type[Exception], ...]   # the driver's exception roots

    def migrate(self, migrations: tuple[Migration, ...]) -> int:
        """Apply what is missing; returns the schema version now in the database."""

    def insert_records(self, rows: Sequence[tuple[Any, ...]]) -> None: ...

    def get(self, key: str, now: float) -> bytes | None: ...

    def put(self, key: str, value: bytes, expires: float) -> None: ...

    def purge(self, now: float, records_before: float | None = None) -> int:
        """Delete expired keyed state, and message records older than *records_before*
        (seconds since the epoch) if given; returns how many rows went."""

    def status(self) -> tuple[int, int, int]:
        """(schema version, record count, unexpired keys); (0, 0, 0) before any schema."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether a failed operation is worth retrying on a new connection."""

    def close(self) -> None: ...
