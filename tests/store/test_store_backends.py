"""The store on real databases: every test runs on SQLite (WAL) and on PostgreSQL.

Schema creation is idempotent and versioned, submitted records land in batches and
read back field for field, keyed state expires, two processes share one database, a
forked child never uses its parent's connections, and an unreachable database costs
the caller a StoreError, never a wait.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from authmilter.records import DkimEvidence, MessageRecord, PolicyPublished
from authmilter.store import BatchingStore, StoreError, connector, parse_url
from authmilter.store.rows import COLUMNS, from_row
from authmilter.store.schema import MIGRATIONS, Migration

REPO = Path(__file__).resolve().parents[2]


def make_store(url: str, **kw: object) -> BatchingStore:
    u = parse_url(url)
    return BatchingStore(connector(u), u.redacted(), **kw)  # type: ignore[arg-type]


def record(i: int = 0, reporter: str = "mx1.test") -> MessageRecord:
    return MessageRecord(
        time=1764900000.0 + i, reporter=reporter, queue_id=f"Q{i}", source_ip="192.0.2.10",
        helo="mail.example.org", envelope_from=f"bounce{i}@example.org", envelope_from_domain="example.org",
        header_from="example.org", spf_result="pass", spf_domain="example.org", spf_scope="mfrom",
        dkim=(DkimEvidence("example.org", "s1", "pass"), DkimEvidence("esp.test", "k", "fail")),
        dmarc_result="pass", dkim_aligned=True, spf_aligned=False,
        policy=PolicyPublished(domain="example.org", p="reject", sp="quarantine", adkim="s", testing=True,
                               psd="n", discovery="treewalk", rua=("mailto:a@example.org",), fo="1"),
        disposition="none", overrides=(("local_policy", "trusted forwarder"),))


def rows(url: str) -> list[MessageRecord]:
    """Read message_records back with the database's own driver, oldest first."""
    cols = ", ".join(COLUMNS)
    u = parse_url(url)
    if u.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(u.path) as conn:
            return [from_row(r) for r in conn.execute(f"SELECT {cols} FROM message_records ORDER BY id")]
    import psycopg

    with psycopg.connect(u.dsn) as conn:
        return [from_row(r) for r in conn.execute(f"SELECT {cols} FROM message_records ORDER BY id")]


def versions(url: str) -> list[int]:
    u = parse_url(url)
    sql = "SELECT version FROM schema_version ORDER BY version"
    if u.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(u.path) as conn:
            return [r[0] for r in conn.execute(sql)]
    import psycopg

    with psycopg.connect(u.dsn) as conn:
        return [r[0] for r in conn.execute(sql)]


@pytest.fixture
def store(store_url: str):  # type: ignore[no-untyped-def]
    s = make_store(store_url, batch_size=4, flush_interval_s=0.05)
    yield s
    s.close()


# -- schema ------------------------------------------------------------------------------------


def test_init_creates_the_schema_once_and_is_idempotent(store_url: str) -> None:
    s = make_store(store_url)
    assert s.init() == MIGRATIONS[-1].version
    assert s.init() == MIGRATIONS[-1].version     # nothing left to do, nothing applied twice
    assert versions(store_url) == [m.version for m in MIGRATIONS]
    status = s.status()
    assert (status.schema_version, status.records, status.keys) == (MIGRATIONS[-1].version, 0, 0)
    s.close()


def test_migrations_apply_in_order_and_only_the_missing_ones(store_url: str) -> None:
    make_store(store_url).init()
    extra = Migration(MIGRATIONS[-1].version + 1, "test: one more table",
                      sqlite=("CREATE TABLE later_feature (k TEXT PRIMARY KEY)",),
                      postgresql=("CREATE TABLE later_feature (k TEXT PRIMARY KEY)",))
    newer = make_store(store_url, migrations=(*MIGRATIONS, extra))
    assert newer.init() == extra.version
    assert newer.init() == extra.version          # a second run would fail on CREATE TABLE
    assert versions(store_url) == [*(m.version for m in MIGRATIONS), extra.version]
    # The older program refuses the newer schema instead of writing with wrong assumptions.
    with pytest.raises(StoreError, match="newer than this authmilter") as info:
        make_store(store_url).init()
    assert info.value.transient is False
    newer.close()


