"""The ``[dnsbl] zones`` / ``[dnswl] zones`` grammar: ``ZONE[=FILTER][*WEIGHT]``.

The notation is the one Postfix's ``postscreen_dnsbl_sites`` made familiar, so an admin
can copy a line: ``zen.spamhaus.org=127.0.0.[2..11]*2``. FILTER is four dot-separated
octet patterns, each a number or a bracketed list of numbers and ``LOW..HIGH`` ranges
separated by ``;`` (``127.0.0.[2;4..7]``); without a filter any 127.0.0.0/8 answer
counts (lists answer inside 127/8; anything else is a wildcard-DNS accident). WEIGHT is
a positive integer (default 1); a zone may be listed several times with different
filters and weights.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_ZONE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+\.?")


def _octet(text: str) -> tuple[tuple[int, int], ...]:
    """One octet pattern -> inclusive ranges."""
    def number(t: str) -> int:
        if not t.isdigit() or int(t) > 255:
            raise ValueError(f"{t!r} is not an octet (0-255)")
        return int(t)

    if text.startswith("[") and text.endswith("]"):
        ranges = []
        for part in text[1:-1].split(";"):
            low, sep, high = part.partition("..")
            lo, hi = number(low), number(high) if sep else number(low)
            if lo > hi:
                raise ValueError(f"range {part!r} runs backwards")
            ranges.append((lo, hi))
        return tuple(ranges)
    value = number(text)
    return ((value, value),)


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    """One configured list: its zone, which answers count, and their weight."""

    zone: str
    weight: int = 1
    octets: tuple[tuple[tuple[int, int], ...], ...] | None = None   # None: any 127/8 answer
    text: str = ""

    def matches(self, answer: str) -> bool:
        """Whether the A record *answer* counts as a listing under this filter."""
        try:
            addr = ipaddress.IPv4Address(answer)
        except ValueError:
            return False
        parts = [int(p) for p in str(addr).split(".")]
        if self.octets is None:
            return parts[0] == 127
        return all(any(lo <= p <= hi for lo, hi in ranges) for p, ranges in zip(parts, self.octets, strict=True))


def parse_zone(text: str) -> ZoneSpec:
    """``ZONE[=FILTER][*WEIGHT]`` -> ZoneSpec; ValueError with the reason."""
    body = text.strip()
    weight = 1
    if "*" in body:
        body, _, w = body.rpartition("*")
        if not w.isdigit() or int(w) < 1:
            raise ValueError("the weight after * must be a positive integer")
        weight = int(w)
    zone, eq, filt = body.partition("=")
    zone = zone.strip().lower().rstrip(".")
    if not _ZONE.fullmatch(zone):
        raise ValueError("expected a DNS zone such as zen.spamhaus.org")
    octets = None
    if eq:
        pieces = re.findall(r"\[[^\]]*\]|[^.\[\]]+", filt.strip())
        if len(pieces) != 4 or ".".join(pieces) != filt.strip():
            raise ValueError("the filter needs four octet patterns, e.g. 127.0.0.[2..11]")
        octets = tuple(_octet(p) for p in pieces)
    return ZoneSpec(zone=zone, weight=weight, octets=octets, text=text.strip())
