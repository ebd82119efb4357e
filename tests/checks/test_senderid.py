"""Sender ID (RFC 4406) and the Purported Responsible Address (RFC 4407 §2)."""
from __future__ import annotations

import pytest

from authmilter.checks.senderid import check_sender_id, pra
from authmilter.model import Body, Message
from authmilter.resolver import Answer, DnsStatus
from authmilter.results import Result


def msg(*headers: tuple[str, str]) -> Message:
    return Message(headers=tuple((n.encode(), f" {v}".encode()) for n, v in headers), body=Body())


class Zone:
    def __init__(self, txt: dict[str, list[str]]) -> None:
        self.txt = txt

    def query(self, name: str, rdtype: str) -> Answer:
        records = self.txt.get(name.rstrip(".").lower()) if rdtype == "TXT" else None
        if records is None:
            return Answer(name, rdtype, DnsStatus.NXDOMAIN)
        return Answer(name, rdtype, DnsStatus.OK, records=tuple(r.encode() for r in records), ttl=60)


@pytest.mark.parametrize(("headers", "expected"), [
    ((("From", "a@from.example"),), ("from", "a@from.example", "")),
    ((("From", "a@from.example"), ("Sender", "s@sender.example")), ("sender", "s@sender.example", "")),
    ((("From", "a@f.example"), ("Resent-From", "r@rf.example")), ("resent-from", "r@rf.example", "")),
    ((("Resent-Sender", "rs@rs.example"), ("Resent-From", "r@rf.example"), ("From", "a@f.example")),
     ("resent-sender", "rs@rs.example", "")),
    # Step 1: a Resent-Sender of an earlier resending (Resent-From, then Received, then it) is skipped.
    ((("Resent-From", "new@rf.example"), ("Received", "from x by y; Mon, 1 Jan 2024 00:00:00 +0000"),
      ("Resent-Sender", "old@rs.example"), ("From", "a@f.example")), ("resent-from", "new@rf.example", "")),
    ((("From", "a@f.example"), ("Sender", "s1@s.example"), ("Sender", "s2@s.example")),
     ("sender", "", "more than one Sender header")),
    ((("From", "a@f.example, b@f.example"),), ("from", "", "from header does not hold exactly one mailbox")),
    ((("Subject", "x"),), ("from", "", "no From header")),
])
def test_rfc4407_purported_responsible_address(headers: tuple, expected: tuple) -> None:
    assert pra(msg(*headers)) == expected


def test_a_domain_publishing_spf2_pra_is_evaluated() -> None:
    zone = Zone({"sid.example": ["v=spf1 -all", "spf2.0/mfrom,pra ip4:192.0.2.0/24 -all"]})
    r = check_sender_id("192.0.2.5", msg(("From", "Alice <alice@sid.example>")), zone)
    assert r is not None and r.result is Result.PASS and (r.header, r.address) == ("from", "alice@sid.example")
    assert r.resinfo().method == "sender-id" and r.resinfo().props == (("header.from", "alice@sid.example"),)
    r = check_sender_id("198.51.100.1", msg(("From", "alice@sid.example")), zone)
    assert r is not None and r.result is Result.FAIL


def test_a_domain_without_spf2_pra_gets_no_result_even_with_spf1() -> None:
    zone = Zone({"plain.example": ["v=spf1 ip4:192.0.2.0/24 -all"], "mfrom.example": ["spf2.0/mfrom -all"]})
    assert check_sender_id("192.0.2.5", msg(("From", "a@plain.example")), zone) is None
    assert check_sender_id("192.0.2.5", msg(("From", "a@mfrom.example")), zone) is None


def test_two_pra_records_are_a_permerror() -> None:
    zone = Zone({"two.example": ["spf2.0/pra -all", "spf2.0/pra +all"]})
    r = check_sender_id("192.0.2.5", msg(("From", "a@two.example")), zone)
    assert r is not None and r.result is Result.PERMERROR
