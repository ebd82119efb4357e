"""The SPF result cache ([dns] result_cache_entries) against the loopback DNS server.

A cached result must be exactly what evaluating again would give: it is reused only
while every DNS answer it read is still cached, per (IP, domain) when no record used a
macro, per full sender otherwise, and never for a temporary error. `_evaluate` (the
pyspf run) is wrapped with a counter to see whether a check evaluated or reused.
"""
from __future__ import annotations

import time

import pytest

from authmilter.checks import spf
from authmilter.resolver import Resolver
from authmilter.results import Result


@pytest.fixture
def evaluations(monkeypatch):
    calls: list[tuple[str, str]] = []
    real = spf._evaluate

    def counting(addr, sender, helo, resolver, **kw):  # type: ignore[no-untyped-def]
        calls.append((addr, kw["domain"]))
        return real(addr, sender, helo, resolver, **kw)

    monkeypatch.setattr(spf, "_evaluate", counting)
    return calls


@pytest.fixture
def caching(dns_server):
    """A production Resolver with its DNS cache and result cache on."""
    return Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=1.0)


def test_result_serves_every_sender_of_the_domain_from_the_same_ip(dns_server, caching, evaluations):
    dns_server.add_txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all")
    first = spf.check_spf("192.0.2.10", "alice@example.org", "mx.example.net", caching)
    second = spf.check_spf("192.0.2.10", "bob+list=x@example.org", "other.example.net", caching)
    assert first.result is second.result is Result.PASS
    assert len(evaluations) == 1
    # the per-message parts still come from this message, not the cached one
    assert second.identity == "bob+list=x@example.org"
    assert second.helo == "other.example.net"
    assert second.reason == first.reason == "matched ip4:192.0.2.0/24"
    # another IP is another result
    other = spf.check_spf("198.51.100.7", "alice@example.org", "mx.example.net", caching)
    assert other.result is Result.FAIL
    assert len(evaluations) == 2


def test_macro_records_are_kept_per_sender(dns_server, caching, evaluations):
    dns_server.add_txt("example.org", "v=spf1 exists:%{l}.allow.example.org -all")
    dns_server.add("alice.allow.example.org", "A", "127.0.0.2")
    got = {who: spf.check_spf("192.0.2.10", f"{who}@example.org", "mx.example.net", caching).result
           for who in ("alice", "bob", "alice", "bob")}
    assert got == {"alice": Result.PASS, "bob": Result.FAIL}
    assert len(evaluations) == 2  # alice and bob once each, then reused


def test_explanation_macros_make_the_key_per_sender(dns_server, caching, evaluations):
    dns_server.add_txt("example.org", "v=spf1 -all exp=why.example.org")
    dns_server.add_txt("why.example.org", "%{l} may not send from %{i}")
    a = spf.check_spf("192.0.2.10", "alice@example.org", "mx.example.net", caching)
    b = spf.check_spf("192.0.2.10", "bob@example.org", "mx.example.net", caching)
    assert a.explanation == "alice may not send from 192.0.2.10"
    assert b.explanation == "bob may not send from 192.0.2.10"
    assert len(evaluations) == 2


def test_a_changed_record_is_seen_once_its_ttl_has_passed(dns_server, caching, evaluations):
    old_ttl = dns_server.ttl
    dns_server.ttl = 1
    try:
        dns_server.add_txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all")
        assert spf.check_spf("192.0.2.10", "a@example.org", "h.example.net", caching).result is Result.PASS
        dns_server.remove("example.org", "TXT")
        dns_server.add_txt("example.org", "v=spf1 -all")
        # within the TTL the DNS cache would answer the old record: same result, reused
        assert spf.check_spf("192.0.2.10", "a@example.org", "h.example.net", caching).result is Result.PASS
        assert len(evaluations) == 1
        time.sleep(1.2)
        assert spf.check_spf("192.0.2.10", "a@example.org", "h.example.net", caching).result is Result.FAIL
        assert len(evaluations) == 2
    finally:
        dns_server.ttl = old_ttl


def test_temperror_is_never_reused(dns_server, caching, evaluations):
    dns_server.add_txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.set_fault("example.org", "servfail")
    assert spf.check_spf("192.0.2.10", "a@example.org", "h.example.net", caching).result is Result.TEMPERROR
    dns_server.set_fault("example.org", None)
    assert spf.check_spf("192.0.2.10", "a@example.org", "h.example.net", caching).result is Result.PASS
    assert len(evaluations) == 2


def test_helo_and_mail_from_scopes_are_separate(dns_server, caching, evaluations):
    dns_server.add_txt("mail.example.org", "v=spf1 a -all")
    dns_server.add("mail.example.org", "A", "192.0.2.10")
    helo = spf.check_helo("192.0.2.10", "mail.example.org", caching)
    null_sender = spf.check_spf("192.0.2.10", "", "mail.example.org", caching)
    assert helo.result is null_sender.result is Result.PASS
    assert (helo.scope, null_sender.scope) == ("helo", "mailfrom")
    assert spf.check_helo("192.0.2.10", "mail.example.org", caching).scope == "helo"
    assert len(evaluations) == 2


@pytest.mark.parametrize("kwargs", [{"derived_entries": 0}, {"cache_entries": 0}])
def test_off_when_disabled_or_without_a_dns_cache(dns_server, evaluations, kwargs):
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=1.0, **kwargs)
    dns_server.add_txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all")
    for _ in range(3):
        assert spf.check_spf("192.0.2.10", "a@example.org", "h.example.net", res).result is Result.PASS
    assert len(evaluations) == 3


def test_clear_cache_drops_results(dns_server, caching, evaluations):
    dns_server.add_txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all")
    spf.check_spf("192.0.2.10", "a@example.org", "h.example.net", caching)
    caching.clear_cache()
    spf.check_spf("192.0.2.10", "a@example.org", "h.example.net", caching)
    assert len(evaluations) == 2


def test_budget_view_shares_the_cache(dns_server, caching, evaluations):
    dns_server.add_txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all")
    for _ in range(3):
        view = caching.budget(5.0)
        assert spf.check_spf("192.0.2.10", "a@example.org", "h.example.net", view).result is Result.PASS
    assert len(evaluations) == 1
