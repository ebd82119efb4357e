"""PostgreSQL backend (psycopg 3): one database shared by several MX hosts.

Each worker process holds its own connections (a libpq connection must never be used
on both sides of a fork). Statements are bounded by ``statement_timeout`` on the
server and ``connect_timeout`` on the way there; migrations serialise on a
transaction-level advisory lock, because concurrent ``CREATE TABLE IF NOT EXISTS``
can still collide in the catalog.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from ..config.storeurl import POSTGRESQL
from .base import StoreError
from .rows import INSERT_COLUMNS
from .schema import SCHEMA_VERSION_TABLE, Migration, check_order, pending

# A uid already present is a journal line replayed twice: ignored (store.journal).
_INSERT = (f"INSERT INTO message_records ({', '.join(INSERT_COLUMNS)}) "
           f"VALUES ({', '.join('%s' for _ in INSERT_COLUMNS)}) ON CONFLICT (uid) DO NOTHING")
_MIGRATION_LOCK = 0x61757468   # "auth": any constant, shared by every authmilter


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError("PostgreSQL needs psycopg: pip install 'authmilter[postgresql]'",
                         transient=False) from None
    return psycopg


class PostgresBackend:
    dialect = POSTGRESQL

    def __init__(self, dsn: str, timeout_s: float, redacted: str = "") -> None:
        psycopg = _psycopg()
        self.name = redacted or "postgresql"
        self._errors = psycopg
        self.errors: tuple[type[Exception], ...] = (psycopg.Error,)
        try:
            # libpq counts connect_timeout in whole seconds (and treats 1 as 2).
            self.conn = psycopg.connect(dsn, autocommit=True, connect_timeout=max(2, math.ceil(timeout_s)),
                                        application_name="authmilter")
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.name}: {_first_line(exc)}") from None
        try:
            self.conn.execute("SELECT set_config('statement_timeout', %s, false)",
                              (f"{max(1, int(timeout_s * 1000))}ms",))
        except psycopg.Error as exc:
            self.conn.close()
            raise StoreError(f"{self.name}: {_first_line(exc)}") from None

    # -- schema ------------------------------------------------------------------------------
    def migrate(self, migrations: tuple[Migration, ...]) -> int:
        check_order(migrations)
        latest = migrations[-1].version if migrations else 0
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            self.conn.execute(SCHEMA_VERSION_TABLE)
            row = self.conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
            applied = int(row[0]) if row else 0
            if applied > latest:
                raise StoreError(f"{self.name}: schema version {applied} is newer than this authmilter "
                                 f"knows ({latest}); upgrade authmilter", transient=False)
            for m in pending(applied, migrations):
                for sql in m.statements(POSTGRESQL):
                    self.conn.execute(sql)  # type: ignore[arg-type]  # constant text from schema.py
                self.conn.execute("INSERT INTO schema_version (version, summary, applied_at) VALUES (%s, %s, %s)",
                                  (m.version, m.summary, time.time()))
                applied = m.version
        return applied

    # -- records and keyed state ---------------------------------------------------------------
    def insert_records(self, rows: Sequence[tuple[Any, ...]]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(_INSERT, rows)

    def get(self, key: str, now: float) -> bytes | None:
        row = self.conn.execute("SELECT value FROM keyed_state WHERE key = %s AND expires > %s",
                                (key, now)).fetchone()
        return bytes(row[0]) if row is not None else None

    def put(self, key: str, value: bytes, expires: float) -> None:
        self.conn.execute("INSERT INTO keyed_state (key, value, expires) VALUES (%s, %s, %s) "
                          "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires",
                          (key, value, expires))

    def purge(self, now: float, records_before: float | None = None) -> int:
        gone = self.conn.execute("DELETE FROM keyed_state WHERE expires <= %s", (now,)).rowcount
        if records_before is not None:
            gone += self.conn.execute("DELETE FROM message_records WHERE time < %s", (records_before,)).rowcount
        return int(gone)

    def status(self) -> tuple[int, int, int]:
        exists = self.conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0, 0, 0
        version = self.conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        records = self.conn.execute("SELECT COUNT(*) FROM message_records").fetchone()
        keys = self.conn.execute("SELECT COUNT(*) FROM keyed_state WHERE expires > %s", (time.time(),)).fetchone()
        return int(version[0]), int(records[0]), int(keys[0])  # type: ignore[index]

    def is_transient(self, exc: BaseException) -> bool:
        # Connection loss, server shutdown, statement timeout, serialisation: retry.
        # Data and programming errors would fail the same way again.
        e = self._errors
        return isinstance(exc, (e.OperationalError, e.InterfaceError, e.errors.QueryCanceled))

    def close(self) -> None:
        self.conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
