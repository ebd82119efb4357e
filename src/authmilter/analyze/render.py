"""Two views of one `Analysis`: JSON-ready data (keys are a public interface) and text.

Both read the same frozen values; the text view never feeds the JSON one. Every string
from the message is passed through `one_line` before it reaches a terminal, so header
text cannot move the cursor or forge lines of the report.
"""
from __future__ import annotations

from typing import Any

from ..checks.rfc5322 import one_line
from .core import Analysis, Hop, Result
from .dnscheck import DnsReport, Dnssec

__all__ = ["as_json", "as_text"]


def _hop(h: Hop) -> dict[str, Any]:
    return {
        "index": h.index, "from_name": h.from_name, "rdns": h.rdns, "helo": h.helo, "from_ip": h.from_ip,
        "scope": h.scope.value if h.scope else None, "by_name": h.by_name, "by_ip": h.by_ip,
        "by_scope": h.by_scope.value if h.by_scope else None, "with": h.protocol, "via": h.via, "id": h.id,
        "for": h.recipient, "timestamp": h.timestamp.isoformat() if h.timestamp else None,
        "delay_s": h.delay_s, "software": h.software, "from_host": h.from_host, "by_host": h.by_host,
        "own_relay": h.own_relay,
    }


def _result(r: Result) -> dict[str, Any]:
    return {"hop": r.hop, "source": r.source, "method": r.method, "result": r.result, "client_ip": r.client_ip,
            "authserv_id": r.authserv_id, "domain": r.domain, "detail": r.detail, "instance": r.instance, "srs": r.srs}


def dns_json(d: DnsReport) -> dict[str, Any]:
    """The ``dns`` object (``analyze --dns``): keys documented in the package docstring."""
    spf = None if d.spf is None else {
        "domain": d.spf.domain, "domain_source": d.spf.domain_source, "record": d.spf.record,
        "record_status": d.spf.record_status, "ip": d.spf.ip,
        "result": d.spf.result or None, "reason": d.spf.reason, "dnssec": d.spf.dnssec.value,
        "checks": [{"ip": c.ip, "role": c.role, "result": c.result, "reason": c.reason} for c in d.spf.checks]}
    dmarc = None if d.dmarc is None else {
        "domain": d.dmarc.domain, "policy_domain": d.dmarc.policy_domain, "record": d.dmarc.record,
        "result": d.dmarc.result, "policy": d.dmarc.policy, "reason": d.dmarc.reason, "dnssec": d.dmarc.dnssec.value}
    return {
        "resolver": d.resolver,
        "spf": spf,
        "dkim": [{"domain": k.domain, "selector": k.selector, "record": k.record, "result": k.result,
                  "reason": k.reason, "dnssec": k.dnssec.value} for k in d.dkim],
        "dmarc": dmarc,
        "lookups": [{"check": q.check, "name": q.name, "type": q.rdtype, "status": q.status,
                     "dnssec": q.dnssec.value, "signed": q.signed, "error": q.error} for q in d.lookups],
        "lookup_cap": d.lookup_cap,
        "capped": d.capped,
        "notes": list(d.notes),
    }


def as_json(a: Analysis, dns: DnsReport | None = None) -> dict[str, Any]:
    """The analysis as plain data for ``json.dumps`` (hops oldest first); ``dns`` is
    null unless the lookups were made (``--dns``)."""
    return {
        "hops": [_hop(h) for h in a.hops],
        "hosts": [{"id": h.id, "names": list(h.names), "ips": list(h.ips), "positions": list(h.positions)}
                  for h in a.hosts],
        "results": [_result(r) for r in a.results],
        "topology": [{"kind": t.kind, "hop": t.hop, "text": t.text, "ips": list(t.ips)} for t in a.hints],
        "findings": [{"kind": f.kind, "hop": f.hop, "text": f.text, "client_ip": f.client_ip,
                      "origin_ip": f.origin_ip, "evidence": list(f.evidence)} for f in a.findings],
        "origin_ip": a.origin_ip,
        "subject": a.subject,
        "trusted_relays_proposal": list(a.trusted_relays_proposal),
        "notes": list(a.notes),
        "dns": dns_json(dns) if dns is not None else None,
    }


def _cut(text: str, width: int) -> str:
    text = one_line(text)
    return text if len(text) <= width else text[:width - 1] + "…"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _delay(s: float | None) -> str:
    if s is None:
        return ""
    return f"{s:+.0f}s" if abs(s) < 120 else f"{s / 60:+.1f}min"


_DNSSEC_WORDS = {
    Dnssec.SECURE: "DNSSEC-validated",
    Dnssec.INSECURE: "not DNSSEC-validated (unsigned zone, or signed without a chain of trust)",
    Dnssec.BOGUS: "DNSSEC validation FAILED (bogus: the resolver refused the answer)",
    Dnssec.UNKNOWN: "DNSSEC status unknown (no answer, or not asked)",
}
_SAYS = {"pass": "authorised", "fail": "NOT authorised (fail)", "softfail": "not authorised (softfail)",
         "neutral": "neither authorised nor denied (neutral)", "none": "not covered: no SPF record (none)",
         "temperror": "unknown: a DNS lookup failed (temperror)", "permerror": "unknown: the record is broken (permerror)"}


def _quote(record: str | None) -> str:
    return f'"{_cut(record, 160)}"' if record else "no record"


