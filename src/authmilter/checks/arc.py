"""ARC chain validation (RFC 8617 §5.2) → ArcResult, on our own DKIM engine.

The mechanics live in `dkim.arc`; keys come through the resolver passed in, like
DKIM's. ARC is reported (``arc=`` in Authentication-Results). For a chain that
validates, the result also lists every ARC set with what its ARC-Authentication-Results
says (`ArcResult.sealers`): policy.py reads them for ``[arc] trusted_sealers`` (a
trusted sealer that saw the message authenticate before it was forwarded). Those
verdicts are read only from sets whose seals verified; a failed chain carries none.
"""
from __future__ import annotations

from dataclasses import replace

from ..dkim.arc import collect, verify_chain
from ..dkim.verify import key_fetcher
from ..model import Message
from ..resolver import DnsLookup
from ..results import ArcResult, ArcSealer, ArcVerdict, Result
from .authres import parse_authres


def check_arc(message: Message, resolver: DnsLookup, *, min_rsa_bits: int = 1024,
              now: int | None = None) -> ArcResult:
    """Validate *message*'s ARC chain: none without ARC header fields (or when DNS
    trouble keeps us from deciding, with a reason), else pass or fail (RFC 8617 §5.2)."""
    result = verify_chain(message, key_fetcher(resolver), min_rsa_bits=min_rsa_bits, now=now)
    if result.result is not Result.PASS:
        return result
    return replace(result, sealers=sealers(message))


def sealers(message: Message) -> tuple[ArcSealer, ...]:
    """Every ARC set of *message*, oldest first: the seal's d= and the AAR's verdicts.
    For a chain `verify_chain` passed (its structure is then known to be whole)."""
    chain = collect(message.headers)
    out = []
    for i in range(1, chain.highest + 1):
        arc_set = chain.sets.get(i)
        tags = chain.seal_tags.get(i, {})
        if arc_set is None or len(arc_set.aar) != 1:
            return ()
        domain = tags["d"].value.decode("utf-8", "replace").strip().lower().rstrip(".") if "d" in tags else ""
        parsed = parse_authres(message.headers[arc_set.aar[0]][1])
        verdicts = tuple(ArcVerdict(r.method, r.result, tuple((k.lower(), v) for k, v in r.props))
                         for r in parsed.results)
        out.append(ArcSealer(i, domain, parsed.authserv_id or "", verdicts))
    return tuple(out)
