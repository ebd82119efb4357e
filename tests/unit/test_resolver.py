"""The production resolver against a real DNS server on loopback."""
from authmilter.resolver import DnsStatus, Resolver


def test_txt_a_mx_nxdomain_nodata(dns_server, resolver):
    dns_server.add_txt("example.com", "v=spf1 -all")
    dns_server.add("example.com", "A", "192.0.2.1")
    dns_server.add("example.com", "MX", "10 mx.example.com.")
    assert resolver.query("example.com", "TXT").records == (b"v=spf1 -all",)
    assert resolver.query("example.com", "A").records == ("192.0.2.1",)
    assert resolver.query("example.com", "MX").records == ((10, "mx.example.com"),)
    assert resolver.query("nope.example.com", "TXT").status is DnsStatus.NXDOMAIN
    assert resolver.query("example.com", "AAAA").status is DnsStatus.NODATA


def test_long_txt_is_joined(dns_server, resolver):
    dns_server.add_txt("k._domainkey.example.com", "p=" + "A" * 600)
    (value,) = resolver.query("k._domainkey.example.com", "TXT").records
    assert value == b"p=" + b"A" * 600


def test_timeout_and_servfail_are_temperror(dns_server):
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=0.3, cache_entries=0)
    dns_server.set_fault("slow.example.com", "timeout")
    dns_server.set_fault("broken.example.com", "servfail")
    assert res.query("slow.example.com", "TXT").status is DnsStatus.TEMPERROR
    assert res.query("broken.example.com", "TXT").status is DnsStatus.TEMPERROR


def test_cache_serves_repeat_queries(dns_server):
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=1.0)
    dns_server.add_txt("c.example.com", "x")
    res.query("c.example.com", "TXT")
    res.query("C.example.com.", "TXT")
    res.query("none.example.com", "TXT")
    res.query("none.example.com", "TXT")
    assert dns_server.queries.count(("c.example.com", "TXT")) == 1
    assert dns_server.queries.count(("none.example.com", "TXT")) == 1


def test_budget_exhausted_is_temperror_without_traffic(dns_server):
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=1.0, cache_entries=0)
    view = res.budget(0.0)
    assert view.query("x.example.com", "TXT").status is DnsStatus.TEMPERROR
    assert dns_server.queries == []


def test_bad_name(resolver):
    assert resolver.query("a" * 70 + ".example.com", "TXT").status is DnsStatus.BADNAME
