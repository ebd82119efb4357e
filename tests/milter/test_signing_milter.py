"""Outbound signing over the real milter socket, verified by dkimpy against DNS.

Keys come from `authmilter genkey`; their public halves are served by the loopback DNS
server; every signature the daemon returns is checked with dkimpy on the message as the
MTA stores it after our header edits. Only outbound sessions (SASL-authenticated, an
internal host, a signing daemon name) are signed; unauthenticated external mail is not.
"""
from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from typing import Any

import dkim
import pytest
from milterclient import MilterResult, split_message
from milterd import AUTHMILTER, WAIT_S, Daemon, free_port, sample, wait_sample

from authmilter import keys
from authmilter.resolver import dkim_dnsfunc

BODY = b"Hello,\r\n\r\nthis is a   test with  odd spacing.\r\n\r\n\r\n"


def message(from_addr: str) -> bytes:
    return (f"From: Alice Example <{from_addr}>\r\n".encode()
            + b"To: bob@example.net\r\n"
              b"Subject:  folded  subject\r\n\twith a continuation line\r\n"
              b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
              b"Message-ID: <sig-1@example.org>\r\n"
              b"MIME-Version: 1.0\r\n"
              b"Content-Type: text/plain; charset=utf-8\r\n"
              b"\r\n" + BODY)


def genkey(directory: Path, domain: str, selector: str, kind: str) -> Path:
    args = [str(AUTHMILTER), "genkey", "-d", domain, "-s", selector, "--type", kind, "-D", str(directory)]
    if kind == "rsa":
        args += ["-b", "2048"]
    subprocess.run(args, check=True, timeout=WAIT_S, capture_output=True)
    return directory / f"{selector}.private"


@pytest.fixture
def keyset(tmp_path: Path, dns_server) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """rsa for example.org, ed25519 for example.com, both for example.net; published."""
    keydir = tmp_path / "keys"
    keydir.mkdir(mode=0o700)
    made = {
        ("example.org", "rsa2026", "rsa"): None,
        ("example.com", "ed2026", "ed25519"): None,
        ("example.net", "rsa2026", "rsa"): None,
        ("example.net", "ed2026", "ed25519"): None,
    }
    table_lines, signing_lines = [], []
    for n, (domain, selector, kind) in enumerate(made):
        sub = keydir / domain
        sub.mkdir(mode=0o700, exist_ok=True)
        path = genkey(sub, domain, selector, kind)
        dns_server.add_txt(f"{selector}._domainkey.{domain}", keys.dns_record(keys.read_private_key(str(path))))
        name = f"k{n}"
        table_lines.append(f"{name} {domain}:{selector}:{path}")
        signing_lines.append(f"*@{domain} {name}")
    key_table = tmp_path / "KeyTable"
    key_table.write_text("\n".join(table_lines) + "\n")
    signing_table = tmp_path / "SigningTable"
    signing_table.write_text("\n".join(signing_lines) + "\n")
    return {
        "enabled": True,
        "key_table": str(key_table),
        "signing_table": f"refile:{signing_table}",
        "internal_hosts": ["10.0.0.0/8"],
        "sign_daemon_names": ["ORIGINATING"],
        "multiple_signatures": True,
    }


def stored_message(raw: bytes, result: MilterResult) -> bytes:
    """The message as the MTA keeps it after our edits (values keep their leading space)."""
    headers, body = split_message(raw)
    as_text = [(n.decode(), v.decode()) for n, v in headers]
    edited = result.apply(as_text)
    head = b"".join(n.encode() + b":" + v.replace("\r\n", "\n").replace("\n", "\r\n").encode() + b"\r\n"
                    for n, v in edited)
    return head + b"\r\n" + body


def verify_all(stored: bytes, resolver) -> list[tuple[str, str, bool]]:  # type: ignore[no-untyped-def]
    """(d=, a=, verified) for every DKIM-Signature, via DNS on loopback."""
    d = dkim.DKIM(stored)
    dnsfunc = dkim_dnsfunc(resolver)
    out = []
    count = sum(1 for line in stored.split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))
    for idx in range(count):
        ok = d.verify(idx=idx, dnsfunc=dnsfunc)
        out.append((d.domain.decode(), d.signature_fields[b"a"].decode(), bool(ok)))
    return out


