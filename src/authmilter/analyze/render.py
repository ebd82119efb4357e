"""Two views of one `Analysis`: JSON-ready data (keys are a public interface) and text.

Both read the same frozen values; the text view never feeds the JSON one. Every string
from the message is passed through `one_line` before it reaches a terminal, so header
text cannot move the cursor or forge lines of the report.
"""
from __future__ import annotations

from typing import Any

from ..checks.rfc5322 import one_line
from .core import Analysis, Hop, Result

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
            "authserv_id": r.authserv_id, "domain": r.domain, "detail": r.detail, "instance": r.instance}


def as_json(a: Analysis) -> dict[str, Any]:
    """The analysis as plain data for ``json.dumps`` (hops oldest first)."""
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


def as_text(a: Analysis) -> str:
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
    return "\n".join(out) + "\n"
