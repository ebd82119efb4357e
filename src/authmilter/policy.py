"""The one place where reject / quarantine / tempfail / accept is chosen for inbound mail.

`decide` is pure: results of the checks and local settings in, a Decision out. Order of
precedence (first that applies wins):

1. From header unusable (missing, several, unparsable) -> ``on_bad_from`` (default reject).
2. A temperror that could change the verdict -> ``on_dns_error`` (default tempfail 451).
3. Our own domain in From, from outside, without aligned SPF/DKIM pass
   (``reject_own_domain_spoof``) -> reject.
4. DMARC fail: requested policy, downgraded one step for t=y (RFC 9989 §5.3) or when
   RFC 7489 pct= sampled the message out; ``trusted_forwarders`` are never rejected or
   quarantined on DMARC, nor is mail a trusted ARC sealer vouches for (``[arc]
   trusted_sealers``: the chain validates and that sealer recorded an aligned pass when
   it received the message); then ``on_dmarc_reject`` / ``on_dmarc_quarantine``. The
   default ``on_dmarc_reject = "evidence"`` follows RFC 9989 §5.4 and §7.4 (no reject
   solely because of p=reject): reject only when nothing suggests an indirect flow (an
   ARC set, List-Id/List-Post, a failed author-domain DKIM signature), else quarantine.
5. SPF, local rules as policyd-spf applies them: the HELO identity's result in
   ``reject_helo_spf``, then (``reject_spf_fail``) the MAIL FROM result in
   ``reject_spf_results`` (default: fail only). ``trusted_forwarders`` are exempt: their
   mail fails SPF by design.
6. accept.

``dry_run`` keeps the decision for the log but accepts.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .config.schema import PolicySettings
from .domain import aligned, is_subdomain
from .outcome import Action
from .results import (
    ArcResult,
    ArcSealer,
    ArcVerdict,
    DkimResult,
    DmarcResult,
    DnsListResult,
    FromResult,
    GreylistResult,
    Result,
    SpfResult,
)
from .srs import Reversal, Reversed


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything the checks found about one inbound message."""

    from_: FromResult
    spf: SpfResult | None = None           # MAIL FROM identity (or postmaster@HELO for <>)
    helo: SpfResult | None = None
    dkim: tuple[DkimResult, ...] = ()
    dmarc: DmarcResult | None = None
    arc: ArcResult | None = None
    trusted_forwarder: bool = False
    # Signs of an indirect flow (RFC 9989 §7.4) the checks do not report: mailing-list
    # header fields present (List-Id, List-Post), and whether any ARC header field is.
    list_headers: tuple[str, ...] = ()
    arc_headers: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    code: str = ""
    xcode: str = ""
    text: str = ""
    quarantine_reason: str = ""
    marker_header: tuple[str, str] | None = None   # quarantine = "header"
    reasons: tuple[str, ...] = ()
    would: Action | None = None                    # the action dry_run suppressed
    # Why the DMARC policy was not applied as requested, as RFC 9990 names the types:
    # (type, comment) with type trusted_forwarder, policy_test_mode, sampled_out,
    # local_policy, ... For the report record and the log line.
    overrides: tuple[tuple[str, str], ...] = ()
    # When the DMARC policy was not applied as the domain asked because of what the
    # message shows (a trusted ARC sealer, an indirect flow): what was applied, for
    # ``policy.dmarc`` in our Authentication-Results, and why, for its reason.
    dmarc_applied: str = ""
    dmarc_override: str = ""

    @property
    def policy_label(self) -> str:
        return self.would.value if self.would is not None else self.action.value


_DOWNGRADE = {"reject": "quarantine", "quarantine": "none", "none": "none"}


def _aligned_pass_for(domain: str, ev: Evidence, accept_l: bool = False) -> bool:
    """A passing SPF (MAIL FROM) or DKIM identity aligned with *domain*: DMARC's own
    verdict when it evaluated one, else domain.aligned in relaxed mode."""
    if ev.dmarc is not None and ev.dmarc.result in (Result.PASS, Result.FAIL) and ev.dmarc.from_domain == domain:
        return ev.dmarc.spf_aligned or ev.dmarc.dkim_aligned
    if ev.spf is not None and ev.spf.result is Result.PASS and ev.spf.scope == "mailfrom":
        if ev.spf.domain and aligned(ev.spf.domain, domain):
            return True
    return any(sig.result is Result.PASS and (accept_l or not sig.has_length_tag) and sig.domain
               and aligned(sig.domain, domain) for sig in ev.dkim)


