"""The one validator through which a string becomes a domain name (and the one
normaliser for an IP address given as text).

OpenDMARC CVE-2020-12272 came from substring parsing of domains; here every domain is
lower-cased, IDNA-encoded to A-labels and checked for LDH syntax (RFC 5890, RFC 1123)
before it is compared or looked up.
"""
from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from .errors import DomainError

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Underscore labels appear in DNS names we *query* (_dmarc, _domainkey) and in some
# selectors, so they are allowed where a caller asks for a DNS name, not a host name.
_DNS_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


@lru_cache(maxsize=4096)
def normalize_domain(text: str, *, allow_underscore: bool = False) -> str:
    """Return the canonical A-label form of *text*, or raise DomainError.

    Accepts one trailing dot. Rejects empty labels, over-long names, and anything
    outside LDH after IDNA encoding.
    """
    if not isinstance(text, str):
        raise DomainError(f"not a string: {text!r}")
    name = text.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise DomainError("empty domain")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise DomainError(f"invalid IDN {text!r}: {exc}") from None
    name = name.lower()
    if len(name) > 253:
        raise DomainError(f"domain too long ({len(name)} octets)")
    labels = name.split(".")
    pattern = _DNS_LABEL if allow_underscore else _LABEL
    for label in labels:
        if not pattern.match(label):
            raise DomainError(f"invalid label {label!r} in {text!r}")
    return name


def is_subdomain(child: str, parent: str) -> bool:
    """True when *child* equals *parent* or lies below it (label-wise, never substring)."""
    return child == parent or child.endswith("." + parent)


def aligned(identifier: str, author: str, *, strict: bool = False, identifier_org: str = "",
            author_org: str = "") -> bool:
    """Identifier Alignment (RFC 9989 §3.2.10, §4.10.2), the one rule for DMARC and the
    own-domain check: identical names, or in relaxed mode the same Organizational
    Domain. When the organizational domains are not known (no DMARC evaluation), relaxed
    alignment narrows to one name lying under the other: never wider than the RFC's."""
    if identifier == author:
        return True
    if strict:
        return False
    if identifier_org and author_org:
        return identifier_org == author_org
    return is_subdomain(identifier, author) or is_subdomain(author, identifier)


@lru_cache(maxsize=4096)
def normalize_ip(text: str) -> str | None:
    """The canonical text of an IP address, an IPv4-mapped IPv6 address as its IPv4
    address (RFC 7208 §5 evaluates that one); None when *text* is not an address."""
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)
