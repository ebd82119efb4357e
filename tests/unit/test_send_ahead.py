"""Queries sent ahead (Resolver.send_ahead, dnsudp.UdpExchange.send), against the suite's
loopback DNS server: one datagram sent from the caller's thread, its answer read by the
first lookup that asks, the same Answer as a lookup of its own, and nothing left behind.
The server logs every query it gets; tests count those, never wall-clock time."""
from __future__ import annotations

import threading
import time

import dns.name
import pytest

from authmilter import dnsudp
from authmilter.resolver import DnsStatus, Resolver

NAME = "sel._domainkey.ahead.example"
VALUE = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


def _resolver(dns_server, **kw) -> Resolver:  # type: ignore[no-untyped-def]
    kw.setdefault("timeout_s", 2.0)
    return Resolver(servers=[("127.0.0.1", dns_server.port)], **kw)


def _asked(dns_server, name: str = NAME) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for n, _ in dns_server.queries if n.rstrip(".").lower() == name)


@pytest.fixture
def zone(dns_server):  # type: ignore[no-untyped-def]
    dns_server.add_txt(NAME, VALUE)
    dns_server.add_txt("spf.ahead.example", "v=spf1 -all")
    return dns_server


def test_the_answer_sent_ahead_is_the_answer_a_lookup_gets_with_one_query(zone):
    plain = _resolver(zone).query(NAME, "TXT")
    assert plain.status is DnsStatus.OK and plain.records == (VALUE.encode(),)
    zone.queries.clear()

    res = _resolver(zone)
    parked = res.send_ahead(NAME, "TXT")
    assert parked is not None
    assert res.warm(NAME, "TXT") and not res.cached(NAME, "TXT")      # in flight, not yet read
    assert zone.wait_until(lambda s: _asked(s) == 1, timeout=10)
    got, expires = res.lookup(NAME, "TXT")
    assert got == plain
    assert expires > 0 and res.cached(NAME, "TXT")
    assert _asked(zone) == 1
    res.unpark(parked)                     # claimed already: nothing to drop
    assert res.query(NAME, "TXT") == plain and _asked(zone) == 1


def test_nothing_is_sent_for_a_cached_name_or_one_in_flight(zone):
    res = _resolver(zone)
    assert res.send_ahead(NAME, "TXT") is not None
    assert res.send_ahead(NAME, "txt") is None          # the same query, in flight
    assert res.send_ahead(NAME.upper() + ".", "TXT") is None
    res.query(NAME, "TXT")
    assert res.send_ahead(NAME, "TXT") is None          # cached
    assert _asked(zone) == 1


def test_a_type_the_exchange_does_not_send_and_a_bad_name_send_nothing(zone):
    res = _resolver(zone)
    assert res.send_ahead("ahead.example", "NOSUCHTYPE") is None
    assert res.send_ahead("a..b.example", "TXT") is None
    assert not res.warm("a..b.example", "TXT")


def test_unpark_drops_a_query_nobody_read_and_the_next_lookup_asks_again(zone):
    res = _resolver(zone)
    parked = res.send_ahead(NAME, "TXT")
    assert parked is not None
    sock = parked.flight.parked.sock
    res.unpark(parked)
    assert sock.fileno() == -1                          # closed
    assert not res.warm(NAME, "TXT")
    assert res.query(NAME, "TXT").status is DnsStatus.OK
    assert zone.wait_until(lambda s: _asked(s) == 2, timeout=10)


def test_lookups_at_once_share_the_query_sent_ahead(zone):
    zone.delay_s = 0.2                                   # every lookup starts before the answer
    res = _resolver(zone)
    assert res.send_ahead(NAME, "TXT") is not None
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(res.query(NAME, "TXT"))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(answers) == 6 and all(a.status is DnsStatus.OK and a.records == (VALUE.encode(),) for a in answers)
    assert _asked(zone) == 1


def test_an_answer_that_arrived_after_the_attempt_time_is_still_read(zone):
    """Claimed after its attempt time, a query sent ahead reads the answer already there
    (without waiting) instead of taking the server for silent."""
    res = _resolver(zone, timeout_s=0.3)
    assert res.send_ahead(NAME, "TXT") is not None
    assert zone.wait_until(lambda s: _asked(s) == 1, timeout=10)
    time.sleep(0.35)
    got = res.query(NAME, "TXT")
    assert got.status is DnsStatus.OK
    assert _asked(zone) == 1 and not res.health.down