def _temperrors(ev: Evidence) -> list[str]:
    """Each lookup that failed temporarily, with its detail: for our log only."""
    out = []
    if ev.spf is not None and ev.spf.result is Result.TEMPERROR:
        out.append(f"spf temperror ({ev.spf.reason or ev.spf.domain})")
    for sig in ev.dkim:
        if sig.result is Result.TEMPERROR:
            out.append(f"dkim temperror for d={sig.domain} ({sig.reason})")
    if ev.dmarc is not None and ev.dmarc.result is Result.TEMPERROR:
        out.append(f"dmarc temperror ({ev.dmarc.reason})")
    return out


def _list(names: list[str], most: int = 3) -> str:
    names = list(dict.fromkeys(n for n in names if n))
    if len(names) > most:
        return ", ".join(names[:most]) + f" and {len(names) - most} more"
    return ", ".join(names)


def temperror_text(ev: Evidence) -> str:
    """What could not be looked up, in words a sender's admin can act on, for the SMTP
    reply. Built from the typed results only: never the resolver's own message, which
    names our DNS servers and ports."""
    parts = []
    if ev.spf is not None and ev.spf.result is Result.TEMPERROR:
        parts.append(f"the SPF record of {ev.spf.domain or 'the sender domain'}")
    keys = [s.domain for s in ev.dkim if s.result is Result.TEMPERROR]
    if keys:
        parts.append(("the DKIM key of " if len(set(keys)) == 1 else "the DKIM keys of ") + _list(keys))
    if ev.dmarc is not None and ev.dmarc.result is Result.TEMPERROR:
        parts.append(f"the DMARC record of {ev.dmarc.from_domain or ev.from_.domain}")
    return "temporary DNS failure looking up " + (" and ".join(parts) or "sender records")


def _could_align(ev: Evidence, domain: str) -> bool:
    """Whether an identity that failed temporarily could, once looked up, align with
    *domain* (the From domain's organizational domain when DMARC found one): a lookup
    that cannot align cannot change an alignment-based verdict."""
    org = ev.dmarc.org_domain if ev.dmarc is not None and ev.dmarc.org_domain else domain
    ids = []
    if ev.spf is not None and ev.spf.scope == "mailfrom" and ev.spf.result is Result.TEMPERROR:
        ids.append(ev.spf.domain)
    ids.extend(s.domain for s in ev.dkim if s.result is Result.TEMPERROR)
    # The identity's own organizational domain is unknown (its lookup failed): any name
    # in the From domain's organizational tree might align.
    return any(d and (aligned(d, domain) or aligned(d, org)) for d in ids)


def _reject(text: str, reason: str, xcode: str = "5.7.1") -> Decision:
    return Decision(Action.REJECT, "550", xcode, text, reasons=(reason,))


def _tempfail(reason: str, text: str, spf_cause: bool) -> Decision:
    # RFC 7372: X.7.24 "SPF validation error"; otherwise X.7.0 (security status, undefined).
    xcode = "4.7.24" if spf_cause else "4.7.0"
    return Decision(Action.TEMPFAIL, "451", xcode, f"{text}; try again later", reasons=(reason,))


def _apply_configured(choice: str, settings: PolicySettings, reason: str, domain: str) -> Decision:
    if choice == "reject":
        text = settings.reject_text.replace("{domain}", domain).replace("{reason}", reason)
        # The configured text may start with an enhanced status code; split it off for setreply.
        xcode = "5.7.1"
        head, _, rest = text.partition(" ")
        if head.count(".") == 2 and head.replace(".", "").isdigit():
            xcode, text = head, rest
        return Decision(Action.REJECT, "550", xcode, text, reasons=(reason,))
    if choice == "tempfail":
        return Decision(Action.TEMPFAIL, "451", "4.7.1", f"{reason}; try again later", reasons=(reason,))
    if choice == "quarantine":
        if settings.quarantine == "header":
            name, _, value = settings.quarantine_header.partition(":")
            return Decision(Action.ACCEPT, marker_header=(name.strip(), " " + value.strip()),
                            quarantine_reason=reason, reasons=(reason + " (marked)",))
        return Decision(Action.QUARANTINE, quarantine_reason=reason, reasons=(reason,))
    return Decision(Action.ACCEPT, reasons=(reason + " (accepted by configuration)",))


