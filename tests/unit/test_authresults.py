"""Authentication-Results (RFC 8601): rendering, and finding forged headers with our id."""
from __future__ import annotations

import authres
import pytest

from authmilter.authresults import (
    authserv_id_of,
    forged_indices,
    parse_authres,
    parse_received_spf,
    received_spf_indices,
    render,
)
from authmilter.results import DkimResult, DmarcResult, ResInfo, Result, SpfResult


def _parse(value: str):
    return authres.AuthenticationResultsHeader.parse("Authentication-Results:" + value)


def test_rfc8601_no_results_is_none():
    assert render("mx.example.com", []) == " mx.example.com; none"


def test_rfc8601_render_round_trips_through_authres():
    infos = [
        SpfResult(Result.PASS, "mailfrom", "alice@example.com", "example.com", client_ip="192.0.2.1").resinfo(),
        SpfResult(Result.NONE, "helo", "mail.example.com", "mail.example.com").resinfo(),
        DkimResult(Result.PASS, domain="example.com", selector="2026a", algorithm="rsa-sha256",
                   identity="@example.com", b_prefix="ab/C+d=1").resinfo(),
        DmarcResult(Result.FAIL, from_domain="example.com", policy="reject", testing=True,
                    reason="no aligned spf or dkim pass").resinfo(),
    ]
    value = render("mx.example.com", infos)
    assert value.startswith(" mx.example.com;\r\n\t")
    h = _parse(value)
    assert h.authserv_id == "mx.example.com"
    got = [(r.method, r.result, {f"{p.type}.{p.name}": p.value for p in r.properties}) for r in h.results]
    assert got == [
        ("spf", "pass", {"smtp.mailfrom": "alice@example.com"}),
        ("spf", "none", {"smtp.helo": "mail.example.com"}),
        ("dkim", "pass", {"header.d": "example.com", "header.i": "@example.com", "header.s": "2026a",
                          "header.a": "rsa-sha256", "header.b": "ab/C+d=1"}),
        ("dmarc", "fail", {"header.from": "example.com", "policy.dmarc": "reject"}),
    ]
    assert h.results[3].reason == "no aligned spf or dkim pass"
    assert '(p=REJECT t=y)' in value


def test_rfc8601_long_lines_are_folded_between_tokens():
    info = ResInfo("dkim", Result.FAIL, reason="body hash did not verify " * 3, comment="x " * 40,
                   props=(("header.d", "a-very-long-subdomain-name.of-an-example-organization.example"),
                          ("header.s", "selector-2026-with-a-long-name"), ("header.b", "abcdefgh")))
    value = render("mx.example.com", [info])
    lines = ("Authentication-Results:" + value).split("\r\n")
    assert len(lines) > 2
    assert all(line.startswith("\t") for line in lines[1:])
    assert all(len(line) <= 78 for line in lines if '"' not in line)
    assert _parse(value).results[0].reason == ("body hash did not verify " * 3).strip()


def test_remote_data_cannot_inject_header_syntax():
    info = ResInfo("spf", Result.PERMERROR, reason='bad "record"\r\nX-Injected: yes; dkim=pass',
                   comment="evil) dkim=pass (", props=(("smtp.mailfrom", 'x";dkim=pass@example.com'),
                                                      ("smtp.helo", "h;dkim=pass")))
    value = render("mx.example.com", [info])
    assert "\r\nX-Injected" not in value
    assert all(line.startswith("\t") for line in value.split("\r\n")[1:])
    flat = value.replace("\r\n\t", " ")
    assert flat == (' mx.example.com; spf=permerror (evil\\) dkim=pass \\()'
                    ' reason="bad \\"record\\" X-Injected: yes; dkim=pass"'
                    ' smtp.mailfrom="x\\";dkim=pass@example.com" smtp.helo="h;dkim=pass"')
    # authres cannot parse ";" inside quoted values, so check the rest with a tamer value
    h = _parse(render("mx.example.com", [ResInfo("spf", Result.NONE, comment="a) b (c",
                                                          props=(("smtp.helo", "h e(l)o"),))]))
    assert [(r.method, r.result) for r in h.results] == [("spf", "none")]
    assert [(p.name, p.value) for p in h.results[0].properties] == [("helo", "h e(l)o")]


