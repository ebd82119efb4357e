"""Inbound checks over the real milter socket, DNS from the loopback server (issue 3, item 7).

One daemon per module; every test publishes its own records and uses its own domain, so
the daemon's DNS cache never carries an answer from one test into another.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from milterd import Daemon, merge

from authmilter import keys
from authmilter.dkim.sign import SigningKey, sign
from authmilter.model import Message

AUTHSERV = "mx.test"


def message(from_hdr: str = "From: Alice <alice@{d}>", domain: str = "example.org", extra: str = "",
            body: str = "Hello.\r\n") -> bytes:
    head = ""
    if from_hdr:
        head += from_hdr.format(d=domain) + "\r\n"
    head += (f"{extra}To: bob@mx.test\r\nSubject: test\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
             f"Message-ID: <t@{domain}>\r\n")
    return (head + "\r\n" + body).encode()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, _shared_dns_server):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("inbound")
    config: dict[str, Any] = {
        "socket": f"unix:{tmp}/m.sock", "authserv_id": AUTHSERV, "workers": 1,
        "dns": {"servers": [_shared_dns_server.address], "timeout_s": 1.0, "message_budget_s": 4.0},
        "signing": {"enabled": False},
        "verify": {"trusted_relays": ["10.1.2.3"]},
    }
    d = Daemon(tmp, merge({}, config))
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def send(daemon: Daemon, raw: bytes, *, domain: str, ip: str = "192.0.2.10", helo: str = "mail.example.org",
         qid: str = "4IN") -> Any:
    with daemon.client() as c:
        return c.session(ip=ip, helo=helo, mail_from=f"bounce@{domain}", rcpts=["bob@mx.test"], message=raw,
                         macros={"i": qid, "j": AUTHSERV})


def ar_of(result: Any) -> str:
    (value,) = [v for _, name, v in result.inserted if name == "Authentication-Results"]
    return value


def test_spf_and_dmarc_pass_are_reported(daemon, dns_server):
    d = "pass.example.org"
    dns_server.add_txt(d, "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add_txt(f"_dmarc.{d}", "v=DMARC1; p=reject")
    r = send(daemon, message(domain=d), domain=d)
    assert r.action == "accept"
    ar = ar_of(r)
    assert ar.lstrip().startswith(AUTHSERV + ";") and "spf=pass" in ar and "dmarc=pass" in ar


def test_dmarc_reject_is_a_550_naming_the_domain(daemon, dns_server):
    d = "reject.example.org"
    dns_server.add_txt(d, "v=spf1 -all")
    dns_server.add_txt(f"_dmarc.{d}", "v=DMARC1; p=reject")
    r = send(daemon, message(domain=d), domain=d)
    assert r.action in ("reject", "reply") and r.reply.startswith("550 5.7.1") and d in r.reply


def test_dmarc_quarantine_goes_to_the_hold_queue(daemon, dns_server):
    d = "hold.example.org"
    dns_server.add_txt(d, "v=spf1 -all")
    dns_server.add_txt(f"_dmarc.{d}", "v=DMARC1; p=quarantine")
    r = send(daemon, message(domain=d), domain=d)
    assert r.action == "accept" and r.quarantine and d in r.quarantine


def test_eight_forged_authentication_results_are_all_removed(daemon, dns_server):
    d = "forged.example.org"
    forged = [f"Authentication-Results: {AUTHSERV}; dkim=pass",
              f"Authentication-Results: {AUTHSERV.upper()}; spf=pass",
              f"Authentication-Results: (comment) {AUTHSERV}; dmarc=pass",
              f"Authentication-Results: {AUTHSERV} 1; arc=pass",
              f"Authentication-Results: Mx.Test (x); dkim=pass header.d={d}",
              f"Authentication-Results: {AUTHSERV};\r\n\tspf=pass smtp.mailfrom={d}",
              f"Authentication-Results: sub.{AUTHSERV}; dmarc=pass",
              f"Authentication-Results:   {AUTHSERV}   ;   dkim=pass",
              "Authentication-Results: upstream.example.net; spf=pass"]
    raw = message(domain=d, extra="\r\n".join(forged) + "\r\n")
    r = send(daemon, raw, domain=d)
    stored = r.apply([(n.decode(), v.decode()) for n, v in Message.from_bytes(raw).headers])
    ars = [v for n, v in stored if n.lower() == "authentication-results"]
    assert len(ars) == 2, ars
    assert ars[0].lstrip().startswith(AUTHSERV + ";")  # ours, at the top
    assert "upstream.example.net" in ars[1]
    deleted = [i for i, name, v in r.changed if name == "Authentication-Results" and v == ""]
    assert deleted == sorted(deleted, reverse=True) and len(deleted) == 8


@pytest.mark.parametrize("fault", ["timeout", "servfail"])
def test_dns_failure_on_the_policy_lookup_tempfails(daemon, dns_server, fault):
    d = f"{fault}.example.org"
    dns_server.add_txt(d, "v=spf1 -all")
    dns_server.set_fault(f"_dmarc.{d}", fault)
    r = send(daemon, message(domain=d), domain=d)
    assert r.action in ("tempfail", "reply") and r.reply.startswith("451"), r


def test_malformed_dkim_signature_is_permerror_not_a_crash(daemon, dns_server):
    d = "baddkim.example.org"
    dns_server.add_txt(d, "v=spf1 ip4:192.0.2.0/24 -all")
    raw = message(domain=d, extra=f"DKIM-Signature: v=1; a=rsa-sha256; d={d}; s=x; b=!!notbase64; bh=\r\n")
    r = send(daemon, raw, domain=d)
    assert r.action == "accept" and "dkim=permerror" in ar_of(r)


def test_malformed_dmarc_record_has_a_defined_result(daemon, dns_server):
    d = "baddmarc.example.org"
    dns_server.add_txt(d, "v=spf1 -all")
    dns_server.add_txt(f"_dmarc.{d}", "v=DMARC1; p=bogus; pct=banana")
    r = send(daemon, message(domain=d), domain=d)
    assert r.action == "accept"
    assert any(f"dmarc={x}" in ar_of(r) for x in ("permerror", "none")), ar_of(r)


@pytest.mark.parametrize("from_hdr,why", [
    ("From: a@{d}\r\nFrom: b@{d}", "two From headers"),
    ("", "no From header"),
    ("From: a@{d}, b@evil.example", "mailboxes of two domains"),
    ("From: not an address", "unparsable"),
])
def test_bad_from_is_rejected(daemon, dns_server, from_hdr, why):
    d = "from.example.org"
    r = send(daemon, message(from_hdr=from_hdr, domain=d), domain=d)
    assert r.reply and r.reply.startswith("550"), why


def test_trusted_relay_spf_is_checked_for_the_real_sender(daemon, dns_server):
    d = "relayed.example.org"
    dns_server.add_txt(d, "v=spf1 ip4:203.0.113.5 -all")
    dns_server.add_txt(f"_dmarc.{d}", "v=DMARC1; p=reject")
    received = (f"Received: from mail.{d} (mail.{d} [203.0.113.5])\r\n\tby relay.mx.test (Postfix) "
                f"with ESMTP id 1\r\n\tfor <bob@mx.test>; Mon, 23 Nov 2026 10:00:00 +0000\r\n")
    r = send(daemon, message(domain=d, extra=received), domain=d, ip="10.1.2.3", helo="relay.mx.test")
    assert r.action == "accept" and "spf=pass" in ar_of(r) and "dmarc=pass" in ar_of(r)


def test_dkim_signed_mail_passes_dmarc_through_dkim_alone(daemon, dns_server, tmp_path: Path):
    d = "signed.example.org"
    dns_server.add_txt(d, "v=spf1 -all")
    dns_server.add_txt(f"_dmarc.{d}", "v=DMARC1; p=reject; adkim=s")
    tmp_path.chmod(0o700)
    from cryptography.hazmat.primitives.asymmetric import ed25519
    key = SigningKey(d, "ed", "ed25519-sha256", ed25519.Ed25519PrivateKey.generate(), 256, "mem")
    dns_server.add_txt(f"ed._domainkey.{d}", keys.dns_record(key.private_key))
    raw = message(domain=d)
    sig = sign(Message.from_bytes(raw), key, sign_headers=("From", "To", "Subject", "Date"))
    r = send(daemon, b"DKIM-Signature:" + sig.encode() + b"\r\n" + raw, domain=d)
    assert r.action == "accept"
    ar = ar_of(r)
    assert "spf=fail" in ar and "dkim=pass" in ar and "header.a=ed25519-sha256" in ar and "dmarc=pass" in ar


@pytest.mark.parametrize("top", [
    "Received: from [198.51.100.7] (port=41234 helo=[192.0.2.99]) by relay.example with esmtp (Exim 4.96) "
    "id 1abc-000; Mon, 23 Nov 2026 10:00:00 +0000\r\n",
    "Received: from (192.0.2.99) (198.51.100.7) by relay.example (10.1.2.3) with Microsoft SMTP Server "
    "id 15.2.1; Mon, 23 Nov 2026 10:00:00 +0000\r\n",
])
def test_helo_literal_behind_a_trusted_relay_cannot_pass_spf(daemon, dns_server, top):
    """Hardening defect 1: the attacker's HELO [192.0.2.99] is the only address the
    victim's SPF allows; the relay recorded the real peer 198.51.100.7, so p=reject holds."""
    d = "victim.example.org"
    dns_server.add_txt(d, "v=spf1 ip4:192.0.2.99 -all")
    dns_server.add_txt(f"_dmarc.{d}", "v=DMARC1; p=reject")
    raw = message(from_hdr="From: Bob <bob@{d}>", domain=d, extra=top)
    r = send(daemon, raw, domain=d, ip="10.1.2.3", helo="relay.example")
    assert r.action in ("reject", "reply") and r.reply.startswith("550 5.7.1"), r
