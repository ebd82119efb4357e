"""Typed results of the checks, valued with RFC 8601 result tokens (a value module).

Each result knows how to present itself as one Authentication-Results ``resinfo``
(method, result, reason, properties); `authresults.render` turns any list of them into a
header without knowing the mechanisms.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Result(StrEnum):
    """RFC 8601 §2.7 result values (the union over spf, dkim, dmarc, arc)."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    POLICY = "policy"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class ResInfo:
    """One resinfo: ``method=result (comment) reason="..." ptype.prop=value ...``."""

    method: str
    result: Result
    reason: str = ""
    comment: str = ""
    props: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SpfResult:
    """RFC 7208 check_host() outcome for one identity."""

    result: Result
    scope: str                      # "mailfrom" or "helo"
    identity: str                   # the checked identity: local@domain, or the HELO name
    domain: str                     # the domain check_host() ran on ("" if none)
    client_ip: str = ""
    explanation: str = ""           # exp= text on fail
    reason: str = ""                # human text: mechanism matched, error detail
    via_relay: str = ""             # trusted relay IP when the first untrusted hop was checked
    helo: str = ""                  # the HELO name presented (for Received-SPF helo=)

    def resinfo(self) -> ResInfo:
        prop = ("smtp.mailfrom", self.identity) if self.scope == "mailfrom" else ("smtp.helo", self.identity)
        comment = f"{self.client_ip} via trusted relay {self.via_relay}" if self.via_relay else ""
        return ResInfo("spf", self.result, reason=self.reason, comment=comment, props=(prop,))


@dataclass(frozen=True, slots=True)
class DkimResult:
    """Verification of one DKIM-Signature (RFC 6376 §6, RFC 8301, RFC 8463)."""

    result: Result
    domain: str = ""                # d=
    selector: str = ""              # s=
    algorithm: str = ""             # a=
    identity: str = ""              # i= (defaults to @d)
    b_prefix: str = ""              # first 8 characters of b=
    has_length_tag: bool = False    # l= present
    key_bits: int | None = None
    testing: bool = False           # t=y in the key record
    reason: str = ""
    # Whether the key's DNS answer was DNSSEC-validated (the resolver's AD flag); None
    # when DNSSEC was not asked for ([dns] dnssec = "ignore") or no key answer was read.
    dnssec: bool | None = None

    def resinfo(self) -> ResInfo:
        props = [("header.d", self.domain), ("header.i", self.identity),
                 ("header.s", self.selector), ("header.a", self.algorithm),
                 ("header.b", self.b_prefix)]
        # RFC 8601 §2.3 comment; "unprotected key" as OpenDKIM writes it.
        comment = "" if self.dnssec is None else ("key DNSSEC-validated" if self.dnssec else "unprotected key")
        return ResInfo("dkim", self.result, reason=self.reason, comment=comment,
                       props=tuple((k, v) for k, v in props if v))


@dataclass(frozen=True, slots=True)
class FromResult:
    """RFC 5322 From header as DMARC needs it: exactly one header, one domain."""

    ok: bool
    domain: str = ""                # normalised A-label domain when ok
    address: str = ""               # the first mailbox, for logging
    error: str = ""                 # why not ok: "no From header", "2 From headers", ...
    missing: bool = False           # no usable From header at all


@dataclass(frozen=True, slots=True)
class DmarcPolicy:
    """The DMARC record a decision used, as published (RFC 9990 ``policy_published``)."""

    domain: str = ""                # where the record was found
    p: str = ""
    sp: str = ""
    np: str = ""
    adkim: str = "r"
    aspf: str = "r"
    testing: bool = False           # t=y
    psd: str = "u"                  # y / n / u (RFC 9989)
    discovery: str = ""             # "treewalk" (RFC 9989) or "psl" (RFC 7489)
    pct: int = 100                  # RFC 7489 only
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    fo: str = "0"


