"""Straight-line processing of one message at end-of-message; pure apart from DNS.

    classify -> (outbound) sign  |  (inbound) sanitize, verify, decide, render
    -> Outcome (header edits, verdict, one log line)

The milter adapter and `authmilter verify` both call `process`; neither decides anything.
"""
from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from . import antispam, authresults, sealing
from .checks import arc, fromhdr, received, senderid, spf
from .checks import dkim as dkim_check
from .checks import dmarc as dmarc_check
from .checks.orgdomain import single_query
from .dkim.verify import dkim_signature_indexes
from .model import Session
from .outcome import (
    Action,
    AddRecipient,
    ChangeFrom,
    DeleteRecipient,
    Direction,
    EnvelopeEdit,
    HeaderDelete,
    HeaderInsert,
    Outcome,
    SignedWith,
)
from .policy import Decision, Evidence, decide, decide_missing_key, decide_srs, dnsbl_header
from .records import DkimEvidence, MessageRecord
from .reports import failure
from .resolver import DnssecTally, Parked
from .results import ArcResult, DkimResult, DmarcPolicy, FromResult, ResInfo, Result, SpfResult
from .runtime import Runtime
from .srs import Reversal
from .tasks import CHECKS


def classify(session: Session, runtime: Runtime) -> tuple[Direction, str]:
    """Outbound when SASL-authenticated, from an internal host, from a signing daemon, or
    injected locally (no client address: Postfix non_smtpd_milters / sendmail(1))."""
    s = runtime.settings.signing
    auth = session.macro("auth_authen") or session.macro("auth_type")
    if auth and runtime.settings.policy.ignore_authenticated:
        return Direction.OUTBOUND, "authenticated"
    ip = session.client.ip
    if ip is None or (session.client.port == 0 and _loopback(ip)):
        # Postfix presents sendmail(1) mail to non_smtpd_milters as a connect from
        # localhost [127.0.0.1] port 0 (no TCP peer); a real SMTP client has a port.
        return Direction.OUTBOUND, "local submission"
    if not s.enabled and not _seals_resubmitted(runtime):
        # Verify-only (OpenDKIM Mode v): internal hosts and submission daemons are reasons
        # to *sign*; with nothing to sign their mail is checked like any other. (A host
        # that seals re-submitted mail still needs its internal hosts' mail outbound.)
        return Direction.INBOUND, ""
    daemon = session.macro("daemon_name")
    if daemon and daemon in s.sign_daemon_names:
        return Direction.OUTBOUND, f"daemon {daemon}"
    if runtime.internal_hosts.contains(ip, session.client.hostname):
        return Direction.OUTBOUND, "internal host"
    return Direction.INBOUND, ""


def _loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def process(session: Session, runtime: Runtime, *, now: float | None = None,
            direction: Direction | None = None) -> Outcome:
    """The whole decision for one message. *direction* forces a path (`authmilter verify`).

    SRS comes first: a bounce to a forged or expired SRS address is refused before any
    check runs, and the envelope edits are known before signing (the order the issue
    asks for: SRS, then DKIM signing, then ARC sealing)."""
    edits, srs_log, refusal = _srs(session, runtime, now)
    if refusal is not None:
        d = refusal
        dir_ = direction or classify(session, runtime)[0]
        return Outcome(d.action, dir_, d.code, d.xcode, d.text,
                       log=(("action", d.action.value), ("dir", dir_.value), *srs_log), reasons=d.reasons)
    outcome = _process_checked(session, runtime, now=now, direction=direction)
    if edits and outcome.action in (Action.ACCEPT, Action.QUARANTINE):
        outcome = replace(outcome, envelope=outcome.envelope + edits, log=outcome.log + srs_log)
    return outcome


