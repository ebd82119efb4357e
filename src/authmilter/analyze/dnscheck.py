"""``analyze --dns``: what the message's verdicts depend on, looked up now.

The same checks the milter runs, with a resolver passed in: SPF check_host()
(`checks.spf`) for the origin address the hop analysis found (the answer SPF would have
given at the right hop) and for each relay a verdict was wrongly written for; every
DKIM-Signature verified now (`checks.dkim`); DMARC (`checks.dmarc`, RFC 9989 discovery)
with that SPF result and those DKIM results. Every answer a check read is kept, with its
DNSSEC status: ``secure`` (the resolver set AD), ``insecure`` (no AD: an unsigned zone,
or a signed one without a chain of trust), ``bogus`` (the validating resolver refused it:
SERVFAIL with an RFC 8914 DNSSEC error) or ``unknown`` (DNSSEC not asked for, or no
answer). A check's status is its worst answer's. AD is worth what the resolver is worth:
only a validating resolver reached over a trusted path (a local unbound) makes it mean
something; analyze asks for it whatever ``[dns] dnssec`` says, since reporting is its job.

Bounded on hostile input: at most `MAX_LOOKUPS` questions in all (past the cap every
lookup is a temporary error asked of no server), `MAX_SIGNATURES` signatures verified,
SPF for the origin and at most `MAX_RELAYS` relays (pyspf applies RFC 7208's limits of
10 DNS-querying terms and 2 void lookups inside each), and the resolver view the caller
passes carries a time budget.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from ..checks.dkim import verify_dkim
from ..checks.dmarc import check_dmarc
from ..checks.fromhdr import parse_from
from ..checks.rfc5322 import one_line
from ..checks.spf import check_spf
from ..domain import DomainError, normalize_domain
from ..model import Message
from ..resolver import Answer, DnsLookup, DnsStatus
from ..results import DkimResult, Result, SpfResult
from .core import Analysis

__all__ = ["MAX_LOOKUPS", "MAX_RELAYS", "MAX_SIGNATURES", "DkimLookup", "DmarcLookup", "DnsReport",
           "Dnssec", "Lookup", "SpfAt", "SpfLookup", "lookup_all"]

MAX_LOOKUPS = 100          # questions per message, all checks together
MAX_SIGNATURES = 8         # DKIM-Signatures verified (the milter's default too)
MAX_RELAYS = 3             # relay addresses re-evaluated besides the origin
_MAX_TEXT = 512            # record text shown per answer


class Dnssec(StrEnum):
    SECURE = "secure"
    INSECURE = "insecure"
    BOGUS = "bogus"
    UNKNOWN = "unknown"


def answer_dnssec(answer: Answer) -> Dnssec:
    """One answer's status (see the module docstring)."""
    if answer.bogus:
        return Dnssec.BOGUS
    if answer.status in (DnsStatus.TEMPERROR, DnsStatus.BADNAME) or answer.authenticated is None:
        return Dnssec.UNKNOWN
    return Dnssec.SECURE if answer.authenticated else Dnssec.INSECURE


_WORST = (Dnssec.BOGUS, Dnssec.INSECURE, Dnssec.UNKNOWN, Dnssec.SECURE)


def worst(statuses: Sequence[Dnssec]) -> Dnssec:
    """A check's status: its worst answer's (nothing read: unknown)."""
    return next((s for s in _WORST if s in statuses), Dnssec.UNKNOWN) if statuses else Dnssec.UNKNOWN


@dataclass(frozen=True, slots=True)
class Lookup:
    """One question a check asked, and what came back."""

    check: str                     # spf | dkim | dmarc
    name: str
    rdtype: str
    status: str                    # DnsStatus value
    dnssec: Dnssec
    signed: bool                   # RRSIGs came back (a signed zone), validated or not
    error: str = ""


@dataclass(frozen=True, slots=True)
class SpfAt:
    """check_host() for one address."""

    ip: str
    role: str                      # "origin" | "relay"
    result: str
    reason: str