def test_authserv_id_needing_quotes_is_quoted():
    assert render("mx example", []).startswith(' "mx example";')


# -- forged headers ----------------------------------------------------------------------

OURS = "mx.example.com"

FORGED = [
    b" mx.example.com; dkim=pass header.d=bank.example",
    b" MX.Example.COM; spf=pass smtp.mailfrom=bank.example",
    b" (looks harmless) mx.example.com; dmarc=pass header.from=bank.example",
    b" mx.example.com 1; dkim=pass",
    b" mx.example.com (nested (comment) here) 1;\r\n\tnone",
    b"\r\n\tmx.example.com;\r\n\tspf=pass",
    b' "mx.example.com"; dkim=pass',
    b" relay.MX.example.com; dkim=pass",
]

UNPARSABLE_BUT_OURS = [
    b' "mx.example.com; dkim=pass',           # unterminated quoted string
    b" (unterminated mx.example.com; dkim=pass",
    b" (unterminated) (comment mx.example.com",
    b" mx.example.com.;;; garbage (((",
    b" mx.example.com",
    b" mx.example.com/1; dkim=pass",
]

FOREIGN = [
    b" other.example.net; dkim=pass",
    b" mx.example.com.evil.example; dkim=pass",
    b" evilmx.example.com; dkim=pass",
    b" (mx.example.com) other.example.net; spf=pass",
    b" example.com; dkim=pass",
    b"",
]


def test_eight_forged_headers_with_our_authserv_id_are_all_found():
    headers = [(b"Received", b" from x by y")]
    for i, value in enumerate(FORGED):
        headers.append((b"Authentication-Results", value))
        headers.append((b"X-Filler", str(i).encode()))
    assert forged_indices(headers, OURS) == list(range(1, 9))


def test_forged_headers_among_foreign_ones_keep_their_occurrence_index():
    headers = []
    expected = []
    n = 0
    for ours, foreign in zip(FORGED + UNPARSABLE_BUT_OURS, FOREIGN * 3, strict=False):
        for value, mine in ((foreign, False), (ours, True)):
            headers.append((b"authentication-results" if mine else b"Authentication-Results", value))
            n += 1
            if mine:
                expected.append(n)
    assert forged_indices(headers, "MX.example.com.") == expected


@pytest.mark.parametrize("value", FOREIGN)
def test_a_foreign_header_is_not_ours(value):
    assert forged_indices([(b"Authentication-Results", value)], OURS) == []


def test_only_authentication_results_headers_count():
    headers = [(b"Authentication-Results-Original", b" mx.example.com; x"),
               (b"ARC-Authentication-Results", b" i=1; mx.example.com; dkim=pass"),
               (b"Authentication-Results ", b" mx.example.com; dkim=pass")]
    assert forged_indices(headers, OURS) == [1]


@pytest.mark.parametrize("value,aid", [
    (" mx.example.com; spf=pass", "mx.example.com"),
    (b" (c (d)) \"mx.example.com\" 1; none", "mx.example.com"),
    ("\r\n\tMX.EXAMPLE.COM;", "MX.EXAMPLE.COM"),
    (" mx.example.com 1 ; x", "mx.example.com"),
    (" (unterminated", None),
    ('"unterminated', None),
    ("", None),
    (" ; spf=pass", None),
])
def test_authserv_id_of(value, aid):
    assert authserv_id_of(value) == aid


