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


def test_silent_servers_fail_fast_until_one_answers(dns_server):
    """The dead-server fast path: after a lookup got no answer from anyone, concurrent
    lookups fail at once; the next lookup goes out as a short probe, and any answer
    brings the servers back."""
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=1.0, cache_entries=0)
    dns_server.set_fault("slow.example.com", "timeout")
    dns_server.add_txt("ok.example.com", "x")
    assert res.query("slow.example.com", "TXT").error.startswith("timeout")
    assert res.health.down
    res.health._probing = True                      # a probe is out (another thread)
    before = len(dns_server.queries)
    fast = res.query("ok.example.com", "TXT")
    assert fast.status is DnsStatus.TEMPERROR and fast.error == "DNS servers not answering"
    assert len(dns_server.queries) == before, "no traffic while a probe is out"
    res.health._probing = False
    assert res.query("ok.example.com", "TXT").status is DnsStatus.OK   # the probe
    assert not res.health.down


def test_one_slow_name_among_answers_is_not_a_dead_server(dns_server):
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=1.0, cache_entries=0)
    dns_server.set_fault("slow.example.com", "timeout")
    dns_server.add_txt("ok.example.com", "x")
    import threading

    slow = threading.Thread(target=res.query, args=("slow.example.com", "TXT"))
    slow.start()
    while slow.is_alive():                          # answers keep arriving meanwhile
        assert res.query("ok.example.com", "TXT").status is DnsStatus.OK
    slow.join()
    assert not res.health.down
