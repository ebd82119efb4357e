"""The record journal: a worker killed with records still queued loses none of them.

Issue 11: "Kill -9 a worker while records are queued: no record is lost for a message
whose reply was already sent." Each record is appended to the worker's journal before
the reply; the next worker replays dead workers' journals, and a unique id per record
makes a line replayed twice land once. These tests kill real processes: the daemon's
worker with SIGKILL (and a second worker in the middle of its replay), and in-process
a forked child that exits without closing its store.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from milterd import Daemon
from test_store_milter import config, records, send, wait_records

from authmilter.config.schema import settings_from_dict
from authmilter.errors import ConfigError
from authmilter.records import MessageRecord
from authmilter.runtime import Runtime
from authmilter.store import BatchingStore, connector, parse_url
from authmilter.store.journal import SUFFIX

WAIT_S = 60.0


def make_store(url: str, journal: Path, **kw: Any) -> BatchingStore:
    u = parse_url(url)
    return BatchingStore(connector(u), u.redacted(), journal_dir=str(journal), **kw)


def journals(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SUFFIX}"))


def wait_until(predicate: Any, what: str, log: Any = lambda: "") -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen:\n{log()}")
        time.sleep(0.05)


@pytest.fixture
def daemons():  # type: ignore[no-untyped-def]
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


def kill_worker(daemon: Daemon) -> int:
    """SIGKILL the one worker; returns the pid of the worker the master starts instead."""
    (pid,) = daemon.worker_pids()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: len(daemon.worker_pids()) == 1 and pid not in daemon.worker_pids(),
               f"a new worker after killing {pid}", daemon.log)
    (new,) = daemon.worker_pids()
    return new


# -- the real daemon -------------------------------------------------------------------------------------


def test_a_killed_worker_loses_no_record_it_answered_for(tmp_path: Path, dns_server: Any, store_url: str,
                                                        daemons: list) -> None:
    dns_server.add_txt("kill.example", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add_txt("_dmarc.kill.example", "v=DMARC1; p=none; rua=mailto:d@kill.example")
    # An hour between flushes and batches larger than the test: nothing reaches the
    # database before the kill; every record sits in the worker's queue.
    cfg = config(tmp_path, dns_server, "mx.test",
                 {"enabled": True, "url": store_url, "flush_interval_s": 3600.0, "batch_size": 1000})
    cfg["workers"] = 1
    daemon = Daemon(tmp_path, cfg)
    daemons.append(daemon)
    daemon.start()
    n = 8
    for i in range(n):
        assert send(daemon, "kill.example", i, f"K{i}") == "accept"     # the reply was sent
    assert records(store_url) == []
    assert len(journals(tmp_path / "journal")) == 1
    new = kill_worker(daemon)
    assert daemon.wait_log(rf"replayed {n} record\(s\) from w\d+-", timeout=WAIT_S), daemon.log()
    got = wait_records(store_url, n)
    assert sorted(r.queue_id for r in got) == [f"K{i}" for i in range(n)]       # none lost, none twice
    # The dead worker's journal is gone; the new one's stays (its records: none yet).
    assert [p.name.split("-")[0] for p in journals(tmp_path / "journal")] == [f"w{new}"]
    assert daemon.stop() == 0, daemon.log()
    assert len(records(store_url)) == n
    assert journals(tmp_path / "journal") == []          # a clean stop leaves no journal


def test_a_worker_killed_in_the_middle_of_a_replay_still_writes_each_record_once(
        tmp_path: Path, dns_server: Any, daemons: list) -> None:
    dns_server.add_txt("twice.example", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add_txt("_dmarc.twice.example", "v=DMARC1; p=none")
    url = f"sqlite://{tmp_path}/state.db"
    pause = tmp_path / "pause-replay"
    # Batches of 3: six of the seven records are committed by the first worker, the
    # seventh waits for a flush an hour away.
    cfg = config(tmp_path, dns_server, "mx.test",
                 {"enabled": True, "url": url, "flush_interval_s": 3600.0, "batch_size": 3})
    cfg["workers"] = 1
    daemon = Daemon(tmp_path, cfg, env={"AUTHMILTER_TEST_REPLAY_PAUSE": str(pause)})
    daemons.append(daemon)
    daemon.start()
    for i in range(7):
        assert send(daemon, "twice.example", i, f"T{i}") == "accept"
    assert len(wait_records(url, 6)) == 6
    pause.touch()          # the next replay stops after its first batch (3 lines, already in the database)
    second = kill_worker(daemon)
    assert daemon.wait_log(r"replay of w\d+-\S+ paused", timeout=WAIT_S), daemon.log()
    assert not pause.exists()
    # Depending on whether the first worker had truncated its journal after its second
    # batch, the paused replay wrote T6 or re-read T0-T2; either way nothing twice.
    halfway = [r.queue_id for r in records(url)]
    assert sorted(halfway) in ([f"T{i}" for i in range(6)], [f"T{i}" for i in range(7)])
    os.kill(second, signal.SIGKILL)                      # killed while it holds the claimed journal
    wait_until(lambda: second not in daemon.worker_pids() and len(daemon.worker_pids()) == 1,
               "a third worker", daemon.log)
    assert daemon.wait_log(r"replayed [17] record\(s\) from w\d+-", timeout=WAIT_S), daemon.log()
    assert sorted(r.queue_id for r in records(url)) == [f"T{i}" for i in range(7)]   # exactly once each
    assert daemon.stop() == 0, daemon.log()
    assert sorted(r.queue_id for r in records(url)) == [f"T{i}" for i in range(7)]


def test_an_unusable_journal_dir_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    settings = settings_from_dict({"signing": {"enabled": False},
                                   "store": {"enabled": True, "url": f"sqlite://{tmp_path}/state.db",
                                             "journal_dir": f"{tmp_path}/no/such/dir"}}, "a.toml")
    runtime = Runtime.load(settings)          # loading (check-config, reload) creates nothing
    with pytest.raises(ConfigError) as info:
        runtime.init_store()                   # the daemon's start
    assert info.value.key == "store.journal_dir" and "does not exist" in info.value.reason
    assert runtime.store is not None
    runtime.store.close()


def test_the_default_journal_dir_is_beside_the_sqlite_file(tmp_path: Path) -> None:
    settings = settings_from_dict({"signing": {"enabled": False},
                                   "store": {"enabled": True, "url": f"sqlite://{tmp_path}/state.db"}}, "a.toml")
    runtime = Runtime.load(settings)
    runtime.init_store()
    assert (tmp_path / "state.db.journal").is_dir()
    assert runtime.store is not None
    runtime.store.close()


# -- the store in-process ---------------------------------------------------------------------------------


def record(n: int) -> MessageRecord:
    return MessageRecord(time=1_800_000_000.0 + n, reporter="mx.test", queue_id=f"J{n}", source_ip="192.0.2.1",
                         header_from="journal.example", dmarc_result="pass")


def test_a_process_that_dies_with_queued_records_leaves_them_for_the_next(tmp_path: Path, store_url: str) -> None:
    journal = tmp_path / "journal"
    make_store(store_url, journal).init()
    pid = os.fork()
    if pid == 0:   # a worker that queues three records and dies without closing its store
        try:
            child = make_store(store_url, journal, flush_interval_s=3600.0, batch_size=1000)
            child.start()
            child.submit([record(0), record(1)])
            child.submit([record(2)])
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert records(store_url) == []
    (left,) = journals(journal)
    assert len(left.read_bytes().splitlines()) == 3
    store = make_store(store_url, journal)
    store.start()                                # replays the dead process's journal
    store.submit([record(3)])
    store.flush()
    assert sorted(r.queue_id for r in records(store_url)) == ["J0", "J1", "J2", "J3"]
    assert store.replayed == 3
    (own,) = journals(journal)
    assert own != left and own.stat().st_size == 0     # everything committed: truncated
    store.close()
    assert journals(journal) == []


def test_a_live_workers_journal_is_never_replayed(tmp_path: Path, sqlite_url: str) -> None:
    journal = tmp_path / "journal"
    a = make_store(sqlite_url, journal, flush_interval_s=3600.0, batch_size=1000)
    a.init()
    a.start()
    a.submit([record(0)])
    # A second store in this process stands for another worker: a's journal is locked.
    b = make_store(sqlite_url, journal)
    b.start()
    b.flush()
    assert b.replayed == 0 and records(sqlite_url) == []
    b.close()
    a.close()
    assert [r.queue_id for r in records(sqlite_url)] == ["J0"]
    assert journals(journal) == []


def test_the_journal_keeps_only_what_is_not_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from authmilter.store import journal as jnl

    monkeypatch.setattr(jnl, "COMPACT_BYTES", 1)
    j = jnl.Journal(str(tmp_path))
    entries = j.append([("a", 1, "u1"), ("b", 2, "u2"), ("c", 3, "u3")])
    j.committed(entries[0].end)                   # a committed prefix: the tail moves to a new file
    assert Path(j.path).read_bytes() == jnl.encode(("b", 2, "u2")) + jnl.encode(("c", 3, "u3"))
    more = j.append([("d", 4, "u4")])
    j.committed(entries[2].end)
    with jnl.claim(j.path) as fd:
        assert fd is None                          # alive: its owner holds the lock
    assert Path(j.path).read_bytes() == jnl.encode(("d", 4, "u4"))
    j.committed(more[0].end)                       # everything committed: truncated
    assert Path(j.path).stat().st_size == 0
    assert j.close() and not Path(j.path).exists()
