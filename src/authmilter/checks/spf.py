"""SPF (RFC 7208) for the MAIL FROM and HELO identities, with pyspf doing check_host().

pyspf's DNS goes through our resolver: `resolver.install_spf_adapter()` replaces its
module-level lookup once, and ``with resolver.using(res):`` binds the per-message
resolver to this thread for the duration of one check. A timeout or SERVFAIL from our
resolver surfaces as pyspf's TempError and so as ``temperror``; nothing raised by pyspf
on remote data escapes as an exception.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import spf as pyspf  # type: ignore[import-untyped]

from .. import resolver as _resolver
from ..domain import DomainError, normalize_domain, normalize_ip
from ..errors import AuthmilterError
from ..results import Result, SpfResult
from .rfc5322 import comment_text, one_line

__all__ = ["check_helo", "check_spf", "received_spf_value"]

# pyspf returns the default explanation when no (usable) exp= exists; a sentinel lets us
# tell "no explanation" apart from a published one (RFC 7208 §6.2).
_NO_EXP = "\x00authmilter-no-exp\x00"

_RESULTS = {
    "pass": Result.PASS, "fail": Result.FAIL, "softfail": Result.SOFTFAIL, "neutral": Result.NEUTRAL,
    "none": Result.NONE, "permerror": Result.PERMERROR, "temperror": Result.TEMPERROR,
    # RFC 4408-era names some pyspf paths still use, and harsh-mode's extra result.
    "unknown": Result.PERMERROR, "error": Result.TEMPERROR, "ambiguous": Result.PERMERROR,
}


class _Query(pyspf.query):  # type: ignore[misc]
    """pyspf's query with one RFC fix for PTR validation."""

    def validated_ptrs(self) -> list[str]:
        """RFC 7208 §5.5: validate at most 10 PTR names; "if a DNS error occurs while
        doing an A RR lookup, then that domain name is skipped and the search continues"
        (pyspf lets the error end the whole check as temperror; a CNAME loop is one)."""
        names = self.dns_ptr(self.i)[:pyspf.MAX_PTR]
        valid = []
        for name in names:
            try:
                if self.cidrmatch(self.dns_a(name, self.A), self.cidrmax):
                    valid.append(name)
            except pyspf.TempError:
                continue
        return valid


def _ascii_domain(domain: str) -> str:
    """The A-label form for DNS when *domain* is valid; otherwise unchanged, so pyspf
    applies RFC 7208 §4.3 (malformed domain -> none) to exactly what was presented."""
    try:
        return normalize_domain(domain, allow_underscore=True)   # DNS names may hold "_"
    except DomainError:
        return domain.lower()


class _Raw(NamedTuple):
    """What one check_host() evaluation produced, before it becomes an SpfResult."""

    code: str           # pyspf's result name
    text: str           # explanation (fail) or error text
    mechanism: str      # the matching mechanism, if any
    problem: str        # pyspf's description of a permerror/temperror
    crashed: str = ""   # pyspf raised on remote data: the exception, as text


def _evaluate(addr: str, sender: str, helo: str, resolver: _resolver.DnsLookup, *, local: str,
              domain: str, receiver: str, timeout_s: float) -> _Raw:
    _resolver.install_spf_adapter()
    try:
        with _resolver.using(resolver):
            q = _Query(i=addr, s=sender, h=helo, receiver=receiver or None, strict=True, querytime=timeout_s)
            # pyspf splits the sender at the first "@"; RFC 5321 local parts may be quoted
            # and contain "@", so the domain is what follows the last one (set here).
            q.l, q.o, q.d = local, domain, domain
            q.set_default_explanation(_NO_EXP)
            code, _smtp, text = q.check()
    except AuthmilterError:
        raise
    except (pyspf.TempError, pyspf.PermError) as exc:  # raised outside check(), e.g. by set_ip
        code = "temperror" if isinstance(exc, pyspf.TempError) else "permerror"
        return _Raw(code, str(exc), "", "")
    except Exception as exc:  # noqa: BLE001 - pyspf failing on remote data is a result, not a crash
        return _Raw("permerror", "", "", "", crashed=f"{type(exc).__name__}: {exc}")
    return _Raw(code, text, getattr(q, "mechanism", None) or "", getattr(q, "prob", "") or "")


