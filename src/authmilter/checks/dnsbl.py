"""DNS blocklists and allowlists for the client IP (RFC 5782).

The query name is the address reversed under the zone: IPv4 octets
(``2.0.0.192.zen.spamhaus.org``), IPv6 nibbles (RFC 5782 §2.4). Queries for every zone
start together when the client connects (`start`, with whatever thread pool the caller
passes in: this module creates none) and are collected when the answer is needed
(`collect`, bounded by a deadline), so by RCPT time the lists have usually answered.

What lists document and this module honours:
- answers in 127.255.255.0/24 mean "query refused" (Spamhaus: public or unregistered
  resolver, over quota): an operator error, reported in ``refused``, never a listing;
- a timeout or SERVFAIL is not a listing (``unanswered``);
- only answers the zone's filter accepts count; each listing adds the zone's weight, and
  the client is listed when the total reaches the threshold.
"""
from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Protocol

from ..resolver import Answer, DnsLookup
from ..results import DnsListing, DnsListResult

__all__ = ["Zone", "collect", "combine", "query_name", "query_zone", "start"]


class Zone(Protocol):
    """A configured list (config.dnslists.ZoneSpec): zone, weight and answer filter."""

    @property
    def zone(self) -> str: ...

    @property
    def weight(self) -> int: ...

    def matches(self, answer: str) -> bool: ...


ZoneAnswer = tuple[Zone, Answer | None]    # None: not answered before the deadline


def query_name(ip: str, zone: str) -> str:
    """RFC 5782 §2.1 (IPv4 reversed octets) and §2.4 (IPv6 reversed nibbles)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.version == 4:
        rev = ".".join(reversed(str(addr).split(".")))
    else:
        rev = ".".join(reversed(addr.exploded.replace(":", "")))
    return f"{rev}.{zone}"


def query_zone(ip: str, zone: Zone, resolver: DnsLookup) -> ZoneAnswer:
    return zone, resolver.query(query_name(ip, zone.zone), "A")


def start(ip: str, zones: Sequence[Zone], resolver: DnsLookup,
          submit: Callable[..., Future[ZoneAnswer]]) -> list[Future[ZoneAnswer]]:
    """One query per zone, all at once: *submit* is an executor's ``submit``."""
    return [submit(query_zone, ip, z, resolver) for z in zones]


def collect(futures: Sequence[Future[ZoneAnswer]], zones: Sequence[Zone], deadline: float,
            threshold: int) -> DnsListResult:
    """Wait for the answers until *deadline* (time.monotonic()); late ones are unanswered."""
    answers: list[ZoneAnswer] = []
    for zone, fut in zip(zones, futures, strict=True):
        try:
            answers.append(fut.result(timeout=max(0.0, deadline - time.monotonic())))
        except Exception:  # noqa: BLE001 - a late or failed lookup is "not answered", never a listing
            answers.append((zone, None))
    return combine(answers, threshold)


def combine(answers: Sequence[ZoneAnswer], threshold: int) -> DnsListResult:
    listings: list[DnsListing] = []
    refused: list[tuple[str, str]] = []
    unanswered: list[str] = []
    for zone, answer in answers:
        if answer is None or answer.temporary:
            unanswered.append(zone.zone)
            continue
        if not answer.ok:
            continue   # NXDOMAIN / NODATA: not listed
        records = [str(r) for r in answer.records]
        bad = [r for r in records if r.startswith("127.255.255.")]
        if bad:
            refused.extend((zone.zone, r) for r in bad)
            continue
        counted = tuple(r for r in records if zone.matches(r))
        if counted:
            listings.append(DnsListing(zone.zone, counted, zone.weight))
    score = sum(x.weight for x in listings)
    return DnsListResult(listings=tuple(listings), score=score, listed=bool(listings) and score >= threshold,
                         refused=tuple(refused), unanswered=tuple(dict.fromkeys(unanswered)))
