"""One DKIM engine for signing, verifying and ARC (RFC 6376, RFC 8301, RFC 8463, RFC 8617).

    tags     tag lists and key records (RFC 6376 §3.2, §3.6.1)
    canon    header and body canonicalization, header selection, the one-pass body hasher
    sign     SigningKey, sign() -> DKIM-Signature value
    verify   verify_signature() -> results.DkimResult, key lookup through the resolver
    arc      ARC chain validation (RFC 8617 §5.2) and sealing (§5.1) on the same primitives

Imports only value modules (model, results, domain, errors) and the resolver interface.
dkimpy is not used here; the tests use it as an independent oracle.
"""