def dns_text(d: DnsReport) -> list[str]:
    """The ``--dns`` section in plain words."""
    out = [f"DNS, looked up now through {_cut(d.resolver, 80)} (DNSSEC status from the resolver's AD flag, "
           "worth what that resolver is worth):"]
    if d.spf is not None:
        s = d.spf
        record = _quote(s.record) if s.record or s.record_status in ("ok", "nxdomain", "nodata") else (
            f"the lookup failed ({s.record_status})")
        out.append(f"  SPF of {s.domain} (from {s.domain_source}): {record}; {_DNSSEC_WORDS[s.dnssec]}.")
        for c in s.checks:
            reason = f" — {_cut(c.reason, 120)}" if c.reason else ""
            if c.role == "origin":
                out.append(f"    the origin {c.ip} (first hop from outside) is {_SAYS.get(c.result, c.result)}"
                           f"{reason}: this is what SPF says at the right hop.")
            else:
                out.append(f"    the relay {c.ip}, where a verdict was written, is {_SAYS.get(c.result, c.result)}"
                           f"{reason}.")
    if d.dkim:
        for k in d.dkim:
            who = f"d={k.domain} s={k.selector}" if k.domain else "a signature without a usable d=/s="
            verb = "verifies now" if k.result == "pass" else f"does not verify now ({k.result})"
            reason = f" — {_cut(k.reason, 120)}" if k.reason else ""
            out.append(f"  DKIM {who}: key {_quote(k.record)}; {_DNSSEC_WORDS[k.dnssec]}. "
                       f"The signature {verb}{reason}.")
    else:
        out.append("  DKIM: the message has no DKIM-Signature.")
    if d.dmarc is not None:
        m = d.dmarc
        at = f" (record at _dmarc.{m.policy_domain})" if m.policy_domain else ""
        policy = f", policy {m.policy}" if m.policy else ""
        reason = f" — {_cut(m.reason, 160)}" if m.reason else ""
        out.append(f"  DMARC for {m.domain or 'the From domain'}{at}: {_quote(m.record)}; {_DNSSEC_WORDS[m.dnssec]}. "
                   f"With SPF at the origin and DKIM as it verifies now: {m.result}{policy}{reason}.")
    out.append(f"  {len(d.lookups)} lookups (at most {d.lookup_cap}).")
    out += [f"  note: {_cut(n, 300)}" for n in d.notes]
    return out


def as_text(a: Analysis, dns: DnsReport | None = None) -> str:
    """A report for people: the hop table, the hosts seen from two sides, the verdicts
    per hop, and the findings in plain words."""
    out: list[str] = []
    if not a.hops:
        out.append("No Received headers: the path cannot be read.")
    else:
        out.append(f"Path, oldest hop first (origin {a.origin_ip or 'unknown'}):")
        rows = [["#", "from", "from IP (scope)", "by", "by IP", "with", "software", "time", "delay"]]
        for h in a.hops:
            same = h.rdns.rstrip(".").lower() == h.from_name.rstrip(".").lower()
            name = h.from_name + (f" (rDNS {h.rdns})" if h.rdns and not same else "")
            rows.append([str(h.index) + ("*" if h.own_relay else ""), _cut(name, 44),
                         f"{h.from_ip or '-'}" + (f" ({h.scope.value})" if h.scope else ""), _cut(h.by_name, 44),
                         h.by_ip or "", _cut(h.protocol, 22), _cut(h.software or "", 48),
                         h.timestamp.strftime("%Y-%m-%d %H:%M:%S %z") if h.timestamp else "", _delay(h.delay_s)])
        out += ["  " + line for line in _table(rows)]
        if a.config_used and any(h.own_relay for h in a.hops):
            out.append("  * sent by one of this server's relays (config)")
    if a.hints:
        out.append("")
        out.append("Topology:")
        out += [f"  - hop {t.hop}: {_cut(t.text, 300)}" for t in a.hints]
    out.append("")
    if a.results:
        out.append("Authentication verdicts, by the hop that wrote them:")
        rows = [["hop", "header", "verdict", "client IP", "domain", "written by"]]
        for r in a.results:
            rows.append(["?" if r.hop is None else str(r.hop), _cut(r.source, 30),
                         _cut(f"{r.method}={r.result}", 24), r.client_ip or "", _cut(r.domain, 40),
                         _cut(r.authserv_id or "", 40)])
        out += ["  " + line for line in _table(rows)]
    else:
        out.append("No authentication verdicts in the headers.")
    out.append("")
    if a.findings:
        out.append("Findings:")
        for f in a.findings:
            where = f"hop {f.hop}" if f.hop is not None else "hop unknown"
            out.append(f"  - [{f.kind}, {where}] {_cut(f.text, 2000)}")
            out += [f"      evidence: {_cut(e, 300)}" for e in f.evidence[:12]]
    else:
        out.append("Findings: none.")
    if a.trusted_relays_proposal and any(f.kind == "spf-checked-at-relay" for f in a.findings):
        out.append("")
        out.append("If authmilter checks SPF where the relay verdict was written, this makes it check the origin:")
        out.append("  [verify]")
        out.append("  trusted_relays = [" + ", ".join(f'"{ip}"' for ip in a.trusted_relays_proposal) + "]")
    out += [f"note: {_cut(n, 300)}" for n in a.notes]
    if dns is not None:
        out.append("")
        out += dns_text(dns)
    return "\n".join(out) + "\n"
