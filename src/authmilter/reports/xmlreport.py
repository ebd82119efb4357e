"""The aggregate report document: RFC 9990 Appendix A (namespace
``urn:ietf:params:xml:ns:dmarc-2.0``), or RFC 7489 Appendix C with ``rfc7489 = true``.

Elements are written in schema order; every remote value is text content escaped by
ElementTree, and characters XML 1.0 cannot carry are removed.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .aggregate import Aggregate

NAMESPACE = "urn:ietf:params:xml:ns:dmarc-2.0"

# RFC 9990 §2.1 PolicyOverrideType; RFC 7489 had "forwarded" and "sampled_out" instead of
# "policy_test_mode". A type the chosen format lacks is written as "other" with its name
# kept in the comment.
_TYPES_9990 = frozenset({"local_policy", "mailing_list", "other", "policy_test_mode", "trusted_forwarder"})
_TYPES_7489 = frozenset({"forwarded", "sampled_out", "trusted_forwarder", "mailing_list", "local_policy", "other"})

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True, slots=True)
class Metadata:
    """``report_metadata`` (RFC 9990 §2.1)."""

    org_name: str
    email: str
    report_id: str
    extra_contact: str = ""
    generator: str = ""
    errors: tuple[str, ...] = ()


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def _el(parent: ET.Element, tag: str, text: str | int | None = None) -> ET.Element:
    e = ET.SubElement(parent, tag)
    if text is not None:
        e.text = _clean(str(text))
    return e


def render(agg: Aggregate, meta: Metadata, *, rfc7489: bool = False) -> bytes:
    """The UTF-8 XML of one aggregate report."""
    root = ET.Element("feedback", {} if rfc7489 else {"xmlns": NAMESPACE})
    _el(root, "version", "1.0")
    md = _el(root, "report_metadata")
    _el(md, "org_name", meta.org_name)
    _el(md, "email", meta.email)
    if meta.extra_contact:
        _el(md, "extra_contact_info", meta.extra_contact)
    _el(md, "report_id", meta.report_id)
    dr = _el(md, "date_range")
    _el(dr, "begin", agg.begin)
    _el(dr, "end", agg.end)
    for error in meta.errors:
        _el(md, "error", error)
    if not rfc7489 and meta.generator:
        _el(md, "generator", meta.generator)

    pol = agg.policy
    pp = _el(root, "policy_published")
    _el(pp, "domain", agg.policy_domain)
    if rfc7489:
        _el(pp, "adkim", pol.adkim or "r")
        _el(pp, "aspf", pol.aspf or "r")
        _el(pp, "p", pol.p or "none")
        _el(pp, "sp", pol.sp or pol.p or "none")      # required in RFC 7489's schema
        _el(pp, "pct", pol.pct)
        _el(pp, "fo", pol.fo or "0")
    else:
        _el(pp, "p", pol.p or "none")
        if pol.sp:
            _el(pp, "sp", pol.sp)
        if pol.np:
            _el(pp, "np", pol.np)
        _el(pp, "adkim", pol.adkim or "r")
        _el(pp, "aspf", pol.aspf or "r")
        _el(pp, "discovery_method", "psl" if pol.discovery == "psl" else "treewalk")
        _el(pp, "fo", pol.fo or "0")
        _el(pp, "testing", "y" if pol.testing else "n")

    known = _TYPES_7489 if rfc7489 else _TYPES_9990
    for row, count in agg.sorted_rows():
        rec = _el(root, "record")
        r = _el(rec, "row")
        _el(r, "source_ip", row.source_ip)
        _el(r, "count", count)
        pe = _el(r, "policy_evaluated")
        _el(pe, "disposition", row.disposition)
        _el(pe, "dkim", row.dkim)
        _el(pe, "spf", row.spf)
        for kind, comment in row.reasons:
            reason = _el(pe, "reason")
            if kind in known:
                _el(reason, "type", kind)
                if comment:
                    _el(reason, "comment", comment)
            else:
                _el(reason, "type", "other")
                _el(reason, "comment", f"{kind}: {comment}" if comment else kind)
        ids = _el(rec, "identifiers")
        _el(ids, "envelope_from", row.envelope_from)
        _el(ids, "header_from", row.header_from)
        ar = _el(rec, "auth_results")
        for domain, selector, result in row.dkim_results:
            d = _el(ar, "dkim")
            _el(d, "domain", domain)
            _el(d, "selector", selector)
            _el(d, "result", result)
        s = _el(ar, "spf")
        _el(s, "domain", row.spf_domain)
        _el(s, "scope", row.spf_scope)
        _el(s, "result", row.spf_result)
    ET.indent(root, space="  ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"
