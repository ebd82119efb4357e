"""DNS overlapped with the SMTP transaction (issue 15), over the real milter socket.

The loopback DNS server logs every query and answer in order; tests read ordering,
counts and overlap from that log, never wall-clock time (bounds are anti-hang only).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from infra.milter import MTA_PROTOCOL, NR_BIT
from milterd import Daemon, merge

from authmilter import keys
from authmilter.dkim.sign import SigningKey, sign
from authmilter.model import Message

AUTHSERV = "mx.test"
CLIENT_IP = "192.0.2.10"
RELAY_IP = "10.1.2.3"


def _daemon(tmp: Path, dns: Any, prefetch: bool) -> Daemon:
    config: dict[str, Any] = {
        "socket": f"unix:{tmp}/m.sock", "authserv_id": AUTHSERV, "workers": 1, "log_level": "debug",
        "dns": {"servers": [dns.address], "timeout_s": 3.0, "message_budget_s": 10.0, "prefetch": prefetch},
        "signing": {"enabled": False}, "verify": {"trusted_relays": [RELAY_IP]},
    }
    return Daemon(tmp, merge({}, config)).start()


@pytest.fixture(scope="module")
def daemons(tmp_path_factory, _shared_dns_server):  # type: ignore[no-untyped-def]
    """{True: a daemon with prefetch on, False: one with it off}, same config otherwise."""
    started = {flag: _daemon(tmp_path_factory.mktemp(f"prefetch-{flag}"), _shared_dns_server, flag)
               for flag in (True, False)}
    yield started
    for d in started.values():
        assert d.stop() == 0, d.log()


def message(domain: str, extra: str = "") -> bytes:
    return (f"{extra}From: Alice <alice@{domain}>\r\nTo: bob@mx.test\r\nSubject: test\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <t@{domain}>\r\n\r\nHello.\r\n").encode()


def signed(dns: Any, domain: str, *, publish: bool = True) -> bytes:
    key = SigningKey(domain, "sel", "ed25519-sha256", ed25519.Ed25519PrivateKey.generate(), 256, "mem")
    if publish:
        dns.add_txt(f"sel._domainkey.{domain}", keys.dns_record(key.private_key))
    raw = message(domain)
    sig = sign(Message.from_bytes(raw), key, sign_headers=("From", "To", "Subject", "Date"))
    return b"DKIM-Signature:" + sig.encode() + b"\r\n" + raw


def publish(dns: Any, d: str) -> None:
    """SPF through one include, DMARC p=none (so AR is always inserted)."""
    dns.add_txt(d, f"v=spf1 include:_spf.{d} -all")
    dns.add_txt(f"_spf.{d}", "v=spf1 ip4:192.0.2.0/24 -all")
    dns.add_txt(f"_dmarc.{d}", "v=DMARC1; p=none")


# Offered without the no-reply bits, the milter answers every step: each answer says
# the daemon has run that callback (an ordering point for the tests).
ANSWERED = MTA_PROTOCOL & ~sum(NR_BIT.values())


def begin(client: Any, d: str, qid: str, ip: str = CLIENT_IP) -> None:
    """Connect, HELO, MAIL FROM, RCPT: what an MTA sends before DATA, each answered."""
    client.negotiate(protocol=ANSWERED)
    client.connect(hostname="mail." + d, ip=ip, macros={"j": AUTHSERV})
    client.helo("mail." + d)
    client.mail(f"bounce@{d}", macros={"i": qid})
    client.rcpt("bob@mx.test")


def content(client: Any, raw: bytes) -> None:
    from milterclient import split_message

    headers, body = split_message(raw)
    for name, value in headers:
        client.header(name, value)
    client.eoh()
    client.body(body)


def ar_of(result: Any) -> str:
    (value,) = result.headers_named("Authentication-Results")
    return value


def test_spf_dmarc_and_dkim_key_are_asked_before_end_of_message_and_not_again(daemons, dns_server):
    d = "early.example.org"
    publish(dns_server, d)
    raw = signed(dns_server, d)
    wanted = [(d, "TXT"), (f"_spf.{d}", "TXT"), (f"_dmarc.{d}", "TXT"), (f"sel._domainkey.{d}", "TXT")]
    with daemons[True].client() as c:
        begin(c, d, "PF1")
        # SPF (and its include) are asked while the client is still in the envelope.
        assert dns_server.wait_until(lambda s: all(q in s.queries for q in wanted[:2])), dns_server.queries
        content(c, raw)
        # DMARC and the DKIM key as their headers arrived: all before EOM is sent.
        assert dns_server.wait_until(lambda s: all(q in s.queries for q in wanted)), dns_server.queries
        before = len(dns_server.queries)
        result = c.eom(macros={"i": "PF1"})
    ar = ar_of(result)
    assert "spf=pass" in ar and "dkim=pass" in ar and "dmarc=pass" in ar, ar
    # End-of-message found every one of them answered: none was asked twice.
    assert [dns_server.queries.count(q) for q in wanted] == [1, 1, 1, 1], dns_server.queries
    assert all(q not in dns_server.queries[before:] for q in wanted)


def test_without_prefetch_nothing_is_asked_before_end_of_message(daemons, dns_server):
    d = "late.example.org"
    publish(dns_server, d)
    raw = signed(dns_server, d)
    with daemons[False].client() as c:
        begin(c, d, "PF2")
        content(c, raw)
        assert dns_server.wait_quiet(quiet_s=0.5)
        assert dns_server.queries == []
        result = c.eom(macros={"i": "PF2"})
    assert "dmarc=pass" in ar_of(result)
    assert (d, "TXT") in dns_server.queries and (f"sel._domainkey.{d}", "TXT") in dns_server.queries


CASES = {
    # name: (records, signed?, key published?)
    "pass": lambda dns, d: publish(dns, d),
    "spf-fail": lambda dns, d: (dns.add_txt(d, "v=spf1 -all"), dns.add_txt(f"_dmarc.{d}", "v=DMARC1; p=none")),
    "spf-temperror": lambda dns, d: (dns.set_fault(d, "servfail"), dns.add_txt(f"_dmarc.{d}", "v=DMARC1; p=none")),
    "spf-permerror": lambda dns, d: (dns.add_txt(d, "v=spf1 include:nothing-here.invalid -all"),
                                     dns.add_txt(f"_dmarc.{d}", "v=DMARC1; p=none")),
    "dmarc-temperror": lambda dns, d: (dns.add_txt(d, "v=spf1 ip4:192.0.2.0/24 -all"),
                                       dns.set_fault(f"_dmarc.{d}", "servfail")),
    "dmarc-permerror": lambda dns, d: (dns.add_txt(d, "v=spf1 ip4:192.0.2.0/24 -all"),
                                       dns.add_txt(f"_dmarc.{d}", "v=DMARC1; p=bogus")),
    "dkim-key-missing": lambda dns, d: publish(dns, d),
    "dkim-key-temperror": lambda dns, d: (publish(dns, d), dns.set_fault(f"sel._domainkey.{d}", "servfail")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prefetch_never_changes_a_result(daemons, dns_server, case):
    """The same message to a daemon with prefetch off and to one with it on (each with
    a cold cache for the domain): byte-identical verdict and Authentication-Results."""
    d = f"{case}.same.example.org"
    CASES[case](dns_server, d)
    raw = signed(dns_server, d, publish=case not in ("dkim-key-missing", "dkim-key-temperror"))
    results = {}
    for flag in (False, True):
        with daemons[flag].client() as c:
            begin(c, d, f"AB{int(flag)}")
            content(c, raw)
            results[flag] = c.eom(macros={"i": f"AB{int(flag)}"})
    off, on = results[False], results[True]
    assert (on.action, on.reply, on.inserted, on.changed) == (off.action, off.reply, off.inserted, off.changed)
    expected = {"pass": "dmarc=pass", "spf-fail": "spf=fail", "spf-temperror": "spf=temperror",
                "spf-permerror": "spf=permerror", "dmarc-temperror": "dmarc=temperror",
                "dmarc-permerror": "dmarc=permerror", "dkim-key-missing": "dkim=permerror",
                "dkim-key-temperror": "dkim=temperror"}[case]
    assert expected in ar_of(on), ar_of(on)


def test_a_connection_that_goes_away_stops_its_spf_walk(daemons, dns_server):
    d = "walk.example.org"
    includes = [f"i{n}.{d}" for n in range(1, 6)]
    dns_server.add_txt(d, "v=spf1 " + " ".join(f"include:{i}" for i in includes) + " -all")
    for n, inc in enumerate(includes, 1):
        dns_server.add_txt(inc, f"v=spf1 ip4:198.51.100.{n} -all")    # never the client: the walk goes on
    daemon = daemons[True]
    dns_server.hold()
    try:
        with daemon.client() as c:
            begin(c, d, "GONE")
            assert dns_server.wait_until(lambda s: (d, "TXT") in s.queries)
        # The SMTP client went away after MAIL FROM (socket closed, no QUIT).
        # The daemon saw the message end while the first answer was still held.
        assert daemon.wait_log(r"GONE: prefetch cancelled")
    finally:
        dns_server.release()
    assert dns_server.wait_quiet(quiet_s=1.0)
    asked = [name for name, _ in dns_server.queries]
    assert d in asked
    assert includes[-1] not in asked and includes[0] not in asked, asked


def test_end_of_message_runs_the_checks_side_by_side(daemons, dns_server):
    """Prefetch off, every answer delayed: the server sees several of the message's
    queries open at once (SPF, DKIM key, DMARC are independent)."""
    d = "overlap.example.org"
    dns_server.add_txt(d, "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add_txt(f"_dmarc.{d}", "v=DMARC1; p=none")
    raw = signed(dns_server, d)
    with daemons[False].client() as c:
        begin(c, d, "CONC")
        content(c, raw)
        assert dns_server.wait_quiet(quiet_s=0.5)
        assert dns_server.queries == []          # nothing asked before EOM (prefetch off)
        dns_server.delay_s = 0.3
        result = c.eom(macros={"i": "CONC"})
    ar = ar_of(result)
    assert "spf=pass" in ar and "dkim=pass" in ar and "dmarc=pass" in ar
    assert dns_server.max_in_flight > 1, dns_server.events
    # SPF and DMARC discovery (both plain checks, no warm-up) were open at the same time.
    assert overlapped(dns_server.events, d, f"_dmarc.{d}"), dns_server.events


def overlapped(events: list[tuple[str, str, str]], a: str, b: str) -> bool:
    """Whether the TXT queries for *a* and *b* were both unanswered at one point."""
    def span(name: str) -> tuple[int, int]:
        return (events.index(("query", name, "TXT")), events.index(("answer", name, "TXT")))
    (qa, aa), (qb, ab) = span(a), span(b)
    return qa < ab and qb < aa


def test_no_spf_prefetch_behind_a_trusted_relay(daemons, dns_server):
    """Behind our own relay SPF applies to the hop in Received, known only at EOM: the
    envelope domain is not walked at MAIL FROM; the From header's DMARC still is."""
    d = "relayed.example.org"
    publish(dns_server, d)
    received = f"Received: from mail.{d} (mail.{d} [192.0.2.10]) by relay.mx.test; Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    raw = message(d, extra=received)
    with daemons[True].client() as c:
        begin(c, d, "RELAY", ip=RELAY_IP)
        content(c, raw)
        assert dns_server.wait_until(lambda s: (f"_dmarc.{d}", "TXT") in s.queries)
        assert dns_server.wait_quiet(quiet_s=0.5)
        assert (d, "TXT") not in dns_server.queries, dns_server.queries
        result = c.eom(macros={"i": "RELAY"})
    ar = ar_of(result)
    assert "spf=pass" in ar and "dmarc=pass" in ar, ar