@dataclass(frozen=True, slots=True)
class DmarcResult:
    """DMARC evaluation (RFC 9989 by default, RFC 7489 in compatibility mode)."""

    result: Result                  # pass, fail, none, temperror, permerror
    from_domain: str = ""
    policy_domain: str = ""         # where the record was found
    org_domain: str = ""
    policy: str = ""                # requested policy for this From: none/quarantine/reject ("" if no record)
    testing: bool = False           # t=y (RFC 9989): request to not apply the policy fully
    sampled_out: bool = False       # RFC 7489 pct= excluded this message
    spf_aligned: bool = False
    dkim_aligned: bool = False
    dkim_domain: str = ""           # the aligned, passing d= if any
    spf_domain: str = ""            # the SPF-authenticated domain if any
    reason: str = ""
    mode: str = "rfc9989"
    published: DmarcPolicy | None = None   # the record evaluated, when one was found

    def resinfo(self, applied: str = "", override: str = "") -> ResInfo:
        """The ``dmarc=`` resinfo. *applied* and *override* are set when local policy
        applied something other than the domain's policy (a trusted ARC sealer, an
        indirect flow, RFC 9989 §5.4): ``policy.dmarc`` then says what was applied and
        the reason why; the comment keeps the policy the domain asked for."""
        props: list[tuple[str, str]] = []
        if self.from_domain:
            props.append(("header.from", self.from_domain))
        if applied or self.policy:
            props.append(("policy.dmarc", applied or self.policy))
        comment = ""
        if self.policy:
            comment = f"p={self.policy.upper()}" + (" t=y" if self.testing else "") + \
                      (" sampled-out" if self.sampled_out else "")
        reason = "; ".join(r for r in (self.reason, override) if r)
        return ResInfo("dmarc", self.result, reason=reason, comment=comment, props=tuple(props))


@dataclass(frozen=True, slots=True)
class ArcVerdict:
    """One resinfo of an ARC-Authentication-Results: what that sealer recorded."""

    method: str                     # lower case: spf, dkim, dmarc, arc, ...
    result: str                     # lower case token as written (pass, fail, ...)
    props: tuple[tuple[str, str], ...] = ()   # (ptype.property lower case, value)

    def prop(self, *keys: str) -> str:
        """The first non-empty value among *keys*, or ""."""
        for key in keys:
            for k, v in self.props:
                if k == key and v:
                    return v
        return ""


@dataclass(frozen=True, slots=True)
class ArcSealer:
    """One ARC set of a chain that validated: who sealed it and what its AAR says."""

    instance: int
    domain: str                     # ARC-Seal d= (lower case)
    authserv_id: str = ""           # the AAR's authserv-id, as written
    verdicts: tuple[ArcVerdict, ...] = ()


@dataclass(frozen=True, slots=True)
class ArcResult:
    """ARC chain validation (RFC 8617 §5.2)."""

    result: Result                  # pass, fail, none
    instances: int = 0
    reason: str = ""
    oldest_pass: int = 0
    domains: tuple[str, ...] = field(default=())    # AS d= from the newest instance down
    # Only for a chain that passed: every set, oldest first, with its AAR verdicts
    # (what each sealer found when it received the message), for the trusted-sealer rule.
    sealers: tuple[ArcSealer, ...] = field(default=())

    def resinfo(self) -> ResInfo:
        props = (("header.oldest-pass", str(self.oldest_pass)),) if self.oldest_pass else ()
        return ResInfo("arc", self.result, reason=self.reason, props=props)


@dataclass(frozen=True, slots=True)
class DnsListing:
    """One DNS list that listed the client: the zone and the answers that counted."""

    zone: str
    answers: tuple[str, ...]
    weight: int


@dataclass(frozen=True, slots=True)
class DnsListResult:
    """The client IP against the configured DNSBL or DNSWL zones (no Authentication-
    Results method exists for these: the log line and, optionally, X-DNSBL carry them).

    ``refused`` holds zones that answered 127.255.255.x ("query refused", "public
    resolver"): an operator error, never a listing. ``unanswered`` holds zones whose
    lookup timed out or failed: not a listing either.
    """

    listings: tuple[DnsListing, ...] = ()
    score: int = 0
    listed: bool = False                 # score reached the threshold
    refused: tuple[tuple[str, str], ...] = ()   # (zone, answer)
    unanswered: tuple[str, ...] = ()

    def summary(self) -> str:
        """For the log line: "zone(answer/..)*weight,..." or "-"."""
        return ",".join(f"{x.zone}({'/'.join(x.answers)})" + (f"*{x.weight}" if x.weight != 1 else "")
                        for x in self.listings) or "-"


@dataclass(frozen=True, slots=True)
class GreylistResult:
    """What the greylist said for one triplet: pass, or defer until ``retry_at``."""

    passed: bool
    identity: str                   # "spf:example.org", "dkim:example.org" or "net:192.0.2.0/24"
    reason: str                     # "new", "too early", "retried", "known", "auto-allowed", ...
    retry_at: float = 0.0           # epoch seconds; deferred mail is accepted from then on


@dataclass(frozen=True, slots=True)
class SenderIdResult:
    """Sender ID (RFC 4406) for the Purported Responsible Address (RFC 4407): report only."""

    result: Result
    header: str                     # the PRA's header, lower case: from, sender, resent-from, resent-sender
    address: str
    reason: str = ""

    def resinfo(self) -> ResInfo:
        # RFC 8601 §2.7.3 / the IANA registry: ptype "header", property the PRA's header name.
        return ResInfo("sender-id", self.result, reason=self.reason, props=((f"header.{self.header}", self.address),))
