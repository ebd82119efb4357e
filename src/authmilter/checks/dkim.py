"""Inbound DKIM verification (RFC 6376 §6, RFC 8301, RFC 8463) → DkimResult values.

One result per DKIM-Signature, in header order, up to *max_signatures*; the mechanics
live in `dkimcore`. The key is fetched through the resolver passed in; DNS trouble is a
temperror result, a missing or broken record a permerror (RFC 6376 §6.1.2).
"""
from __future__ import annotations

from collections.abc import Sequence

from .. import dkimcore, model
from ..resolver import DnsLookup, DnsStatus
from ..results import DkimResult, Result


def _key_fetcher(resolver: DnsLookup):  # type: ignore[no-untyped-def]
    def fetch(name: str) -> tuple[Result | None, str, Sequence[bytes]]:
        answer = resolver.query(name, "TXT")
        if answer.status is DnsStatus.TEMPERROR:
            return Result.TEMPERROR, f"key lookup failed: {answer.error or 'DNS temporary failure'}", ()
        if answer.status is not DnsStatus.OK or not answer.records:
            return Result.PERMERROR, "no key", ()
        return None, "", answer.records

    return fetch


def verify_dkim(message: model.Message, resolver: DnsLookup, *, max_signatures: int = 8,
                min_rsa_bits: int = 1024, allow_sha1: bool = False,
                now: int | None = None) -> tuple[DkimResult, ...]:
    """Verify every DKIM-Signature of *message* (RFC 6376 §6.1), at most *max_signatures*.

    Returns () when there is none. Signatures beyond the cap are not verified; they
    add one permerror result with reason "too many signatures". Results follow RFC 8601
    §2.7.1: pass, fail (body hash or signature mismatch, expired), policy (verified but
    rsa-sha1 or an RSA key under *min_rsa_bits*, RFC 8301), neutral (unsupported
    algorithm), temperror (DNS), permerror (syntax, missing or revoked key).
    """
    indexes = dkimcore.dkim_signature_indexes(message.headers)
    if not indexes:
        return ()
    fetch = _key_fetcher(resolver)
    checked = indexes[:max_signatures]
    # Every body hash the signatures ask for, in one pass over the (spooled) body.
    body_cache = dkimcore.body_digests(message.body, dkimcore.body_specs(message.headers, checked))
    results = []
    for index in checked:
        v = dkimcore.verify_signature(message.headers, index, message.body, fetch, min_rsa_bits=min_rsa_bits,
                                      allow_sha1=allow_sha1, now=now, body_cache=body_cache)
        results.append(DkimResult(result=v.result, domain=v.domain, selector=v.selector, algorithm=v.algorithm,
                                  identity=v.identity, b_prefix=v.b_prefix, has_length_tag=v.has_length_tag,
                                  key_bits=v.key_bits, testing=v.testing, reason=v.reason))
    if len(indexes) > max_signatures:
        results.append(DkimResult(result=Result.PERMERROR, reason="too many signatures"))
    return tuple(results)
