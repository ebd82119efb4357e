"""DMARC evaluation: RFC 9989 by default, RFC 7489 in compatibility mode.

The check reports; it decides nothing. `DmarcResult.policy` is the policy the domain
requests for this From (p, or sp for an existing subdomain, or np for a non-existent
one, RFC 9989 §4.10.1); ``testing`` (t=y) and ``sampled_out`` (RFC 7489 pct=) tell the
policy module to apply one level less (RFC 9989 §4.7 "t", RFC 7489 §6.6.4).

Results (RFC 9989 §9.2): pass / fail when an applicable record exists; none when none
does (or the From header is missing); permerror for an unusable From header or an
applicable record without a usable policy; temperror when a DNS query that could decide
the outcome failed temporarily (§5.3.6).
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..domain import DomainError, normalize_domain
from ..domain import aligned as domain_aligned
from ..errors import AuthmilterError
from ..resolver import Answer, DnsLookup, DnsStatus
from ..results import DkimResult, DmarcPolicy, DmarcResult, FromResult, Result, SpfResult
from .orgdomain import (
    OrgTempError,
    PolicyLookup,
    discover_policy_rfc7489,
    discover_policy_rfc9989,
    org_domain_psl,
    org_domain_rfc9989,
)

__all__ = ["DmarcDiscovery", "check_dmarc", "discover_dmarc", "evaluate_dmarc"]


class _Memo:
    """One message's view of the resolver: each (name, type) is asked once, so the
    policy walk and the alignment walks share their queries."""

    def __init__(self, resolver: DnsLookup) -> None:
        self._resolver = resolver
        self._seen: dict[tuple[str, str], Answer] = {}

    def query(self, name: str, rdtype: str) -> Answer:
        key = (name.lower(), rdtype.upper())
        if key not in self._seen:
            self._seen[key] = self._resolver.query(name, rdtype)
        return self._seen[key]


def _norm(domain: str) -> str:
    try:
        return normalize_domain(domain, allow_underscore=True)   # as the From domain may be
    except DomainError:
        return ""


@dataclass(frozen=True)
class DmarcDiscovery:
    """The first half of a DMARC evaluation: the policy record found for the Author
    Domain (RFC 9989 §4.10 tree walk, or RFC 7489 §6.6.3), which needs no SPF or DKIM
    result and so may run while they do. `evaluate_dmarc` finishes it; the memo carries
    the answers the walk read into the alignment walks, as one check would."""

    from_result: FromResult
    mode: str
    psl: Any
    memo: _Memo | None = None
    found: PolicyLookup | None = None


def discover_dmarc(from_result: FromResult, resolver: DnsLookup, *, mode: str = "rfc9989",
                   psl: Any = None) -> DmarcDiscovery:
    """Find the DMARC record that applies to the From domain (no DNS for an unusable From)."""
    if mode not in ("rfc9989", "rfc7489"):
        raise AuthmilterError(f"unknown DMARC mode {mode!r}")
    if not from_result.ok:
        return DmarcDiscovery(from_result, mode, psl)
    res = _Memo(resolver)
    if mode == "rfc9989":
        found = discover_policy_rfc9989(from_result.domain, res)
    else:
        found = discover_policy_rfc7489(from_result.domain, res, psl)
    return DmarcDiscovery(from_result, mode, psl, res, found)


def check_dmarc(from_result: FromResult, spf: SpfResult | None, dkim: Sequence[DkimResult], resolver: DnsLookup,
                *, mode: str = "rfc9989", psl: Any = None, accept_length_tag: bool = False,
                sample: Callable[[], float] = random.random) -> DmarcResult:
    """Evaluate DMARC for one message (RFC 9989 §5.3; RFC 7489 §6.6 with mode="rfc7489"):
    `discover_dmarc` then `evaluate_dmarc`."""
    return evaluate_dmarc(discover_dmarc(from_result, resolver, mode=mode, psl=psl), spf, dkim,
                          accept_length_tag=accept_length_tag, sample=sample)


def evaluate_dmarc(discovery: DmarcDiscovery, spf: SpfResult | None, dkim: Sequence[DkimResult], *,
                   accept_length_tag: bool = False,
                   sample: Callable[[], float] = random.random) -> DmarcResult:
    """DMARC's verdict from the record *discovery* found and the SPF and DKIM results.

    SPF counts only for the MAIL FROM identity (RFC 9989 §3.2.4; for a null reverse-path
    that is postmaster@HELO); a DKIM pass whose signature has l= counts only with
    *accept_length_tag*. *sample* returns a float in [0, 1) for pct= sampling.
    """
    from_result, mode, psl = discovery.from_result, discovery.mode, discovery.psl
    if discovery.found is None or discovery.memo is None:
        # RFC 9989 §5.3.1: no single Author Domain, no DMARC evaluation. A missing From
        # is "none" (there is no domain whose record could exist); any other unusable
        # From is a permanent error of the message (§4.4, §11.5).
        result = Result.NONE if from_result.missing else Result.PERMERROR
        return DmarcResult(result, reason=from_result.error, mode=mode)
    author = from_result.domain
    res, found = discovery.memo, discovery.found
    base: dict[str, Any] = {"from_domain": author, "mode": mode, "policy_domain": found.policy_domain,
                            "org_domain": found.org_domain}
    if found.status == "temperror":
        return DmarcResult(Result.TEMPERROR, reason=f"DNS: {found.reason}", **base)
    if found.status == "none":
        return DmarcResult(Result.NONE, reason=_join(found.reason, *found.notes), **base)
    rec = found.record
    assert rec is not None
    base["published"] = DmarcPolicy(
        domain=found.policy_domain, p=rec.p, sp=rec.sp, np=rec.np, adkim=rec.adkim, aspf=rec.aspf,
        testing=rec.testing, psd=rec.psd, discovery="treewalk" if mode == "rfc9989" else "psl", pct=rec.pct,
        rua=rec.rua, ruf=rec.ruf, fo=rec.fo)
    if found.status == "invalid":
        return DmarcResult(Result.PERMERROR, reason=found.reason, **base)

    orgs: dict[str, str | OrgTempError] = {author: found.org_domain} if found.org_domain else {}

    def org_of(domain: str) -> str | OrgTempError:
        if domain not in orgs:
            orgs[domain] = org_domain_psl(domain, psl) if mode == "rfc7489" else org_domain_rfc9989(domain, res)
        return orgs[domain]

    temperrors: list[str] = []

    def aligned(identifier: str, strict: bool) -> bool:
        """Identifier Alignment (RFC 9989 §3.2.10, §4.10.2)."""
        if identifier == author:
            return True
        if strict or author.rsplit(".", 1)[-1] != identifier.rsplit(".", 1)[-1]:
            return False   # not identical; or no common label, so no common org domain
        org_a, org_i = org_of(author), org_of(identifier)
        if isinstance(org_a, OrgTempError) or isinstance(org_i, OrgTempError):
            temperrors.append(org_a.reason if isinstance(org_a, OrgTempError) else org_i.reason)  # type: ignore[union-attr]
            return False
        return bool(org_a) and domain_aligned(identifier, author, identifier_org=org_i, author_org=org_a)

    notes: list[str] = []
    spf_domain = ""
    spf_aligned = False
    if spf is not None and spf.scope == "mailfrom" and spf.result is Result.PASS:
        spf_domain = _norm(spf.domain)
        spf_aligned = bool(spf_domain) and aligned(spf_domain, rec.aspf == "s")
    dkim_domain = ""
    for sig in dkim:
        if sig.result is not Result.PASS:
            continue
        if sig.has_length_tag and not accept_length_tag:
            notes.append(f"dkim pass for d={sig.domain} with l= not counted")
            continue
        d = _norm(sig.domain)
        if d and aligned(d, rec.adkim == "s"):
            dkim_domain = d
            break
    dkim_aligned = bool(dkim_domain)
    author_org = orgs.get(author)
    base.update(spf_aligned=spf_aligned, dkim_aligned=dkim_aligned, dkim_domain=dkim_domain,
                spf_domain=spf_domain, testing=rec.testing,
                org_domain=author_org if isinstance(author_org, str) else found.org_domain)

    if spf_aligned or dkim_aligned:
        via = ", ".join(w for w, ok in (("spf", spf_aligned), ("dkim", dkim_aligned)) if ok)
        return DmarcResult(Result.PASS, policy=_requested(rec, author, found, exists=True),
                           reason=_join(f"aligned {via}", *notes), **base)
    if temperrors:
        return DmarcResult(Result.TEMPERROR, policy=_requested(rec, author, found, exists=True),
                           reason=_join("DNS: " + temperrors[0], *notes), **base)

    exists = True
    if found.policy_domain != author and rec.np and mode == "rfc9989":
        ans = res.query(author, "A")   # RFC 9989 Appendix A.4: NXDOMAIN means "does not exist"
        if ans.status is DnsStatus.TEMPERROR:
            return DmarcResult(Result.TEMPERROR, policy=_requested(rec, author, found, exists=True),
                               reason=f"DNS: existence of {author}: {ans.error or 'temporary failure'}", **base)
        exists = ans.status is not DnsStatus.NXDOMAIN
    policy = _requested(rec, author, found, exists=exists)
    sampled_out = False
    if mode == "rfc7489" and rec.pct < 100:
        sampled_out = not (sample() * 100 < rec.pct)
    if spf is not None and spf.result is Result.TEMPERROR:
        notes.append("spf temperror")
    if any(sig.result is Result.TEMPERROR for sig in dkim):
        notes.append("dkim temperror")
    return DmarcResult(Result.FAIL, policy=policy, sampled_out=sampled_out,
                       reason=_join("no aligned spf or dkim pass" + ("" if exists else f"; {author} does not exist"),
                                    *notes), **base)


def _requested(rec, author: str, found: PolicyLookup, *, exists: bool) -> str:  # type: ignore[no-untyped-def]
    """p for the record's own domain; for a subdomain sp (existing) or np (non-existent,
    RFC 9989 only), each falling back as §4.7 says."""
    if found.policy_domain == author:
        return rec.p
    if not exists and rec.np:
        return rec.np
    return rec.sp or rec.p


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
