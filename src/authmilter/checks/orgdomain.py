"""DMARC Policy Records, policy discovery and Organizational Domains.

Two ways to find them:

* RFC 9989 (default): the DNS Tree Walk (§4.10) — at most 8 TXT queries per walk,
  skipping to 7 labels for longer names; ``psd=y``/``psd=n`` end a walk; policy from the
  Author Domain, else its Organizational Domain, else its Public Suffix Domain (§4.10.1);
  Organizational Domain selection per §4.10.2.
* RFC 7489 (compatibility): the Organizational Domain from the Public Suffix List
  (§3.2) and at most two queries, the From domain then its Organizational Domain
  (§6.6.3).

Only TXT lookups through the resolver; a temporary DNS failure anywhere a record could
have been is reported as such, never guessed around (RFC 9989 §5.3.6).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from publicsuffixlist import PublicSuffixList

from ..resolver import DnsLookup, DnsStatus

__all__ = [
    "DmarcRecord",
    "OrgTempError",
    "PolicyLookup",
    "default_psl",
    "discover_policy_rfc7489",
    "discover_policy_rfc9989",
    "org_domain_psl",
    "org_domain_rfc9989",
    "parse_record",
    "walk_targets",
]

_POLICIES = ("none", "quarantine", "reject")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s,!]+(?:![0-9]+[kmgt]?)?$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """One DMARC Policy Record (RFC 9989 §4.7), with invalid values already replaced.

    ``usable`` is False when p= is missing or invalid (or sp=/np= invalid) and no valid
    rua= URI exists: §4.10.1 then says to apply no DMARC processing (reported as
    ``permerror``, the result for an improperly formatted record, §9.2). With a valid
    rua= such a record acts as ``p=none`` and ``notes`` says so.
    """

    raw: str
    p: str = "none"
    sp: str = ""                    # "" when absent
    np: str = ""                    # "" when absent (RFC 9989 only)
    adkim: str = "r"
    aspf: str = "r"
    testing: bool = False           # t=y (RFC 9989 only)
    psd: str = "u"                  # y / n / u (RFC 9989 only)
    pct: int = 100                  # RFC 7489 only
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()       # failure reports (RFC 9991)
    fo: str = "0"                   # failure reporting options (RFC 9991)
    usable: bool = True
    notes: tuple[str, ...] = ()


@lru_cache(maxsize=4096)
def parse_record(text: str, mode: str = "rfc9989") -> DmarcRecord | None:
    """Parse a TXT string; None when it is not a DMARC record (no leading v=DMARC1).

    Tag names and the keyword values are case-insensitive (ABNF literals), "DMARC1" is
    case-sensitive; unknown tags are ignored and a bad value falls back to its default
    (RFC 9989 §4.8). The first occurrence of a repeated tag wins. Memoised: the same
    record text arrives with every message from its domain (as dkim.tags.parse_key_record).
    """
    tags: dict[str, str] = {}
    first = True
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        name, value = name.strip(" \t").lower(), value.strip(" \t")
        if first:
            if not (eq and name == "v" and value == "DMARC1"):
                return None
            first = False
            continue
        if eq and name.isalpha() and name not in tags:
            tags[name] = value
    if first:
        return None
    notes: list[str] = []

    def keyword(tag: str, allowed: tuple[str, ...], default: str) -> str:
        if tag not in tags:
            return default
        v = tags[tag].lower()
        if v in allowed:
            return v
        notes.append(f"{tag}={tags[tag]!r} invalid, default {default!r} used")
        return default

    rfc9989 = mode != "rfc7489"
    p = tags.get("p", "").lower()
    sp = tags.get("sp", "").lower()
    np = tags.get("np", "").lower() if rfc9989 else ""
    rua = tuple(u.strip(" \t") for u in tags.get("rua", "").split(",") if u.strip(" \t"))
    ruf = tuple(u.strip(" \t") for u in tags.get("ruf", "").split(",") if u.strip(" \t"))
    present = {"p": True, "sp": "sp" in tags, "np": rfc9989 and "np" in tags}
    bad = [t for t, v in (("p", p), ("sp", sp), ("np", np)) if present[t] and v not in _POLICIES]
    usable = True
    if bad:
        what = ", ".join("p= missing" if t == "p" and "p" not in tags else f"{t}={tags[t]!r} invalid" for t in bad)
        if any(_URI.match(u) for u in rua):
            notes.append(f"{what}: treated as p=none because rua= is valid (RFC 9989 §4.10.1)")
            p, sp, np = "none", "", ""
        else:
            notes.append(f"{what} and no valid rua=: record not applicable")
            usable = False
            p = p if p in _POLICIES else "none"
            sp = sp if sp in _POLICIES else ""
            np = np if np in _POLICIES else ""
    pct = 100
    if not rfc9989 and "pct" in tags:
        raw_pct = tags["pct"]
        if raw_pct.isdigit() and 0 <= int(raw_pct) <= 100:
            pct = int(raw_pct)
        else:
            notes.append(f"pct={raw_pct!r} invalid, default 100 used")
    return DmarcRecord(
        raw=text, p=p, sp=sp, np=np,
        adkim=keyword("adkim", ("r", "s"), "r"), aspf=keyword("aspf", ("r", "s"), "r"),
        testing=keyword("t", ("y", "n"), "n") == "y" if rfc9989 else False,
        psd=keyword("psd", ("y", "n", "u"), "u") if rfc9989 else "u",
        pct=pct, rua=rua, ruf=ruf, fo=tags.get("fo", "0").strip(" \t") or "0", usable=usable, notes=tuple(notes),
    )


@dataclass(frozen=True, slots=True)
class _Fetch:
    status: str                     # "found", "none", "multiple", "temperror"
    record: DmarcRecord | None = None
    error: str = ""


def _fetch(domain: str, resolver: DnsLookup, mode: str) -> _Fetch:
    """TXT at _dmarc.<domain>; several DMARC records are all discarded (§4.10 step 2)."""
    answer = resolver.query(f"_dmarc.{domain}", "TXT")
    if answer.status is DnsStatus.TEMPERROR:
        return _Fetch("temperror", error=f"_dmarc.{domain}: {answer.error or 'temporary DNS failure'}")
    if answer.status is not DnsStatus.OK:
        return _Fetch("none")
    records = []
    for raw in answer.records:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        rec = parse_record(text, mode)
        if rec is not None:
            records.append(rec)
    if len(records) > 1:
        return _Fetch("multiple", error=f"{len(records)} DMARC records at _dmarc.{domain} discarded")
    if records:
        return _Fetch("found", records[0])
    return _Fetch("none")


@dataclass(frozen=True, slots=True)
class OrgTempError:
    """The Organizational Domain could not be determined: a DNS query failed temporarily."""

    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class PolicyLookup:
    """Outcome of DMARC policy discovery for one Author Domain.

    status: "found" (``record`` applies), "none" (no applicable record: DMARC does not
    apply), "invalid" (the applicable record has no usable policy: permerror),
    "temperror". ``org_domain`` is the Author Domain's Organizational Domain when the
    discovery determined it ("" otherwise: ask `org_domain_rfc9989`).
    """

    status: str
    record: DmarcRecord | None = None
    policy_domain: str = ""
    org_domain: str = ""
    psd_domain: str = ""            # where a psd=y record was met, if any
    reason: str = ""
    notes: tuple[str, ...] = field(default=())


def walk_targets(domain: str) -> list[str]:
    """The names a DNS Tree Walk queries (RFC 9989 §4.10 steps 3-7): the domain, then —
    for 8 or more labels — straight to its 7 rightmost labels, then one label less each
    time. Never more than 8 names."""
    labels = domain.split(".")
    out = [domain]
    for k in range(min(len(labels) - 1, 7), 0, -1):
        out.append(".".join(labels[-k:]))
    return out


def single_query(from_domain: str, mode: str) -> str | None:
    """The one name DMARC policy discovery for *from_domain* asks when that is usually all
    it asks: ``_dmarc.<domain>`` for a two-label domain in RFC 9989 mode (its own record;
    else the walk's only other step is the TLD's, which every sender under that TLD shares,
    so it is normally cached). None when discovery may walk further (a deeper name, or
    RFC 7489 mode with its Public Suffix List step): a prefetch then runs the whole walk."""
    if mode != "rfc9989" or len(walk_targets(from_domain)) > 2:
        return None
    return f"_dmarc.{from_domain}"


def _walk(targets: list[str], resolver: DnsLookup) -> tuple[list[tuple[str, DmarcRecord]], str, list[str]]:
    """Query *targets* in order until a record with psd=y or psd=n (§4.10 steps 2/6).

    Returns (records found, longest name first; temperror text or ""; notes)."""
    found: list[tuple[str, DmarcRecord]] = []
    notes: list[str] = []
    for target in targets:
        got = _fetch(target, resolver, "rfc9989")
        if got.status == "temperror":
            return found, got.error, notes
        if got.status == "multiple":
            notes.append(got.error)
        if got.record is not None:
            found.append((target, got.record))
            if got.record.psd in ("y", "n"):
                break
    return found, "", notes


def _select_org(start: str, found: list[tuple[str, DmarcRecord]]) -> str:
    """Organizational Domain selection, RFC 9989 §4.10.2 steps 1-3."""
    for name, rec in found:
        if rec.psd == "n":
            return name
        if rec.psd == "y" and name != start:
            keep = name.count(".") + 2          # one label below the PSD, toward *start*
            return ".".join(start.split(".")[-keep:])
    if found:
        return found[-1][0]                     # the record with the fewest labels
    return start


def org_domain_rfc9989(domain: str, resolver: DnsLookup) -> str | OrgTempError:
    """The Organizational Domain of *domain* by DNS Tree Walk (RFC 9989 §4.10.2).

    *domain* must already be normalised (domain.normalize_domain). Returns the domain, or
    an `OrgTempError` (falsy) when a query failed temporarily before the walk could end.
    """
    found, temperror, _ = _walk(walk_targets(domain), resolver)
    if temperror:
        return OrgTempError(temperror)
    return _select_org(domain, found)


def discover_policy_rfc9989(from_domain: str, resolver: DnsLookup) -> PolicyLookup:
    """DMARC Policy Discovery (RFC 9989 §4.10.1) for a normalised Author Domain.

    The record applied is the Author Domain's, else its Organizational Domain's, else its
    Public Suffix Domain's. A record found at an intermediate name that is neither is not
    applied (it only takes part in choosing the Organizational Domain).
    """
    targets = walk_targets(from_domain)
    own = _fetch(from_domain, resolver, "rfc9989")
    notes = [own.error] if own.status == "multiple" else []
    if own.status == "temperror":
        return PolicyLookup("temperror", reason=own.error)
    if own.record is not None:
        rec = own.record
        org = from_domain if rec.psd in ("y", "n") else ""
        return _applied(rec, from_domain, org, "", notes)
    found, temperror, walk_notes = _walk(targets[1:], resolver)
    notes += walk_notes
    if temperror:
        return PolicyLookup("temperror", reason=temperror, notes=tuple(notes))
    org = _select_org(from_domain, found)
    psd = next((name for name, rec in found if rec.psd == "y" and name != org), "")
    by_name = dict(found)
    if org in by_name:
        return _applied(by_name[org], org, org, psd, notes)
    if psd:
        return _applied(by_name[psd], psd, org, psd, notes)
    return PolicyLookup("none", org_domain=org, reason=f"no DMARC record for {from_domain}",
                        notes=tuple(notes))


def _applied(rec: DmarcRecord, policy_domain: str, org: str, psd: str, notes: list[str]) -> PolicyLookup:
    all_notes = tuple(notes) + rec.notes
    if not rec.usable:
        return PolicyLookup("invalid", rec, policy_domain, org, psd,
                            reason=f"DMARC record at _dmarc.{policy_domain} unusable: {'; '.join(rec.notes)}",
                            notes=all_notes)
    return PolicyLookup("found", rec, policy_domain, org, psd, notes=all_notes)


# ---------------------------------------------------------------------------
# RFC 7489 compatibility: Public Suffix List


@lru_cache(maxsize=1)
def default_psl() -> Any:
    """The list shipped with the publicsuffixlist package (loaded once)."""
    return PublicSuffixList()


def org_domain_psl(domain: str, psl: Any = None) -> str:
    """RFC 7489 §3.2: the public suffix plus one label; a name that is itself a public
    suffix is its own Organizational Domain."""
    psl = psl if psl is not None else default_psl()
    return psl.privatesuffix(domain) or domain


def discover_policy_rfc7489(from_domain: str, resolver: DnsLookup, psl: Any = None) -> PolicyLookup:
    """Policy discovery per RFC 7489 §6.6.3: the From domain, then (only if it has no
    DMARC record) its Organizational Domain; several records end discovery."""
    org = org_domain_psl(from_domain, psl)
    for domain in dict.fromkeys((from_domain, org)):  # the org domain only if it differs
        got = _fetch(domain, resolver, "rfc7489")
        if got.status == "temperror":
            return PolicyLookup("temperror", org_domain=org, reason=got.error)
        if got.status == "multiple":
            return PolicyLookup("none", org_domain=org, reason=got.error)
        if got.record is not None:
            return _applied(got.record, domain, org, "", [])
    names = from_domain if org == from_domain else f"{from_domain} or {org}"
    return PolicyLookup("none", org_domain=org, reason=f"no DMARC record for {names}")
