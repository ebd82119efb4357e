"""A prefetch's SPF walk leaves its result for end-of-message (issue 15: the same
records are not evaluated twice), against the suite's loopback DNS server."""
from __future__ import annotations

import threading

from authmilter.checks import spf
from authmilter.prefetch import _Cancellable
from authmilter.resolver import DnssecTally, Resolver
from authmilter.results import Result

IP = "192.0.2.10"
DOMAIN = "reuse.example.org"


def _publish(dns) -> None:  # type: ignore[no-untyped-def]
    dns.add_txt(DOMAIN, f"v=spf1 include:_spf.{DOMAIN} -all")
    dns.add_txt(f"_spf.{DOMAIN}", "v=spf1 ip4:192.0.2.0/24 -all")


def _resolver(dns, **kw) -> Resolver:  # type: ignore[no-untyped-def]
    return Resolver(servers=[("127.0.0.1", dns.port)], timeout_s=2.0, **kw)


def _key() -> tuple[str, ...]:
    return ("spf", "mailfrom", IP, DOMAIN)


def test_a_finished_spf_prefetch_serves_end_of_message(dns_server):
    _publish(dns_server)
    res = _resolver(dns_server)
    warmed = spf.check_spf(IP, f"bounce@{DOMAIN}", f"mail.{DOMAIN}", _Cancellable(res.budget(10.0), threading.Event()))
    assert warmed.result is Result.PASS
    assert res.derived.get(_key()) is not None
    asked = list(dns_server.queries)
    # End-of-message, through its own budget view: the stored result, no query, the same verdict.
    final = spf.check_spf(IP, f"bounce@{DOMAIN}", f"mail.{DOMAIN}", res.budget(10.0))
    assert final == warmed
    assert dns_server.queries == asked


def test_a_cancelled_prefetch_stores_nothing(dns_server):
    _publish(dns_server)
    res = _resolver(dns_server)
    cancelled = threading.Event()
    cancelled.set()
    got = spf.check_spf(IP, f"bounce@{DOMAIN}", f"mail.{DOMAIN}", _Cancellable(res.budget(10.0), cancelled))
    assert got.result is Result.TEMPERROR
    assert res.derived.get(_key()) is None
    assert spf.check_spf(IP, f"bounce@{DOMAIN}", f"mail.{DOMAIN}", res.budget(10.0)).result is Result.PASS


def test_with_dnssec_a_stored_result_logs_what_its_answers_said(dns_server):
    """The DNSSEC field of the log line is the same whether end-of-message evaluated SPF
    itself or took the prefetch's result (the test server never sets AD: "no")."""
    _publish(dns_server)
    direct = _resolver(dns_server, dnssec=True)
    tally = DnssecTally(direct.budget(10.0))
    spf.check_spf(IP, f"bounce@{DOMAIN}", f"mail.{DOMAIN}", tally)
    assert (tally.read, tally.summary) == (2, "no")

    res = _resolver(dns_server, dnssec=True)
    spf.check_spf(IP, f"bounce@{DOMAIN}", f"mail.{DOMAIN}", _Cancellable(res.budget(10.0), threading.Event()))
    assert res.derived.get(_key()) is not None
    asked = list(dns_server.queries)
    reused = DnssecTally(res.budget(10.0))
    spf.check_spf(IP, f"bounce@{DOMAIN}", f"mail.{DOMAIN}", reused)
    assert dns_server.queries == asked
    assert (reused.read, reused.authenticated, reused.summary) == (tally.read, tally.authenticated, tally.summary)
