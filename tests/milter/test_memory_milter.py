"""Worker memory stays flat in message size (hardening issue, defect 5).

A 50 MB message goes through the real milter socket inbound (two DKIM-Signatures to
verify, relaxed and simple body canonicalisation) and outbound (signed), with one
worker. The worker's peak RSS (VmHWM in /proc/PID/status, a high-water mark the kernel
keeps) may grow by less than GROWTH_LIMIT over what a small message left: the body is
spooled to a file and hashed from the spool in bounded chunks, never held whole.

``AUTHMILTER_RSS_SIZES_MB=1,10,50`` (run with ``-s``) prints the peak for each size, one
fresh daemon per size, for the figures in a report.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from milterd import Daemon

from authmilter import keys
from authmilter.dkim.sign import SigningKey, sign
from authmilter.model import Message

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")

MB = 1 << 20
GROWTH_LIMIT = 20 * MB
SIZES_MB = [int(s) for s in os.environ.get("AUTHMILTER_RSS_SIZES_MB", "").split(",") if s.strip()]
DOMAIN = "mem.example.org"
# Trailing spaces, tabs, runs of blanks and an empty line: work for relaxed canonicalisation.
LINE = b"Lorem  ipsum dolor\tsit amet, consectetur   adipiscing elit, sed do eiusmod \r\n\r\n"


def vm_hwm(pid: int) -> int:
    """The process's peak resident set size in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    assert match, text
    return int(match.group(1)) * 1024


def headers(mid: str) -> bytes:
    return (f"From: Alice <alice@{DOMAIN}>\r\nTo: bob@mx.test\r\nSubject: big\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{mid}@{DOMAIN}>\r\n").encode()


def body_of(size: int) -> bytes:
    return LINE * (size // len(LINE)) + b"the end \t \r\n\r\n\r\n"


@pytest.fixture
def signing(tmp_path: Path, dns_server) -> tuple[dict[str, Any], list[SigningKey]]:  # type: ignore[no-untyped-def]
    """An RSA key in a KeyTable (outbound) and an Ed25519 key for the test's own
    inbound signatures; both published."""
    keydir = tmp_path / "keys"
    keydir.mkdir(mode=0o700)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = keydir / "rsa.private"
    path.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    path.chmod(0o600)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    dns_server.add_txt(f"rsa._domainkey.{DOMAIN}", keys.dns_record(rsa_key))
    dns_server.add_txt(f"ed._domainkey.{DOMAIN}", keys.dns_record(ed_key))
    (tmp_path / "KeyTable").write_text(f"k1 {DOMAIN}:rsa:{path}\n")
    (tmp_path / "SigningTable").write_text(f"*@{DOMAIN} k1\n")
    settings = {"enabled": True, "key_table": str(tmp_path / "KeyTable"),
                "signing_table": f"refile:{tmp_path / 'SigningTable'}", "internal_hosts": ["10.0.0.0/8"]}
    sign_keys = [SigningKey(DOMAIN, "rsa", "rsa-sha256", rsa_key, 2048, str(path)),
                 SigningKey(DOMAIN, "ed", "ed25519-sha256", ed_key, 256, "<ed>")]
    return settings, sign_keys


def signed_inbound(size: int, sign_keys: list[SigningKey], mid: str) -> bytes:
    """A message carrying a relaxed and a simple DKIM-Signature (made here, in the test)."""
    raw = headers(mid) + b"\r\n" + body_of(size)
    msg = Message.from_bytes(raw)
    sigs = b""
    for key, canon in zip(sign_keys, ("relaxed", "simple"), strict=True):
        value = sign(msg, key, header_canon=canon, body_canon=canon, sign_headers=["from", "subject"])
        sigs += b"DKIM-Signature:" + value.encode() + b"\r\n"
    return sigs + raw


def worker_pid(daemon: Daemon) -> int:
    daemon.wait_log(r"worker \d+ started pid=")   # the socket may answer before the line is written
    (pid,) = daemon.worker_pids()
    return pid


def send(daemon: Daemon, raw: bytes, *, outbound: bool, qid: str) -> Any:
    ip = "10.1.2.3" if outbound else "192.0.2.10"
    with daemon.client() as c:
        return c.session(ip=ip, mail_from=f"bounce@{DOMAIN}", rcpts=["bob@mx.test"], message=raw,
                         macros={"i": qid, "j": "mx.test"})


def run(daemon: Daemon, sign_keys: list[SigningKey], size: int, tag: str) -> tuple[int, int, int]:
    """(baseline, after inbound, after outbound) peak RSS of the one worker."""
    pid = worker_pid(daemon)
    small_in = signed_inbound(4096, sign_keys, f"small-{tag}")
    send(daemon, small_in, outbound=False, qid=f"4SMALLIN{tag}")
    send(daemon, headers(f"s-{tag}") + b"\r\n" + body_of(4096), outbound=True, qid=f"4SMALLOUT{tag}")
    daemon.wait_log(rf"\] 4SMALLOUT{tag}: action=accept dir=outbound .*signed=d=")
    base = vm_hwm(pid)

    raw = signed_inbound(size, sign_keys, f"big-{tag}")
    result = send(daemon, raw, outbound=False, qid=f"4BIGIN{tag}")
    del raw
    assert result.action == "accept"
    daemon.wait_log(rf"\] 4BIGIN{tag}: action=accept dir=inbound .*dkim=pass:{re.escape(DOMAIN)},pass:")
    inbound = vm_hwm(pid)

    raw = headers(f"b-{tag}") + b"\r\n" + body_of(size)
    result = send(daemon, raw, outbound=True, qid=f"4BIGOUT{tag}")
    del raw
    assert len(result.headers_named("DKIM-Signature")) == 1
    daemon.wait_log(rf"\] 4BIGOUT{tag}: action=accept dir=outbound .*signed=d={re.escape(DOMAIN)}/s=rsa")
    return base, inbound, vm_hwm(pid)


def test_worker_peak_rss_stays_flat_for_a_50mb_message(milterd, signing):
    settings, sign_keys = signing
    daemon = milterd(workers=1, signing=settings)
    base, inbound, outbound = run(daemon, sign_keys, 50 * MB, "A")
    assert inbound - base < GROWTH_LIMIT, f"inbound 50 MB: peak RSS {base / MB:.0f} -> {inbound / MB:.0f} MB"
    assert outbound - base < GROWTH_LIMIT, f"outbound 50 MB: peak RSS {base / MB:.0f} -> {outbound / MB:.0f} MB"


@pytest.mark.skipif(not SIZES_MB, reason="figures on demand: AUTHMILTER_RSS_SIZES_MB=1,10,50")
def test_report_peak_rss_by_size(milterd, signing):
    settings, sign_keys = signing
    for n, size in enumerate(SIZES_MB):
        daemon = milterd(workers=1, signing=settings)
        base, inbound, _ = run(daemon, sign_keys, size * MB, f"I{n}")
        daemon.stop()
        # A fresh worker for outbound, so its peak is not the inbound one's.
        daemon = milterd(workers=1, signing=settings)
        _, _, outbound = run(daemon, sign_keys, 0, f"O{n}")
        pid = worker_pid(daemon)
        raw = headers(f"o-{n}") + b"\r\n" + body_of(size * MB)
        send(daemon, raw, outbound=True, qid=f"4OUT{n}")
        outbound = vm_hwm(pid)
        daemon.stop()
        print(f"\n{size:3d} MB: baseline {base / MB:.0f} MB, inbound peak {inbound / MB:.0f} MB, "
              f"outbound peak {outbound / MB:.0f} MB")
