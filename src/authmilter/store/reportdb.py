"""The store's side of DMARC aggregate reports: reading records by window, and the
bookkeeping that makes reports neither lost nor duplicated (tables of migration 2).

One `ReportDb` belongs to one ``authmilter reports`` run and holds one connection
(a `Backend`'s). `lock` makes that run the only one working on this database:
a session advisory lock on PostgreSQL, so any number of MX hosts may start the timer
and exactly one builds and sends; a lock row taken with BEGIN IMMEDIATE on SQLite
(a lock left by a dead process on this host is taken over).
"""
from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..config.storeurl import POSTGRESQL
from ..records import MessageRecord
from .base import Backend, StoreError
from .rows import COLUMNS, from_row
from .schema import MIGRATIONS

_REPORTS_LOCK = 0x646D7263          # "dmrc": the advisory lock key on PostgreSQL
_LOCK_TTL_S = 6 * 3600.0            # SQLite lock row: taken over after this long


@dataclass(frozen=True, slots=True)
class Pending:
    """A delivery not yet done: one report to one destination."""

    report_id: str
    policy_domain: str
    begin: int
    end: int
    file_name: str
    payload: bytes                  # the .xml.gz
    destination: str                # mailto URI as published
    attempts: int


class ReportDb:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.conn: Any = backend.conn  # type: ignore[attr-defined]
        self.pg = getattr(backend, "dialect", "") == POSTGRESQL
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._locked = False

    def migrate(self) -> int:
        return self.backend.migrate(MIGRATIONS)

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.pg else sql

    def _x(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.conn.execute(self._q(sql), params)

    # -- the lock ------------------------------------------------------------------------------
    def lock(self) -> str:
        """Take the reports lock; "" on success, else who holds it."""
        if self.pg:
            got = self._x("SELECT pg_try_advisory_lock(?)", (_REPORTS_LOCK,)).fetchone()[0]
            self._locked = bool(got)
            return "" if got else "another authmilter reports run (PostgreSQL advisory lock)"
        now = time.time()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            row = self.conn.execute("SELECT holder, expires FROM dmarc_lock WHERE name = 'reports'").fetchone()
            if row is not None and row[1] > now and not self._stale(row[0]):
                self.conn.execute("ROLLBACK")
                return f"another authmilter reports run ({row[0]})"
            self.conn.execute("INSERT INTO dmarc_lock (name, holder, expires) VALUES ('reports', ?, ?) "
                              "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires",
                              (self.holder, now + _LOCK_TTL_S))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self._locked = True
        return ""

    @staticmethod
    def _stale(holder: str) -> bool:
        host, _, pid = holder.rpartition(":")
        if host != socket.gethostname() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def unlock(self) -> None:
        if not self._locked:
            return
        self._locked = False
        if self.pg:
            self._x("SELECT pg_advisory_unlock(?)", (_REPORTS_LOCK,))
        else:
            self._x("DELETE FROM dmarc_lock WHERE name = 'reports' AND holder = ?", (self.holder,))

    # -- records ---------------------------------------------------------------------------------
    def records(self, since: float, until: float) -> Iterator[MessageRecord]:
        """DMARC records with since <= time < until, oldest first, read in chunks."""
        sql = self._q(f"SELECT {', '.join(COLUMNS)} FROM message_records "
                      "WHERE kind = 'dmarc' AND time >= ? AND time < ? ORDER BY time, id")
        cur = self.conn.cursor()
        try:
            cur.execute(sql, (since, until))
            while True:
                chunk = cur.fetchmany(2000)
                if not chunk:
                    return
                for row in chunk:
                    yield from_row(row)
        finally:
            cur.close()

    def purge_records(self, before: float) -> int:
        return int(self._x("DELETE FROM message_records WHERE time < ?", (before,)).rowcount)

    # -- reports -----------------------------------------------------------------------------------
    def last_end(self) -> float | None:
        """The end of the newest window handled, for any domain (None before any)."""
        row = self._x("SELECT MAX(end_ts) FROM dmarc_reports").fetchone()
        return float(row[0]) if row is not None and row[0] is not None else None

    def reported_until(self) -> dict[str, int]:
        """Per policy domain, the end of the last window already handled."""
        rows = self._x("SELECT policy_domain, MAX(end_ts) FROM dmarc_reports GROUP BY policy_domain").fetchall()
        return {d: int(e) for d, e in rows}

    def add_report(self, report_id: str, policy_domain: str, begin: int, end: int, messages: int,
                   rua: tuple[str, ...], file_name: str, status: str, payload: bytes,
                   destinations: list[tuple[str, str, str]]) -> bool:
        """Record a report and its deliveries [(destination, status, detail)] in one
        transaction; False when a report with this id already exists (nothing changes)."""
        now = time.time()
        ins_report = self._q(
            "INSERT INTO dmarc_reports (report_id, policy_domain, begin_ts, end_ts, created, messages, rua,"
            " file_name, status, xml_gz) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (report_id) DO NOTHING")
        ins_dest = self._q("INSERT INTO dmarc_deliveries (report_id, destination, status, attempts, detail, updated)"
                           " VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (report_id, destination) DO NOTHING")
        with self._transaction():
            cur = self.conn.execute(ins_report, (report_id, policy_domain, begin, end, now, messages,
                                                 json.dumps(list(rua)), file_name, status, payload))
            if cur.rowcount != 1:
                return False
            for dest, st, detail in destinations:
                self.conn.execute(ins_dest, (report_id, dest, st, detail, now))
        return True

    def pending(self) -> list[Pending]:
        rows = self._x(
            "SELECT r.report_id, r.policy_domain, r.begin_ts, r.end_ts, r.file_name, r.xml_gz, d.destination,"
            " d.attempts FROM dmarc_deliveries d JOIN dmarc_reports r ON r.report_id = d.report_id"
            " WHERE d.status = 'pending' ORDER BY r.end_ts, r.policy_domain, d.destination").fetchall()
        return [Pending(r[0], r[1], int(r[2]), int(r[3]), r[4], bytes(r[5]), r[6], int(r[7])) for r in rows]

    def set_delivery(self, report_id: str, destination: str, status: str, detail: str, attempted: bool) -> None:
        self._x("UPDATE dmarc_deliveries SET status = ?, detail = ?, updated = ?, attempts = attempts + ?"
                " WHERE report_id = ? AND destination = ?",
                (status, detail, time.time(), 1 if attempted else 0, report_id, destination))
        self._x("UPDATE dmarc_reports SET status = 'done' WHERE report_id = ? AND NOT EXISTS"
                " (SELECT 1 FROM dmarc_deliveries WHERE report_id = ? AND status = 'pending')",
                (report_id, report_id))

    # -- destinations --------------------------------------------------------------------------------
    def suppressed(self, destination: str) -> str | None:
        """The reason *destination* is suppressed, or None."""
        row = self._x("SELECT suppressed, detail FROM dmarc_destinations WHERE destination = ?",
                      (destination,)).fetchone()
        return str(row[1]) if row is not None and row[0] else None

    def destination_result(self, destination: str, ok: bool, detail: str, max_failures: int) -> bool:
        """Count a success (resets) or a failure; True when this failure suppresses it."""
        now = time.time()
        with self._transaction():
            row = self.conn.execute(self._q("SELECT failures FROM dmarc_destinations WHERE destination = ?"),
                                    (destination,)).fetchone()
            failures = 0 if ok else (int(row[0]) if row else 0) + 1
            suppress = failures >= max_failures
            self.conn.execute(self._q(
                "INSERT INTO dmarc_destinations (destination, failures, suppressed, detail, updated)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET failures = excluded.failures,"
                " suppressed = excluded.suppressed, detail = excluded.detail, updated = excluded.updated"),
                (destination, failures, suppress, detail, now))
        return suppress

    def unsuppress(self, destination: str) -> bool:
        return bool(self._x("UPDATE dmarc_destinations SET suppressed = ?, failures = 0 WHERE destination = ?",
                            (False, destination)).rowcount)

    # -- failure reports (RFC 9991) ----------------------------------------------------------------
    def failure_samples(self, limit: int = 1000) -> list[tuple[int, MessageRecord]]:
        """Records carrying a failure report sample, oldest first."""
        rows = self._x(f"SELECT id, {', '.join(COLUMNS)} FROM message_records WHERE sample <> '' ORDER BY id LIMIT ?",
                       (limit,)).fetchall()
        return [(int(r[0]), from_row(r[1:])) for r in rows]

    def clear_sample(self, record_id: int) -> None:
        """The sample is personal data: gone once handled, whatever the outcome."""
        self._x("UPDATE message_records SET sample = '' WHERE id = ?", (record_id,))

    def failures_sent(self, destination: str, since: float) -> int:
        return int(self._x("SELECT COUNT(*) FROM dmarc_failures_sent WHERE destination = ? AND sent >= ?",
                           (destination, since)).fetchone()[0])

    def failure_sent(self, destination: str) -> None:
        self._x("INSERT INTO dmarc_failures_sent (destination, sent) VALUES (?, ?)", (destination, time.time()))

    # -- show and purge -----------------------------------------------------------------------------------
    def overview(self, since: float) -> dict[str, list[tuple[Any, ...]]]:
        return {
            "pending": self._x(
                "SELECT r.policy_domain, r.begin_ts, r.end_ts, r.report_id, d.destination, d.attempts, d.detail"
                " FROM dmarc_deliveries d JOIN dmarc_reports r ON r.report_id = d.report_id"
                " WHERE d.status = 'pending' ORDER BY r.end_ts").fetchall(),
            "refused": self._x(
                "SELECT r.policy_domain, r.begin_ts, r.end_ts, r.report_id, d.destination, d.status, d.detail"
                " FROM dmarc_deliveries d JOIN dmarc_reports r ON r.report_id = d.report_id"
                " WHERE d.status IN ('refused', 'suppressed') AND d.updated >= ? ORDER BY d.updated",
                (since,)).fetchall(),
            "suppressed": self._x(
                "SELECT destination, failures, detail, updated FROM dmarc_destinations WHERE suppressed = ?"
                " ORDER BY destination", (True,)).fetchall(),
            "skipped": self._x(
                "SELECT policy_domain, begin_ts, end_ts, messages FROM dmarc_reports"
                " WHERE status = 'skipped' AND created >= ? ORDER BY end_ts", (since,)).fetchall(),
        }

    def purge_reports(self, before: float) -> int:
        with self._transaction():
            self.conn.execute(self._q("DELETE FROM dmarc_failures_sent WHERE sent < ?"), (time.time() - 86400.0,))
            self.conn.execute(self._q("DELETE FROM dmarc_deliveries WHERE report_id IN"
                                      " (SELECT report_id FROM dmarc_reports WHERE end_ts < ?)"), (before,))
            return int(self.conn.execute(self._q("DELETE FROM dmarc_reports WHERE end_ts < ?"), (before,)).rowcount)

    def _transaction(self) -> Any:
        if self.pg:
            return self.conn.transaction()
        return _SqliteTx(self.conn)

    def close(self) -> None:
        try:
            self.unlock()
        except self.backend.errors:
            pass
        self.backend.close()


class _SqliteTx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def open_reportdb(url_text: str, timeout_s: float) -> ReportDb:
    """A migrated ReportDb for the ``[store] url``; StoreError when unusable."""
    from . import connector, parse_url

    backend = connector(parse_url(url_text))(timeout_s)
    db = ReportDb(backend)
    try:
        db.migrate()
    except backend.errors as exc:
        backend.close()
        raise StoreError(f"schema migration failed: {exc}") from None
    return db