def run_session(daemon: Daemon, from_addr: str, ip: str, qid: str, **macros: str) -> tuple[bytes, MilterResult]:
    raw = message(from_addr)
    with daemon.client() as c:
        result = c.session(ip=ip, mail_from=from_addr, rcpts=["bob@example.net"], message=raw,
                           macros={"i": qid, **macros})
    return raw, result


@pytest.mark.parametrize(("how", "ip", "macros"), [
    ("authenticated", "192.0.2.50", {"{auth_type}": "PLAIN", "{auth_authen}": "alice@example.org"}),
    ("internal host", "10.1.2.3", {}),
    ("daemon name", "192.0.2.51", {"{daemon_name}": "ORIGINATING"}),
])
def test_outbound_sessions_are_signed_rsa(milterd, keyset, resolver, how, ip, macros):
    daemon = milterd(workers=1, signing=keyset)
    raw, result = run_session(daemon, "alice@example.org", ip, "4SIGN1", **macros)
    assert result.action == "accept"
    assert len(result.headers_named("DKIM-Signature")) == 1
    assert not result.headers_named("Authentication-Results"), "outbound mail is not verified"
    assert verify_all(stored_message(raw, result), resolver) == [("example.org", "rsa-sha256", True)]
    assert daemon.wait_log(r"\] 4SIGN1: action=accept dir=outbound .*signed=d=example\.org/s=rsa2026")


def test_external_unauthenticated_mail_is_not_signed(milterd, keyset):
    daemon = milterd(workers=1, signing=keyset)
    _raw, result = run_session(daemon, "alice@example.org", "192.0.2.99", "4NOSIGN")
    assert not result.headers_named("DKIM-Signature")
    assert result.headers_named("Authentication-Results")
    assert daemon.wait_log(r"\] 4NOSIGN: action=\w+ dir=inbound")


def test_ed25519_signature_verifies(milterd, keyset, resolver):
    daemon = milterd(workers=1, signing=keyset)
    raw, result = run_session(daemon, "carol@example.com", "10.9.9.9", "4ED")
    assert verify_all(stored_message(raw, result), resolver) == [("example.com", "ed25519-sha256", True)]


def test_dual_rsa_and_ed25519_signatures_verify_and_are_counted(milterd, keyset, resolver):
    port = free_port()
    daemon = milterd(workers=2, signing=keyset, metrics={"listen": f"127.0.0.1:{port}"})
    raw, result = run_session(daemon, "dave@example.net", "10.9.9.9", "4DUAL")
    verified = verify_all(stored_message(raw, result), resolver)
    assert sorted(verified) == [("example.net", "ed25519-sha256", True), ("example.net", "rsa-sha256", True)]
    if importlib.util.find_spec("prometheus_client") is not None:
        text = wait_sample(port, "authmilter_signatures_total", 1, algorithm="ed25519-sha256")
        assert sample(text, "authmilter_signatures_total", algorithm="rsa-sha256") == 1
        assert sample(text, "authmilter_messages_total", direction="outbound", action="accept") == 1


def test_simple_canonicalization_sees_header_bytes_exactly(milterd, keyset, resolver):
    """c=simple/simple breaks on any whitespace change: the milter must pass folding and
    spacing through untouched (SMFIP_HDR_LEADSPC, CRLF)."""
    daemon = milterd(workers=1, signing={**keyset, "canonicalization": "simple/simple"})
    raw, result = run_session(daemon, "alice@example.org", "10.1.2.3", "4SIMPLE")
    sig = result.headers_named("DKIM-Signature")[0]
    assert "c=simple/simple" in sig.replace("\n", "").replace("\t", "").replace(" ", "")
    assert verify_all(stored_message(raw, result), resolver) == [("example.org", "rsa-sha256", True)]


def test_large_body_spooled_and_signed(milterd, keyset, resolver):
    """A body above the in-memory spool threshold, sent in many chunks, still signs right."""
    daemon = milterd(workers=1, signing=keyset)
    big = b"".join(f"line {n:07d} of a long body........................................\r\n".encode()
                   for n in range(20000))            # ~1.4 MB: over the 1 MiB spool threshold
    raw = message("alice@example.org").replace(BODY, big)
    with daemon.client() as c:
        result = c.session(ip="10.1.2.3", mail_from="alice@example.org", rcpts=["bob@example.net"],
                           message=raw, macros={"i": "4BIG"})
    assert verify_all(stored_message(raw, result), resolver) == [("example.org", "rsa-sha256", True)]
