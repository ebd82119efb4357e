"""The resolver's own UDP exchange (dnsudp.py) against real servers on loopback: it
answers the usual lookups without dnspython's resolver, gives the same answers that
resolver gives, and leaves everything else to it."""
from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from infra.dnsserver import udp_queries

from authmilter import dnsudp
from authmilter.resolver import Answer as Answer_
from authmilter.resolver import DnsStatus, Resolver

CASES = [("ok.example", "TXT"), ("alias.example", "TXT"), ("dangling.example", "TXT"), ("none.example", "TXT"),
         ("ok.example", "MX"), ("ok.example", "A"), ("ok.example", "AAAA"), ("mx.example", "MX"),
         ("bad.example", "TXT"), ("ref.example", "TXT")]


def _zone(dns_server) -> None:  # type: ignore[no-untyped-def]
    dns_server.add_txt("ok.example", "v=spf1 -all")
    dns_server.add("ok.example", "A", "192.0.2.1")
    dns_server.add("alias.example", "CNAME", "ok.example.")
    dns_server.add("dangling.example", "CNAME", "gone.example.")
    dns_server.add("mx.example", "MX", "10 mail.mx.example.")
    dns_server.set_fault("bad.example", "servfail")
    dns_server.set_fault("ref.example", "refused")


def _dnspython_path(res: Resolver) -> list[str]:
    """Make the resolver's dnspython path record what it is asked (and still answer)."""
    asked: list[str] = []
    inner = res._ask_dnspython

    def spy(qname, name, rdtype, lifetime):  # type: ignore[no-untyped-def]
        asked.append(f"{name}/{rdtype}")
        return inner(qname, name, rdtype, lifetime)

    res._ask_dnspython = spy  # type: ignore[method-assign]
    return asked


@pytest.mark.parametrize("dnssec", [False, True])
def test_usual_answers_come_from_the_exchange_and_match_dnspythons(dns_server, dnssec):
    _zone(dns_server)
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=1.0, cache_entries=0, dnssec=dnssec)
    asked = _dnspython_path(res)
    ours = [res.query(n, t) for n, t in CASES]
    assert asked == []
    assert [a.status for a in ours] == [DnsStatus.OK, DnsStatus.OK, DnsStatus.NXDOMAIN, DnsStatus.NXDOMAIN,
                                        DnsStatus.NODATA, DnsStatus.OK, DnsStatus.NODATA, DnsStatus.OK,
                                        DnsStatus.TEMPERROR, DnsStatus.TEMPERROR]
    # The same lookups through dnspython's resolver: field for field the same answers
    # (records, TTLs, negative TTLs, AD flag, the text of a SERVFAIL/REFUSED).
    theirs = [res._ask_dnspython(dns.name.from_text(n), n, t, 1.0) for n, t in CASES]
    assert ours == theirs


def test_a_truncated_answer_is_left_to_dnspython_which_asks_over_tcp(dns_server):
    dns_server.add_txt("k._domainkey.big.example", "p=" + "A" * 900)
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=1.0, cache_entries=0)
    asked = _dnspython_path(res)
    (value,) = res.query("k._domainkey.big.example", "TXT").records
    assert value == b"p=" + b"A" * 900
    assert asked == ["k._domainkey.big.example/TXT"]