def _evaluate_cached(addr: str, sender: str, helo: str, resolver: _resolver.DnsLookup, *, scope: str,
                     local: str, domain: str, receiver: str, timeout_s: float) -> _Raw:
    """`_evaluate`, reused while the DNS answers it read are cached (resolver.DerivedCache).

    A result depends on the client IP, the domain and the DNS data; the local part, the
    HELO name and the receiver enter only through macros. So a result whose records hold
    no "%" is kept per (scope, IP, domain) and serves every sender of that domain; one
    that read a macro is kept per full (sender, HELO, receiver). Temporary errors and
    answers the cache did not keep are never stored.
    """
    memo = getattr(resolver, "derived", None)
    if memo is None or not memo.enabled or not hasattr(resolver, "lookup"):
        return _evaluate(addr, sender, helo, resolver, local=local, domain=domain, receiver=receiver,
                         timeout_s=timeout_s)
    wide = ("spf", scope, addr, domain)
    full = ("spf", scope, addr, domain, local, helo, receiver)
    hit = memo.get(wide) or memo.get(full)
    if hit is not None:
        raw, read, authenticated = hit
        credit = getattr(resolver, "credit", None)
        if credit is not None:        # a DnssecTally: it learns what the stored result read
            credit(read, authenticated)
        return raw  # type: ignore[no-any-return]
    recorder = _resolver.Recording(resolver)  # type: ignore[arg-type]  # has lookup(), checked above
    raw = _evaluate(addr, sender, helo, recorder, local=local, domain=domain, receiver=receiver,
                    timeout_s=timeout_s)
    if _RESULTS.get(raw.code) is not Result.TEMPERROR and not raw.crashed:
        memo.put(full if recorder.saw_percent else wide, raw, recorder)
    return raw


def _run(ip: str, sender: str, helo: str, resolver: _resolver.DnsLookup, *, scope: str,
         local: str, domain: str, identity: str, receiver: str, timeout_s: float) -> SpfResult:
    addr = normalize_ip(ip)
    base = {"scope": scope, "identity": identity, "domain": domain, "helo": helo}
    if addr is None:
        return SpfResult(Result.NONE, client_ip=ip, reason="no valid client IP address", **base)
    raw = _evaluate_cached(addr, sender, helo, resolver, scope=scope, local=local, domain=domain,
                           receiver=receiver, timeout_s=timeout_s)
    if raw.crashed:
        return SpfResult(Result.PERMERROR, client_ip=addr, reason=f"SPF evaluation error: {raw.crashed}", **base)
    result = _RESULTS.get(raw.code, Result.PERMERROR)
    explanation = ""
    if result is Result.FAIL and raw.text != _NO_EXP:
        explanation = raw.text
    if result in (Result.PASS, Result.FAIL, Result.SOFTFAIL, Result.NEUTRAL):
        reason = f"matched {raw.mechanism}" if raw.mechanism else ""
    elif result in (Result.PERMERROR, Result.TEMPERROR):
        reason = raw.problem or raw.text
        reason = reason.removeprefix("SPF Permanent Error: ").removeprefix("SPF Temporary Error: ")
    else:
        reason = "no SPF record"
    return SpfResult(result, client_ip=addr, explanation=explanation, reason=one_line(reason), **base)