def _srs(session: Session, runtime: Runtime, now: float | None
         ) -> tuple[tuple[EnvelopeEdit, ...], tuple[tuple[str, str], ...], Decision | None]:
    """``[srs]``: restore recipients that are SRS addresses of ours (the bounce path), and
    rewrite the envelope sender when the mail leaves our domains (the forward path).
    Returns the envelope edits, log pairs, and the refusal for a bad SRS recipient."""
    rules = runtime.srs
    if rules is None:
        return (), (), None
    edits: list[EnvelopeEdit] = []
    log: list[tuple[str, str]] = []
    rcpts: list[str] = []
    checked = []
    for rcpt in session.envelope.rcpts:
        rev = rules.reverse_recipient(rcpt, now)
        checked.append(rev)
        if rev.status is Reversal.RESTORED:
            edits += [DeleteRecipient(rcpt), AddRecipient(rev.address)]
            log.append(("srs_rcpt", f"{rcpt}->{rev.address}"))
            rcpts.append(rev.address)
        else:
            rcpts.append(rcpt)
    refusal = decide_srs(checked)
    if refusal is not None:
        return (), (*log, ("srs", refusal.reasons[0])), refusal
    sender = session.envelope.mail_from
    if rules.forward_needed(rcpts):
        rewritten = rules.forward_sender(sender, now)
        if rewritten is not None:
            edits.append(ChangeFrom(rewritten))
            log.append(("srs_from", rewritten))
    return tuple(edits), tuple(log), None


def _process_checked(session: Session, runtime: Runtime, *, now: float | None = None,
                     direction: Direction | None = None) -> Outcome:
    authserv_id = runtime.authserv_id(session.macro("j"))
    # Forged Authentication-Results claiming our authserv-id go whatever the direction
    # (the adapter deletes from the highest index down: CVE-2022-48521).
    deletions = tuple(HeaderDelete("Authentication-Results", i)
                      for i in authresults.forged_indices(session.message.headers, authserv_id))
    why = "forced"
    if direction is None:
        direction, why = classify(session, runtime)
    if direction is Direction.OUTBOUND:
        return _outbound(session, runtime, why, deletions, now)
    if not runtime.settings.verify.enabled:
        # Signing-only deployment (OpenDKIM Mode s): forged headers still go.
        return Outcome(Action.ACCEPT, Direction.INBOUND, deletions=deletions,
                       log=(("action", "accept"), ("dir", "inbound"), ("checks", "off")),
                       reasons=("inbound checks disabled (verify.enabled = false)",))
    return _inbound(session, runtime, authserv_id, deletions, now)


# -- outbound ---------------------------------------------------------------------


def _outbound(session: Session, runtime: Runtime, why: str, deletions: tuple[HeaderDelete, ...],
              now: float | None) -> Outcome:
    log: list[tuple[str, str]] = [("action", "accept"), ("dir", "outbound"), ("via", why)]
    signer = runtime.signer
    from_ = fromhdr.parse_from(session.message)
    if from_.address:
        log.append(("from", from_.address))
    insertions: tuple[HeaderInsert, ...] = ()
    signed: tuple[SignedWith, ...] = ()
    if signer is None or not runtime.settings.signing.enabled:
        log.append(("signed", "no (signing disabled)"))
    elif not from_.ok:
        log.append(("signed", f"no ({from_.error})"))
    else:
        sasl = session.macro("auth_authen")
        choice = signer.choose(from_.address, sasl)
        if choice.missing:
            missing = "; ".join(choice.missing)
            log.append(("signed", f"no (key unavailable: {missing})"))
            decision = decide_missing_key(runtime.settings.signing.on_missing_key, missing)
            if decision.action is not Action.ACCEPT:
                log[0] = ("action", decision.action.value)
                return Outcome(decision.action, Direction.OUTBOUND, decision.code, decision.xcode, decision.text,
                               deletions=deletions, log=tuple(log), reasons=decision.reasons)
        elif choice.refused:
            log.append(("signed", f"no ({choice.refused})"))
        elif not choice.keys:
            log.append(("signed", "no (no SigningTable entry)"))
        else:
            ts = int(now) if now is not None else None
            insertions = signer.sign(session.message, choice, timestamp=ts)
            signed = tuple(SignedWith(k.domain, k.selector, k.algorithm) for k in choice.keys)
            log.append(("signed", ",".join(f"d={k.domain}/s={k.selector}/{k.algorithm}" for k in signed)))
    # ARC sealing last, over the message with our DKIM-Signature in it (RFC 8617 §5.1).
    sealed, seal_log = _seal_resubmitted(session, runtime, why, deletions, insertions, now)
    return Outcome(Action.ACCEPT, Direction.OUTBOUND, deletions=deletions, insertions=insertions + sealed,
                   signed=signed, log=tuple(log) + seal_log, reasons=(f"outbound ({why})",))


