"""The first untrusted hop in the Received chain (SPF behind our own relays)."""
from __future__ import annotations

import pytest

from authmilter.checks.received import first_untrusted_hop, parse_received, parse_received_from
from authmilter.config.hostlist import HostList
from authmilter.model import Message

TRUSTED = HostList.load(["10.1.2.3", "192.0.2.0/24", "2001:db8:1::/48"], addresses_only=True).contains_ip

POSTFIX_OURS = (b"Received: from relay1.example.com (relay1.example.com [10.1.2.3])\r\n"
                b"\tby mx.example.com (Postfix) with ESMTPS id 4Zx1;\r\n\tMon, 1 Jun 2026 10:00:02 +0000 (UTC)\r\n")
POSTFIX_RELAY1 = (b"Received: from mail.sender.example (mail.sender.example [198.51.100.25])\r\n"
                  b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n"
                  b"\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\r\n"
                  b"\t(No client certificate requested)\r\n"
                  b"\tby relay1.example.com (Postfix) with ESMTPS id 4Zx0\r\n"
                  b"\tfor <bob@example.com>; Mon, 1 Jun 2026 10:00:01 +0000 (UTC)\r\n")


def _msg(*received: bytes) -> Message:
    return Message.from_bytes(b"".join(received) + b"From: a@sender.example\r\nSubject: x\r\n\r\nbody\r\n")


@pytest.mark.parametrize("value,expected", [
    # Postfix
    (b" from mail.sender.example (mail.sender.example [198.51.100.25])\r\n\tby mx.example.com (Postfix) with ESMTP",
     ("198.51.100.25", "mail.sender.example")),
    (b" from fake.helo (unknown [198.51.100.25]) by mx (Postfix)", ("198.51.100.25", "fake.helo")),
    (b" from mail6.sender.example (mail6.sender.example [IPv6:2001:db8:ff::25])\r\n\tby mx (Postfix)",
     ("2001:db8:ff::25", "mail6.sender.example")),
    (b" from [198.51.100.25] (unknown [198.51.100.25]) by mx (Postfix)", ("198.51.100.25", "[198.51.100.25]")),
    # Sendmail
    ((b" from helo.sender.example (rdns.sender.example [198.51.100.25] (may be forged))\r\n"
     b"\t(authenticated bits=0)\r\n\tby mx.example.com (8.17.1/8.17.1) with ESMTPSA id 51A9"),
     ("198.51.100.25", "helo.sender.example")),
    # Exim
    ((b" from rdns.sender.example ([198.51.100.25]:51234 helo=helo.sender.example)\r\n"
     b"\tby mx.example.com with esmtps (TLS1.3) (Exim 4.96)"), ("198.51.100.25", "helo.sender.example")),
    (b" from [198.51.100.25] (helo=helo.sender.example) by mx.example.com with esmtp (Exim 4.96)",
     ("198.51.100.25", "helo.sender.example")),
    (b" from mail.sender.example ([198.51.100.25]) by mx with esmtp (Exim 4.96)",
     ("198.51.100.25", "mail.sender.example")),
    # Microsoft
    ((b" from AM0PR02MB1234.eurprd02.prod.outlook.com (2603:10a6:208:1::12) by\r\n"
     b" AM0PR02MB5678.eurprd02.prod.outlook.com (2603:10a6:208:2::34) with Microsoft SMTP Server"),
     ("2603:10a6:208:1::12", "AM0PR02MB1234.eurprd02.prod.outlook.com")),
    ((b" from EUR05-DB8-obe.outbound.protection.outlook.com (mail-db8eur05on2101.outbound.protection.outlook.com\r\n"
     b" [40.107.20.101]) by mx.example.com (Postfix)"),
     ("40.107.20.101", "EUR05-DB8-obe.outbound.protection.outlook.com")),
    # IPv4-mapped IPv6 is the IPv4 host
    (b" from h.example (h.example [IPv6:::ffff:198.51.100.25]) by mx", ("198.51.100.25", "h.example")),
])
def test_parse_received_from_formats(value, expected):
    assert parse_received_from(value) == expected