def test_migration_versions_must_increase() -> None:
    from authmilter.store.schema import check_order

    check_order(MIGRATIONS)
    with pytest.raises(ValueError):
        check_order((MIGRATIONS[0], MIGRATIONS[0]))


# -- records -------------------------------------------------------------------------------------


def test_submitted_records_land_in_batches_field_for_field(store: BatchingStore, store_url: str) -> None:
    sent = [record(i) for i in range(10)]
    store.submit(sent[:3])
    store.submit(sent[3:])
    store.flush()
    assert rows(store_url) == sent
    assert store.written == 10 and store.dropped == 0
    assert store.status().records == 10


def test_records_are_written_within_the_flush_interval_without_a_flush(store_url: str) -> None:
    s = make_store(store_url, batch_size=1000, flush_interval_s=0.2)
    s.submit([record(1)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and s.written == 0:
        time.sleep(0.02)
    assert rows(store_url) == [record(1)]
    s.close()


def test_close_writes_what_is_still_queued(store_url: str) -> None:
    s = make_store(store_url, flush_interval_s=3600)   # only close() can have written them
    s.submit([record(i) for i in range(5)])
    s.close()
    assert len(rows(store_url)) == 5
    with pytest.raises(StoreError, match="closed"):
        s.submit([record(6)])


def test_nul_in_remote_text_does_not_poison_a_batch(store: BatchingStore, store_url: str) -> None:
    import dataclasses

    bad = dataclasses.replace(record(1), helo="evil\x00helo")
    store.submit([record(0), bad, record(2)])
    store.flush()
    assert [r.helo for r in rows(store_url)] == ["mail.example.org", "evilhelo", "mail.example.org"]


# -- keyed state ---------------------------------------------------------------------------------


def test_put_get_overwrite_and_expiry(store: BatchingStore) -> None:
    assert store.get("greylist:192.0.2.1/a@b/c@d") is None
    store.put("greylist:192.0.2.1/a@b/c@d", b"\x00first", ttl_s=60)
    assert store.get("greylist:192.0.2.1/a@b/c@d") == b"\x00first"
    store.put("greylist:192.0.2.1/a@b/c@d", b"second", ttl_s=60)
    assert store.get("greylist:192.0.2.1/a@b/c@d") == b"second"
    store.put("short", b"x", ttl_s=0.2)
    assert store.get("short") == b"x"
    time.sleep(0.3)
    assert store.get("short") is None                 # expired rows read as absent at once
    assert store.status().keys == 1


def test_purge_deletes_expired_keys_and_records_past_retention(store_url: str) -> None:
    import dataclasses

    s = make_store(store_url)
    s.init()
    s.put("old", b"x", ttl_s=0.01)
    s.put("new", b"y", ttl_s=60)
    now = time.time()
    s.submit([dataclasses.replace(record(0), time=now - 40 * 86400), dataclasses.replace(record(1), time=now)])
    s.flush()
    time.sleep(0.05)
    backend = connector(parse_url(store_url))(1.0)
    try:
        assert backend.purge(time.time()) == 1                       # keys only
        assert backend.get("new", time.time()) == b"y"
        assert backend.purge(time.time(), records_before=now - 31 * 86400) == 1
    finally:
        backend.close()
    assert [r.queue_id for r in rows(store_url)] == ["Q1"]
    s.close()


def test_the_writer_purges_on_its_own(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from authmilter.store import batching

    monkeypatch.setattr(batching, "PURGE_INTERVAL_S", 0.1)
    s = make_store(store_url, keep_records_s=3600.0, flush_interval_s=0.01)
    s.submit([dataclasses.replace(record(0), time=time.time() - 7200), dataclasses.replace(record(1), time=time.time())])
    s.put("gone", b"x", ttl_s=0.01)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and [r.queue_id for r in rows(store_url)] != ["Q1"]:
        time.sleep(0.05)
    assert [r.queue_id for r in rows(store_url)] == ["Q1"]
    backend = connector(parse_url(store_url))(1.0)
    try:
        assert backend.purge(time.time()) == 0                       # the expired key went too
    finally:
        backend.close()
    s.close()


def test_status_creates_nothing(store_url: str) -> None:
    s = make_store(store_url)
    status = s.status()
    assert (status.schema_version, status.records, status.keys) == (0, 0, 0)
    s.close()
    assert make_store(store_url).status().schema_version == 0        # still no schema


# -- processes -----------------------------------------------------------------------------------

_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from authmilter.records import MessageRecord
    from authmilter.store import BatchingStore, connector, parse_url
    url, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    u = parse_url(url)
    s = BatchingStore(connector(u), u.redacted(), batch_size=7, flush_interval_s=0.01, timeout_s=5.0)
    for i in range(n):
        s.submit([MessageRecord(reporter=who, queue_id=str(i), time=time.time())])
        s.put(f"{{who}}:{{i}}", str(i).encode(), 60)      # interleaved single-row writes
        assert s.get(f"{{who}}:{{i}}") == str(i).encode()
    s.close()
""")


def test_two_processes_write_one_database_concurrently(store_url: str) -> None:
    make_store(store_url).init()
    script = _WRITER.format(tests=str(REPO / "tests"))
    procs = [subprocess.Popen([sys.executable, "-c", script, store_url, who, "60"], stderr=subprocess.PIPE)
             for who in ("mx1", "mx2")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    got = rows(store_url)
    assert len(got) == 120
    for who in ("mx1", "mx2"):
        assert sorted(int(r.queue_id) for r in got if r.reporter == who) == list(range(60))
    s = make_store(store_url)
    assert s.status().keys == 120
    s.close()


def test_a_forked_child_opens_its_own_connections(store: BatchingStore, store_url: str) -> None:
    store.put("parent", b"1", 60)                     # the parent now holds a connection
    store.submit([record(0)])
    store.flush()
    pid = os.fork()
    if pid == 0:                                      # child: must not touch the parent's connection
        code = 1
        try:
            store.put("child", b"2", 60)
            store.submit([record(1, reporter="child")])
            store.flush()
            store.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # The parent's connection still works: a shared socket or file handle would be broken now.
    assert store.get("child") == b"2" and store.get("parent") == b"1"
    store.submit([record(2)])
    store.flush()
    assert [r.reporter for r in rows(store_url)] == ["mx1.test", "child", "mx1.test"]


# -- failure -------------------------------------------------------------------------------------


def unreachable(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite://{tmp_path}/gone/state.db"       # its directory does not exist
    return f"postgresql://nobody@/db?host={tmp_path}&port=1"   # no server behind this socket


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_an_unreachable_database_never_makes_submit_wait(kind: str, tmp_path: Path) -> None:
    s = make_store(unreachable(kind, tmp_path), queue_size=20, batch_size=5, flush_interval_s=0.01)
    started = time.monotonic()
    dropped = 0
    for i in range(200):
        try:
            s.submit([record(i)])
        except StoreError as exc:
            assert "queue full" in str(exc)
            dropped += 1
    # Anti-hang net, not a speed target: a submit that waited for the database would
    # take at least a connect timeout (2 s) each, 400 s for 200.
    assert time.monotonic() - started < 30.0
    assert dropped >= 200 - 20 - 5
    with pytest.raises(StoreError):
        s.flush(timeout_s=0.5)
    s.close(timeout_s=0.5)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_an_unreachable_database_is_a_prompt_store_error_on_read(kind: str, tmp_path: Path) -> None:
    s = make_store(unreachable(kind, tmp_path), timeout_s=0.2)
    with pytest.raises(StoreError):
        s.get("k")
    for _ in range(50):                               # later reads fail fast, no reconnect each time:
        with pytest.raises(StoreError, match="unavailable"):   # the fail-fast error, not a connect error
            s.get("k")
        with pytest.raises(StoreError):
            s.put("k", b"v", 1)
    s.close()
