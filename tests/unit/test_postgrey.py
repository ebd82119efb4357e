"""postgrey's allow-list files read unchanged, and `authmilter import-postgrey`.

The shipped lists come from Debian's postgrey package (Makefile APT_TEST); under CI=true
a missing package fails the test instead of skipping it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from support import require

from authmilter.config.postgrey import ClientAllowList, RecipientAllowList, convert
from authmilter.config.schema import settings_from_dict
from authmilter.errors import ConfigError
from authmilter.runtime import Runtime

SHIPPED = Path("/etc/postgrey")


def shipped(name: str) -> str:
    path = SHIPPED / name
    require(path.exists(), f"{path} missing: apt-get install postgrey")
    return str(path)


def test_debians_shipped_client_list_loads_unchanged_and_matches_its_entries() -> None:
    clients = ClientAllowList.load([shipped("whitelist_clients")])
    text = Path(shipped("whitelist_clients")).read_text()
    # Every kind of entry the shipped file uses is understood.
    assert clients.names and clients.networks and clients.patterns
    assert "debian.org" in text and clients.contains("192.0.2.1", "mail.debian.org")   # domain and below
    assert clients.contains("192.0.2.1", "debian.org")
    assert "/^ms-smtp.*\\.rr\\.com$/" in text and clients.contains("192.0.2.1", "ms-smtp-03.rr.com")   # regex
    assert "\n195.235.39\n" in text and clients.contains("195.235.39.200")   # leading octets
    assert not clients.contains("195.235.40.1")
    assert "51.4.72.0/24" in text and clients.contains("51.4.72.9")   # CIDR
    assert "2a01:4180:4051:0800::/64" in text and clients.contains("2a01:4180:4051:800::25")   # IPv6 CIDR
    # An unknown client, an unverified name ("[IP]" as Postfix sends it) and "unknown" match nothing.
    assert not clients.contains("192.0.2.1", "mail.example.net")
    assert not clients.contains("192.0.2.1", "[192.0.2.1]") and not clients.contains("192.0.2.1", "unknown")


def test_debians_shipped_recipient_list_loads_unchanged() -> None:
    rcpts = RecipientAllowList.load([shipped("whitelist_recipients")])
    assert rcpts.contains("postmaster@any.example") and rcpts.contains("abuse@other.example")
    assert not rcpts.contains("bob@any.example")


def test_recipient_grammar(tmp_path: Path) -> None:
    f = tmp_path / "rcpts"
    f.write_text("# comment\nspamlover@example.org\nhelpdesk@\nfriends.example\n/^list-.*@lists\\.example$/\n")
    r = RecipientAllowList.load([str(f)])
    assert r.contains("SpamLover@example.org") and r.contains("helpdesk@x.example")
    assert r.contains("a@friends.example") and r.contains("a@sub.friends.example")
    assert r.contains("list-dev@lists.example") and not r.contains("dev@lists.example")


def test_a_bad_line_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "clients"
    f.write_text("good.example\n/unclosed(/\n")
    with pytest.raises(ConfigError) as e:
        ClientAllowList.load([str(f)])
    assert str(f) in str(e.value) and "2" in str(e.value)


def test_the_runtime_loads_the_shipped_lists_from_greylist_settings(tmp_path: Path) -> None:
    settings = settings_from_dict({"greylist": {"enabled": True,
                                                "whitelist_clients": [shipped("whitelist_clients")],
                                                "whitelist_recipients": [shipped("whitelist_recipients")]},
                                   "store": {"url": f"sqlite://{tmp_path}/state.db"},
                                   "signing": {"enabled": False}})
    rt = Runtime.load(settings)
    assert rt.antispam is not None and rt.store is not None
    assert rt.antispam.clients.contains("192.0.2.1", "mail.debian.org")


def test_import_postgrey_converts_options_and_files(tmp_path: Path) -> None:
    defaults = tmp_path / "postgrey"
    clients = tmp_path / "wl_clients"
    clients.write_text("example.org\n")
    defaults.write_text('POSTGREY_OPTS="--inet=10023 --delay=120 --max-age=10 --retry-window=12h '
                        f'--auto-whitelist-clients=3 --whitelist-clients={clients}"\n')
    table, notes = convert(str(defaults), exists=lambda p: False)
    assert table == {"enabled": True, "delay_s": 120, "max_age_days": 10, "retry_window_s": 43200,
                     "auto_allow_after": 3, "whitelist_clients": [str(clients)], "whitelist_recipients": []}
    assert any("database is not imported" in n for n in notes)


def test_import_postgrey_command_writes_a_valid_section(tmp_path: Path) -> None:
    defaults = tmp_path / "postgrey"
    defaults.write_text('POSTGREY_OPTS="--inet=10023 --delay=60 --frobnicate"\n')
    exe = Path(sys.executable).with_name("authmilter")
    out = subprocess.run([str(exe), "import-postgrey", str(defaults)], capture_output=True, text=True,
                         env={**os.environ}, timeout=60)
    assert out.returncode == 0, out.stderr
    data = tomllib.loads(out.stdout)
    assert data["greylist"]["delay_s"] == 60 and data["greylist"]["enabled"] is True
    assert "--frobnicate has no authmilter equivalent" in out.stdout
    settings_from_dict(data)   # what it writes is a valid configuration