def decide_missing_key(on_missing_key: str, missing: str) -> Decision:
    """Outbound mail whose SigningTable key cannot be used (``signing.on_missing_key``):
    tempfail so the client retries once the key is back, or deliver unsigned."""
    reason = f"signing key unavailable: {missing}"
    if on_missing_key == "tempfail":
        return Decision(Action.TEMPFAIL, "451", "4.3.0", "signing key unavailable; try again later",
                        reasons=(reason,))
    return Decision(Action.ACCEPT, reasons=(reason + " (sent unsigned: on_missing_key = accept)",))


def decide_srs(refused: Sequence[Reversed]) -> Decision | None:
    """Mail to SRS addresses at our SRS domain that do not reverse (forged hash, expired,
    malformed): 550 5.1.1, the address is no mailbox (RFC 3463 X.1.1 "bad destination
    mailbox address"); None when every SRS recipient was valid."""
    bad = [r for r in refused if r.status not in (Reversal.RESTORED, Reversal.NOT_SRS)]
    if not bad:
        return None
    reason = f"SRS address {bad[0].status.value}: {bad[0].reason}"
    return Decision(Action.REJECT, "550", "5.1.1", "invalid SRS address (bounce not accepted)", reasons=(reason,))


def decide(ev: Evidence, settings: PolicySettings, own_domains: frozenset[str] = frozenset(),
           *, accept_length_tag: bool = False, trusted_sealers: frozenset[str] = frozenset()) -> Decision:
    decision = _decide(ev, settings, own_domains, accept_length_tag, trusted_sealers)
    dry = ("local_policy", "dry_run")
    if settings.dry_run and decision.action is not Action.ACCEPT:
        return Decision(Action.ACCEPT, reasons=decision.reasons + ("dry_run",), would=decision.action,
                        overrides=decision.overrides + (dry,))
    if settings.dry_run and decision.marker_header is not None:
        return replace(decision, marker_header=None, would=Action.QUARANTINE, dmarc_applied="", dmarc_override="",
                       reasons=decision.reasons + ("dry_run",), overrides=decision.overrides + (dry,))
    return decision


def _is_trusted_sealer(domain: str, trusted: frozenset[str]) -> bool:
    return bool(domain) and any(is_subdomain(domain, t) for t in trusted)


def _aar_vouches(verdicts: tuple[ArcVerdict, ...], dmarc: DmarcResult) -> str:
    """What in an AAR shows the message authenticated for its From domain when that
    sealer received it: dmarc=pass for the From domain, or an spf=pass / dkim=pass
    aligned with it (the domain's own adkim=/aspf= modes). "" when nothing does."""
    domain, org, pub = dmarc.from_domain, dmarc.org_domain, dmarc.published

    def aligned_with(ident: str, strict: bool) -> bool:
        ident = ident.strip().lower().rstrip(".")
        if not ident or not domain:
            return False
        if strict:
            return ident == domain
        return aligned(ident, domain) or bool(org) and is_subdomain(ident, org)

    for v in verdicts:
        if v.result != "pass":
            continue
        if v.method == "dmarc" and v.prop("header.from").strip().lower().rstrip(".") == domain:
            return "dmarc=pass"
        if v.method == "dkim":
            d = v.prop("header.d") or v.prop("header.i").rpartition("@")[2]
            if aligned_with(d, pub is not None and pub.adkim == "s"):
                return f"dkim=pass header.d={d}"
        if v.method == "spf":
            d = v.prop("smtp.mailfrom").rpartition("@")[2]
            if aligned_with(d, pub is not None and pub.aspf == "s"):
                return f"spf=pass smtp.mailfrom={d}"
    return ""


