"""Greylisting (the technique of Harris, 2003, as postgrey and others apply it) on the
identity that authenticated.

A delivery attempt is a triplet (identity, sender, recipient). A new triplet is deferred
until ``delay_s`` has passed; a retry after that (within ``retry_window_s`` of the first
attempt) passes, and the triplet stays known for ``max_age_days`` after it was last seen.

The identity is what authenticated, when something did: the MAIL FROM domain when SPF
passed for it ("spf:example.org"), or, at end-of-message, the domain of a verifying DKIM
signature aligned with the From domain ("dkim:example.org"). Only then is it the client
network (IPv4 /24, IPv6 /64 by default: "net:192.0.2.0/24"). So a retry from another
address of a sender's pool (Office 365, Gmail) matches the first attempt, and a domain
that passed once for a recipient is not delayed again for that recipient (the "pair"
key). After ``auto_allow_after`` deliveries that passed by retrying, an identity is
allowed without delay (postgrey's auto-whitelist, per network or per domain).

Publishing SPF is no free pass: the first mail of an SPF-pass domain to a recipient is
still deferred once; what SPF buys is that the retry may come from anywhere in the pool.

The store is passed in (anything with ``get``/``put``, see `KeyValue`); its errors
propagate to the caller, which applies ``on_store_error``.
"""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Protocol

from ..results import GreylistResult

__all__ = ["GreylistParams", "KeyValue", "Triplet", "check", "client_network", "identity", "normalize_sender"]


class KeyValue(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes, ttl_s: float) -> None: ...


@dataclass(frozen=True, slots=True)
class GreylistParams:
    delay_s: float = 300.0
    retry_window_s: float = 172800.0
    auto_allow_after: int = 5
    max_age_s: float = 35 * 86400.0


# SRS (Shevek's scheme as used by postsrsd, pfix-srsd): SRS0=HHH=TT=domain=local@fwd, and
# SRS1=HHH=fwd1==HHH=TT=domain=local@fwd2 which wraps an SRS0 address.
_SRS0 = re.compile(r"^srs0[=+-][^=]*=[^=]*=([^=]+)=(.+)$", re.IGNORECASE)
_SRS1 = re.compile(r"^srs1[=+-][^=]*=[^=]*==[^=]*=[^=]*=([^=]+)=(.+)$", re.IGNORECASE)
# BATV (draft-levine-smtp-batv): prvs=TAG=local, and the variants seen in the wild.
_BATV = re.compile(r"^(?:prvs|msprvs\d*|btv1=?)=[^=]+=+(.+)$", re.IGNORECASE)


def normalize_sender(address: str) -> str:
    """The envelope sender as the triplet keeps it: lower case, with the per-message tags
    that would make every retry a new triplet removed: SRS rewriting (the original
    address), BATV signing, sub-addresses (``user+tag``) and VERP-style digit runs
    (``bounce-1234-5678@`` -> ``bounce-#-#@``). ``<>`` stays empty."""
    addr = address.strip().strip("<>").lower()
    if "@" not in addr:
        return addr
    local, _, domain = addr.rpartition("@")
    for _ in range(3):   # an SRS1 unwraps to an SRS0, which unwraps to the original
        m = _SRS1.match(local) or _SRS0.match(local)
        if not m:
            break
        domain, local = m.group(1), m.group(2)
    m = _BATV.match(local)
    if m:
        local = m.group(1)
    local = local.split("+", 1)[0] if not local.startswith("+") else local
    local = re.sub(r"\d+", "#", local)
    return f"{local}@{domain}"


def client_network(ip: str, ipv4_prefix: int = 24, ipv6_prefix: int = 64) -> str:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    bits = ipv4_prefix if addr.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


def identity(ip: str, *, spf_domain: str = "", dkim_domain: str = "", ipv4_prefix: int = 24,
             ipv6_prefix: int = 64) -> str:
    """The triplet's first member: the authenticated domain if any, else the network."""
    if spf_domain:
        return "spf:" + spf_domain.lower()
    if dkim_domain:
        return "dkim:" + dkim_domain.lower()
    return "net:" + client_network(ip, ipv4_prefix, ipv6_prefix)


@dataclass(frozen=True, slots=True)
class Triplet:
    identity: str
    sender: str          # normalised
    recipient: str       # lower case

    @property
    def authenticated(self) -> bool:
        return not self.identity.startswith("net:")

    def key(self) -> str:
        return f"greylist:t:{self.identity}|{self.sender}|{self.recipient}"

    def pair_key(self) -> str:
        """An authenticated domain and the recipient, whatever the sender's local part."""
        return f"greylist:p:{self.identity.split(':', 1)[1]}|{self.recipient}"

    def counter_key(self) -> str:
        return f"greylist:c:{self.identity}"


def _load(raw: bytes | None) -> dict[str, float]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _dump(value: dict[str, float]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def check(store: KeyValue, triplet: Triplet, now: float, params: GreylistParams) -> GreylistResult:
    """Pass or defer one delivery attempt, and record it. StoreError propagates."""
    counter = _load(store.get(triplet.counter_key())) if params.auto_allow_after else {}
    if params.auto_allow_after and counter.get("n", 0) >= params.auto_allow_after:
        return GreylistResult(True, triplet.identity, "auto-allowed")
    if triplet.authenticated:
        pair = _load(store.get(triplet.pair_key()))
        if pair:
            store.put(triplet.pair_key(), _dump({"last": now}), params.max_age_s)
            return GreylistResult(True, triplet.identity, "known domain and recipient")
    state = _load(store.get(triplet.key()))
    first = float(state.get("first", 0.0))
    if not state:
        store.put(triplet.key(), _dump({"first": now}), params.retry_window_s)
        return GreylistResult(False, triplet.identity, "new", retry_at=now + params.delay_s)
    if state.get("passed"):
        store.put(triplet.key(), _dump({"first": first, "passed": 1, "last": now}), params.max_age_s)
        return GreylistResult(True, triplet.identity, "known")
    if now < first + params.delay_s:
        # Early retries do not restart the clock (postgrey neither): the first attempt counts.
        return GreylistResult(False, triplet.identity, "too early", retry_at=first + params.delay_s)
    store.put(triplet.key(), _dump({"first": first, "passed": 1, "last": now}), params.max_age_s)
    if triplet.authenticated:
        store.put(triplet.pair_key(), _dump({"last": now}), params.max_age_s)
    if params.auto_allow_after:
        store.put(triplet.counter_key(), _dump({"n": counter.get("n", 0) + 1, "last": now}), params.max_age_s)
    return GreylistResult(True, triplet.identity, f"retried after {now - first:.0f}s")
