"""The production resolver against a real DNS server on loopback."""
from contextlib import contextmanager

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


# -- identical queries in flight are coalesced (issue 15) ------------------------------

def _in_thread(fn):  # type: ignore[no-untyped-def]
    """Run *fn* in a thread; returns (thread, box) where box[0] is its return value."""
    import threading

    box: list = []
    t = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    t.start()
    return t, box


def _until(predicate, bound: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + bound     # anti-hang only
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@contextmanager
def _held(dns_server, name: str, ask):  # type: ignore[no-untyped-def]
    """The server holds its answers while *ask* (a lookup of *name* TXT) runs in a thread;
    the block starts once that query reached the server and gets the `_in_thread` pair.
    The answers are released when the block ends."""
    dns_server.hold()
    try:
        leader = _in_thread(ask)
        assert dns_server.wait_until(lambda s: (name, "TXT") in s.queries)
        yield leader
    finally:
        dns_server.release()


def test_identical_lookups_in_flight_share_one_query(dns_server):
    # Cache off: sharing comes from the flight, not from a cached answer.
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=20.0, cache_entries=0)
    dns_server.add_txt("shared.example.com", "v=spf1 -all")
    with _held(dns_server, "shared.example.com", lambda: res.lookup("shared.example.com", "TXT")) as leader:
        others = [_in_thread(lambda: res.query("Shared.Example.com.", "txt")) for _ in range(4)]
        assert _until(lambda: res.waiting("shared.example.com", "TXT") == 4)
    for t, _ in (leader, *others):
        t.join(30)
    assert leader[1][0][0].records == (b"v=spf1 -all",)
    assert [box[0].records for _, box in others] == [(b"v=spf1 -all",)] * 4
    assert dns_server.queries.count(("shared.example.com", "TXT")) == 1
    assert res.waiting("shared.example.com", "TXT") == 0
    # Once it landed, the next lookup is a new query (nothing cached, nothing in flight).
    assert res.query("shared.example.com", "TXT").ok
    assert dns_server.queries.count(("shared.example.com", "TXT")) == 2


def test_a_waiter_gives_up_at_the_end_of_its_own_budget(dns_server):
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=20.0)
    dns_server.add_txt("slow.example.com", "v=spf1 -all")
    with _held(dns_server, "slow.example.com", lambda: res.query("slow.example.com", "TXT")) as leader:
        short = res.budget(0.3)                      # a message with little time left
        answer = short.query("slow.example.com", "TXT")
        # It returned while the answer it waited for is still held at the server.
        assert answer.status is DnsStatus.TEMPERROR and answer.error.startswith("timeout")
        assert leader[0].is_alive() and not leader[1]
        assert not any(kind == "answer" for kind, _, _ in dns_server.events)
        assert dns_server.queries.count(("slow.example.com", "TXT")) == 1
    leader[0].join(30)
    assert leader[1][0].ok
    assert dns_server.queries.count(("slow.example.com", "TXT")) == 1
    # The answer the leader got is cached for everyone, the short budget included.
    assert res.budget(5).query("slow.example.com", "TXT").ok


def test_an_exhausted_budget_never_joins_a_flight(dns_server):
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=20.0)
    dns_server.add_txt("late.example.com", "x")
    with _held(dns_server, "late.example.com", lambda: res.query("late.example.com", "TXT")) as leader:
        answer = res.budget(0).query("late.example.com", "TXT")
        assert answer.status is DnsStatus.TEMPERROR and answer.error == "DNS time budget exhausted"
        assert res.waiting("late.example.com", "TXT") == 0
    leader[0].join(30)
    assert leader[1][0].ok


def test_warm_means_cached_or_in_flight(dns_server):
    """What end-of-message asks before it spends a thread on a check: would its first
    lookup be answered without a query of its own?"""
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=20.0)
    dns_server.add_txt("held.example.com", "v=spf1 -all")
    dns_server.add_txt("done.example.com", "v=spf1 -all")
    assert not res.warm("held.example.com", "TXT") and not res.warm("done.example.com", "TXT")
    assert res.query("done.example.com", "TXT").ok
    assert res.warm("Done.Example.com.", "txt")                     # cached
    with _held(dns_server, "held.example.com", lambda: res.query("held.example.com", "TXT")) as leader:
        assert res.warm("held.example.com", "TXT")                  # in flight
        assert not res.cached("held.example.com", "TXT")
        assert not res.warm("held.example.com", "A")                # another type is not
    leader[0].join(30)
    assert res.warm("held.example.com", "TXT") and res.cached("held.example.com", "TXT")