@dataclass(frozen=True, slots=True)
class SpfLookup:
    domain: str                    # the MAIL FROM domain checked
    domain_source: str             # where it came from: "Return-Path" or a verdict's header
    record: str | None             # the v=spf1 record as published (None: none read)
    record_status: str             # DnsStatus value of the TXT lookup at the domain
    ip: str | None                 # the origin address (None: the chain names none)
    result: str                    # the origin's result ("" when not evaluated)
    reason: str
    dnssec: Dnssec
    checks: tuple[SpfAt, ...]


@dataclass(frozen=True, slots=True)
class DkimLookup:
    domain: str
    selector: str
    record: str | None             # the key record (None: none read)
    result: str
    reason: str
    dnssec: Dnssec


@dataclass(frozen=True, slots=True)
class DmarcLookup:
    domain: str                    # the From domain
    policy_domain: str
    record: str | None
    result: str
    policy: str
    reason: str
    dnssec: Dnssec


@dataclass(frozen=True, slots=True)
class DnsReport:
    resolver: str                  # how the lookups were made, for the reader
    spf: SpfLookup | None
    dkim: tuple[DkimLookup, ...]
    dmarc: DmarcLookup | None
    lookups: tuple[Lookup, ...]
    lookup_cap: int
    capped: bool                   # the cap was reached: later checks saw temporary errors
    notes: tuple[str, ...] = ()


class _Tap:
    """A `DnsLookup` that keeps every answer (tagged with the check that asked) and stops
    asking the inner resolver after *cap* questions."""

    def __init__(self, inner: DnsLookup, cap: int) -> None:
        self.inner = inner
        self.cap = cap
        self.check = ""
        self.seen: list[tuple[str, Answer]] = []
        self.capped = False

    def query(self, name: str, rdtype: str) -> Answer:
        if len(self.seen) >= self.cap:
            self.capped = True
            answer = Answer(name, rdtype.upper(), DnsStatus.TEMPERROR, error="analyze lookup cap reached")
        else:
            answer = self.inner.query(name, rdtype)
        self.seen.append((self.check, answer))
        return answer

    def of(self, check: str) -> list[Answer]:
        return [a for c, a in self.seen if c == check]


def _text(records: Sequence[object], prefix: bytes) -> str | None:
    """The first TXT record starting with *prefix* (case-insensitive), printable."""
    for rec in records:
        if isinstance(rec, bytes) and rec[:len(prefix)].lower() == prefix.lower():
            return one_line(rec.decode("utf-8", "replace"))[:_MAX_TEXT]
    return None


def _mail_from(msg: Message, analysis: Analysis) -> tuple[str, str, str]:
    """(sender, its domain, where it was read): the Return-Path a final delivery wrote,
    else the domain an SPF verdict in the headers names (the oldest one)."""
    for value in msg.get_all("Return-Path")[:1]:
        addr = one_line(value.decode("utf-8", "replace")).strip().strip("<>").strip()
        if "@" in addr:
            return addr, addr.rpartition("@")[2], "Return-Path"
    for r in analysis.results:
        if r.method == "spf" and r.domain:
            return r.domain, r.domain, f"{r.source} at hop {r.hop}" if r.hop else r.source
    return "", "", ""


def _spf(tap: _Tap, msg: Message, analysis: Analysis, timeout_s: float) -> tuple[SpfLookup | None, SpfResult | None,
                                                                                 list[str]]:
    notes: list[str] = []
    sender, raw_domain, source = _mail_from(msg, analysis)
    try:
        domain = normalize_domain(raw_domain, allow_underscore=True) if raw_domain else ""
    except DomainError:
        notes.append(f"the MAIL FROM domain {one_line(raw_domain)[:80]!r} is not a valid domain: SPF not checked")
        return None, None, notes
    if not domain:
        notes.append("no MAIL FROM domain (no Return-Path, no SPF verdict naming one): SPF not checked")
        return None, None, notes
    tap.check = "spf"
    published = tap.query(domain, "TXT")
    record = _text(published.records, b"v=spf1") if published.ok else None
    origin = analysis.origin_ip
    hop = next((h for h in analysis.hops if h.from_ip == origin), None)
    helo = (hop.helo or hop.from_name) if hop else ""
    checks: list[SpfAt] = []
    origin_result: SpfResult | None = None
    targets = ([(origin, "origin")] if origin else []) + [
        (ip, "relay") for ip in dict.fromkeys(f.client_ip for f in analysis.findings
                                              if f.kind == "spf-checked-at-relay" and f.client_ip
                                              and f.client_ip != origin)][:MAX_RELAYS]
    for ip, role in targets:
        result = check_spf(ip, sender, helo if role == "origin" else "", tap, timeout_s=timeout_s)
        checks.append(SpfAt(ip, role, result.result.value, result.reason))
        if role == "origin":
            origin_result = result
    if not origin:
        notes.append("the Received chain names no routable origin address: SPF not evaluated for it")
    spf = SpfLookup(domain=domain, domain_source=source, record=record, record_status=published.status.value, ip=origin,
                    result=origin_result.result.value if origin_result else "",
                    reason=origin_result.reason if origin_result else "",
                    dnssec=worst([answer_dnssec(a) for a in tap.of("spf")]), checks=tuple(checks))
    return spf, origin_result, notes