# -- ARC sealing ------------------------------------------------------------------

# Where re-submitted mail may come from: our list software and hosts, never a SASL
# client (whose Authentication-Results we did not write and must not vouch for).
_RESUBMITTERS = ("internal host", "local submission")


def _seals_resubmitted(runtime: Runtime) -> bool:
    return runtime.sealer is not None and runtime.settings.arc.seal_resubmitted


def _seal_resubmitted(session: Session, runtime: Runtime, why: str, deletions: tuple[HeaderDelete, ...],
                      insertions: tuple[HeaderInsert, ...], now: float | None
                      ) -> tuple[tuple[HeaderInsert, ...], tuple[tuple[str, str], ...]]:
    """Mail our list software or internal hosts re-submit carrying the Authentication-Results
    of its earlier inbound pass here: a new ARC set whose AAR carries that header, i=n+1.

    cv= comes from validating the chain now; when that fails but our own earlier pass
    recorded arc=pass, the chain was whole when it reached us and only our own list
    software changed the message since, so cv=pass (the verdict a sealer records is the
    one it found at receipt; dkimpy's arc_sign reads it from the AR the same way)."""
    if not _seals_resubmitted(runtime) or why not in _RESUBMITTERS:
        return (), ()
    authserv_id = runtime.authserv_id(session.macro("j"))
    ours = next((value for value in session.message.get_all("Authentication-Results")
                 if (found := authresults.authserv_id_of(value)) is not None
                 and found.lower().rstrip(".") == authserv_id.lower().rstrip(".")), None)
    if ours is None:
        return (), ()     # ordinary outbound mail: nothing to vouch for
    earlier = {r.method: r.result for r in authresults.parse_authres(ours).results}.get("arc", "")
    msg = session.message
    state = sealing.chain_state(msg)
    cv: str | None = None
    why_not = ""
    if not state.present:
        cv = "none"
    elif state.defect:
        cv = "fail"
    else:
        chain = arc.check_arc(msg, runtime.resolver.budget(runtime.settings.dns.message_budget_s))
        if chain.result is Result.PASS or earlier == "pass":
            cv = "pass"
        elif chain.result is Result.FAIL or earlier == "fail":
            cv = "fail"
        else:
            why_not = f"chain could not be validated: {chain.reason}"
    value = ours
    return _seal(session, runtime, deletions, insertions,
                 lambda n: authresults.resubmitted_aar(n, value), cv, why_not, now)


def _seal(session: Session, runtime: Runtime, deletions: Sequence[HeaderDelete], insertions: Sequence[HeaderInsert],
          aar: Callable[[int], str], cv: str | None, why_not: str, now: float | None
          ) -> tuple[tuple[HeaderInsert, ...], tuple[tuple[str, str], ...]]:
    """The next ARC set over the message as it will be stored, and its log pair; no set
    (and why, in the log) when no key matches, the chain could not be validated, or RFC
    8617 forbids one (a chain already ended with cv=fail, 50 sets)."""
    sealer = runtime.sealer
    assert sealer is not None
    choice = sealer.choose(session.envelope.rcpts)
    if choice.key is None:
        return (), (("sealed", f"no ({choice.why})"),)
    if cv is None:
        return (), (("sealed", f"no ({why_not})"),)
    view = sealing.edited(session.message, deletions, insertions)
    n = sealing.chain_state(view).highest + 1
    try:
        if n > sealing.MAX_INSTANCES:
            raise sealing.ArcSealError(f"the chain already has {sealing.MAX_INSTANCES} ARC sets (RFC 8617)")
        sealed = sealer.seal(view, choice.key, aar=aar(n), chain_validation=cv,
                             timestamp=int(now) if now is not None else None)
    except (sealing.ArcSealError, ValueError) as exc:
        return (), (("sealed", f"no ({exc})"),)
    k = choice.key
    return sealed, (("sealed", f"i={n}/d={k.domain}/s={k.selector}/cv={cv}"),)


