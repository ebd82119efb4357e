"""ARC chain validation (RFC 8617 §5.2) through dkimpy, with DNS from our resolver.

dkimpy implements the chain rules; this module feeds it the message and our resolver,
and turns its verdict into an ArcResult. ARC is reported (``arc=`` in
Authentication-Results) and does not by itself change the policy decision.
"""
from __future__ import annotations

import dkim

from ..model import Message
from ..resolver import DnsLookup, dkim_dnsfunc
from ..results import ArcResult, Result

_CV = {b"pass": Result.PASS, b"fail": Result.FAIL, b"none": Result.NONE}


def check_arc(message: Message, resolver: DnsLookup, *, min_rsa_bits: int = 1024) -> ArcResult:
    if not message.get_all("ARC-Seal") and not message.get_all("ARC-Message-Signature") \
            and not message.get_all("ARC-Authentication-Results"):
        return ArcResult(Result.NONE)
    # dkimpy wants the whole message as one bytes object: a full copy of the (spooled)
    # body, made only here, for the few messages that carry ARC headers at all.
    raw = message.as_bytes()
    try:
        cv, results, reason = dkim.arc_verify(raw, dnsfunc=dkim_dnsfunc(resolver), minkey=min_rsa_bits)
    except TimeoutError as exc:
        # RFC 8617 registers only none/pass/fail for arc=; a DNS failure cannot prove the chain.
        return ArcResult(Result.NONE, reason=f"temporary DNS failure: {exc}")
    except (dkim.DKIMException, ValueError, IndexError, KeyError, UnicodeError) as exc:
        return ArcResult(Result.FAIL, reason=f"malformed ARC set: {exc}")
    result = _CV.get(cv or b"", Result.FAIL)
    instances = len(results or [])
    domains = tuple(
        (r.get("as-domain") or b"").decode("ascii", "replace") for r in (results or []) if isinstance(r, dict)
    )
    oldest = 0
    if result is Result.PASS and results:
        oldest = min(int(r.get("instance", 0) or 0) for r in results if isinstance(r, dict)) or 0
    text = reason.decode() if isinstance(reason, bytes) else str(reason or "")
    return ArcResult(result, instances=instances, reason=text if result is not Result.PASS else "",
                     oldest_pass=oldest if result is Result.PASS else 0, domains=domains)
