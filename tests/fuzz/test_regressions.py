"""Defects the fuzzers found, one focused test each (the fix is in the same commit)."""
from __future__ import annotations

import authres

from authmilter import authresults
from authmilter.checks.rfc5322 import one_line
from authmilter.checks.spf import received_spf_value
from authmilter.results import ResInfo, Result, SpfResult


def _parse(value: str):  # type: ignore[no-untyped-def]
    return authres.AuthenticationResultsHeader.parse("Authentication-Results:" + value)


def test_blank_remote_reason_and_property_are_left_out_not_rendered_empty():
    """A reason or property value that is blank once control characters go rendered as
    reason="" / smtp.mailfrom="", which authres (and dkimpy's ARC sealing, which parses
    our header with it) refuses as a syntax error."""
    info = ResInfo("spf", Result.PERMERROR, reason="\r\n ", comment="\x00",
                   props=(("smtp.mailfrom", " \t"), ("smtp.helo", "mail.example.org")))
    value = authresults.render("mx.test", [info])
    assert value == " mx.test;\r\n\tspf=permerror smtp.helo=mail.example.org"
    h = _parse(value)
    assert [(r.method, r.result, r.reason) for r in h.results] == [("spf", "permerror", None)]


def test_c1_controls_and_unicode_line_separators_never_reach_a_header():
    """U+0085 (NEL), U+2028 and U+2029 end a line for str.splitlines() and other Unicode
    readers, and C1 controls are control characters like C0: remote text carrying them
    could split or garble the header we write."""
    assert one_line("a\x85b\u2028c\u2029d\x9be\x80") == "a b c d e"
    assert one_line("caf\xe9 \u00a0ok") == "caf\xe9 \u00a0ok"   # printable non-ASCII stays (RFC 6532)
    value = authresults.render("mx.test", [ResInfo("dkim", Result.FAIL, reason="bad\x85sig",
                                                   comment="c\u2028d", props=(("header.d", "x\x9b.example"),))])
    assert len(value.splitlines()) == 2, value
    assert value == ' mx.test;\r\n\tdkim=fail (c d) reason="bad sig" header.d="x .example"'
    spf_value = received_spf_value(SpfResult(Result.PERMERROR, "mailfrom", "a@b.example", "b.example",
                                             client_ip="192.0.2.1", reason="bad\u2029record"), "mx.test")
    assert "\u2029" not in spf_value and "problem=\"bad record\"" in spf_value