# -- inbound ----------------------------------------------------------------------


def _inbound(session: Session, runtime: Runtime, authserv_id: str,
             deletions: tuple[HeaderDelete, ...], now: float | None) -> Outcome:
    settings = runtime.settings
    v = settings.verify
    msg = session.message
    client = session.client
    res = runtime.resolver.budget(settings.dns.message_budget_s)
    started = time.monotonic()

    from_ = fromhdr.parse_from(msg)

    # SPF for the real sender: behind our own relays, the first untrusted hop.
    ip, helo, via = client.ip, client.helo, ""
    if runtime.trusted_relays.contains_ip(ip):
        hop = received.first_untrusted_hop(msg, runtime.trusted_relays.contains_ip)
        if hop is not None:
            via = ip or ""
            ip, helo = hop
    # [dns] dnssec: whether the answers each check read were DNSSEC-validated (log line).
    spf_dns, dmarc_dns = DnssecTally(res), DnssecTally(res)
    seal_inbound = runtime.sealer is not None and settings.arc.seal_inbound
    budget_s = settings.dns.message_budget_s

    # The checks below need nothing from each other: they run side by side, so a message
    # waits for its longest chain of dependent lookups, not for their sum. Each reads DNS
    # through its own view (tallies, memo) and binds pyspf's resolver in its own thread.
    calls: dict[str, Callable[[], object]] = {}
    if ip:
        calls["spf"] = lambda: spf.check_spf(ip, session.envelope.mail_from, helo, spf_dns,
                                             receiver=authserv_id, timeout_s=budget_s)
        if v.spf_helo and helo and session.envelope.mail_from:
            calls["helo"] = lambda: spf.check_helo(ip, helo, res, receiver=authserv_id, timeout_s=budget_s)
    calls["dkim"] = lambda: dkim_check.verify_dkim(msg, res, max_signatures=v.max_signatures,
                                                   min_rsa_bits=v.dkim_min_rsa_bits, allow_sha1=v.dkim_allow_sha1,
                                                   require_dnssec=settings.dns.dnssec == "require-for-keys")
    # A From that is missing or unusable gets its DMARC result from the DMARC check too
    # (none / permerror, without DNS): the rule lives in one place.
    calls["dmarc"] = lambda: dmarc_check.discover_dmarc(from_, dmarc_dns, mode=v.dmarc_mode, psl=runtime.psl)
    if v.arc or seal_inbound:
        calls["arc"] = lambda: arc.check_arc(msg, res)     # a sealer validates first, reported or not
    if v.sender_id and ip:   # RFC 4406, report only: never part of the decision below
        calls["sender_id"] = lambda: senderid.check_sender_id(ip, msg, res, helo=helo, receiver=authserv_id,
                                                              timeout_s=budget_s)
    cold, sent = _send_ahead(runtime, *_cold(runtime, session, from_, ip, helo, "helo" in calls, "arc" in calls),
                             from_, helo, v.dmarc_mode)
    try:
        if cold:
            # A check whose first answer is cached or already in flight (a prefetch asked
            # for it during the transaction, or it was just sent ahead) only waits: it runs
            # in this thread, one after another with the other waiting ones, and costs no
            # thread hand-off.
            done = CHECKS.run_all(calls, inline={name for name in calls if name not in cold})
        else:
            # Nothing to walk (the usual case for a known sender: everything cached):
            # threads would only add their hand-offs, so the calls run in this thread.
            done = {name: call() for name, call in calls.items()}
    finally:
        for parked in sent:
            runtime.resolver.unpark(parked)     # a query no check ended up asking

    spf_result: SpfResult | None = done.get("spf")
    if spf_result is not None and via:
        spf_result = replace(spf_result, via_relay=via)
    helo_result: SpfResult | None = done.get("helo")
    dkim_results: tuple[DkimResult, ...] = done["dkim"]
    dmarc_result = dmarc_check.evaluate_dmarc(done["dmarc"], spf_result, dkim_results,
                                              accept_length_tag=v.dmarc_accept_length_tag)
    chain_found: ArcResult | None = done.get("arc")
    arc_result = chain_found if v.arc else None

    ev = Evidence(from_=from_, spf=spf_result, helo=helo_result, dkim=dkim_results, dmarc=dmarc_result,
                  arc=arc_result,
                  trusted_forwarder=runtime.forwarders.contains(client.ip, client.hostname),
                  list_headers=tuple(h for h in _LIST_HEADERS if msg.get_all(h)),
                  arc_headers=sealing.chain_state(msg).present)
    decision = decide(ev, settings.policy, runtime.own_domains, accept_length_tag=v.dmarc_accept_length_tag,
                      trusted_sealers=runtime.trusted_sealers)
    # [greylist] stage = "data": after the verdict, so a message that is rejected anyway
    # is not deferred first; an aligned verifying DKIM signature is an identity here.
    early_log = session.early_log + antispam.dns_list_log(session)
    if decision.action is Action.ACCEPT and decision.marker_header is None:
        deferred, greylist_log = antispam.at_data(session, runtime, from_.domain, spf_result, dkim_results, now)
        early_log += greylist_log
        if deferred is not None:
            decision = deferred

    infos: list[ResInfo] = []
    if spf_result is not None:
        infos.append(spf_result.resinfo())
    if helo_result is not None:
        infos.append(helo_result.resinfo())
    # RFC 8601 §2.7.1: "none" when the message was not signed; a reader must not take a
    # missing dkim= for "not evaluated".
    infos.extend([d.resinfo() for d in dkim_results] or [ResInfo("dkim", Result.NONE, reason="message not signed")])
    infos.append(dmarc_result.resinfo(decision.dmarc_applied, decision.dmarc_override))
    if arc_result is not None:
        infos.append(arc_result.resinfo())
    sender_id = done.get("sender_id")
    if sender_id is not None:
        infos.append(sender_id.resinfo())
        early_log += (("sender_id", sender_id.result.value),)
    results = tuple(infos)

    deleted = list(deletions)
    if v.add_received_spf:
        # Downstream filters will read our Received-SPF: upstream ones not written by a
        # trusted authserv-id go first (CVE-2019-20790).
        stale = authresults.received_spf_indices(msg.headers, v.trusted_authserv_ids)
        deleted.extend(HeaderDelete("Received-SPF", i) for i in stale)
    inserted = [HeaderInsert("Authentication-Results", authresults.render(authserv_id, results))]
    if v.add_received_spf and spf_result is not None:
        inserted.append(HeaderInsert("Received-SPF", spf.received_spf_value(spf_result, authserv_id)))
    if decision.marker_header is not None:
        name, value = decision.marker_header
        inserted.append(HeaderInsert(name, value))
    listed = dnsbl_header(session.dnsbl, settings.dnsbl.action, client.ip or "")
    if listed is not None:
        inserted.append(HeaderInsert(*listed))

    seal_log: tuple[tuple[str, str], ...] = ()
    if seal_inbound and decision.action in (Action.ACCEPT, Action.QUARANTINE):
        # Last: the set covers what we inserted above; its AAR carries our verdicts.
        cv, why_not = _inbound_cv(chain_found)
        sealed, seal_log = _seal(session, runtime, deleted, inserted,
                                 lambda n: authresults.render_aar(n, authserv_id, results), cv, why_not, now)
        inserted.extend(sealed)

    dnssec = _dnssec_state(spf_dns, dkim_results, dmarc_dns) if settings.dns.dnssec != "ignore" else None
    log = _inbound_log(decision, ev, client.ip, dns_ms=(time.monotonic() - started) * 1000,
                       dnssec=_dnssec_log(dnssec) if dnssec is not None else "") + seal_log + early_log
    records = _records(session, authserv_id, ev, decision, helo, ip, time.time() if now is None else now)
    if records and settings.reports.failure_reports:
        records = failure.with_samples(records, msg.headers)   # RFC 9991: only what ruf=/fo= ask for
    return Outcome(
        action=decision.action, direction=Direction.INBOUND,
        smtp_code=decision.code, smtp_xcode=decision.xcode, smtp_text=decision.text,
        quarantine_reason=decision.quarantine_reason, deletions=tuple(deleted), insertions=tuple(inserted),
        results=results, records=records, log=log, reasons=decision.reasons, dnssec=dnssec or (),
    )


