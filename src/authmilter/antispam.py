"""The anti-spam layer that sits beside authentication: DNS lists and greylisting.

`at_rcpt` answers one RCPT from the facts recorded so far (client, HELO, MAIL FROM, SASL
macros, the DNSBL/DNSWL answers gathered since connect): a blocklisted client is refused
(``[dnsbl] action``), otherwise a new triplet is deferred (``[greylist] stage = "rcpt"``).
SPF for the MAIL FROM domain runs here, so that a sender whose SPF passes is greylisted
by domain instead of by address; the resolver's result cache hands the same SPF result
to the end-of-message evaluation without new lookups.

`at_data` is the ``stage = "data"`` variant, called by the pipeline once DKIM is known:
a verifying DKIM signature aligned with the From domain counts as the identity too.

The decisions are policy.py's; this module gathers inputs, reads and writes the store
(passed in through the runtime), and turns a store failure into ``on_store_error``.
Pure apart from DNS and the store.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from .checks import greylist, spf
from .domain import aligned
from .errors import AuthmilterError
from .model import Session
from .outcome import Action, Direction
from .policy import (
    Decision,
    decide_spf,
    dnsbl_decision,
    greylist_decision,
    greylist_exemption,
    greylist_store_error,
)
from .results import DkimResult, GreylistResult, Result, SpfResult
from .runtime import Runtime, spf_at_rcpt

__all__ = ["RcptVerdict", "at_data", "at_rcpt", "dns_list_log"]


@dataclass(frozen=True, slots=True)
class RcptVerdict:
    decision: Decision
    log: tuple[tuple[str, str], ...] = ()
    spf: SpfResult | None = None


def _params(runtime: Runtime) -> greylist.GreylistParams:
    g = runtime.settings.greylist
    return greylist.GreylistParams(delay_s=float(g.delay_s), retry_window_s=float(g.retry_window_s),
                                   auto_allow_after=g.auto_allow_after, max_age_s=g.max_age_days * 86400.0)


def _exemption(session: Session, rcpt: str, runtime: Runtime, outbound: str) -> str:
    ip = session.client.ip
    tables = runtime.antispam
    return greylist_exemption(
        outbound=outbound,
        internal_host=runtime.internal_hosts.contains(ip, session.client.hostname),
        trusted_relay=runtime.trusted_relays.contains_ip(ip),
        dnswl_listed=session.dnswl is not None and session.dnswl.listed,
        client_allowed=tables is not None and tables.clients.contains(ip, session.client.hostname),
        recipient_allowed=tables is not None and tables.recipients.contains(rcpt),
    )


def _greylist(session: Session, rcpt: str, runtime: Runtime, now: float, *, spf_domain: str = "",
              dkim_domain: str = "") -> tuple[Decision, GreylistResult | None]:
    g = runtime.settings.greylist
    store = runtime.store
    ip = session.client.ip or ""
    if store is None:   # cannot happen: store_needed() opens it when greylisting is on
        return greylist_store_error(g.on_store_error, "no store"), None
    triplet = greylist.Triplet(
        greylist.identity(ip, spf_domain=spf_domain, dkim_domain=dkim_domain,
                          ipv4_prefix=g.ipv4_prefix, ipv6_prefix=g.ipv6_prefix),
        greylist.normalize_sender(session.envelope.mail_from), rcpt.strip("<>").lower())
    try:
        result = greylist.check(store, triplet, now, _params(runtime))
    except AuthmilterError as exc:   # StoreError: the database is down or slow
        return greylist_store_error(g.on_store_error, str(exc)), None
    return greylist_decision(result, now), result


def _greylist_log(decision: Decision, result: GreylistResult | None) -> tuple[str, str]:
    if result is None:
        return ("greylist", "error:" + ("tempfail" if decision.action is Action.TEMPFAIL else "skipped"))
    return ("greylist", ("pass:" if result.passed else "defer:") + f"{result.identity}:{result.reason}")


def dns_list_log(session: Session) -> tuple[tuple[str, str], ...]:
    """dnsbl= / dnswl= for the log line: listings with their answers, refused and
    unanswered zones (an operator must see a 127.255.255.x answer)."""
    out: list[tuple[str, str]] = []
    for name, res in (("dnsbl", session.dnsbl), ("dnswl", session.dnswl)):
        if res is None:
            continue
        value = res.summary() + (f";score={res.score}" if res.listings else "")
        if res.refused:
            value += ";refused=" + ",".join(f"{z}({a})" for z, a in res.refused)
        if res.unanswered:
            value += ";unanswered=" + ",".join(res.unanswered)
        out.append((name, value))
    return tuple(out)


def at_rcpt(session: Session, rcpt: str, runtime: Runtime, now: float | None = None) -> RcptVerdict:
    """The answer to one RCPT TO (accept = continue)."""
    from .pipeline import classify  # the one definition of outbound

    s = runtime.settings
    now = time.time() if now is None else now
    direction, why = classify(session, runtime)
    if direction is Direction.OUTBOUND:
        return RcptVerdict(Decision(Action.ACCEPT, reasons=(f"outbound ({why})",)))
    ip = session.client.ip or ""
    listed = dnsbl_decision(session.dnsbl, s.dnsbl.action, ip,
                            dnswl_listed=session.dnswl is not None and session.dnswl.listed)
    if listed is not None:
        return RcptVerdict(listed)
    if spf_at_rcpt(s):
        refused = _spf_stage(session, runtime)
        if refused is not None:
            return refused
    if not (s.greylist.enabled and s.greylist.stage == "rcpt"):
        return RcptVerdict(Decision(Action.ACCEPT))
    exempt = _exemption(session, rcpt, runtime, "")
    if exempt:
        return RcptVerdict(Decision(Action.ACCEPT, reasons=(f"not greylisted: {exempt}",)),
                           log=(("greylist", "skip:" + exempt.replace(" ", "-")),))
    spf_result = None
    spf_domain = ""
    if session.envelope.mail_from and not runtime.trusted_relays.contains_ip(ip):
        res = runtime.resolver.budget(s.dns.message_budget_s)
        spf_result = spf.check_spf(ip, session.envelope.mail_from, session.client.helo, res,
                                   receiver=runtime.authserv_id(session.macro("j")),
                                   timeout_s=s.dns.message_budget_s)
        if spf_result.result is Result.PASS and spf_result.scope == "mailfrom":
            spf_domain = spf_result.domain
    decision, result = _greylist(session, rcpt, runtime, now, spf_domain=spf_domain)
    return RcptVerdict(decision, log=(_greylist_log(decision, result),), spf=spf_result)


def _spf_stage(session: Session, runtime: Runtime) -> RcptVerdict | None:
    """``[policy] spf_reject_stage = "rcpt"``: the SPF rules at RCPT, as policyd-spf applies
    them (HELO first). Behind a trusted relay the sender is found at end-of-message (the
    Received chain), so nothing is decided here. The resolver's result cache hands the same
    results to the end-of-message evaluation."""
    s = runtime.settings
    ip, helo, mail_from = session.client.ip, session.client.helo, session.envelope.mail_from
    if not ip or runtime.trusted_relays.contains_ip(ip):
        return None
    if runtime.forwarders.contains(ip, session.client.hostname):
        return None
    res = runtime.resolver.budget(s.dns.message_budget_s)
    receiver = runtime.authserv_id(session.macro("j"))
    helo_result = None
    if s.policy.reject_helo_spf and s.verify.spf_helo and helo and mail_from:
        helo_result = spf.check_helo(ip, helo, res, receiver=receiver, timeout_s=s.dns.message_budget_s)
        decision = decide_spf(None, helo_result, s.policy, at_rcpt=True)
        if decision is not None:
            return RcptVerdict(decision, log=(("spf_helo", helo_result.result.value),))
    spf_result = spf.check_spf(ip, mail_from, helo, res, receiver=receiver, timeout_s=s.dns.message_budget_s)
    decision = decide_spf(spf_result, helo_result, s.policy, at_rcpt=True)
    if decision is None:
        return None
    return RcptVerdict(decision, log=(("spf", spf_result.result.value),), spf=spf_result)


def at_data(session: Session, runtime: Runtime, from_domain: str, spf_result: SpfResult | None,
            dkim: Sequence[DkimResult], now: float | None = None) -> tuple[Decision | None, tuple[tuple[str, str], ...]]:
    """``stage = "data"``: greylist every recipient at end-of-message; the first deferral
    defers the message (None: nothing to do)."""
    g = runtime.settings.greylist
    if not (g.enabled and g.stage == "data"):
        return None, ()
    now = time.time() if now is None else now
    spf_domain = spf_result.domain if spf_result is not None and spf_result.result is Result.PASS \
        and spf_result.scope == "mailfrom" else ""
    dkim_domain = next((d.domain for d in dkim if d.result is Result.PASS and d.domain and not d.has_length_tag
                        and from_domain and aligned(d.domain, from_domain)), "")
    logs: list[tuple[str, str]] = []
    for rcpt in session.envelope.rcpts or ("",):
        exempt = _exemption(session, rcpt, runtime, "")
        if exempt:
            logs.append(("greylist", "skip:" + exempt.replace(" ", "-")))
            continue
        decision, result = _greylist(session, rcpt, runtime, now, spf_domain=spf_domain, dkim_domain=dkim_domain)
        logs.append(_greylist_log(decision, result))
        if decision.action is not Action.ACCEPT:
            return decision, tuple(logs)
    return None, tuple(logs)
