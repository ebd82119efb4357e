"""Defects the fuzzers found, one focused test each (the fix is in the same commit)."""
from __future__ import annotations

import authres

from authmilter import authresults
from authmilter.checks.types import ResInfo, Result


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