def check_spf(ip: str, mail_from: str, helo: str, resolver: _resolver.DnsLookup, *, receiver: str = "",
              timeout_s: float = 20.0) -> SpfResult:
    """check_host() for the MAIL FROM identity (RFC 7208 §2.4).

    A null reverse-path is checked as ``postmaster@HELO`` (still the MAIL FROM identity,
    which is what DMARC uses, RFC 9989 §3.2.4). A sender without "@" is a bare domain and
    an empty local part becomes "postmaster" (RFC 7208 §4.3).
    """
    sender = mail_from.strip()
    if sender:
        local, at, dom = sender.rpartition("@")
        if not at:
            local, dom = "", sender
    else:
        local, dom = "", helo
    local = local or "postmaster"
    domain = _ascii_domain(dom)
    identity = f"{local}@{domain}" if domain else local
    return _run(ip, identity, helo, resolver, scope="mailfrom", local=local, domain=domain,
                identity=identity, receiver=receiver, timeout_s=timeout_s)


def check_helo(ip: str, helo: str, resolver: _resolver.DnsLookup, *, receiver: str = "",
               timeout_s: float = 20.0) -> SpfResult:
    """check_host() for the HELO identity on its own (RFC 7208 §2.3): <sender> is
    postmaster@HELO and <domain> the HELO name; an address literal or a name that is not
    a multi-label domain gives ``none`` (§4.3)."""
    domain = _ascii_domain(helo)
    return _run(ip, "", helo, resolver, scope="helo", local="postmaster", domain=domain,
                identity=helo, receiver=receiver, timeout_s=timeout_s)


# ---------------------------------------------------------------------------
# Received-SPF (RFC 7208 §9.1)

_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


def _kv(value: str) -> str:
    """dot-atom when possible, else a quoted-string (RFC 7208 §9.1 key-value-pair)."""
    value = one_line(value)
    if _DOT_ATOM.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_COMMENTS = {
    Result.PASS: "domain of {d} designates {ip} as permitted sender",
    Result.FAIL: "domain of {d} does not designate {ip} as permitted sender",
    Result.SOFTFAIL: "domain of transitioning {d} does not designate {ip} as permitted sender",
    Result.NEUTRAL: "{ip} is neither permitted nor denied by domain of {d}",
    Result.NONE: "{d} does not designate permitted sender hosts",
    Result.PERMERROR: "permanent error in processing domain of {d}",
    Result.TEMPERROR: "temporary error in processing during lookup of {d}",
}


def received_spf_value(result: SpfResult, receiver: str) -> str:
    """The Received-SPF header value (RFC 7208 §9.1), starting with a space and folded
    with CRLF+TAB; every remote-supplied string is quoted or escaped."""
    comment = _COMMENTS.get(result.result, "{d}").format(d=result.domain or result.identity or "unknown",
                                                         ip=result.client_ip or "unknown")
    if receiver:
        comment = f"{receiver}: {comment}"
    # The comment may be broken between words (FWS is allowed in comments); key-value
    # pairs are kept whole so no quoted-string is ever folded.
    parts = [result.result.value] + f"({comment_text(comment)})".split()
    pairs: list[tuple[str, str]] = [("client-ip", result.client_ip)]
    if result.scope == "mailfrom":
        pairs.append(("envelope-from", result.identity))
    if result.helo:
        pairs.append(("helo", result.helo))
    if result.result is Result.PERMERROR and result.reason:
        pairs.append(("problem", result.reason))
    if receiver:
        pairs.append(("receiver", receiver))
    pairs.append(("identity", result.scope))
    for key, value in pairs:
        if value:
            parts.append(f"{key}={_kv(value)};")
    parts[-1] = parts[-1].rstrip(";")
    return _fold(parts)


def _fold(parts: list[str], width: int = 78) -> str:
    """Join *parts* with spaces, breaking lines between parts (never inside one)."""
    out, line = "", len("Received-SPF:")
    for i, part in enumerate(parts):
        if i and line + 1 + len(part) > width:
            out += "\r\n\t" + part
            line = 8 + len(part)
        else:
            out += " " + part
            line += 1 + len(part)
    return out
