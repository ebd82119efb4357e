"""One Postfix, one knot and one authmilter for the whole e2e session.

The world the tests live in (all names under example.* / *.test, never real ones):

- ``mx.inbox.test`` is our MX: Postfix delivers everything for ``u@inbox.test`` into one
  Maildir, and authmilter signs as ``authserv_id = mx.inbox.test``.
- Our own signing domains: ``example.com`` (RSA, selector ``e2e``) and ``example.net``
  (RSA ``rsa26`` + Ed25519 ``ed26``, both applied: multiple_signatures).
- Remote senders connect (via XCLIENT) from 192.0.2.10 / 2001:db8::25, HELO
  ``mail.example.org``; each scenario has its own ``*.test`` sender domain (table below),
  so results never depend on another test's DNS answers or on the resolver's cache.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from infra.procs import stop_all
from support import require  # tests/support.py (tests/ is on sys.path)

from .harness import (
    KNOTD,
    MX_NAME,
    POSTFIX,
    POSTQUEUE,
    POSTSUPER,
    SENDMAIL,
    Authmilter,
    Knot,
    Postfix,
    TestKey,
    Zone,
    copy_logs,
    generate_key,
    run,
    write_private,
)

SENDER_IP = "192.0.2.10"
SENDER_IP6 = "2001:db8::25"
OTHER_IP = "198.51.100.1"          # authorised by nobody's SPF record


@dataclass
class E2E:
    base: Path
    exe: str
    knot: Knot
    postfix: Postfix
    milter: Authmilter
    keys: dict[str, TestKey]       # the remote senders' signing keys: "rsa" and "ed25519"

    def restart_milter(self) -> None:
        self.milter.stop()
        self.milter.start()


def _authmilter_exe() -> str:
    exe = Path(sys.executable).parent / "authmilter"
    return str(exe) if exe.exists() else (shutil.which("authmilter") or "")


def _outbound_key(exe: str, keydir: Path, domain: str, selector: str, algorithm: str,
                  zone: Zone) -> Path:
    """Our signing key: `authmilter genkey` when it exists (its SELECTOR.txt goes into the
    zone verbatim, which also checks it is valid zone-file syntax), else cryptography."""
    d = keydir / domain
    d.mkdir(mode=0o700, exist_ok=True)
    if importlib.util.find_spec("authmilter.keys") is not None:
        run([exe, "genkey", "-d", domain, "-s", selector, "--type", algorithm, "-D", str(d)])
        zone.raw((d / f"{selector}.txt").read_text())
        return d / f"{selector}.private"
    key = generate_key(domain, selector, algorithm)
    path = d / f"{selector}.private"
    write_private(path, key.private)
    zone.txt(key.name, key.record)
    return path


def build_zones(keys: dict[str, TestKey], sender_ip: str = SENDER_IP,
                sender_net6: str = "2001:db8::/32") -> dict[str, Zone]:
    """The zones of the test world; *sender_ip* / *sender_net6* are where the remote
    senders connect from (the Sendmail suite, which has no XCLIENT, uses loopback ones)."""
    rsa, ed = keys["rsa"], keys["ed25519"]
    com, net, org, test = Zone("example.com"), Zone("example.net"), Zone("example.org"), Zone("test")
    # The root zone answers NXDOMAIN for every other name (as the real DNS would for
    # _dmarc.com during a DMARC tree walk), instead of REFUSED (which is a temperror).
    root = Zone(".")
    com.txt("example.com", "v=spf1 ip4:203.0.113.0/24 -all")     # our own outbound servers
    net.txt("example.net", "v=spf1 ip4:203.0.113.0/24 -all")
    org.add("mail.example.org", "A", sender_ip)
    org.txt("mail.example.org", f"v=spf1 ip4:{sender_ip} ip6:{sender_net6} -all")   # the HELO identity

    def spf(domain: str, record: str) -> None:
        test.txt(domain, record)

    def dmarc(domain: str, record: str) -> None:
        test.txt(f"_dmarc.{domain}", record)

    def dkimkey(domain: str, key: TestKey, selector: str | None = None) -> None:
        test.txt(f"{selector or key.selector}._domainkey.{domain}", key.record)

    # domain                 purpose
    spf("spfpass.test", f"v=spf1 ip4:{sender_ip} -all")                 # SPF pass, no DMARC
    spf("spffail.test", f"v=spf1 ip4:{OTHER_IP} -all")                  # SPF fail, no DMARC
    spf("spfsoft.test", f"v=spf1 ip4:{OTHER_IP} ~all")                  # SPF softfail
    dkimkey("dkim.test", rsa)                                           # DKIM pass / body altered
    spf("dmarcspf.test", f"v=spf1 ip4:{sender_ip} -all")                # DMARC pass via SPF only
    dmarc("dmarcspf.test", "v=DMARC1; p=reject")
    spf("dmarcdkim.test", "v=spf1 -all")                                # DMARC pass via DKIM only
    dmarc("dmarcdkim.test", "v=DMARC1; p=reject")
    dkimkey("dmarcdkim.test", rsa)
    spf("reject.test", "v=spf1 -all")                                   # p=reject -> 5xx
    dmarc("reject.test", "v=DMARC1; p=reject")
    spf("quarantine.test", "v=spf1 -all")                               # p=quarantine -> hold
    dmarc("quarantine.test", "v=DMARC1; p=quarantine")
    spf("pct0.test", "v=spf1 -all")                                     # pct=0 (RFC 7489 mode)
    dmarc("pct0.test", "v=DMARC1; p=quarantine; pct=0")
    spf("sp.test", "v=spf1 -all")                                       # sp= on a subdomain
    dmarc("sp.test", "v=DMARC1; p=none; sp=reject")
    spf("sub.sp.test", "v=spf1 -all")
    spf("mail.strict.test", f"v=spf1 ip4:{sender_ip} -all")             # strict aspf/adkim
    dkimkey("mail.strict.test", rsa)
    dmarc("strict.test", "v=DMARC1; p=reject; adkim=s; aspf=s")
    spf("strict.test", "v=spf1 -all")
    spf("mail.relaxed.test", f"v=spf1 ip4:{sender_ip} -all")            # ... and relaxed
    dkimkey("mail.relaxed.test", rsa)
    dmarc("relaxed.test", "v=DMARC1; p=reject")
    spf("relaxed.test", "v=spf1 -all")
    spf("ed.test", "v=spf1 -all")                                       # Ed25519 signature
    dmarc("ed.test", "v=DMARC1; p=reject")
    dkimkey("ed.test", ed)
    spf("v6.test", f"v=spf1 ip6:{sender_net6} -all")                    # IPv6 client
    dmarc("v6.test", "v=DMARC1; p=reject")
    spf("dnsdown.test", f"v=spf1 ip4:{sender_ip} -all")                 # DNS server stopped
    dmarc("dnsdown.test", "v=DMARC1; p=reject")
    spf("crash.test", f"v=spf1 ip4:{sender_ip} -all")                   # authmilter killed
    dmarc("crash.test", "v=DMARC1; p=reject")
    spf("chaos.test", f"v=spf1 ip4:{sender_ip} -all")                   # workers, master killed
    dmarc("chaos.test", "v=DMARC1; p=reject")
    spf("forged.test", f"v=spf1 ip4:{sender_ip} -all")                  # forged A-R headers
    spf("verify.test", "v=spf1 -all")                                   # authmilter verify
    dmarc("verify.test", "v=DMARC1; p=reject")
    dkimkey("verify.test", rsa)
    return {"root": root, "com": com, "net": net, "org": org, "test": test}


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory):
    """Start knot, authmilter and Postfix once; stop all three at the end of the session."""
    require(sys.platform.startswith("linux"), "the e2e suite runs on Linux")
    require(os.geteuid() == 0, "the e2e suite needs root (Postfix start, virtual delivery, postdrop)")
    for tool in (POSTFIX, POSTQUEUE, POSTSUPER, SENDMAIL, KNOTD):
        require(os.access(tool, os.X_OK), f"{tool} missing (make test-deps installs postfix knot)")
    exe = _authmilter_exe()
    require(bool(exe), "the authmilter console script is not installed (make deps)")
    require(importlib.util.find_spec("authmilter.milter.server") is not None,
            "`authmilter run` (authmilter.milter.server) is not implemented yet")

    # Postfix and virtual(8) run as other users: the tree must be traversable, so it lives
    # in its own 0755 directory rather than pytest's 0700 tmp tree (logs are copied there).
    base = Path(tempfile.mkdtemp(prefix="authmilter-e2e-"))
    base.chmod(0o755)
    started: list = []
    try:
        env = _build(base, exe)
        for part in (env.knot, env.milter, env.postfix):
            started.insert(0, part)
            part.start()
        yield env
    finally:
        stop_all(started)            # Postfix first, then authmilter, then knot
        logs = [base / "maillog", base / "authmilter.log", base / "knot" / "knotd.log", base / "authmilter.toml",
                base / "postfix" / "main.cf", base / "postfix" / "master.cf"]
        copy_logs(logs, tmp_path_factory.mktemp("e2e-logs"))
        shutil.rmtree(base, ignore_errors=True)


def keys_zones_tables(base: Path, exe: str, **zone_args: Any) -> tuple[dict[str, TestKey], dict[str, Zone], Path]:
    """The sender keys, the DNS zones and our KeyTable/SigningTable (in BASE/etc) that
    every MTA's e2e suite uses; *zone_args* go to build_zones (the senders' addresses)."""
    keydir = base / "keys"
    keydir.mkdir(mode=0o700)
    keys = {"rsa": generate_key("any.test", "s1", "rsa"), "ed25519": generate_key("any.test", "ed1", "ed25519")}
    zones = build_zones(keys, **zone_args)
    com_key = _outbound_key(exe, keydir, "example.com", "e2e", "rsa", zones["com"])
    net_rsa = _outbound_key(exe, keydir, "example.net", "rsa26", "rsa", zones["net"])
    net_ed = _outbound_key(exe, keydir, "example.net", "ed26", "ed25519", zones["net"])
    etc = base / "etc"
    etc.mkdir()
    (etc / "KeyTable").write_text(
        f"e2e._domainkey.example.com example.com:e2e:{com_key}\n"
        f"rsa26._domainkey.example.net example.net:rsa26:{net_rsa}\n"
        f"ed26._domainkey.example.net example.net:ed26:{net_ed}\n")
    (etc / "SigningTable").write_text(
        "# OpenDKIM refile: grammar, first match wins (all matches with multiple_signatures)\n"
        "*@example.com e2e._domainkey.example.com\n"
        "*@example.net rsa26._domainkey.example.net\n"
        "*@example.net ed26._domainkey.example.net\n")
    return keys, zones, etc


def _build(base: Path, exe: str) -> E2E:
    """Keys, zones, tables and the three configured (not yet started) servers."""
    keys, zones, etc = keys_zones_tables(base, exe)
    knot = Knot(base, zones.values())
    milter = Authmilter(base, exe, {
        "authserv_id": MX_NAME,
        "workers": 2,
        "log_level": "debug",
        "dns": {"servers": [f"127.0.0.1:{knot.port}"], "timeout_s": 1.0, "message_budget_s": 4.0},
        "signing": {"key_table": str(etc / "KeyTable"), "signing_table": f"refile:{etc / 'SigningTable'}",
                    "multiple_signatures": True},
        "verify": {"dmarc_mode": "rfc9989"},
    })
    postfix = Postfix(base, milter.postfix_socket)
    return E2E(base, exe, knot, postfix, milter, keys)


@pytest.fixture
def token() -> str:
    """A unique id for one message (header X-E2E-Id), to find its delivery."""
    return uuid.uuid4().hex[:20]


@pytest.fixture
def reconfigure(e2e: E2E):
    """Reload authmilter with config overrides (SIGUSR1); the base config is restored after."""
    changed = []

    def apply(overrides: dict) -> None:
        e2e.milter.reload(overrides)
        changed.append(overrides)

    yield apply
    if changed:
        e2e.milter.reload()