@pytest.mark.parametrize("value", [
    b" by mx.example.com (Postfix, from userid 1000) id 4Zx3; Mon, 1 Jun 2026",
    b" from localhost by mx.example.com with LMTP id abc",
    b" from mail.sender.example (mail.sender.example) by mx",
    b" from (garbage [not.an.ip]) by mx",
    b"",
])
def test_received_without_a_sending_address_is_not_parsed(value):
    assert parse_received_from(value) is None


def test_relay_header_names_the_real_sender():
    # our MTA's header names the relay (trusted); the relay's header names the sender
    assert first_untrusted_hop(_msg(POSTFIX_OURS, POSTFIX_RELAY1), TRUSTED) == ("198.51.100.25", "mail.sender.example")


def test_without_our_own_received_the_relays_header_is_used():
    assert first_untrusted_hop(_msg(POSTFIX_RELAY1), TRUSTED) == ("198.51.100.25", "mail.sender.example")


def test_chain_of_two_trusted_relays():
    relay2 = (b"Received: from relay2.example.com (relay2.example.com [192.0.2.17])\r\n"
              b"\tby relay1.example.com (Postfix) with ESMTP id 1;\r\n\tMon, 1 Jun 2026 10:00:01 +0000\r\n")
    edge = (b"Received: from out.sender.example (out.sender.example [203.0.113.9])\r\n"
            b"\tby relay2.example.com (Postfix) with ESMTP id 2;\r\n\tMon, 1 Jun 2026 10:00:00 +0000\r\n")
    msg = _msg(POSTFIX_OURS, relay2, edge)
    assert first_untrusted_hop(msg, TRUSTED) == ("203.0.113.9", "out.sender.example")


def test_ipv6_relay_and_sender():
    ours = b"Received: from r6.example.com (r6.example.com [IPv6:2001:db8:1::7]) by mx.example.com (Postfix)\r\n"
    edge = b"Received: from s6.sender.example (s6.sender.example [IPv6:2001:db8:ff::25]) by r6.example.com\r\n"
    assert first_untrusted_hop(_msg(ours, edge), TRUSTED) == ("2001:db8:ff::25", "s6.sender.example")


def test_forged_received_below_the_real_hop_is_never_used():
    # The sender added a header claiming it came from a trusted address, and one naming
    # a host the victim domain authorises; only the relay's own header counts.
    forged = (b"Received: from mail.victim.example (mail.victim.example [192.0.2.50])\r\n"
              b"\tby mail.sender.example; Mon, 1 Jun 2026 09:59:00 +0000\r\n")
    forged2 = b"Received: from spf-ok.victim.example ([203.0.113.77]) by x\r\n"
    msg = _msg(POSTFIX_OURS, POSTFIX_RELAY1, forged, forged2)
    assert first_untrusted_hop(msg, TRUSTED) == ("198.51.100.25", "mail.sender.example")


def test_forged_header_on_top_is_not_reached_past_an_untrusted_hop():
    # if a relay's header is missing the believed chain ends at the untrusted sender
    forged = b"Received: from trusted.looking ([10.1.2.3]) by relay1.example.com\r\n"
    msg = _msg(POSTFIX_OURS, POSTFIX_RELAY1, forged)
    assert first_untrusted_hop(msg, HostList.load(["10.1.2.3"]).contains_ip) == ("198.51.100.25", "mail.sender.example")


def test_unparsable_believed_header_means_unknown():
    local = b"Received: by relay1.example.com (Postfix, from userid 0) id 9; Mon, 1 Jun 2026\r\n"
    assert first_untrusted_hop(_msg(POSTFIX_OURS, local), TRUSTED) is None


def test_chain_ending_inside_means_unknown():
    assert first_untrusted_hop(_msg(POSTFIX_OURS), TRUSTED) is None
    assert first_untrusted_hop(_msg(), TRUSTED) is None


def test_received_header_name_case_and_other_headers_in_between():
    m = Message.from_bytes(b"RECEIVED: from relay1 (relay1 [10.1.2.3]) by mx\r\nX-Other: 1\r\n"
                           b"received: from s (s [198.51.100.1]) by relay1\r\n\r\n")
    assert first_untrusted_hop(m, TRUSTED) == ("198.51.100.1", "s")


