"""The store's tables, as an ordered list of migrations.

The program creates and upgrades its own schema (``authmilter store init`` and every
start): each migration has a version number, the applied versions are rows of
``schema_version``, and a migration runs once, in one transaction together with its
row, under a lock that makes concurrent starters (workers, MX hosts) wait for each
other. A database whose version is newer than this program knows is refused rather
than written to with wrong assumptions.

Append a migration for every change; never edit one that has shipped.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config.storeurl import POSTGRESQL, SQLITE


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    summary: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]

    def statements(self, dialect: str) -> tuple[str, ...]:
        return self.sqlite if dialect == SQLITE else self.postgresql


# Shared by both dialects; created before any migration runs.
SCHEMA_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY,"
    " summary TEXT NOT NULL,"
    " applied_at DOUBLE PRECISION NOT NULL)"
)

# One row per inbound message that reached a DMARC evaluation (records.MessageRecord,
# field for field). The DKIM evidence, the published policy and the overrides are JSON
# text: a report row shows them as published and nothing queries inside them; the
# columns a report groups by (header_from, time, reporter) are plain and indexed.
_RECORDS_COLUMNS = """
    kind TEXT NOT NULL,
    time DOUBLE PRECISION NOT NULL,
    reporter TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    helo TEXT NOT NULL,
    envelope_from TEXT NOT NULL,
    envelope_from_domain TEXT NOT NULL,
    header_from TEXT NOT NULL,
    spf_result TEXT NOT NULL,
    spf_domain TEXT NOT NULL,
    spf_scope TEXT NOT NULL,
    dkim TEXT NOT NULL,
    dmarc_result TEXT NOT NULL,
    dkim_aligned BOOLEAN NOT NULL,
    spf_aligned BOOLEAN NOT NULL,
    policy TEXT NOT NULL,
    disposition TEXT NOT NULL,
    overrides TEXT NOT NULL"""

_INDEXES = (
    "CREATE INDEX message_records_from_time ON message_records (header_from, time)",
    "CREATE INDEX message_records_time ON message_records (time)",
    "CREATE INDEX keyed_state_expires ON keyed_state (expires)",
)

# DMARC aggregate report bookkeeping (reports/): one row per report built (its gzip kept
# for retries, so a resend is byte-identical), one per report and destination, the
# state of each destination, and a lock row for SQLite (PostgreSQL uses an advisory lock).
_REPORT_TABLES = (
    "CREATE TABLE dmarc_reports (report_id TEXT PRIMARY KEY, policy_domain TEXT NOT NULL,"
    " begin_ts DOUBLE PRECISION NOT NULL, end_ts DOUBLE PRECISION NOT NULL, created DOUBLE PRECISION NOT NULL,"
    " messages INTEGER NOT NULL, rua TEXT NOT NULL, file_name TEXT NOT NULL, status TEXT NOT NULL, {blob})",
    "CREATE INDEX dmarc_reports_domain_end ON dmarc_reports (policy_domain, end_ts)",
    "CREATE TABLE dmarc_deliveries (report_id TEXT NOT NULL, destination TEXT NOT NULL, status TEXT NOT NULL,"
    " attempts INTEGER NOT NULL, detail TEXT NOT NULL, updated DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (report_id, destination))",
    "CREATE TABLE dmarc_destinations (destination TEXT PRIMARY KEY, failures INTEGER NOT NULL,"
    " suppressed BOOLEAN NOT NULL, detail TEXT NOT NULL, updated DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE dmarc_lock (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL)",
)

# Failure reports (RFC 9991): the redacted header sample rides on its message record
# until sent (then it is cleared); each report sent is counted per destination.
_FAILURE_REPORTS = (
    "ALTER TABLE message_records ADD COLUMN sample TEXT NOT NULL DEFAULT ''",
    "CREATE TABLE dmarc_failures_sent (destination TEXT NOT NULL, sent DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX dmarc_failures_sent_dest ON dmarc_failures_sent (destination, sent)",
    "CREATE INDEX message_records_sample ON message_records (id) WHERE sample <> ''",
)

# Each record's unique id (store.journal): a record replayed from a dead worker's journal
# after it was already committed is ignored. Older rows keep NULL, which a UNIQUE index
# allows any number of times in both dialects.
_RECORD_UID = (
    "ALTER TABLE message_records ADD COLUMN uid TEXT",
    "CREATE UNIQUE INDEX message_records_uid ON message_records (uid)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1, "message records and keyed state with expiry",
        sqlite=(
            "CREATE TABLE message_records (id INTEGER PRIMARY KEY AUTOINCREMENT," + _RECORDS_COLUMNS + ")",
            "CREATE TABLE keyed_state (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
            " expires DOUBLE PRECISION NOT NULL)",
            *_INDEXES,
        ),
        postgresql=(
            "CREATE TABLE message_records (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            + _RECORDS_COLUMNS + ")",
            "CREATE TABLE keyed_state (key TEXT PRIMARY KEY, value BYTEA NOT NULL,"
            " expires DOUBLE PRECISION NOT NULL)",
            *_INDEXES,
        ),
    ),
    Migration(
        2, "DMARC aggregate report bookkeeping",
        sqlite=tuple(s.replace("{blob}", "xml_gz BLOB NOT NULL") for s in _REPORT_TABLES),
        postgresql=tuple(s.replace("{blob}", "xml_gz BYTEA NOT NULL") for s in _REPORT_TABLES),
    ),
    Migration(
        3, "RFC 9991 failure report samples; failure reports sent, for the rate limit",
        sqlite=_FAILURE_REPORTS,
        postgresql=_FAILURE_REPORTS,
    ),
    Migration(
        4, "unique record ids, so a replayed journal writes each record once",
        sqlite=_RECORD_UID,
        postgresql=_RECORD_UID,
    ),
)

LATEST = MIGRATIONS[-1].version
DIALECTS = (SQLITE, POSTGRESQL)


def pending(applied: int, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[Migration]:
    """The migrations after version *applied*, in order."""
    return [m for m in migrations if m.version > applied]


def check_order(migrations: tuple[Migration, ...]) -> None:
    """Versions strictly increase: a programming error otherwise, caught by the tests."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)) or (versions and versions[0] < 1):
        raise ValueError(f"migration versions must increase from 1: {versions}")
