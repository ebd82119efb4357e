"""Inbound DKIM verification (RFC 6376 §6, RFC 8301, RFC 8463) → DkimResult values.

One result per DKIM-Signature, in header order, up to *max_signatures*; the mechanics
live in the `dkim` package. The key is fetched through the resolver passed in; DNS trouble is a
temperror result, a missing or broken record a permerror (RFC 6376 §6.1.2).
"""
from __future__ import annotations

from .. import model
from ..dkim.canon import body_digests
from ..dkim.tags import TagListError, parse_tag_list
from ..dkim.verify import body_specs, dkim_signature_indexes, key_fetcher, verify_signature
from ..domain import DomainError, normalize_domain
from ..resolver import DnsLookup
from ..results import DkimResult, Result


def verify_dkim(message: model.Message, resolver: DnsLookup, *, max_signatures: int = 8,
                min_rsa_bits: int = 1024, allow_sha1: bool = False,
                now: int | None = None, require_dnssec: bool = False) -> tuple[DkimResult, ...]:
    """Verify every DKIM-Signature of *message* (RFC 6376 §6.1), at most *max_signatures*.

    Returns () when there is none. Signatures beyond the cap are not verified; they
    add one permerror result with reason "too many signatures". Results follow RFC 8601
    §2.7.1: pass, fail (body hash or signature mismatch, expired), policy (verified but
    rsa-sha1 or an RSA key under *min_rsa_bits*, RFC 8301), neutral (unsupported
    algorithm), temperror (DNS), permerror (syntax, missing or revoked key).
    Each result carries ``dnssec`` (the key answer's AD flag) when the resolver asks for
    DNSSEC; *require_dnssec* is `key_fetcher`'s (``[dns] dnssec = "require-for-keys"``).
    """
    indexes = dkim_signature_indexes(message.headers)
    if not indexes:
        return ()
    fetch = key_fetcher(resolver, require_dnssec=require_dnssec)
    checked = indexes[:max_signatures]
    # Every body hash the signatures ask for, in one pass over the (spooled) body.
    body_cache = body_digests(message.body, body_specs(message.headers, checked))
    results = [verify_signature(message.headers, index, message.body, fetch, min_rsa_bits=min_rsa_bits,
                                allow_sha1=allow_sha1, now=now, body_cache=body_cache)
               for index in checked]
    if len(indexes) > max_signatures:
        results.append(DkimResult(result=Result.PERMERROR, reason="too many signatures"))
    return tuple(results)


def key_name(value: bytes) -> str | None:
    """The key record name a DKIM-Signature value points at (``s._domainkey.d``,
    RFC 6376 §3.6.2.1), or None when d= or s= is missing or not a domain: the name
    `verify_dkim` will query for it."""
    try:
        tags = parse_tag_list(value)
        d, s = tags.get("d"), tags.get("s")
        if d is None or s is None:
            return None
        domain = normalize_domain(d.value.decode("utf-8", "replace"), allow_underscore=True)
        selector = normalize_domain(s.value.decode("utf-8", "replace"), allow_underscore=True)
    except (TagListError, DomainError):
        return None
    return f"{selector}._domainkey.{domain}"
