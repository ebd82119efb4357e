"""RFC5322.From extraction (RFC 9989 §5.3.1, §11.5; CVE-2019-16378, CVE-2021-34555)."""
from __future__ import annotations

import pytest

from authmilter.checks.fromhdr import parse_from
from authmilter.model import Message


def _msg(*from_values: bytes, extra: bytes = b"") -> Message:
    head = b"".join(b"From:" + v + b"\r\n" for v in from_values)
    return Message.from_bytes(b"To: bob@example.org\r\n" + head + extra + b"Subject: hi\r\n\r\nbody\r\n")


@pytest.mark.parametrize("value,domain,address", [
    (b" alice@example.com", "example.com", "alice@example.com"),
    (b" Alice <alice@Example.COM>", "example.com", "alice@example.com"),
    (b' "Alice Smith" <alice@example.com>', "example.com", "alice@example.com"),
    # a quoted display name that looks like an address is only a display name
    (b' "ceo@bank.example" <x@attacker.example>', "attacker.example", "x@attacker.example"),
    # RFC 2047 encoded words in the display name are opaque atoms
    (b" =?utf-8?q?ceo=40bank.example?= <x@attacker.example>", "attacker.example", "x@attacker.example"),
    # comments are CFWS, wherever they are, nested or with parens escaped
    (b" alice@example.com (bank.example)", "example.com", "alice@example.com"),
    (b" (Alice (the \\) one) <x@bank.example>) alice@example.com", "example.com", "alice@example.com"),
    (b" Alice\r\n\t<alice@example.com>", "example.com", "alice@example.com"),
    (b' "a@b"@example.com', "example.com", '"a@b"@example.com'),
    (b" <@relay.example:alice@example.com>", "example.com", "alice@example.com"),  # obs-route
    (b" Dr. Alice <alice@example.com>", "example.com", "alice@example.com"),       # obs-phrase
    (" Jörg <jörg@bücher.example>".encode(), "xn--bcher-kva.example", "jörg@xn--bcher-kva.example"),
    (b" alice@example.com.", "example.com", "alice@example.com"),
])
def test_one_mailbox_gives_the_author_domain(value, domain, address):
    res = parse_from(_msg(value))
    assert res.ok, res.error
    assert (res.domain, res.address) == (domain, address)


def test_several_mailboxes_of_the_same_domain_are_one_author_domain():
    res = parse_from(_msg(b" alice@example.com, Bob <bob@EXAMPLE.com>"))
    assert res.ok
    assert res.domain == "example.com"


def test_rfc9989_11_5_mailboxes_of_different_domains_are_refused():
    res = parse_from(_msg(b" alice@example.com, ceo@bank.example"))
    assert not res.ok and not res.missing
    assert "2 domains" in res.error


def test_missing_from_is_marked_missing():
    res = parse_from(Message.from_bytes(b"To: bob@example.org\r\nSubject: x\r\n\r\nbody\r\n"))
    assert not res.ok and res.missing
    assert res.error == "no From header"


def test_two_from_headers_are_refused():
    res = parse_from(_msg(b" alice@example.com", b" alice@example.com"))
    assert not res.ok and not res.missing
    assert res.error == "2 From headers"


def test_from_header_name_with_whitespace_before_colon_counts_as_from():
    # obs-optional allows "From :"; an MUA may show it, so it is a second From.
    res = parse_from(_msg(b" alice@example.com", extra=b"From : ceo@bank.example\r\n"))
    assert not res.ok
    assert res.error == "2 From headers"


def test_from_header_name_is_case_insensitive():
    m = Message.from_bytes(b"FROM: alice@example.com\r\nfrom: ceo@bank.example\r\n\r\n")
    assert parse_from(m).error == "2 From headers"


@pytest.mark.parametrize("value,why", [
    (b" Undisclosed recipients:;", "group"),
    (b" friends: alice@example.com, bob@example.com;", "group"),
    (b" alice@[192.0.2.1]", "domain literal"),
    (b" alice@", "invalid domain"),
    (b" alice", "no address"),
    (b" ", "no address"),
    (b" <>", "no address"),
    (b" alice@exa mple.com", "invalid domain"),
    (b" alice@example..com", "invalid domain"),
    (b" alice@-bad-.example", "invalid domain"),
    (b" alice@b@example.com", "more than one @"),
    (b" ceo@bank.example <x@attacker.example>", "display name"),
    (b" Alice <alice@example.com> bob@example.org", "text after"),
    (b" Alice <alice@example.com", "angle"),
    (b" (unterminated alice@example.com", "comment"),
    (b' "unterminated <alice@example.com>', "quoted"),
    (b" alice@=?utf-8?q?bank.example?=", "invalid domain"),
    (b" alice@ex\xffample.com", "undecodable"),
])
def test_unusable_from_is_a_defined_error(value, why):
    res = parse_from(_msg(value))
    assert not res.ok and not res.missing
    assert why in res.error
