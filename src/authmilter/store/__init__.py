"""The store: state shared between workers and hosts (design.md, "runtime.store").

Message records (`records.MessageRecord`, the rows DMARC reports are built from) and
keyed state with expiry (greylisting triplets, later) live in one database: SQLite in
WAL mode on one host, PostgreSQL when several MX hosts share it. Callers see the
`Store` protocol only; `open_store` gives the process's store for a ``[store]``
section, opened lazily in each worker after fork (never inherited).

This package imports neither ``milter`` nor the pipeline.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..config.storeurl import POSTGRESQL, SQLITE, StoreUrl, parse_url
from ..errors import ConfigError
from .base import Backend, Store, StoreError, StoreStatus
from .batching import BatchingStore
from .journal import check_directory

if TYPE_CHECKING:  # pragma: no cover
    from ..config.schema import StoreSettings

__all__ = ["Backend", "BatchingStore", "Store", "StoreError", "StoreStatus", "StoreUrl", "close_all",
           "connector", "journal_dir", "open_store", "parse_url", "prepare_journal"]

# One store per distinct [store] section in this process: a reload that leaves the
# section unchanged keeps the same queue, thread and connections.
_OPEN: dict[StoreSettings, BatchingStore] = {}


def connector(url: StoreUrl):  # type: ignore[no-untyped-def]
    """timeout_s -> a new Backend for *url*."""
    if url.kind == SQLITE:
        from .sqlite import SqliteBackend

        return lambda timeout_s: SqliteBackend(url.path, timeout_s)
    from .postgres import PostgresBackend

    return lambda timeout_s: PostgresBackend(url.dsn, timeout_s, url.redacted())


def check_reachable_config(url: StoreUrl, file: str) -> None:
    """What can be checked without opening the database, as a ConfigError at start."""
    if url.kind == SQLITE:
        directory = os.path.dirname(url.path) or "/"
        if not os.path.isdir(directory):
            raise ConfigError(file, "store.url", f"directory {directory} does not exist (create it, "
                              "writable by the authmilter user)")
        # SQLite creates the -wal and -shm files beside the database: the directory
        # itself must be writable, not only the file.
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigError(file, "store.url", f"directory {directory} is not writable by uid {os.geteuid()}")
        if os.path.exists(url.path) and not os.access(url.path, os.R_OK | os.W_OK):
            raise ConfigError(file, "store.url", f"{url.path} is not readable and writable by uid {os.geteuid()}")
    elif url.kind == POSTGRESQL:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(file, "store.url",
                              "PostgreSQL needs psycopg: pip install 'authmilter[postgresql]'") from None


DEFAULT_JOURNAL_DIR = "/var/lib/authmilter/journal"


def journal_dir(settings: StoreSettings, url: StoreUrl) -> str:
    """``[store] journal_dir``, or its default: beside the SQLite file (same disk, same
    owner), else /var/lib/authmilter/journal."""
    if settings.journal_dir:
        return settings.journal_dir
    return url.path + ".journal" if url.kind == SQLITE else DEFAULT_JOURNAL_DIR


def open_store(settings: StoreSettings, file: str = "<store>") -> BatchingStore:
    """This process's store for *settings* (no connection is made until first use)."""
    store = _OPEN.get(settings)
    if store is not None and not store._closed:
        return store
    try:
        url = parse_url(settings.url)
    except ValueError as exc:
        raise ConfigError(file, "store.url", str(exc)) from None
    check_reachable_config(url, file)
    store = BatchingStore(connector(url), url.redacted(), timeout_s=settings.timeout_ms / 1000.0,
                          batch_size=settings.batch_size, flush_interval_s=settings.flush_interval_s,
                          queue_size=settings.queue_size, keep_records_s=settings.keep_records_days * 86400.0,
                          journal_dir=journal_dir(settings, url), journal_fsync=settings.journal_fsync)
    _OPEN[settings] = store
    return store


def prepare_journal(settings: StoreSettings, file: str = "<store>") -> str:
    """The daemon's start (the master, before forking): the journal directory exists
    and is ours, else a ConfigError naming ``store.journal_dir``. Tools that only read
    the store (``store status``, ``reports send``) never journal and skip this."""
    try:
        directory = journal_dir(settings, parse_url(settings.url))
    except ValueError as exc:
        raise ConfigError(file, "store.url", str(exc)) from None
    if not os.path.isabs(directory):
        raise ConfigError(file, "store.journal_dir", f"{directory!r} is not an absolute path")
    problem = check_directory(directory)
    if not problem:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            problem = f"cannot create {directory}: {exc.strerror}"
    if problem:
        raise ConfigError(file, "store.journal_dir", problem + " (set [store] journal_dir to a directory "
                          "writable by the authmilter user)")
    return directory


def close_all(timeout_s: float = 5.0) -> None:
    """Flush and close every store this process opened (a worker's last act)."""
    for store in list(_OPEN.values()):
        store.close(timeout_s)
    _OPEN.clear()
