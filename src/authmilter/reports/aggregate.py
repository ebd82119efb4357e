"""Group message records into aggregate report rows (RFC 9990 §2.1).

A row is everything a report line says about a message except the message itself:
source IP, identifiers (header From, envelope From domain), the DMARC-aligned DKIM and
SPF verdicts, the disposition applied with its override reasons, and the raw
authentication results (each DKIM d=/s=/result, the SPF domain/scope/result). Messages
that agree on all of them share one row and a count.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

from ..records import DkimEvidence, MessageRecord
from ..results import DmarcPolicy


@dataclass(frozen=True, slots=True, order=True)
class Row:
    """One ``record`` element of a report, less its count."""

    source_ip: str
    header_from: str
    envelope_from: str                  # domain of the reverse-path ("" for <>)
    disposition: str                    # none, quarantine, reject
    dkim: str                           # DMARC-aligned DKIM verdict: pass or fail
    spf: str                            # DMARC-aligned SPF verdict: pass or fail
    reasons: tuple[tuple[str, str], ...]   # policy override (type, comment)
    dkim_results: tuple[tuple[str, str, str], ...]   # (domain, selector, result)
    spf_domain: str
    spf_scope: str                      # mfrom or helo
    spf_result: str


def row_of(record: MessageRecord) -> Row:
    spf_domain, scope = record.spf_domain, record.spf_scope or "mfrom"
    if not spf_domain:
        # No MAIL FROM identity was checked (null sender without HELO): the schema still
        # wants one SPF result; name the identity we had, with result none.
        spf_domain = record.envelope_from_domain or record.helo
        scope = "mfrom" if record.envelope_from_domain else "helo"
    return Row(
        source_ip=record.source_ip, header_from=record.header_from, envelope_from=record.envelope_from_domain,
        disposition=record.disposition if record.disposition in ("none", "quarantine", "reject") else "none",
        dkim="pass" if record.dkim_aligned else "fail", spf="pass" if record.spf_aligned else "fail",
        reasons=tuple(record.overrides),
        dkim_results=tuple(sorted((d.domain, d.selector, d.result) for d in record.dkim if d.domain)),
        spf_domain=spf_domain, spf_scope=scope, spf_result=record.spf_result or "none",
    )


@dataclass
class Aggregate:
    """Every row for one policy domain and one window, counted."""

    policy_domain: str
    begin: int                          # seconds since the epoch, inclusive
    end: int                            # exclusive
    rows: Counter[Row] = field(default_factory=Counter)
    messages: int = 0
    passed: int = 0                     # messages whose DMARC result was pass
    policy: DmarcPolicy = field(default_factory=DmarcPolicy)   # the newest record's, as published
    policy_time: float = -1.0
    reporters: set[str] = field(default_factory=set)

    def add(self, record: MessageRecord) -> None:
        self.rows[row_of(record)] += 1
        self.messages += 1
        if record.dmarc_result == "pass":
            self.passed += 1
        if record.time >= self.policy_time:
            # The policy may change within a window; the report shows the one in force
            # last (RFC 9990 §2.1 policy_published describes "the" policy).
            self.policy, self.policy_time = record.policy, record.time
        if record.reporter:
            self.reporters.add(record.reporter)

    def sorted_rows(self) -> list[tuple[Row, int]]:
        return sorted(self.rows.items())


def window_of(when: float, interval_s: int, floor: float, cut: float) -> tuple[int, int]:
    """The window [begin, end) holding *when*: aligned to multiples of *interval_s* since
    the epoch (RFC 9990 §2.1 asks for UTC day boundaries with the default day), starting
    no earlier than *floor* (the end of what was already reported) and ending no later
    than *cut* (``--until``)."""
    begin = int(when // interval_s) * interval_s
    return max(begin, int(floor)), min(begin + interval_s, int(cut))


def report_id(receiver: str, policy_domain: str, begin: int, end: int) -> str:
    """Unique for this receiver and stable: the same domain and window always give the
    same id, so a second run recognises a report it already built (RFC 9990 §2.1
    report_id; letters and digits only, as the file name grammar of §3 requires)."""
    digest = hashlib.sha256(f"{receiver}|{policy_domain}|{begin}|{end}".encode()).hexdigest()
    return f"{begin}{digest[:20]}"


__all__ = ["Aggregate", "DkimEvidence", "Row", "report_id", "row_of", "window_of"]
