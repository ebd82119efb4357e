"""A worker's record journal: what was promised to the store survives the worker.

A record is submitted while the MTA still waits for our reply, but written to the
database later, in a batch, by the store's writer thread. Between the two it lived
only in the worker's memory, so a worker killed (SIGKILL, OOM killer, a crash in a C
library) lost the records of messages it had already answered. Reports are data
promised to other domains; they may not be lost that way.

So each record is first appended, as one JSON line, to this worker's own append-only
file in ``[store] journal_dir`` with a single ``os.write`` (no Python buffering). The
page cache outlives the process: a killed worker's lines are on disk for the next one.
A machine crash (power, kernel) can still lose the last lines the kernel had not
written back; ``[store] journal_fsync = true`` closes that gap at the price of one
fdatasync per message on the reply path.

Progress: after a batch is committed the writer thread tells the journal how far it
got (`Journal.committed`). When everything written is committed the file is truncated;
when a long committed prefix piles up under steady load, the uncommitted tail is copied
to a new file that atomically replaces the old one (`COMPACT_BYTES`).

Ownership: a journal belongs to whoever holds its ``flock``. The worker takes it on a
temporary name before the file gets its ``.jnl`` name, so no one ever sees an unlocked
live journal. The kernel drops the lock when the worker dies, however it dies; a
``.jnl`` file whose lock can be taken is an orphan and is replayed into the database by
the next worker's writer thread (`orphans`). Replay may run twice over the same lines (a
replaying worker killed in turn, a kill between commit and truncation): every record
carries a unique id (``uid``, ``<process token>-<sequence>``) and every insert is
``ON CONFLICT (uid) DO NOTHING``, so each record lands exactly once.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("authmilter.store")

SUFFIX = ".jnl"
COMPACT_BYTES = 1 << 20     # a committed prefix this long is dropped even while records wait


@dataclass(frozen=True, slots=True)
class Entry:
    """One record on its way to the writer: the row (uid last) and where its line ends
    in the journal (a logical offset, `Journal.committed` takes it back; 0: not
    journaled). Without a journal the row is still the record, converted by the writer."""

    row: Any
    end: int


def encode(row: Sequence[Any]) -> bytes:
    return (json.dumps(list(row), separators=(",", ":"), ensure_ascii=False) + "\n").encode()


class Journal:
    """This process's journal file; thread-safe (appends come from libmilter threads,
    progress from the writer thread)."""

    def __init__(self, directory: str, fsync: bool = False) -> None:
        self.directory = directory
        self.fsync = fsync
        self.token = os.urandom(16).hex()
        self.path = os.path.join(directory, f"w{os.getpid()}-{self.token}{SUFFIX}")
        self._lock = threading.Lock()
        self._base = 0        # logical offset of the file's first byte
        self._end = 0         # logical offset after the last line written
        self._done = 0        # logical offset up to which every line is committed
        self._fd = _create_locked(directory, self.path)

    def append(self, rows: Sequence[tuple[Any, ...]]) -> list[Entry]:
        """Write *rows* (each ending with its uid) in one ``os.write``; OSError if the
        disk refuses (the caller logs it, the records still go to the queue)."""
        lines = [encode(r) for r in rows]
        data = b"".join(lines)
        with self._lock:
            written = os.write(self._fd, data)
            if written != len(data):   # a full disk mid-write: the tail is a partial line
                raise OSError(f"journal {self.path}: short write ({written} of {len(data)} bytes)")
            if self.fsync:
                os.fdatasync(self._fd)
            end = self._end
            entries = []
            for row, line in zip(rows, lines, strict=True):
                end += len(line)
                entries.append(Entry(row, end))
            self._end = end
        return entries

    def committed(self, end: int) -> None:
        """Every line up to logical offset *end* is in the database."""
        with self._lock:
            if end <= self._done or self._fd < 0:
                return
            self._done = end
            if self._done >= self._end:
                os.ftruncate(self._fd, 0)
                self._base = self._end
            elif self._done - self._base >= COMPACT_BYTES:
                self._compact()

    def _compact(self) -> None:
        # Under the lock: copy the uncommitted tail to a new locked file and rename it
        # over ours. A kill before the rename leaves the old file (replayed whole, the
        # committed lines ignored); after it, the new one.
        tail = os.pread(self._fd, self._end - self._done, self._done - self._base)
        fd = _create_locked(self.directory, self.path, tail)
        os.close(self._fd)
        self._fd = fd
        self._base = self._done

    def close(self) -> bool:
        """Stop journaling; the file goes if everything in it is committed, else it stays
        for the next worker. True if it went."""
        with self._lock:
            clean = self._done >= self._end
            if clean:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            os.close(self._fd)
            self._fd = -1
        return clean

    def abandon(self) -> None:
        """In a forked child: the parent's file is none of ours (closing our copy of the
        descriptor leaves the parent's lock alone)."""
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = -1


def _create_locked(directory: str, path: str, content: bytes = b"") -> int:
    """A new file at *path*, flock-ed before it appears under that name."""
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if content:
            os.write(fd, content)
        os.rename(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return fd


@contextlib.contextmanager
def claim(path: str) -> Iterator[int | None]:
    """The fd of orphan journal *path*, locked by us, or None if it is alive (another
    process holds it) or already replayed and removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        # Replayed and unlinked by someone else between our open and our lock.
        yield fd if os.fstat(fd).st_nlink > 0 else None
    finally:
        os.close(fd)


def orphans(directory: str, own: str = "") -> list[str]:
    """Journal files in *directory* other than *own*, oldest first (candidates only:
    `claim` tells a dead worker's from a live one's)."""
    try:
        names = [n for n in os.listdir(directory) if n.endswith(SUFFIX)]
    except FileNotFoundError:
        return []
    paths = [os.path.join(directory, n) for n in names]
    paths = [p for p in paths if p != own]

    def mtime(p: str) -> float:
        try:
            return os.stat(p).st_mtime
        except FileNotFoundError:
            return 0.0

    return sorted(paths, key=mtime)


def read_rows(fd: int, path: str) -> Iterator[tuple[Any, ...]]:
    """The rows of a claimed journal. A line that does not parse (a machine crash can
    leave a partial last line) is skipped with a warning."""
    with os.fdopen(os.dup(fd), "rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
                if not isinstance(row, list):
                    raise ValueError("not a row")
            except ValueError:
                log.warning("store journal %s: line %d unreadable, skipped", path, number)
                continue
            yield tuple(row)


def check_directory(directory: str) -> str:
    """"" if *directory* can hold journals (it exists or its parent lets us create it),
    else why not."""
    if os.path.isdir(directory):
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"directory {directory} is not writable by uid {os.geteuid()}"
        return ""
    parent = os.path.dirname(directory.rstrip("/")) or "/"
    if not os.path.isdir(parent):
        return f"directory {directory} does not exist, nor its parent {parent} (create it, writable by the " \
               "authmilter user)"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"directory {directory} does not exist and uid {os.geteuid()} cannot create it in {parent}"
    return ""