def _cold(runtime: Runtime, session: Session, from_: FromResult, ip: str | None, helo: str,
          helo_checked: bool, arc_checked: bool) -> tuple[frozenset[str], list[str]]:
    """The checks whose first TXT lookup neither the cache nor a query in flight can
    answer now (the SPF record of the MAIL FROM domain and of the HELO name, a DKIM key,
    the From domain's DMARC record; ARC and Sender ID whenever there is such a check:
    nothing prefetches their lookups), and the DKIM key names among those that are cold."""
    resolver = runtime.resolver
    cold: set[str] = set()
    if ip:
        sender = session.envelope.mail_from
        domain = sender.rpartition("@")[2] if sender else helo
        if domain and not resolver.warm(domain, "TXT"):
            cold.update(("spf", "sender_id"))
        if helo_checked and helo and not resolver.warm(helo, "TXT"):
            cold.add("helo")
    if from_.ok and not resolver.warm(f"_dmarc.{from_.domain}", "TXT"):
        cold.add("dmarc")
    msg = session.message
    keys = [key for index in dkim_signature_indexes(msg.headers)[:runtime.settings.verify.max_signatures]
            if (key := dkim_check.key_name(msg.headers[index][1])) is not None]
    cold_keys = [key for key in keys if not resolver.warm(key, "TXT")]
    if cold_keys:
        cold.add("dkim")
    if arc_checked and msg.get_all("ARC-Seal"):
        cold.add("arc")
    return frozenset(cold), cold_keys