def _key_answer(tap: _Tap, result: DkimResult) -> Answer | None:
    name = f"{result.selector}._domainkey.{result.domain}".lower()
    return next((a for a in reversed(tap.of("dkim")) if a.name.lower().rstrip(".") == name), None)


def lookup_all(msg: Message, analysis: Analysis, resolver: DnsLookup, *, resolver_label: str,
               require_dnssec: bool = False, timeout_s: float = 20.0,
               max_lookups: int = MAX_LOOKUPS) -> DnsReport:
    """Look up SPF, every DKIM key and DMARC for the message *analysis* describes, through
    *resolver* (pass a time-budgeted view). *require_dnssec* applies ``[dns] dnssec =
    "require-for-keys"`` to the DKIM keys, as the milter would."""
    tap = _Tap(resolver, max_lookups)
    spf, spf_result, notes = _spf(tap, msg, analysis, timeout_s)

    tap.check = "dkim"
    dkim_results = verify_dkim(msg, tap, max_signatures=MAX_SIGNATURES, require_dnssec=require_dnssec)
    dkim: list[DkimLookup] = []
    for d in dkim_results:
        key = _key_answer(tap, d) if d.domain and d.selector else None
        dkim.append(DkimLookup(domain=d.domain, selector=d.selector,
                               record=_text(key.records, b"") if key is not None and key.ok else None,
                               result=d.result.value, reason=one_line(d.reason),
                               dnssec=answer_dnssec(key) if key is not None else Dnssec.UNKNOWN))
    if any(d.reason == "too many signatures" for d in dkim_results):
        notes.append(f"only the first {MAX_SIGNATURES} DKIM signatures were verified")

    tap.check = "dmarc"
    author = parse_from(msg)
    dm = check_dmarc(author, spf_result, dkim_results, tap)
    dmarc_records = [a for a in tap.of("dmarc") if a.ok and dm.policy_domain
                     and a.name.lower().rstrip(".") == f"_dmarc.{dm.policy_domain}"]
    dmarc = DmarcLookup(domain=dm.from_domain or author.domain, policy_domain=dm.policy_domain,
                        record=_text(dmarc_records[0].records, b"v=DMARC1") if dmarc_records else None,
                        result=dm.result.value, policy=dm.policy, reason=one_line(dm.reason),
                        dnssec=worst([answer_dnssec(a) for a in tap.of("dmarc")]))
    if spf_result is None and dm.result is not Result.NONE:
        notes.append("DMARC was evaluated without an SPF result")
    if tap.capped:
        notes.append(f"the cap of {max_lookups} DNS lookups was reached: later lookups were not made "
                     "(they count as temporary errors)")
    lookups = tuple(Lookup(check=c, name=one_line(a.name)[:255], rdtype=a.rdtype, status=a.status.value,
                           dnssec=answer_dnssec(a), signed=a.signed, error=one_line(a.error)[:200])
                    for c, a in tap.seen)
    return DnsReport(resolver=resolver_label, spf=spf, dkim=tuple(dkim), dmarc=dmarc, lookups=lookups,
                     lookup_cap=max_lookups, capped=tap.capped, notes=tuple(notes))