def test_a_silent_server_ends_as_a_lookup_of_its_own_would(zone):
    zone.set_fault(NAME, "timeout")
    res = _resolver(zone, timeout_s=0.4)
    assert res.send_ahead(NAME, "TXT") is not None
    got = res.query(NAME, "TXT")
    own = _resolver(zone, timeout_s=0.4).query(NAME, "TXT")
    assert got.status is own.status is DnsStatus.TEMPERROR
    assert got.error.startswith("timeout") and own.error.startswith("timeout")


def test_an_error_rcode_after_send_ahead_is_the_same_temperror(zone):
    zone.set_fault(NAME, "servfail")
    res = _resolver(zone)
    assert res.send_ahead(NAME, "TXT") is not None
    got = res.query(NAME, "TXT")
    assert got == _resolver(zone).query(NAME, "TXT")
    assert got.status is DnsStatus.TEMPERROR


def test_queries_nobody_claims_are_swept_after_the_lookup_timeout(zone):
    res = _resolver(zone, timeout_s=0.2)
    first = res.send_ahead(NAME, "TXT")
    assert first is not None
    sock = first.flight.parked.sock
    time.sleep(0.3)
    second = res.send_ahead("spf.ahead.example", "TXT")               # sweeps the stale one
    assert second is not None
    assert sock.fileno() == -1 and not res.warm(NAME, "TXT")
    assert res.warm("spf.ahead.example", "TXT")
    res.unpark(second)
    assert zone.wait_quiet(quiet_s=0.2)


def test_no_query_is_sent_ahead_while_the_servers_are_taken_for_down(zone):
    res = _resolver(zone)
    res.health.down = True
    assert res.send_ahead(NAME, "TXT") is None
    assert _asked(zone) == 0


def test_ask_never_reads_an_answer_sent_for_another_question(zone):
    res = _resolver(zone)
    ex = res._udp
    sent = ex.send(dns.name.from_text("spf.ahead.example."), 16)
    assert sent is not None
    got = ex.ask(dns.name.from_text(NAME + "."), 16, 2.0, sent)
    assert sent.sock.fileno() == -1
    assert isinstance(got, dnsudp.Reply) and got.records == (VALUE.encode(),)


def test_at_most_max_parked_queries_wait_to_be_read(zone, monkeypatch):
    monkeypatch.setattr(Resolver, "MAX_PARKED", 3)
    res = _resolver(zone)
    parked = [res.send_ahead(f"n{i}.ahead.example", "TXT") for i in range(5)]
    assert [p is not None for p in parked] == [True, True, True, False, False]
    res.query("n0.ahead.example", "TXT")               # read: its slot is free again
    assert res.send_ahead("n3.ahead.example", "TXT") is not None
    for p in parked[1:3]:
        res.unpark(p)  # type: ignore[arg-type]
    assert not res.warm("n1.ahead.example", "TXT")
    assert res.query("n3.ahead.example", "TXT").status is DnsStatus.NXDOMAIN   # read: nothing left open
    assert not res._parked
    assert zone.wait_quiet(quiet_s=0.2)


# -- the prefetch and end-of-message: single lookups sent ahead, walks on a thread ----------

IP = "192.0.2.10"
HELO = "mail.ahead.example"


def _runtime(dns_server):  # type: ignore[no-untyped-def]
    from authmilter.config.schema import settings_from_dict
    from authmilter.runtime import Runtime

    return Runtime.load(settings_from_dict({
        "authserv_id": "mx.test",
        "dns": {"servers": [dns_server.address], "timeout_s": 2.0, "message_budget_s": 10.0},
        "signing": {"enabled": False}}, "test"))


class _Spy:
    """A pool that records what was handed to it (and runs nothing)."""

    def __init__(self) -> None:
        self.handed: list[str] = []

    def try_submit(self, fn, what, *args):  # type: ignore[no-untyped-def]
        self.handed.append(what)
        return None


def _prefetch(zone):  # type: ignore[no-untyped-def]
    """A runtime, a spy pool, and the prefetch of a message whose MAIL FROM just arrived."""
    from authmilter.model import Client
    from authmilter.prefetch import Prefetch

    rt = _runtime(zone)
    pool = _Spy()
    pf = Prefetch.start(rt, Client(ip=IP, hostname=HELO, helo=HELO, port=1), "a@ahead.example", {},
                        pool=pool)  # type: ignore[arg-type]
    assert pf is not None
    return rt, pool, pf


