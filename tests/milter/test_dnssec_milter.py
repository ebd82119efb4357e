"""[dns] dnssec over the real milter socket: the running daemon asks a real validating
unbound (in front of a knotd that signs the zones) and writes the DKIM key's DNSSEC
status into Authentication-Results as an RFC 8601 comment, and the per-check status into
its log line; ``require-for-keys`` refuses a key from a signed zone that did not validate.

Zones under ``lan.`` (unsigned): ``signed.lan`` signed and anchored, ``plain.lan``
unsigned, ``broken.lan`` signed with a wrong anchor, ``island.lan`` signed without an
anchor. Each publishes SPF for 192.0.2.0/24, the DKIM key and DMARC p=reject.
"""
from __future__ import annotations

import re
from typing import Any

import pytest
from infra.unbound import BROKEN, ISLAND, PLAIN, SELECTOR, SIGNED, lan_resolver, write_dkim_key
from milterd import Daemon, merge

from authmilter import keys
from authmilter.dkim.sign import sign
from authmilter.model import Message

AUTHSERV = "mx.lan"


@pytest.fixture(scope="module")
def keyfile(tmp_path_factory):
    return write_dkim_key(tmp_path_factory.mktemp("dnssec-milter-keys"))


@pytest.fixture(scope="module")
def unbound(tmp_path_factory, keyfile):
    with lan_resolver(tmp_path_factory.mktemp("dnssec-milter"), keyfile, spf="v=spf1 ip4:192.0.2.0/24 -all") as server:
        yield server


@pytest.fixture(scope="module", params=["report", "require-for-keys", "ignore"])
def daemon(request, tmp_path_factory, unbound):
    tmp = tmp_path_factory.mktemp(f"dnssec-{request.param}")
    config: dict[str, Any] = {
        "socket": f"unix:{tmp}/m.sock", "authserv_id": AUTHSERV, "workers": 1,
        "dns": {"servers": [unbound.server], "timeout_s": 3.0, "dnssec": request.param},
        "signing": {"enabled": False},
    }
    d = Daemon(tmp, merge({}, config))
    d.start()
    d.mode = request.param
    yield d
    assert d.stop() == 0, d.log()


def signed_message(keyfile: str, domain: str) -> bytes:
    raw = (f"From: Alice <alice@{domain}>\r\nTo: bob@mx.lan\r\nSubject: hi\r\n"
           f"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@{domain}>\r\n\r\nHello.\r\n").encode()
    value = sign(Message.from_bytes(raw), keys.load_signing_key(keyfile, domain, SELECTOR),
                 sign_headers=("From", "To", "Subject", "Date"))
    return b"DKIM-Signature:" + value.encode() + b"\r\n" + raw


_QID = iter(range(1, 10_000))


def send(daemon: Daemon, keyfile: str, domain: str) -> tuple[Any, str]:
    qid = f"4DS{next(_QID)}"
    with daemon.client() as c:
        result = c.session(ip="192.0.2.10", helo=f"mail.{domain}", mail_from=f"alice@{domain}",
                           rcpts=["bob@mx.lan"], message=signed_message(keyfile, domain),
                           macros={"i": qid, "j": AUTHSERV})
    (line,) = [m.group(0) for m in daemon.wait_log(rf"{qid}: [^\n]*")] or [""]
    return result, line


def ar_of(result: Any) -> str:
    (value,) = [v for _, name, v in result.inserted if name == "Authentication-Results"]
    return " ".join(value.split())


def test_validated_key_is_named_in_the_header_and_the_log(daemon, keyfile):
    result, line = send(daemon, keyfile, SIGNED)
    ar = ar_of(result)
    assert "dkim=pass" in ar and "dmarc=pass" in ar, ar
    if daemon.mode == "ignore":
        assert "DNSSEC" not in ar and "unprotected" not in ar and "dnssec=" not in line, (ar, line)
    else:
        assert "dkim=pass (key DNSSEC-validated)" in ar, ar
        assert "dnssec=spf:yes,dkim:yes,dmarc:yes" in line, line


def test_unsigned_zone_key_is_unprotected(daemon, keyfile):
    result, line = send(daemon, keyfile, PLAIN)
    ar = ar_of(result)
    assert "dkim=pass" in ar and "dmarc=pass" in ar, ar
    if daemon.mode == "ignore":
        assert "unprotected" not in ar and "dnssec=" not in line, (ar, line)
    else:
        # require-for-keys accepts a key from an unsigned zone: nothing to validate
        assert "dkim=pass (unprotected key)" in ar, ar
        assert "dnssec=spf:no,dkim:no,dmarc:no" in line, line


def test_signed_zone_without_chain_of_trust(daemon, keyfile):
    result, line = send(daemon, keyfile, ISLAND)
    ar = ar_of(result)
    if daemon.mode == "require-for-keys":
        assert re.search(r"dkim=permerror \(unprotected key\) reason=\"key signed but not DNSSEC-validated\"", ar), ar
        assert "dmarc=pass" in ar, ar        # SPF still aligns; only the key is refused
    elif daemon.mode == "report":
        assert "dkim=pass (unprotected key)" in ar, ar
    else:
        assert "dkim=pass" in ar and "unprotected" not in ar, ar


def test_zone_failing_validation(daemon, keyfile):
    result, line = send(daemon, keyfile, BROKEN)
    # the validating resolver answers SERVFAIL for every name of the zone in every mode
    assert result.reply and result.reply.startswith("451"), result
    assert f"dkim=temperror:{BROKEN}" in line, line