def test_received_spf_headers_are_removed_unless_from_a_trusted_receiver():
    headers = [
        (b"Received-SPF", (b" pass (mx.upstream.example: domain of a@b.example designates 192.0.2.1 as permitted"
                          b" sender) receiver=mx.upstream.example; client-ip=192.0.2.1; identity=mailfrom")),
        (b"Subject", b" x"),
        (b"Received-SPF", b' pass receiver="relay.upstream.example"; client-ip=192.0.2.1'),
        (b"received-spf", b" pass (forged) client-ip=192.0.2.1"),
        (b"Received-SPF", b" pass receiver=mx.example.com; client-ip=192.0.2.1"),
    ]
    assert received_spf_indices(headers) == [1, 2, 3, 4]
    assert received_spf_indices(headers, ["upstream.example"]) == [3, 4]
    assert received_spf_indices(headers, ["mx.upstream.example"]) == [2, 3, 4]


def test_one_header_name_matcher_for_every_reader():
    """Architecture issue: model.get_all missed a 'Name :' header that the AR and From
    readers matched; now every reader uses model.header_key."""
    from authmilter.checks.fromhdr import parse_from
    from authmilter.model import Message

    msg = Message.from_bytes(b"From : Alice <alice@example.org>\r\nfrom: Mallory <m@evil.example>\r\n"
                             b"AUTHENTICATION-RESULTS : mx.example.com; spf=pass\r\n\r\nx\r\n")
    assert len(msg.get_all("From")) == 2 and parse_from(msg).error == "2 From headers"
    assert msg.numbered("authentication-results") == [(1, b" mx.example.com; spf=pass")]
    assert forged_indices(msg.headers, "mx.example.com") == [1]


# parse_authres / parse_received_spf: whole verdicts, read leniently (authmilter analyze)

def test_parse_authres_reads_microsoft_365_layout():
    # authserv-id after the first resinfo and repeated between them
    value = (" spf=fail (sender IP is 62.239.224.235)\r\n smtp.mailfrom=m0noc.net; btgroupcloud.mail.onmicrosoft.com;"
             " dkim=fail\r\n (signature did not verify) header.d=m0noc.net;btgroupcloud.mail.onmicrosoft.com;\r\n"
             " dmarc=fail action=oreject header.from=m0noc.net;bt.com;")
    parsed = parse_authres(value)
    assert parsed.authserv_id == "btgroupcloud.mail.onmicrosoft.com"
    assert [(r.method, r.result) for r in parsed.results] == [("spf", "fail"), ("dkim", "fail"), ("dmarc", "fail")]
    assert parsed.results[0].comments == ("sender IP is 62.239.224.235",)
    assert parsed.results[1].prop("header.d") == "m0noc.net"


def test_parse_authres_arc_instance_reason_and_quoted_values():
    parsed = parse_authres(b' i=2; mx.example.net; dkim=pass reason="good sig" header.b="ab cd";'
                           b' spf=pass smtp.mailfrom="a b@x.example"')
    assert (parsed.instance, parsed.authserv_id) == (2, "mx.example.net")
    assert parsed.results[0].reason == "good sig" and parsed.results[0].prop("HEADER.B") == "ab cd"
    assert parsed.results[1].prop("smtp.mailfrom") == "a b@x.example"


@pytest.mark.parametrize("value", ["", ";;;", "(((", '"', "mx; none", "i=999999999; x; spf", "\x00=\x00"])
def test_parse_authres_is_total(value):
    parsed = parse_authres(value)
    assert all(r.method for r in parsed.results)


def test_parse_received_spf():
    info = parse_received_spf(" Pass (mailfrom) identity=mailfrom; client-ip=209.85.221.41;\r\n\thelo=h.example;"
                              " envelope-from=a@gmail.com; receiver=mx.example.com")
    assert (info.method, info.result) == ("spf", "pass")
    assert info.prop("client-ip") == "209.85.221.41" and info.prop("receiver") == "mx.example.com"
    assert parse_received_spf("").result == ""