# The client picks its HELO; an address literal in it must never stand for the peer
# address the receiving MTA recorded (hardening issue, defect 1: p=reject bypass).
@pytest.mark.parametrize("value", [
    # Exim without reverse DNS: "from [peer] (port=N helo=[chosen])"
    "from [198.51.100.7] (port=41234 helo=[192.0.2.99]) by relay.example with esmtp (Exim 4.96) "
    "id 1abc-000; Mon, 23 Nov 2026 10:00:00 +0000",
    # Exim with reverse DNS
    "from host.example ([198.51.100.7]:41234 helo=[192.0.2.99]) by relay.example with esmtp",
    # Microsoft: "from (chosen) (peer)"
    "from (192.0.2.99) (198.51.100.7) by relay.example (10.0.0.1) with Microsoft SMTP Server",
    "from [192.0.2.99] (198.51.100.7) by relay.example with Microsoft SMTP Server",
    # Postfix: the HELO word is the literal, the comment holds the peer
    "from [192.0.2.99] (unknown [198.51.100.7]) by relay.example (Postfix) with ESMTP id 1",
    # qmail: "(HELO chosen) (peer)"
    "from unknown (HELO [192.0.2.99]) (198.51.100.7) by relay.example with SMTP",
    # a HELO that smuggles its own comment in front of the receiver's
    "from x([192.0.2.99]) (unknown [198.51.100.7]) by relay.example (Postfix)",
])
def test_helo_address_literal_never_names_the_peer(value):
    parsed = parse_received_from(value)
    assert parsed is not None and parsed[0] == "198.51.100.7", parsed


# parse_received: every clause, for `authmilter analyze` (RFC 5321 §4.4 Stamp)

def test_parse_received_reads_every_clause_of_a_postfix_header():
    f = parse_received(POSTFIX_RELAY1.partition(b":")[2])
    assert (f.from_name, f.rdns, f.from_ip, f.by_name, f.by_ip) == (
        "mail.sender.example", "mail.sender.example", "198.51.100.25", "relay1.example.com", None)
    assert (f.protocol, f.id, f.recipient) == ("ESMTPS", "4Zx0", "bob@example.com")
    assert f.date is not None and f.date.isoformat() == "2026-06-01T10:00:01+00:00"
    assert "Postfix" in f.comments


def test_parse_received_microsoft_build_and_front_end():
    f = parse_received(" from RDW083A006ED62.bt.com (62.239.224.235) by\r\n VE1EUR02FT011.mail.protection.outlook.com"
                       " (10.152.12.150) with Microsoft SMTP\r\n Server id 15.1.587.6 via Frontend Transport; "
                       "Mon, 18 Jul 2016 10:12:07 +0000")
    assert (f.from_ip, f.by_ip, f.protocol, f.id, f.via) == (
        "62.239.224.235", "10.152.12.150", "Microsoft SMTP Server", "15.1.587.6", "Frontend Transport")


def test_parse_received_exim_and_gmail_internal():
    f = parse_received(" from rdns.example ([198.51.100.25]:51234 helo=helo.example) by mx.example.com "
                       "with esmtps (TLS1.3) tls X (Exim 4.96) (envelope-from <a@b.example>) id 1abc-000; "
                       "Mon, 1 Jun 2026 10:00:00 +0000")
    assert (f.rdns, f.helo, f.from_ip, f.protocol, f.id) == ("rdns.example", "helo.example", "198.51.100.25",
                                                             "esmtps", "1abc-000")
    g = parse_received(" by 2002:a05:6a10:a28b::1 with SMTP id x12csp1; Mon, 1 Jun 2026 03:00:01 -0700 (PDT)")
    assert (g.from_name, g.from_ip, g.by_ip, g.protocol) == ("", None, "2002:a05:6a10:a28b::1", "SMTP")


@pytest.mark.parametrize("value", ["", ";", "garbage ;;; (((", "by by by with with", "from (", "(((((((((" * 1000,
                                   "from x by y; not a date", "\x00\x1b[31m from [1.2.3.4]"])
def test_parse_received_is_total(value):
    f = parse_received(value)
    assert f.date is None or f.date_text
    assert parse_received_from(value) == ((f.from_ip, f.helo) if f.from_ip else None)
