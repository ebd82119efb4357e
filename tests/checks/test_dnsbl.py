"""checks/dnsbl.py (RFC 5782 query names, filters, weights, refused answers), the zone
grammar of config/dnslists.py, and the blocklist rules of policy.py."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from authmilter.checks import dnsbl
from authmilter.config.dnslists import parse_zone
from authmilter.outcome import Action
from authmilter.policy import dnsbl_decision, dnsbl_header
from authmilter.resolver import Answer, DnsStatus


class Zone:
    """A zone-backed resolver that records its queries (design.md: DNS is a parameter)."""

    def __init__(self, records: dict[str, tuple[str, ...] | str]) -> None:
        self.records = records
        self.queries: list[str] = []

    def query(self, name: str, rdtype: str) -> Answer:
        self.queries.append(name)
        value = self.records.get(name)
        if value is None:
            return Answer(name, rdtype, DnsStatus.NXDOMAIN)
        if value == "timeout":
            return Answer(name, rdtype, DnsStatus.TEMPERROR, error="timeout")
        return Answer(name, rdtype, DnsStatus.OK, records=tuple(value))


def test_rfc5782_query_names_ipv4_and_ipv6_nibbles() -> None:
    assert dnsbl.query_name("192.0.2.99", "bl.example") == "99.2.0.192.bl.example"
    assert dnsbl.query_name("2001:db8:1:2:3:4:567:89ab", "bl.example") == \
        "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.example"   # RFC 5782 §2.4
    assert dnsbl.query_name("::ffff:192.0.2.99", "bl.example") == "99.2.0.192.bl.example"


def test_zone_grammar() -> None:
    z = parse_zone("zen.spamhaus.org=127.0.0.[2..11]*3")
    assert (z.zone, z.weight) == ("zen.spamhaus.org", 3)
    assert z.matches("127.0.0.2") and z.matches("127.0.0.11") and not z.matches("127.0.0.12")
    assert parse_zone("list.dnswl.org=127.0.[0..255].[1;3]").matches("127.0.9.3")
    assert not parse_zone("list.dnswl.org=127.0.[0..255].[1;3]").matches("127.0.9.2")
    assert parse_zone("bl.example").matches("127.0.0.200") and not parse_zone("bl.example").matches("10.0.0.1")
    for bad in ("nodots", "bl.example=127.0.0", "bl.example=127.0.0.[9..2]", "bl.example*0", "bl.example=127.0.0.256"):
        with pytest.raises(ValueError):
            parse_zone(bad)


def lookup(records: dict, zones: list[str], threshold: int = 1) -> tuple[object, Zone]:
    res = Zone(records)
    specs = [parse_zone(z) for z in zones]
    with ThreadPoolExecutor(4) as pool:
        futures = dnsbl.start("192.0.2.99", specs, res, pool.submit)
        import time
        result = dnsbl.collect(futures, specs, time.monotonic() + 30, threshold)
    return result, res


def test_queries_go_out_for_every_zone_and_weights_add_up_to_the_threshold() -> None:
    result, res = lookup({"99.2.0.192.a.example": ("127.0.0.2",), "99.2.0.192.b.example": ("127.0.0.4",)},
                         ["a.example=127.0.0.2*2", "b.example", "c.example"], threshold=3)
    assert sorted(res.queries) == ["99.2.0.192.a.example", "99.2.0.192.b.example", "99.2.0.192.c.example"]
    assert result.listed and result.score == 3   # type: ignore[attr-defined]
    assert result.summary() == "a.example(127.0.0.2)*2,b.example(127.0.0.4)"   # type: ignore[attr-defined]


def test_an_answer_outside_the_filter_does_not_count() -> None:
    result, _ = lookup({"99.2.0.192.a.example": ("127.0.0.12",)}, ["a.example=127.0.0.[2..11]"])
    assert not result.listed and not result.listings   # type: ignore[attr-defined]


def test_query_refused_answers_are_reported_never_a_listing() -> None:
    result, _ = lookup({"99.2.0.192.a.example": ("127.255.255.254",)}, ["a.example"])
    assert not result.listed and result.refused == (("a.example", "127.255.255.254"),)   # type: ignore[attr-defined]


def test_a_timeout_is_not_a_listing() -> None:
    result, _ = lookup({"99.2.0.192.a.example": "timeout"}, ["a.example"])
    assert not result.listed and result.unanswered == ("a.example",)   # type: ignore[attr-defined]


def test_a_lookup_still_running_at_the_deadline_is_unanswered() -> None:
    import threading
    import time

    gate = threading.Event()

    class Slow(Zone):
        def query(self, name: str, rdtype: str) -> Answer:
            gate.wait(30)
            return Answer(name, rdtype, DnsStatus.OK, records=("127.0.0.2",))

    spec = parse_zone("a.example")
    with ThreadPoolExecutor(1) as pool:
        futures = dnsbl.start("192.0.2.99", [spec], Slow({}), pool.submit)
        result = dnsbl.collect(futures, [spec], time.monotonic(), 1)
        gate.set()
    assert not result.listed and result.unanswered == ("a.example",)


def test_policy_rejects_554_naming_the_list_or_tempfails_or_marks() -> None:
    result, _ = lookup({"99.2.0.192.zen.example": ("127.0.0.2",)}, ["zen.example"])
    d = dnsbl_decision(result, "reject", "192.0.2.99")   # type: ignore[arg-type]
    assert d is not None and (d.action, d.code, d.xcode) == (Action.REJECT, "554", "5.7.1") and "zen.example" in d.text
    d = dnsbl_decision(result, "tempfail", "192.0.2.99")   # type: ignore[arg-type]
    assert d is not None and (d.action, d.code) == (Action.TEMPFAIL, "451")
    assert dnsbl_decision(result, "header", "192.0.2.99") is None   # type: ignore[arg-type]
    assert dnsbl_header(result, "header", "192.0.2.99") == (   # type: ignore[arg-type]
        "X-DNSBL", " 192.0.2.99 listed in zen.example(127.0.0.2); score=1")
    assert dnsbl_decision(result, "reject", "192.0.2.99", dnswl_listed=True) is None   # type: ignore[arg-type]