def trusted_sealer(ev: Evidence, trusted: frozenset[str]) -> tuple[ArcSealer, str] | None:
    """The trusted ARC sealer that vouches for this message, with what its AAR recorded.

    The chain must validate (arc=pass: every seal verifies, so no AAR was altered). The
    oldest set whose ARC-Seal d= is in *trusted* (or below one) and whose AAR shows an
    authentication aligned with the From domain wins, provided the message has not been
    changed since: its ARC-Message-Signature still verifies (RFC 8617 oldest-pass), or
    every later set was sealed by a trusted sealer too. Otherwise a modifying hop could
    replay a trusted sealer's verdict onto other content. ARC never makes DMARC pass:
    the caller only declines to apply the policy."""
    arc, dmarc = ev.arc, ev.dmarc
    if not trusted or arc is None or arc.result is not Result.PASS or dmarc is None:
        return None
    for sealer in arc.sealers:
        if not _is_trusted_sealer(sealer.domain, trusted):
            continue
        later = [s for s in arc.sealers if s.instance > sealer.instance]
        if sealer.instance < arc.oldest_pass and not all(_is_trusted_sealer(s.domain, trusted) for s in later):
            continue
        why = _aar_vouches(sealer.verdicts, dmarc)
        if why:
            return sealer, why
    return None


def indirect_hints(ev: Evidence) -> list[str]:
    """What suggests an indirect mail flow (RFC 9989 §7.4: forwarders, aliases, mailing
    lists) for ``on_dmarc_reject = "evidence"``: ARC header fields, list header fields, a
    DKIM signature of the author's domain that failed (the content changed on the way)."""
    hints = []
    if ev.arc_headers or (ev.arc is not None and (ev.arc.instances or ev.arc.result is not Result.NONE)):
        n = ev.arc.instances if ev.arc is not None else 0
        hints.append(f"ARC chain ({n} set{'s' if n != 1 else ''})" if n else "ARC header fields")
    hints += [f"{name} header" for name in ev.list_headers]
    domain = ev.from_.domain
    org = ev.dmarc.org_domain if ev.dmarc is not None else ""
    for sig in ev.dkim:
        d = sig.domain
        if sig.result is Result.FAIL and d and (aligned(d, domain) or bool(org) and is_subdomain(d, org)):
            hints.append(f"failed DKIM signature of {d}")
            break
    return hints


def _spf_reject(result: SpfResult, what: str) -> Decision:
    """550 for an SPF result a local rule rejects. RFC 7372: X.7.24 "SPF validation error"
    for permerror, X.7.23 "SPF validation failed" otherwise."""
    r = result.result.value
    if r == "fail":
        text = result.explanation or f"SPF check failed for {result.identity}"
    else:
        text = f"SPF check of {result.identity} returned {r}"
    return _reject(text, f"spf {r} for {what} {result.domain or result.identity}",
                   xcode="5.7.24" if r == "permerror" else "5.7.23")


def _spf_rule(ev: Evidence, s: PolicySettings) -> Decision | None:
    return decide_spf(ev.spf, ev.helo, s, trusted_forwarder=ev.trusted_forwarder)


def decide_spf(spf: SpfResult | None, helo: SpfResult | None, s: PolicySettings, *,
               trusted_forwarder: bool = False, at_rcpt: bool = False) -> Decision | None:
    """The local SPF rules (``reject_helo_spf``, then ``reject_spf_fail`` with
    ``reject_spf_results``): a reject, or None. *at_rcpt* (``spf_reject_stage = "rcpt"``):
    also the temperror answer that end-of-message gives through rule 2 (``on_dns_error``
    when ``spf_temperror_tempfail``)."""
    if trusted_forwarder:
        return None
    if s.reject_helo_spf:
        # The HELO identity: its own check, or the MAIL FROM check of a null sender, which
        # RFC 7208 §2.4 runs on postmaster@HELO.
        for res in (helo, spf):
            if res is not None and res.scope == "helo" and res.result.value in s.reject_helo_spf:
                return _spf_reject(res, "HELO")
    if s.reject_spf_fail and spf is not None and spf.result.value in s.reject_spf_results:
        return _spf_reject(spf, "MAIL FROM" if spf.scope == "mailfrom" else "HELO")
    if (at_rcpt and s.reject_spf_fail and s.spf_temperror_tempfail and s.on_dns_error == "tempfail"
            and spf is not None and spf.result is Result.TEMPERROR):
        return _tempfail(f"spf temperror ({spf.reason or spf.domain})",
                         f"temporary DNS failure looking up the SPF record of {spf.domain or 'the sender domain'}",
                         True)
    return None


