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
import dns.rrset
import pytest

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
        while running:
            try:
                wire, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
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
        return [b"\x00", wrong_id.to_wire(), other_question.to_wire(), _answer(query).to_wire()]

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
