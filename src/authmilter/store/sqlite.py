"""SQLite backend: one file shared by the workers of one host.

WAL journal mode (https://sqlite.org/wal.html) lets readers proceed while one writer
commits, which is the shape here: every worker has a writer thread committing record
batches and reads keyed state in between. Writers still take turns; ``busy_timeout``
bounds how long one waits for another. ``synchronous=NORMAL`` is durable against
process crashes in WAL mode (a power cut may lose the last transactions, never
corrupt the file), which suits report rows.
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from ..config.storeurl import SQLITE
from .base import StoreError
from .rows import INSERT_COLUMNS
from .schema import SCHEMA_VERSION_TABLE, Migration, check_order, pending

# A uid already present is a journal line replayed twice: ignored (store.journal).
_INSERT = (f"INSERT INTO message_records ({', '.join(INSERT_COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in INSERT_COLUMNS)}) ON CONFLICT (uid) DO NOTHING")


class SqliteBackend:
    dialect = SQLITE
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: str, timeout_s: float) -> None:
        self.path = path
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves; check_same_thread
            # off because the caller serialises use with its own lock.
            self.conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None,
                                        check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {exc}", transient=False) from None
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: cannot switch to WAL journal mode (got {mode})", transient=False)
            self.conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            self.conn.close()
            raise StoreError(f"cannot use {path}: {exc}", transient=False) from None

    # -- schema ------------------------------------------------------------------------------
    def migrate(self, migrations: tuple[Migration, ...]) -> int:
        check_order(migrations)
        latest = migrations[-1].version if migrations else 0
        # BEGIN IMMEDIATE takes the write lock first, so two starters cannot both see
        # version N and both apply N+1.
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(SCHEMA_VERSION_TABLE)
            applied = self.conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
            if applied > latest:
                raise StoreError(f"{self.path}: schema version {applied} is newer than this authmilter "
                                 f"knows ({latest}); upgrade authmilter", transient=False)
            for m in pending(applied, migrations):
                for sql in m.statements(SQLITE):
                    self.conn.execute(sql)
                self.conn.execute("INSERT INTO schema_version (version, summary, applied_at) VALUES (?, ?, ?)",
                                  (m.version, m.summary, time.time()))
                applied = m.version
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return int(applied)

    # -- records and keyed state ---------------------------------------------------------------
    def insert_records(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(_INSERT, rows)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def get(self, key: str, now: float) -> bytes | None:
        row = self.conn.execute("SELECT value FROM keyed_state WHERE key = ? AND expires > ?",
                                (key, now)).fetchone()
        return bytes(row[0]) if row is not None else None

    def put(self, key: str, value: bytes, expires: float) -> None:
        self.conn.execute("INSERT INTO keyed_state (key, value, expires) VALUES (?, ?, ?) "
                          "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires",
                          (key, value, expires))

    def purge(self, now: float, records_before: float | None = None) -> int:
        gone = self.conn.execute("DELETE FROM keyed_state WHERE expires <= ?", (now,)).rowcount
        if records_before is not None:
            gone += self.conn.execute("DELETE FROM message_records WHERE time < ?", (records_before,)).rowcount
        return int(gone)

    def status(self) -> tuple[int, int, int]:
        if self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone() is None:
            return 0, 0, 0
        version = self.conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        records = self.conn.execute("SELECT COUNT(*) FROM message_records").fetchone()[0]
        keys = self.conn.execute("SELECT COUNT(*) FROM keyed_state WHERE expires > ?", (time.time(),)).fetchone()[0]
        return int(version), int(records), int(keys)

    def is_transient(self, exc: BaseException) -> bool:
        # "database is locked", a full disk, an I/O error: retry later. Anything else
        # (a constraint, a bad value) would fail the same way again.
        return isinstance(exc, sqlite3.OperationalError)

    def close(self) -> None:
        self.conn.close()
