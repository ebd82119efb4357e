"""The store behind the real daemon: ``authmilter run`` processes write message records.

Two MX hosts (two daemons with their own authserv-id) share one PostgreSQL; every
inbound message that reached a DMARC evaluation leaves one row naming the host that
wrote it (``reporter``). A daemon with an SQLite store writes what its workers still
queue when it stops. A default configuration creates no database at all.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from milterd import Daemon

from authmilter.store import BatchingStore, connector, parse_url
from authmilter.store.rows import COLUMNS, from_row
from authmilter.store.schema import LATEST

WAIT_S = 60.0


def config(tmp: Path, dns: Any, authserv_id: str, store: dict[str, Any] | None) -> dict[str, Any]:
    c: dict[str, Any] = {
        "socket": f"unix:{tmp}/m.sock", "authserv_id": authserv_id, "workers": 2,
        "dns": {"servers": [dns.address], "timeout_s": 1.0, "message_budget_s": 4.0},
        "signing": {"enabled": False},
    }
    if store is not None:
        c["store"] = {"journal_dir": f"{tmp}/journal", **store}
    return c


def message(domain: str, n: int) -> bytes:
    return (f"From: Alice <alice@{domain}>\r\nTo: bob@mx.test\r\nSubject: test {n}\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{n}@{domain}>\r\n\r\nHello.\r\n").encode()


def send(daemon: Daemon, domain: str, n: int, qid: str) -> str:
    with daemon.client() as c:
        r = c.session(ip="192.0.2.10", helo=f"mail.{domain}", mail_from=f"bounce@{domain}", rcpts=["bob@mx.test"],
                      message=message(domain, n), macros={"i": qid, "j": daemon.config["authserv_id"]})
    return str(r.action)


def records(url: str) -> list[Any]:
    u = parse_url(url)
    sql = f"SELECT {', '.join(COLUMNS)} FROM message_records ORDER BY id"
    if u.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(u.path) as conn:
            return [from_row(r) for r in conn.execute(sql)]
    import psycopg

    with psycopg.connect(u.dsn) as conn:
        return [from_row(r) for r in conn.execute(sql)]


def wait_records(url: str, count: int) -> list[Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        got = records(url)
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_two_mx_hosts_share_one_postgresql(tmp_path: Path, dns_server: Any, pg_url: str, daemons: list) -> None:
    dns_server.add_txt("shared.example", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add_txt("_dmarc.shared.example", "v=DMARC1; p=reject; rua=mailto:dmarc@shared.example")
    store = {"enabled": True, "url": pg_url, "flush_interval_s": 0.1}
    mx = []
    for name in ("mx1.test", "mx2.test"):
        d = tmp_path / name
        d.mkdir()
        daemon = Daemon(d, config(d, dns_server, name, store))
        daemons.append(daemon)
        mx.append(daemon.start())
    # The master created the schema before its workers forked.
    reader = BatchingStore(connector(parse_url(pg_url)), "t")
    assert reader.status().schema_version == LATEST
    reader.close()
    for n in range(6):
        daemon = mx[n % 2]
        assert send(daemon, "shared.example", n, f"Q{n}") == "accept"
    got = wait_records(pg_url, 6)
    assert sorted((r.reporter, r.queue_id) for r in got) == [
        ("mx1.test", "Q0"), ("mx1.test", "Q2"), ("mx1.test", "Q4"),
        ("mx2.test", "Q1"), ("mx2.test", "Q3"), ("mx2.test", "Q5")]
    first = got[0]
    assert first.header_from == "shared.example" and first.source_ip == "192.0.2.10"
    assert first.spf_result == "pass" and first.dmarc_result == "pass" and first.policy.p == "reject"
    for d in mx:
        assert d.stop() == 0, d.log()
        assert " store" not in d.log(), d.log()      # no store warning on either host


def test_a_stopping_daemon_writes_what_its_workers_still_queue(tmp_path: Path, dns_server: Any,
                                                               daemons: list) -> None:
    dns_server.add_txt("drain.example", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add_txt("_dmarc.drain.example", "v=DMARC1; p=none")
    url = f"sqlite://{tmp_path}/state.db"
    # An hour between flushes: only the flush on stop can have written the rows.
    daemon = Daemon(tmp_path, config(tmp_path, dns_server, "mx.test",
                                     {"enabled": True, "url": url, "flush_interval_s": 3600.0}))
    daemons.append(daemon)
    daemon.start()
    assert (tmp_path / "state.db").exists()        # created (and migrated) at start
    for n in range(4):
        assert send(daemon, "drain.example", n, f"D{n}") == "accept"
    assert records(url) == []
    assert daemon.stop() == 0, daemon.log()
    assert sorted(r.queue_id for r in records(url)) == ["D0", "D1", "D2", "D3"]


def test_the_master_creates_the_schema_before_its_workers_fork(tmp_path: Path, dns_server: Any, pg_url: str,
                                                                daemons: list) -> None:
    daemon = Daemon(tmp_path, config(tmp_path, dns_server, "mx.test", {"enabled": True, "url": pg_url}))
    daemons.append(daemon)
    daemon.start()
    reader = BatchingStore(connector(parse_url(pg_url)), "t")
    status = reader.status()
    reader.close()
    assert (status.schema_version, status.records) == (LATEST, 0)
    assert daemon.stop() == 0


def test_an_unreachable_postgresql_never_changes_the_reply(tmp_path: Path, dns_server: Any, daemons: list) -> None:
    dns_server.add_txt("down.example", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add_txt("_dmarc.down.example", "v=DMARC1; p=reject")
    url = f"postgresql://nobody@/db?host={tmp_path}&port=1"
    daemon = Daemon(tmp_path, config(tmp_path, dns_server, "mx.test", {"enabled": True, "url": url}))
    daemons.append(daemon)
    daemon.start()
    assert daemon.wait_log(r"store not reachable at start", timeout=0)
    started = time.monotonic()
    assert [send(daemon, "down.example", n, f"U{n}") for n in range(3)] == ["accept"] * 3
    assert time.monotonic() - started < 10


def test_a_missing_store_directory_stops_start_up_naming_the_key(tmp_path: Path, dns_server: Any,
                                                                 daemons: list) -> None:
    url = f"sqlite://{tmp_path}/nodir/state.db"
    daemon = Daemon(tmp_path, config(tmp_path, dns_server, "mx.test", {"enabled": True, "url": url}))
    daemons.append(daemon)
    daemon.start(wait=False)
    assert daemon.wait_exit() == 78                 # EX_CONFIG
    assert f"store.url: directory {tmp_path}/nodir does not exist" in daemon.log()


def test_the_default_configuration_creates_no_database(tmp_path: Path, dns_server: Any, daemons: list) -> None:
    daemon = Daemon(tmp_path, config(tmp_path, dns_server, "mx.test", None))
    daemons.append(daemon)
    daemon.start()
    assert send(daemon, "nostore.example", 0, "N0") == "accept"
    assert daemon.stop() == 0
    assert not list(tmp_path.glob("*.db"))
