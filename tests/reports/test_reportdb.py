"""The store side of reports (store/reportdb.py) on both backends: one run at a time,
a report id is built once, deliveries and destinations keep their state, old
bookkeeping is purged."""
from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from authmilter.store.reportdb import open_reportdb


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/state.db"
    server: Any = request.getfixturevalue("reports_pg")
    return str(server.create_database(f"d_{uuid.uuid4().hex[:12]}"))


def test_exactly_one_run_holds_the_lock(url: str) -> None:
    first, second = open_reportdb(url, 10.0), open_reportdb(url, 10.0)
    try:
        assert first.lock() == ""
        assert "another authmilter reports run" in second.lock()
        first.unlock()
        assert second.lock() == ""
    finally:
        first.close()
        second.close()


def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over(tmp_path: Path) -> None:
    db = open_reportdb(f"sqlite://{tmp_path}/state.db", 10.0)
    try:
        dead = 2 ** 22 + 12345          # above pid_max on default systems: never a live process
        db.conn.execute("INSERT INTO dmarc_lock (name, holder, expires) VALUES ('reports', ?, ?)",
                        (f"{socket.gethostname()}:{dead}", time.time() + 3600))
        assert db.lock() == ""
    finally:
        db.close()


def test_a_report_is_built_once_and_its_deliveries_keep_state(url: str) -> None:
    db = open_reportdb(url, 10.0)
    try:
        args = ("rid1", "example.org", 0, 86400, 3, ("mailto:a@example.org",), "f.xml.gz", "open", b"gz")
        assert db.add_report(*args, [("mailto:a@example.org", "pending", "")])
        assert not db.add_report(*args, [("mailto:a@example.org", "pending", "")])   # same id: nothing
        assert [p.report_id for p in db.pending()] == ["rid1"] and db.pending()[0].payload == b"gz"
        assert db.reported_until() == {"example.org": 86400}
        db.set_delivery("rid1", "mailto:a@example.org", "sent", "", True)
        assert db.pending() == []
        assert not db.destination_result("a@example.org", False, "550", 2)
        assert db.destination_result("a@example.org", False, "550", 2)            # second failure
        assert db.suppressed("a@example.org") == "550"
        assert db.unsuppress("a@example.org") and db.suppressed("a@example.org") is None
        assert db.purge_reports(10**6) == 1 and db.reported_until() == {}
    finally:
        db.close()
