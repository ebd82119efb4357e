"""What `authmilter run` loads before it forks its workers (ops/privileges.preload_modules),
checked in a fresh interpreter: every module the daemon can use, and nothing the daemon
never uses (the other commands' modules, psycopg beside an SQLite store, dnspython's
HTTP stack for DNS over HTTPS). Each of those was megabytes in every worker."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

PROBE = r"""
import json, sys
import authmilter.cli, authmilter.milter.server
from authmilter.ops import privileges
privileges.preload_modules(tuple(sys.argv[1:]))
print(json.dumps({"loaded": sorted(sys.modules), "daemon": list(privileges.daemon_modules())}))
"""


def _loaded(*optional: str) -> tuple[set[str], list[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE, *optional], capture_output=True, text=True, check=True,
                         timeout=120)
    data = json.loads(out.stdout)
    return set(data["loaded"]), data["daemon"]


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def test_the_daemon_preloads_its_modules_and_not_the_other_commands():
    loaded, daemon = _loaded()
    assert set(daemon) <= loaded
    for module in ("authmilter.pipeline", "authmilter.milter.handler", "authmilter.checks.dmarc",
                   "authmilter.store.sqlite", "authmilter.reports.failure"):
        assert module in loaded
    for module in ("authmilter.analyze", "authmilter.analyze.command", "authmilter.migrate",
                   "authmilter.reports.command", "authmilter.manpage", "authmilter.verify"):
        assert module not in loaded


def test_psycopg_only_when_asked():
    loaded, _ = _loaded()
    assert "psycopg" not in loaded
    if _installed("psycopg"):          # the test extra installs it
        loaded, _ = _loaded("psycopg")
        assert "psycopg" in loaded


def test_dnspython_loads_no_http_stack():
    loaded, _ = _loaded()
    assert "dns.query" in loaded and "dns.resolver" in loaded
    present = [m for m in ("httpx", "httpx2", "httpcore", "httpcore2", "h2", "anyio") if _installed(m)]
    assert not [m for m in present if m in loaded]
