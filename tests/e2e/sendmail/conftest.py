"""One Sendmail, one knot and one authmilter for the Sendmail part of the e2e session.

The same world as the Postfix suite (tests/e2e/conftest.py: ``mx.inbox.test``, the
``*.test`` sender domains, our signing domains example.com and example.net), with two
differences Sendmail imposes:

- remote senders connect from 127.0.0.10 (HELO and name ``mail.example.org``) and ::1,
  not through XCLIENT, so the zones authorise those addresses and authmilter's
  ``internal_hosts`` is 127.0.0.1 alone;
- authmilter is hooked in with exactly the lines ``authmilter check-config`` prints for
  Sendmail, and ``authserv_id`` is left empty so it comes from Sendmail's ``j`` macro.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from infra.procs import stop_all
from support import require  # tests/support.py (tests/ is on sys.path)

from ..conftest import _authmilter_exe, keys_zones_tables
from ..harness import KNOTD, Authmilter, Knot, TestKey, copy_logs, run
from . import dist as sendmail_dist
from .mta import Sendmail

SENDER_IP = "127.0.0.10"           # a remote MTA, as far as authmilter can tell
SENDER_IP6 = "::1"
USERS = {"alice@example.com": "alice-secret", "mallory@spfpass.test": "mallory-secret"}


@dataclass
class SendmailE2E:
    base: Path
    exe: str
    knot: Knot
    sendmail: Sendmail
    milter: Authmilter
    keys: dict[str, TestKey]
    milter_lines: list[str]        # what check-config printed for Sendmail


def check_config_sendmail_lines(exe: str, config: Path) -> list[str]:
    """The Sendmail section of `authmilter check-config` output, verbatim."""
    out = run([exe, "check-config", "-c", str(config)]).stdout.decode()
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# Sendmail"))
    section = []
    for line in lines[start + 1:]:
        if line.startswith("# ") and not line.startswith("# Sendmail"):
            break
        section.append(line)
    return [line for line in section if line.strip()]


@pytest.fixture(scope="session")
def sm(tmp_path_factory: pytest.TempPathFactory):
    """Start knot, authmilter and Sendmail once; stop all of them at the end of the session."""
    require(sys.platform.startswith("linux"), "the e2e suite runs on Linux")
    require(os.geteuid() == 0, "the Sendmail e2e suite needs root (namespaces, bind mounts, port binds)")
    require(os.access(KNOTD, os.X_OK), f"{KNOTD} missing (make test-deps installs knot)")
    exe = _authmilter_exe()
    require(bool(exe), "the authmilter console script is not installed (make deps)")
    try:
        d = sendmail_dist.ensure(log=lambda _msg: None)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        require(False, f"Sendmail packages unavailable: {exc}")
        raise
    trouble = sendmail_dist.problems(d)
    require(not trouble, "; ".join(trouble))
    probe = run(["unshare", "--uts", "--mount", "true"], check=False)
    require(probe.returncode == 0, f"unshare --uts --mount fails here: {probe.stderr.decode(errors='replace')}")

    # Sendmail's delivery agents and the MSP run as other users: a traversable 0755 tree.
    base = Path(tempfile.mkdtemp(prefix="authmilter-e2e-sendmail-"))
    base.chmod(0o755)
    started: list = []
    try:
        env = _build(base, exe, d)
        for part in (env.knot, env.milter, env.sendmail):
            started.insert(0, part)
            part.start()
        yield env
    finally:
        stop_all(started)
        sm_dir = base / "sendmail"
        copy_logs([base / "authmilter.log", base / "authmilter.toml", base / "knot" / "knotd.log",
                   sm_dir / "maillog", sm_dir / "smtp-trace", sm_dir / "sendmail.out", sm_dir / "sendmail.mc",
                   sm_dir / "submit.mc", sm_dir / "sendmail.cf"],
                  tmp_path_factory.mktemp("e2e-sendmail-logs"))
        shutil.rmtree(base, ignore_errors=True)


def _build(base: Path, exe: str, d: sendmail_dist.Dist) -> SendmailE2E:
    require(importlib.util.find_spec("authmilter.milter.server") is not None, "`authmilter run` missing")
    keys, zones, etc = keys_zones_tables(base, exe, sender_ip=SENDER_IP, sender_net6=f"{SENDER_IP6}/128")
    knot = Knot(base, zones.values())
    milter = Authmilter(base, exe, {
        # authserv_id unset: Sendmail's j macro (confDOMAIN_NAME = mx.inbox.test) names us.
        "workers": 2,
        "log_level": "debug",
        "dns": {"servers": [f"127.0.0.1:{knot.port}"], "timeout_s": 1.0, "message_budget_s": 4.0},
        "signing": {"key_table": str(etc / "KeyTable"), "signing_table": f"refile:{etc / 'SigningTable'}",
                    "multiple_signatures": True, "internal_hosts": ["127.0.0.1"]},
        "verify": {"dmarc_mode": "rfc9989"},
    })
    milter.write_config()
    lines = check_config_sendmail_lines(exe, milter.config)
    sendmail = Sendmail(base, d, lines, users=USERS)
    return SendmailE2E(base, exe, knot, sendmail, milter, keys, lines)

