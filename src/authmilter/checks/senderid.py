"""Sender ID (RFC 4406, experimental and historic in practice): report only.

The identity is the Purported Responsible Address (RFC 4407 §2), chosen from the
Resent-Sender, Resent-From, Sender and From headers. Only a domain that publishes an
``spf2.0/...`` record whose scopes include ``pra`` is evaluated (RFC 4406 §3.4 lets a
receiver fall back to ``v=spf1``; we do not: mail of domains that never opted in to
Sender ID gets no ``sender-id=`` result, so an RFC 7208 record is never read with the
semantics of another scope). The record is evaluated with check_host() (pyspf), its
version and scope token replaced by ``v=spf1``; ``include:`` and ``redirect=`` targets
are read as their ``v=spf1`` records.

The result is never decisive: it is one Authentication-Results resinfo
(``sender-id=pass header.from=...``, RFC 8601 §2.7.3) and a log field.
"""
from __future__ import annotations

import email.utils

import spf as pyspf  # type: ignore[import-untyped]

from .. import resolver as _resolver
from ..domain import DomainError, normalize_domain, normalize_ip
from ..model import Message
from ..results import Result, SenderIdResult
from .spf import _RESULTS, _Query

__all__ = ["check_sender_id", "pra"]

_RECEIVED = (b"received", b"return-path")


def _mailboxes(value: bytes) -> list[str]:
    text = value.decode("utf-8", "replace").replace("\r\n", "")
    return [a for _, a in email.utils.getaddresses([text]) if a]


def pra(message: Message) -> tuple[str, str, str]:
    """RFC 4407 §2: (header name, address, error). An error (malformed message) comes
    with an empty address; so does a message without any candidate header."""
    fields = [(n.strip().lower(), v) for n, v in message.headers]
    nonempty = [(i, n, v) for i, (n, v) in enumerate(fields) if v.strip()]

    def first(name: bytes) -> tuple[int, bytes] | None:
        return next(((i, v) for i, n, v in nonempty if n == name), None)

    chosen: tuple[str, bytes] | None = None
    rs = first(b"resent-sender")
    if rs is not None:
        # Step 1: a Resent-Sender belongs to an earlier resending when a Resent-From and
        # then a Received/Return-Path come before it.
        rf = first(b"resent-from")
        stale = rf is not None and rf[0] < rs[0] and any(
            rf[0] < i < rs[0] and n in _RECEIVED for i, n, _ in nonempty)
        if not stale:
            chosen = ("resent-sender", rs[1])
    if chosen is None:
        rf = first(b"resent-from")
        if rf is not None:
            chosen = ("resent-from", rf[1])
    if chosen is None:
        senders = [v for _, n, v in nonempty if n == b"sender"]
        if len(senders) > 1:
            return "sender", "", "more than one Sender header"
        if senders:
            chosen = ("sender", senders[0])
    if chosen is None:
        froms = [v for _, n, v in nonempty if n == b"from"]
        if len(froms) != 1:
            return "from", "", "no From header" if not froms else "more than one From header"
        chosen = ("from", froms[0])
    boxes = _mailboxes(chosen[1])
    if len(boxes) != 1 or "@" not in boxes[0]:
        return chosen[0], "", f"{chosen[0]} header does not hold exactly one mailbox"
    return chosen[0], boxes[0], ""


def _pra_record(domain: str, resolver: _resolver.DnsLookup) -> tuple[str | None, Result | None, str]:
    """(record as v=spf1 text, error result, reason); (None, None, "") when the domain
    publishes no spf2.0 record covering pra."""
    answer = resolver.query(domain, "TXT")
    if answer.temporary:
        return None, Result.TEMPERROR, f"DNS error looking up {domain}"
    if not answer.ok:
        return None, None, ""
    found = []
    for raw in answer.records:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        head, _, rest = text.partition(" ")
        if head.lower().startswith("spf2.0/") and "pra" in head[7:].lower().split(","):
            found.append("v=spf1 " + rest.strip())
    if len(found) > 1:
        return None, Result.PERMERROR, f"{domain} publishes more than one spf2.0/pra record"
    return (found[0], None, "") if found else (None, None, "")


def check_sender_id(ip: str, message: Message, resolver: _resolver.DnsLookup, *, helo: str = "",
                    receiver: str = "", timeout_s: float = 20.0) -> SenderIdResult | None:
    """The Sender ID result for the PRA, or None when its domain does not publish Sender ID."""
    header, address, error = pra(message)
    if error:
        return None   # no PRA: RFC 4406 §4 permerror, but only for domains that opted in, which we cannot tell
    domain = address.rpartition("@")[2]
    try:
        domain = normalize_domain(domain)
    except DomainError:
        return None
    record, problem, why = _pra_record(domain, resolver)
    if problem is not None:
        return SenderIdResult(problem, header, address, reason=why)
    if record is None:
        return None
    addr = normalize_ip(ip)
    if addr is None:
        return None
    _resolver.install_spf_adapter()
    try:
        with _resolver.using(resolver):
            q = _Query(i=addr, s=address, h=helo or domain, receiver=receiver or None, strict=True,
                       querytime=timeout_s)
            code, _smtp, text = q.check(spf=record)
    except (pyspf.TempError, pyspf.PermError) as exc:
        code, text = ("temperror" if isinstance(exc, pyspf.TempError) else "permerror"), str(exc)
    except Exception as exc:  # noqa: BLE001 - pyspf failing on remote data is a result, not a crash
        code, text = "permerror", f"evaluation error: {type(exc).__name__}"
    result = _RESULTS.get(code, Result.PERMERROR)
    reason = "" if result in (Result.PASS, Result.NONE) else text.removeprefix("SPF Permanent Error: ")
    return SenderIdResult(result, header, address, reason=reason[:200])
