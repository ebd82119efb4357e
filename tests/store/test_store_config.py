"""``[store]`` configuration, when the store is opened, and ``authmilter store init|status``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from authmilter.config.schema import settings_from_dict
from authmilter.config.storeurl import POSTGRESQL, SQLITE
from authmilter.errors import ConfigError
from authmilter.runtime import Runtime
from authmilter.store import parse_url
from authmilter.store.rows import COLUMNS, from_row, record_fields, to_row
from authmilter.store.schema import LATEST

AUTHMILTER = Path(sys.executable).with_name("authmilter")
NO_SIGNING = {"signing": {"enabled": False}}


# -- the URL rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize("url,kind,path", [
    ("sqlite:///var/lib/authmilter/state.db", SQLITE, "/var/lib/authmilter/state.db"),
    ("SQLite:///srv/a.db", SQLITE, "/srv/a.db"),
    ("postgresql://authmilter@db.example/mail", POSTGRESQL, ""),
    ("postgres:///mail?host=/run/postgresql", POSTGRESQL, ""),
])
def test_store_urls(url: str, kind: str, path: str) -> None:
    parsed = parse_url(url)
    assert parsed.kind == kind and parsed.path == path


@pytest.mark.parametrize("url,reason", [
    ("sqlite://state.db", "relative paths are not allowed"),
    ("sqlite:state.db", "relative paths are not allowed"),
    ("sqlite:////var/lib/a.db", "three slashes: sqlite:///var/lib/a.db"),
    ("sqlite:///var/lib/", "not a file name"),
    ("mysql://x/y", "unknown scheme"),
    ("/var/lib/authmilter/state.db", "expected sqlite:///ABSOLUTE/PATH"),
    ("postgresql:mail", "expected postgresql://"),
])
def test_bad_store_urls_are_config_errors_naming_the_key(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_dict({"store": {"url": url}}, "x.toml")
    assert info.value.file == "x.toml" and info.value.key == "store.url" and reason in info.value.reason


@pytest.mark.parametrize("key", ["timeout_ms", "batch_size", "queue_size"])
def test_store_sizes_must_be_positive(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_dict({"store": {key: 0}}, "x.toml")
    assert info.value.key == f"store.{key}"


def test_on_store_error_choices() -> None:
    assert settings_from_dict({"store": {"on_store_error": "tempfail"}}).store.on_store_error == "tempfail"
    with pytest.raises(ConfigError, match="must be one of accept, tempfail"):
        settings_from_dict({"store": {"on_store_error": "reject"}})


def test_the_password_never_reaches_a_log_line() -> None:
    url = parse_url("postgresql://am:s3cret@db.example:5432/mail")
    assert "s3cret" not in url.redacted() and url.redacted().startswith("postgresql://am:***@db.example")


# -- when the store is opened -------------------------------------------------------------------------


def test_default_config_opens_no_store_and_creates_nothing() -> None:
    """Existing deployments (no /var/lib/authmilter) keep working: off unless enabled."""
    runtime = Runtime.load(settings_from_dict(NO_SIGNING))
    assert runtime.store is None
    runtime.init_store()                          # a no-op without a store


def test_enabled_store_with_a_missing_directory_stops_start_up(tmp_path: Path) -> None:
    settings = settings_from_dict({**NO_SIGNING, "store": {"enabled": True,
                                                           "url": f"sqlite://{tmp_path}/missing/state.db"}}, "a.toml")
    with pytest.raises(ConfigError) as info:
        Runtime.load(settings)
    assert info.value.key == "store.url" and "does not exist" in info.value.reason


def test_enabled_store_is_created_at_start_and_shared_by_reloads(tmp_path: Path) -> None:
    data = {**NO_SIGNING, "store": {"enabled": True, "url": f"sqlite://{tmp_path}/state.db"}}
    runtime = Runtime.load(settings_from_dict(data, "a.toml"))
    assert runtime.store is not None and not (tmp_path / "state.db").exists()   # lazy until init
    runtime.init_store()
    assert (tmp_path / "state.db").exists()
    again = Runtime.load(settings_from_dict(data, "a.toml"))
    assert again.store is runtime.store          # same queue and connections after a reload
    runtime.store.close()


# -- rows ---------------------------------------------------------------------------------------------------


def test_every_message_record_field_has_a_column() -> None:
    """A new MessageRecord field must come with a migration (and a COLUMNS entry)."""
    assert COLUMNS == record_fields()


def test_row_round_trip_of_a_default_record() -> None:
    from authmilter.records import MessageRecord

    assert from_row(to_row(MessageRecord())) == MessageRecord()


# -- the command ----------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(AUTHMILTER), *args], capture_output=True, text=True, timeout=60)


def test_store_init_and_status_commands(tmp_path: Path, pg_url: str) -> None:
    for url in (f"sqlite://{tmp_path}/state.db", pg_url):
        config = tmp_path / "authmilter.toml"
        config.write_text(f'[store]\nurl = "{url}"\n')          # works without enabled = true
        out = run_cli("store", "init", "-c", str(config))
        assert out.returncode == 0, out.stderr
        assert f"schema version {LATEST}" in out.stdout
        assert run_cli("store", "init", "-c", str(config)).returncode == 0     # idempotent
        out = run_cli("store", "status", "-c", str(config))
        assert out.returncode == 0, out.stderr
        assert f"schema version {LATEST}, 0 message record(s), 0 key(s)" in out.stdout


def test_store_status_before_init_says_what_to_do(tmp_path: Path) -> None:
    config = tmp_path / "authmilter.toml"
    config.write_text(f'[store]\nurl = "sqlite://{tmp_path}/state.db"\n')
    out = run_cli("store", "status", "-c", str(config))
    assert out.returncode == 1 and "run authmilter store init" in out.stderr
    assert not (tmp_path / "state.db").exists()


def test_store_init_reports_errors_with_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "authmilter.toml"
    config.write_text(f'[store]\nurl = "sqlite://{tmp_path}/nodir/state.db"\n')
    out = run_cli("store", "init", "-c", str(config))
    assert out.returncode == 1
    assert f"{config}: store.url: directory {tmp_path}/nodir does not exist" in out.stderr


def test_store_init_as_root_hands_the_file_to_the_daemon_user(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
    import pwd

    nobody = pwd.getpwnam("nobody")
    config = tmp_path / "authmilter.toml"
    config.write_text(f'user = "nobody"\n[store]\nurl = "sqlite://{tmp_path}/state.db"\n')
    out = run_cli("store", "init", "-c", str(config))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "state.db").stat().st_uid == nobody.pw_uid


def test_rows_round_trip_any_text_through_sqlite(tmp_path: Path) -> None:
    """Remote text (HELO, envelope From, override comments) survives JSON and the
    database unchanged, whatever it contains (NUL aside, which PostgreSQL refuses)."""
    import sqlite3

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from authmilter.records import DkimEvidence, MessageRecord
    from authmilter.store.schema import MIGRATIONS

    text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
    conn = sqlite3.connect(tmp_path / "rows.db")
    for sql in (sql for m in MIGRATIONS for sql in m.sqlite):
        conn.execute(sql)
    insert = f"INSERT INTO message_records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"

    @settings(max_examples=60, deadline=None)
    @given(helo=text, env=text, qid=text, sel=text, comment=text, aligned=st.booleans(),
           when=st.floats(min_value=0, max_value=4e9))
    def check(helo: str, env: str, qid: str, sel: str, comment: str, aligned: bool, when: float) -> None:
        rec = MessageRecord(time=when, helo=helo, envelope_from=env, queue_id=qid, dkim_aligned=aligned,
                            dkim=(DkimEvidence("example.org", sel, "pass"),), overrides=(("local_policy", comment),))
        conn.execute("DELETE FROM message_records")
        conn.execute(insert, to_row(rec))
        (row,) = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM message_records").fetchall()
        assert from_row(row) == rec

    try:
        check()
    finally:
        conn.close()
