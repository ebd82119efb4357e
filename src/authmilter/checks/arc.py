"""ARC chain validation (RFC 8617 §5.2) → ArcResult, on our own DKIM engine.

The mechanics live in `dkim.arc`; keys come through the resolver passed in, like
DKIM's. ARC is reported (``arc=`` in Authentication-Results) and does not by itself
change the policy decision.
"""
from __future__ import annotations

from ..dkim.arc import verify_chain
from ..dkim.verify import key_fetcher
from ..model import Message
from ..resolver import DnsLookup
from ..results import ArcResult


def check_arc(message: Message, resolver: DnsLookup, *, min_rsa_bits: int = 1024,
              now: int | None = None) -> ArcResult:
    """Validate *message*'s ARC chain: none without ARC header fields (or when DNS
    trouble keeps us from deciding, with a reason), else pass or fail (RFC 8617 §5.2)."""
    return verify_chain(message, key_fetcher(resolver), min_rsa_bits=min_rsa_bits, now=now)