def _decide(ev: Evidence, s: PolicySettings, own: frozenset[str], accept_l: bool,
            trusted_sealers: frozenset[str] = frozenset()) -> Decision:
    # 1. An unusable From header defeats every domain-based check (CVE-2019-16378).
    if not ev.from_.ok:
        reason = f"bad From header: {ev.from_.error}"
        if s.on_bad_from == "reject":
            return _reject(f"message must carry exactly one From header with one valid address ({ev.from_.error})",
                           reason)
        return _apply_configured(s.on_bad_from, s, reason, "")

    domain = ev.from_.domain
    dmarc = ev.dmarc
    temp = _temperrors(ev)
    dmarc_fails = dmarc is not None and dmarc.result is Result.FAIL
    own_domain = any(is_subdomain(domain, d) for d in own)

    # 2. Temporary failures matter only where they could change the verdict: a lookup
    #    for an identity that cannot align with the From domain never can.
    if temp:
        aligned_temp = _could_align(ev, domain)
        could_change = (
            (dmarc is not None and dmarc.result is Result.TEMPERROR)
            or (dmarc_fails and dmarc.policy in ("reject", "quarantine") and aligned_temp)  # type: ignore[union-attr]
            or (own_domain and s.reject_own_domain_spoof and not _aligned_pass_for(domain, ev, accept_l)
                and aligned_temp)
            or (s.reject_spf_fail and s.spf_temperror_tempfail and not ev.trusted_forwarder
                and ev.spf is not None and ev.spf.result is Result.TEMPERROR)
        )
        if could_change:
            reason = "; ".join(temp)
            if s.on_dns_error == "tempfail":
                return _tempfail(reason, temperror_text(ev), ev.spf is not None and ev.spf.result is Result.TEMPERROR)
            return Decision(Action.ACCEPT, reasons=(reason + " (accepted: on_dns_error = accept)",))

    # 3. Mail claiming to be from us that did not come through us.
    if own_domain and s.reject_own_domain_spoof and not _aligned_pass_for(domain, ev, accept_l):
        if ev.trusted_forwarder:
            return Decision(Action.ACCEPT, reasons=(f"own domain {domain} unauthenticated, trusted forwarder",))
        return _reject(f"{domain} is our domain, but this message was not sent through our servers",
                       f"own domain {domain} without aligned SPF/DKIM pass")

    # 4. The sender's DMARC policy.
    if dmarc_fails and dmarc is not None:
        policy = dmarc.policy or "none"
        notes = []
        overrides: list[tuple[str, str]] = []
        if dmarc.testing:
            policy = _DOWNGRADE[policy]
            notes.append("t=y")
            overrides.append(("policy_test_mode", "t=y"))
        if dmarc.sampled_out:
            policy = _DOWNGRADE[policy]
            notes.append("pct sampled out")
            overrides.append(("sampled_out", "pct"))
        applied = f"policy {policy}" + (f" ({', '.join(notes)})" if notes else "")
        if policy in ("reject", "quarantine") and ev.trusted_forwarder:
            return Decision(Action.ACCEPT, reasons=(f"dmarc fail for {domain}, {applied}: trusted forwarder",),
                            overrides=(*overrides, ("trusted_forwarder", "client in policy.trusted_forwarders")))
        vouched = trusted_sealer(ev, trusted_sealers) if policy in ("reject", "quarantine") else None
        if vouched is not None:
            sealer, why = vouched
            comment = f"arc=pass sealed by {sealer.domain}"
            return Decision(Action.ACCEPT, reasons=(f"dmarc fail for {domain}, {applied}: {comment} "
                                                    f"(i={sealer.instance}, {why}), a trusted sealer",),
                            overrides=(*overrides, ("trusted_forwarder", comment)), dmarc_applied="none",
                            dmarc_override=f"{comment} (trusted sealer, i={sealer.instance}: {why}); "
                                           f"policy not applied")
        if policy in ("reject", "quarantine"):
            choice = s.on_dmarc_reject if policy == "reject" else s.on_dmarc_quarantine
            if choice == "evidence":
                hints = indirect_hints(ev)
                if hints:
                    # RFC 9989 §5.4: not rejected solely because of p=reject.
                    comment = "indirect flow: " + ", ".join(hints)
                    decision = _apply_configured("quarantine", s, f"DMARC policy reject for {domain}, "
                                                 f"quarantined instead ({comment})", domain)
                    return replace(decision, overrides=(*overrides, ("local_policy", comment)),
                                   dmarc_applied="quarantine",
                                   dmarc_override=f"{comment}: quarantined, not rejected (RFC 9989)")
                choice = "reject"
            decision = _apply_configured(choice, s, f"DMARC policy {policy} for {domain}", domain)
            if choice != policy:
                overrides.append(("local_policy", f"on_dmarc_{policy} = {choice}"))
            return replace(decision, overrides=tuple(overrides))
        if overrides:
            return Decision(Action.ACCEPT, reasons=(f"dmarc fail for {domain}, {applied}",),
                            overrides=tuple(overrides))

    # 5. Local rules on SPF (policyd-spf's HELO_reject, then Mail_From_reject).
    spf_reject = _spf_rule(ev, s)
    if spf_reject is not None:
        return spf_reject

    reasons = []
    if dmarc is not None and dmarc.result is not Result.NONE:
        reasons.append(f"dmarc {dmarc.result.value}")
    return Decision(Action.ACCEPT, reasons=tuple(reasons))