@contextmanager
def fake_server(reply: Callable[[dns.message.Message, bytes], list[bytes]]) -> Iterator[tuple[str, int]]:
    """A UDP server on loopback sending, for each query, the datagrams *reply* makes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    running = True

    def serve() -> None:
        for wire, peer in udp_queries(sock, lambda: running):
            for out in reply(dns.message.from_wire(wire), wire):
                sock.sendto(out, peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield sock.getsockname()
    finally:
        running = False
        t.join(timeout=2)
        sock.close()


def _answer(query: dns.message.Message, text: str = '"v=spf1 -all"') -> dns.message.Message:
    r = dns.message.make_response(query)
    r.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN", "TXT", text))
    return r


def test_datagrams_that_do_not_answer_our_query_are_ignored():
    def reply(query: dns.message.Message, wire: bytes) -> list[bytes]:
        wrong_id = _answer(query, '"forged"')
        wrong_id.id = (query.id + 1) % 65536
        other_question = dns.message.make_response(dns.message.make_query("other.example", "TXT"))
        other_question.id = query.id
        other_question.answer.append(dns.rrset.from_text("other.example.", 300, "IN", "TXT",
                                                                             '"forged"'))
        echo = _answer(query, '"forged"')
        echo.flags &= ~dns.flags.QR                  # our id and question, but not a response
        return [b"\x00", wrong_id.to_wire(), other_question.to_wire(), echo.to_wire(), _answer(query).to_wire()]

    with fake_server(reply) as addr:
        res = Resolver(servers=[addr], timeout_s=2.0, cache_entries=0)
        asked = _dnspython_path(res)
        answer = res.query("real.example", "TXT")
    assert answer.status is DnsStatus.OK and answer.records == (b"v=spf1 -all",)
    assert asked == []


def test_a_malformed_response_is_a_defined_temporary_error():
    def reply(query: dns.message.Message, wire: bytes) -> list[bytes]:
        good = _answer(query).to_wire()
        return [good[:12] + b"\xff" * 40]          # our id and flags, then garbage

    with fake_server(reply) as addr:
        res = Resolver(servers=[addr], timeout_s=1.0, cache_entries=0)
        asked = _dnspython_path(res)
        answer = res.query("garbled.example", "TXT")
    assert answer.status is DnsStatus.TEMPERROR
    assert asked == ["garbled.example/TXT"]          # handed back: dnspython decided the same


def test_a_silent_or_failing_server_is_passed_over_for_the_next(dns_server):
    dns_server.add_txt("ok.example", "x")
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        res = Resolver(servers=[silent.getsockname(), ("127.0.0.1", dns_server.port)], timeout_s=3.0,
                       cache_entries=0)
        res._udp.attempt_s = 0.3                      # the attempt timeout dnspython would use is 2 s
        asked = _dnspython_path(res)
        assert res.query("ok.example", "TXT").records == (b"x",)
        assert asked == []
    finally:
        silent.close()

    def servfail(query: dns.message.Message, wire: bytes) -> list[bytes]:
        r = dns.message.make_response(query)
        r.set_rcode(dns.rcode.SERVFAIL)
        return [r.to_wire()]

    with fake_server(servfail) as addr:
        res = Resolver(servers=[addr, ("127.0.0.1", dns_server.port)], timeout_s=2.0, cache_entries=0)
        assert res.query("ok.example", "TXT").records == (b"x",)
        both_fail = Resolver(servers=[addr, addr], timeout_s=2.0, cache_entries=0)
        failed = both_fail.query("ok.example", "TXT")
        assert failed.status is DnsStatus.TEMPERROR and failed.error.count("answered SERVFAIL") == 2


# -- the fast reader against dnspython's parser: the same Answer for the same bytes ----------

QNAME = dns.name.from_text("Q.Example.")
NAMES = ["q.example.", "Q.EXAMPLE.", "a.example.", "b.example.", "c.example.", "other.example."]
_txt = st.lists(st.binary(max_size=40), min_size=1, max_size=3).map(
    lambda parts: " ".join('"' + "".join(f"\\{b:03d}" for b in p) + '"' for p in parts))
_rdata = {
    "TXT": _txt,
    "A": st.ip_addresses(v=4).map(str),
    "AAAA": st.ip_addresses(v=6).map(str),
    "CNAME": st.sampled_from(NAMES),
}
_rr = st.tuples(st.sampled_from(NAMES), st.integers(0, 2**31 - 1), st.sampled_from(sorted(_rdata))).flatmap(
    lambda t: _rdata[t[2]].map(lambda text: (t[0], t[1], t[2], text)))


def _wire(qtype: str, rcode: int, ad: bool, answers: list, soa_ttl: int | None, soa_min: int, qid: int) -> bytes:
    query = dns.message.make_query(QNAME, qtype)
    query.id = qid
    r = dns.message.make_response(query)
    r.set_rcode(rcode)
    if ad:
        r.flags |= dns.flags.AD
    for owner, ttl, rtype, text in answers:
        r.answer.append(dns.rrset.from_text(owner, ttl, "IN", rtype, text))
    if soa_ttl is not None:
        r.authority.append(dns.rrset.from_text("example.", soa_ttl, "IN", "SOA",
                                               f"ns.example. host.example. 1 2 3 4 {soa_min}"))
    return r.to_wire()


def _both(wire: bytes, qtype: str, dnssec: bool) -> tuple[object, object]:
    """(the fast reader's Answer or its verdict, dnspython's Answer or None when it refuses)."""
    res = Resolver(servers=[("127.0.0.1", 9)], dnssec=dnssec)
    code = dns.rdatatype.from_text(qtype)
    dnsudp._match(wire, 4660, QNAME, code)       # whatever the bytes: no exception
    fast = dnsudp.read_fast(wire, 4660, QNAME, code)
    if isinstance(fast, dnsudp.Reply):
        fast = res._from_reply(fast, "q.example", qtype)
    try:
        message = dns.message.from_wire(wire)
    except Exception:  # noqa: BLE001 - dnspython refusing the bytes is one of the outcomes
        return fast, None
    slow = res._from_response(message, "q.example", qtype) if message.rcode() in (0, 3) else None
    return fast, slow


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(qtype=st.sampled_from(["TXT", "A", "AAAA", "SPF"]), rcode=st.sampled_from([0, 0, 3]), ad=st.booleans(),
       answers=st.lists(_rr, max_size=6), soa_ttl=st.one_of(st.none(), st.integers(0, 2**31 - 1)),
       soa_min=st.integers(0, 2**31 - 1), dnssec=st.booleans())
def test_the_fast_reader_gives_dnspythons_answer(qtype, rcode, ad, answers, soa_ttl, soa_min, dnssec):
    answers = [(o, t, "SPF" if (r == "TXT" and qtype == "SPF") else r, x) for o, t, r, x in answers]
    wire = _wire(qtype, rcode, ad, answers, soa_ttl, soa_min, 4660)
    fast, slow = _both(wire, qtype, dnssec)
    if fast == dnsudp.SLOW:            # left to dnspython's parser: whatever it decides stands
        return
    assert isinstance(fast, Answer_)   # our own question: never taken for another's
    if slow is not None:
        assert fast == slow


@settings(max_examples=600, deadline=None)
@given(qtype=st.sampled_from(["TXT", "A", "AAAA"]), answers=st.lists(_rr, max_size=4),
       cuts=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4), trim=st.integers(0, 40))
def test_any_bytes_get_a_verdict_and_never_a_different_answer(qtype, answers, cuts, trim):
    wire = bytearray(_wire(qtype, 0, False, answers, 300, 60, 4660))
    for at, value in cuts:                        # flip bytes after the id
        if 2 <= at < len(wire):
            wire[at] = value
    data = bytes(wire[:max(2, len(wire) - trim)])
    fast, slow = _both(data, qtype, False)        # no exception escapes the reader
    if isinstance(fast, Answer_) and slow is not None:
        assert fast == slow


def test_a_server_on_ipv6_loopback_is_asked_the_same_way():
    from infra.dnsserver import DNSServer

    with DNSServer(host="::1") as server:
        server.add_txt("v6.example", "v=spf1 -all")
        res = Resolver(servers=[("::1", server.port)], timeout_s=2.0, cache_entries=0)
        asked = _dnspython_path(res)
        assert res.query("v6.example", "TXT").records == (b"v=spf1 -all",)
        assert res.query("gone.v6.example", "TXT").status is DnsStatus.NXDOMAIN
        assert asked == []