def _send_ahead(runtime: Runtime, cold: frozenset[str], cold_keys: list[str], from_: FromResult, helo: str,
                dmarc_mode: str) -> tuple[frozenset[str], list[Parked]]:
    """Send the single lookups of the cold checks now, all at once, from this thread
    (`Resolver.send_ahead`): the DKIM keys (verification hashes the body before it asks
    for a key, and asks for several signatures' keys one after another), the HELO name's
    SPF record, and the DMARC record of a two-label From domain (example.com: its own
    record, else the TLD's). Those checks then only wait for answers in flight and need
    no thread; what is left cold (an SPF walk, a deeper DMARC walk, ARC) runs on one."""
    resolver = runtime.resolver
    sent: list[Parked] = []
    still = set(cold)

    def ahead(check: str, names: list[str]) -> None:
        ok = True
        for name in names:
            parked = resolver.send_ahead(name, "TXT")
            if parked is not None:
                sent.append(parked)
            elif not resolver.warm(name, "TXT"):
                ok = False                      # not sent (servers down, a bad name): cold
        if ok:
            still.discard(check)

    if "dkim" in cold:
        ahead("dkim", cold_keys)
    if "helo" in cold:
        ahead("helo", [helo])
    if "dmarc" in cold and from_.ok and (policy_name := single_query(from_.domain, dmarc_mode)) is not None:
        ahead("dmarc", [policy_name])
    return frozenset(still), sent


# Header fields a mailing list adds (RFC 2369, RFC 2919): signs of an indirect flow.
_LIST_HEADERS = ("List-Id", "List-Post")


def _inbound_cv(found: ArcResult | None) -> tuple[str | None, str]:
    """cv= for sealing inbound mail, from our validation of the chain as received."""
    if found is None or (found.result is Result.NONE and not found.instances):
        return "none", ""
    if found.result is Result.NONE:
        return None, f"chain could not be validated: {found.reason}"
    return found.result.value, ""