# -- the RCPT stage: DNS lists and greylisting ---------------------------------------------


def greylist_exemption(*, outbound: str = "", internal_host: bool = False, trusted_relay: bool = False,
                       dnswl_listed: bool = False, client_allowed: bool = False,
                       recipient_allowed: bool = False) -> str:
    """Why this delivery is not greylisted ("" when it is). Outbound mail (SASL clients,
    internal hosts, local submission: *outbound* names the reason), our own relays, DNSWL-
    listed clients and allow-listed clients or recipients never wait."""
    if outbound:
        return f"outbound ({outbound})"
    if internal_host:   # signing.internal_hosts, even when signing is off (classify then says inbound)
        return "internal host"
    if trusted_relay:
        return "trusted relay"
    if dnswl_listed:
        return "dnswl"
    if client_allowed:
        return "client allow-listed"
    if recipient_allowed:
        return "recipient allow-listed"
    return ""


def greylist_decision(result: GreylistResult, now: float) -> Decision:
    """451 4.7.1 with when to come back (as postgrey does), or accept."""
    if result.passed:
        return Decision(Action.ACCEPT, reasons=(f"greylist pass ({result.reason})",))
    wait = max(1, int(result.retry_at - now + 0.999))
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(result.retry_at))
    return Decision(Action.TEMPFAIL, "451", "4.7.1",
                    f"greylisted, please try again in {wait} seconds (after {when})",
                    reasons=(f"greylisted ({result.reason}, {result.identity})",))


def greylist_store_error(on_store_error: str, error: str) -> Decision:
    if on_store_error == "tempfail":
        return Decision(Action.TEMPFAIL, "451", "4.3.0", "temporary local problem; please try again later",
                        reasons=(f"greylist store unavailable: {error}",))
    return Decision(Action.ACCEPT, reasons=(f"greylist skipped, store unavailable: {error} (on_store_error = accept)",))


def dnsbl_decision(dnsbl: DnsListResult | None, action: str, ip: str, dnswl_listed: bool = False) -> Decision | None:
    """The blocklist verdict at RCPT (reject 554 5.7.1 naming the lists, or tempfail), or
    None when nothing is to be done there (not listed, DNSWL-listed, or action "header",
    which `dnsbl_header` renders at end-of-message)."""
    if dnsbl is None or not dnsbl.listed or dnswl_listed or action == "header":
        return None
    zones = ", ".join(x.zone for x in dnsbl.listings)
    reason = f"client {ip} listed in {zones}"
    if action == "tempfail":
        return Decision(Action.TEMPFAIL, "451", "4.7.1", f"service unavailable; {reason}; try again later",
                        reasons=(reason,))
    return Decision(Action.REJECT, "554", "5.7.1", f"service unavailable; {reason}", reasons=(reason,))


def dnsbl_header(dnsbl: DnsListResult | None, action: str, ip: str) -> tuple[str, str] | None:
    """``X-DNSBL`` for downstream filters when ``action = "header"`` and the client is listed."""
    if dnsbl is None or not dnsbl.listed or action != "header":
        return None
    return "X-DNSBL", f" {ip} listed in {dnsbl.summary()}; score={dnsbl.score}"