def test_the_prefetch_sends_single_lookups_ahead_and_cancel_drops_the_unread(zone):
    rt, pool, pf = _prefetch(zone)
    assert pool.handed == ["spf"]                          # the SPF walk: several steps, a thread
    assert rt.resolver.warm(HELO, "TXT")                   # the HELO record: sent ahead
    pf.header(b"From", b" Alice <a@ahead.example>")
    pf.header(b"DKIM-Signature", b" v=1; a=rsa-sha256; d=ahead.example; s=sel; h=from; bh=; b=")
    names = (HELO, "_dmarc.ahead.example", NAME)
    assert all(rt.resolver.warm(n, "TXT") for n in names)
    assert pool.handed == ["spf"]                          # no thread for any of them
    assert zone.wait_until(lambda s: all(_asked(s, n) == 1 for n in names), timeout=10)
    pf.cancel()                                            # the message ended before anyone read them
    assert not any(rt.resolver.warm(n, "TXT") for n in names)
    assert not rt.resolver._parked
    assert zone.wait_quiet(quiet_s=0.2)


def test_a_deeper_from_domain_still_walks_the_dmarc_tree_on_a_thread(zone):
    rt, pool, pf = _prefetch(zone)
    pf.header(b"From", b" a@lists.sub.ahead.example")
    assert pool.handed == ["spf", "dmarc"]
    assert not rt.resolver.warm("_dmarc.lists.sub.ahead.example", "TXT")
    pf.cancel()
    assert zone.wait_quiet(quiet_s=0.2)                    # the HELO query sent ahead has landed


def test_end_of_message_sends_the_cold_single_lookups_ahead_and_hands_off_only_the_spf_walk(zone, monkeypatch):
    """A message nobody prefetched (prefetch off): the DKIM key, the HELO record and the
    DMARC record go out from the end-of-message thread itself; only the SPF walk takes a
    pool thread. The verdict is the one the checks give without any of this."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from authmilter import keys, tasks
    from authmilter.dkim.sign import SigningKey, sign
    from authmilter.model import Client, Envelope, Message, Session
    from authmilter.pipeline import process

    key = SigningKey("ahead.example", "sel", "ed25519-sha256", ed25519.Ed25519PrivateKey.generate(), 256, "mem")
    zone.remove(NAME)
    zone.add_txt(NAME, keys.dns_record(key.private_key))
    zone.add_txt("ahead.example", "v=spf1 include:_spf.ahead.example -all")
    zone.add_txt("_spf.ahead.example", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.add_txt("_dmarc.ahead.example", "v=DMARC1; p=reject")
    raw = (b"From: Alice <a@ahead.example>\r\nTo: b@mx.test\r\nSubject: s\r\n"
           b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nHello.\r\n")
    raw = b"DKIM-Signature:" + sign(Message.from_bytes(raw), key, sign_headers=("From", "To", "Subject")).encode() \
        + b"\r\n" + raw
    handed: list[str] = []
    real = tasks.CHECKS.try_submit

    def spy(fn, *args):  # type: ignore[no-untyped-def]
        handed.append(getattr(fn, "__name__", "?"))
        return real(fn, *args)

    monkeypatch.setattr(tasks.CHECKS, "try_submit", spy)
    rt = _runtime(zone)
    sess = Session(client=Client(ip=IP, hostname=HELO, helo=HELO, port=1),
                   envelope=Envelope(mail_from="a@ahead.example", rcpts=("b@mx.test",)),
                   message=Message.from_bytes(raw), queue_id="Q1")
    out = process(sess, rt)
    (ar,) = [e.value for e in out.insertions if e.name == "Authentication-Results"]
    assert "spf=pass" in ar and "dkim=pass" in ar and "dmarc=pass" in ar
    assert len(handed) == 1                                # the SPF walk alone
    for name in (HELO, "_dmarc.ahead.example", NAME, "ahead.example", "_spf.ahead.example"):
        assert _asked(zone, name) == 1, (name, zone.queries)
    assert not rt.resolver._parked                         # every query sent ahead was read


def test_which_dmarc_discoveries_are_one_query():
    from authmilter.checks.orgdomain import single_query

    assert single_query("ahead.example", "rfc9989") == "_dmarc.ahead.example"
    assert single_query("localhost", "rfc9989") == "_dmarc.localhost"
    assert single_query("mail.ahead.example", "rfc9989") is None     # the walk may go on
    assert single_query("ahead.example", "rfc7489") is None          # its PSL step: the whole discovery
