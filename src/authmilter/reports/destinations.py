"""Where a report goes: ``rua=`` URIs (RFC 9989 §4.7) and the external destination
check (RFC 9990 §4).

A report is only ever sent to a ``mailto:`` URI the policy record names. When the
destination's domain is outside the policy domain's organisation, the destination must
publish ``<policy-domain>._report._dmarc.<destination-domain>`` TXT ``v=DMARC1``
to say it accepts reports for that domain; otherwise nothing is sent (this is what
stops a domain from pointing its reports at a third party).
"""
from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from enum import StrEnum

from ..checks.orgdomain import org_domain_rfc9989
from ..domain import is_subdomain, normalize_domain
from ..errors import DomainError
from ..resolver import DnsLookup, DnsStatus

_SIZE = re.compile(r"^(\d+)([kmgt]?)$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True, slots=True)
class Destination:
    address: str            # local@domain (domain normalised)
    domain: str
    max_bytes: int = 0      # the URI's "!size" limit; 0 = none
    uri: str = ""           # as published


def parse_rua(uris: tuple[str, ...]) -> tuple[list[Destination], list[str]]:
    """(usable mailto destinations, notes about the URIs skipped)."""
    out: list[Destination] = []
    notes: list[str] = []
    for uri in uris:
        text = uri.strip()
        scheme, _, rest = text.partition(":")
        if scheme.lower() != "mailto" or not rest:
            notes.append(f"{text!r}: only mailto: URIs are supported")
            continue
        target, bang, size = rest.rpartition("!") if "!" in rest else (rest, "", "")
        limit = 0
        if bang:
            m = _SIZE.match(size)
            if not m:
                notes.append(f"{text!r}: bad size limit {size!r}")
                continue
            limit = int(m.group(1)) * _UNITS[m.group(2).lower()]
        address = urllib.parse.unquote(target.split("?", 1)[0])
        local, at, domain = address.rpartition("@")
        if not at or not local or any(c in address for c in " \t\r\n<>,;\"\\"):
            notes.append(f"{text!r}: not a mail address")
            continue
        try:
            domain = normalize_domain(domain)
        except DomainError as exc:
            notes.append(f"{text!r}: {exc}")
            continue
        dest = Destination(f"{local}@{domain}", domain, limit, text)
        if all(d.address != dest.address for d in out):
            out.append(dest)
    return out, notes


class Verdict(StrEnum):
    OK = "ok"
    REFUSED = "refused"       # external and not authorised: never send
    TEMPERROR = "temperror"   # could not tell now: try again next run


def same_organisation(policy_domain: str, dest_domain: str, resolver: DnsLookup) -> bool | None:
    """Whether both domains share an Organizational Domain (RFC 9989 §4.10.2 tree walk);
    None when DNS failed temporarily."""
    if is_subdomain(dest_domain, policy_domain) or is_subdomain(policy_domain, dest_domain):
        return True
    a, b = org_domain_rfc9989(policy_domain, resolver), org_domain_rfc9989(dest_domain, resolver)
    if not a or not b:
        return None
    return a == b


def verify(policy_domain: str, dest: Destination, resolver: DnsLookup) -> tuple[Verdict, str]:
    """RFC 9990 §4: may reports for *policy_domain* go to *dest*? (verdict, why)."""
    same = same_organisation(policy_domain, dest.domain, resolver)
    if same is None:
        return Verdict.TEMPERROR, "DNS failed while finding organizational domains"
    if same:
        return Verdict.OK, "same organization"
    name = f"{policy_domain}._report._dmarc.{dest.domain}"
    answer = resolver.query(name, "TXT")
    if answer.status is DnsStatus.TEMPERROR:
        return Verdict.TEMPERROR, f"{name} TXT: {answer.error or 'temporary DNS failure'}"
    if answer.ok and any(bytes(r).strip().startswith(b"v=DMARC1") for r in answer.records):
        return Verdict.OK, f"{name} authorises external reports"
    return Verdict.REFUSED, (f"external destination {dest.domain} does not accept reports for {policy_domain}: "
                             f"no v=DMARC1 TXT record at {name} (RFC 9990 §4)")