def _records(session: Session, reporter: str, ev: Evidence, decision: Decision, helo: str, ip: str | None,
             when: float) -> tuple[MessageRecord, ...]:
    """One report record for a message that reached a DMARC evaluation (RFC 9990 §2.1).

    A tempfailed message is not recorded: the sender retries, and the retry is the
    message that gets a verdict (recording both would count it twice).
    """
    dmarc = ev.dmarc
    if dmarc is None or dmarc.result is Result.NONE or decision.action is Action.TEMPFAIL:
        return ()
    spf = ev.spf if ev.spf is not None and ev.spf.scope == "mailfrom" else None
    mail_from = session.envelope.mail_from
    if decision.action is Action.REJECT or decision.would is Action.REJECT:
        applied = "reject"
    elif decision.action is Action.QUARANTINE or decision.marker_header is not None \
            or decision.would is Action.QUARANTINE:
        applied = "quarantine"
    else:
        applied = "none"
    if decision.would is not None:
        applied = "none"   # dry_run: what we did is deliver; the override says why
    return (MessageRecord(
        time=when, reporter=reporter, queue_id=session.queue_id, source_ip=ip or "", helo=helo,
        envelope_from=mail_from, envelope_from_domain=mail_from.rpartition("@")[2].lower() if mail_from else "",
        header_from=ev.from_.domain,
        spf_result=spf.result.value if spf is not None else "none", spf_domain=spf.domain if spf is not None else "",
        spf_scope="mfrom" if spf is not None else "",
        dkim=tuple(DkimEvidence(d.domain, d.selector, d.result.value) for d in ev.dkim),
        dmarc_result=dmarc.result.value, dkim_aligned=dmarc.dkim_aligned, spf_aligned=dmarc.spf_aligned,
        policy=dmarc.published or replace(_NO_POLICY, domain=dmarc.policy_domain),
        disposition=applied, overrides=decision.overrides,
    ),)


_NO_POLICY = DmarcPolicy()


def _dnssec_state(spf_dns: DnssecTally, dkim: Sequence[DkimResult],
                  dmarc_dns: DnssecTally) -> tuple[tuple[str, bool], ...]:
    """(check, validated) for spf, dkim, dmarc: validated when every answer the check
    read (for DKIM: every key) came back DNSSEC-validated; a check that read no answer
    is left out (an SPF result reused from the result cache reads none)."""
    keys = [d.dnssec for d in dkim if d.dnssec is not None]
    parts = [("spf", spf_dns.summary), ("dkim", ("yes" if all(keys) else "no") if keys else ""),
             ("dmarc", dmarc_dns.summary)]
    return tuple((name, state == "yes") for name, state in parts if state)


def _dnssec_log(state: Sequence[tuple[str, bool]]) -> str:
    """``spf:yes,dkim:no,dmarc:yes`` ("-": no check read an answer)."""
    return ",".join(f"{name}:{'yes' if ok else 'no'}" for name, ok in state) or "-"


def _inbound_log(decision: Decision, ev: Evidence, ip: str | None, dns_ms: float,
                 dnssec: str = "") -> tuple[tuple[str, str], ...]:
    log: list[tuple[str, str]] = [("action", decision.action.value), ("dir", "inbound")]
    if decision.would is not None:
        log.append(("dry_run_would", decision.would.value))
    log.append(("ip", ip or "-"))
    log.append(("spf", ev.spf.result.value if ev.spf else "none"))
    log.append(("dkim", ",".join(f"{d.result.value}:{d.domain or '?'}" for d in ev.dkim) or "none"))
    if ev.dmarc is not None:
        log.append(("dmarc", ev.dmarc.result.value + (f":p={ev.dmarc.policy}" if ev.dmarc.policy else "")))
        if ev.dmarc.policy:
            # As in Authentication-Results (RFC 8601 policy.dmarc), with why it was not
            # applied as requested (RFC 9990 PolicyOverrideType: the report's reason).
            log.append(("policy.dmarc", decision.dmarc_applied or ev.dmarc.policy))
        if decision.overrides:
            log.append(("override", ",".join(f"{t}:{c}" if c else t for t, c in decision.overrides)))
    else:
        log.append(("dmarc", "none"))
    if ev.arc is not None and ev.arc.result is not Result.NONE:
        log.append(("arc", ev.arc.result.value))
    if dnssec:
        log.append(("dnssec", dnssec))
    log.append(("from", ev.from_.domain or ev.from_.error or "-"))
    if decision.reasons:
        log.append(("reason", "; ".join(decision.reasons)))
    log.append(("ms", f"{dns_ms:.0f}"))
    return tuple(log)
