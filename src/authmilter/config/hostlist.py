"""Host lists in OpenDKIM's grammar (InternalHosts, TrustedHosts, PeerList): the one
parser and matcher for ``signing.internal_hosts``, ``verify.trusted_relays`` and
``policy.trusted_forwarders``.

Entries are IP addresses, CIDR networks and host names (``.domain`` for a whole domain),
each optionally negated with ``!``; datasets ``file:``/``refile:``/``csl:`` as in
config/opendkim. Lists are parsed once at load; checks receive only the matcher.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from ..errors import ConfigError
from .opendkim import Dataset, _lower, glob_to_regex


def ntop(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """inet_ntop(3) text as glibc writes it (IPv4-mapped and -compatible IPv6 keep dotted quads)."""
    if addr.version == 4:
        return str(addr)
    assert isinstance(addr, ipaddress.IPv6Address)
    value = int(addr)
    high, low = value >> 32, value & 0xFFFFFFFF
    if high == 0xFFFF:
        return "::ffff:" + str(ipaddress.IPv4Address(low))
    if high == 0 and (low >> 16) != 0:
        return "::" + str(ipaddress.IPv4Address(low))
    return str(addr)


_HOSTNAME = re.compile(r"\.?[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")


def _check_host_entry(entry: str, file: str, line: int | None, key: str = "") -> str:
    """Validate one exact (non-pattern) host list entry; return it lower-cased.

    OpenDKIM compares text: an address must be written as inet_ntop() writes it and a
    CIDR must name its network address, or the entry silently never matches.
    """
    def bad(reason: str) -> ConfigError:
        return ConfigError(file, key, f"{entry!r}: {reason}", line)

    body = entry.removeprefix("!")
    if not body:
        raise bad("empty entry")
    addr_part, slash, bits = body.partition("/")
    core = addr_part[1:-1] if addr_part.startswith("[") and addr_part.endswith("]") else addr_part
    if ":" in core or re.fullmatch(r"[0-9.]+", core):
        try:
            ip = ipaddress.ip_address(core)
        except ValueError:
            raise bad("not an IP address (write all four octets of an IPv4 address)") from None
        canon = ntop(ip)
        if _lower(core) != canon:
            raise bad(f"write {canon!r}: OpenDKIM compares the text form and would never match this")
        if slash:
            maxbits = 32 if ip.version == 4 else 128
            if not bits.isdigit() or str(int(bits)) != bits or int(bits) > maxbits:
                raise bad(f"bad prefix length /{bits}")
            net = ipaddress.ip_network(f"{core}/{bits}", strict=False)
            if net.network_address != ip:
                raise bad(f"host bits set; write {ntop(net.network_address)}/{bits} "
                          "(OpenDKIM never matches this form)")
    elif slash:
        raise bad("a /prefix needs an IP address")
    elif core != addr_part or not _HOSTNAME.fullmatch(core):
        raise bad("not an IP address, CIDR network or host name")
    return _lower(entry)


class HostList:
    """InternalHosts / TrustedHosts / PeerList membership, as dkimf_checkhost() + dkimf_checkip().

    Entries: host names (``mail.example.com``), domains (``.example.com``), IPv4/IPv6
    addresses and CIDR networks, each optionally in ``[brackets]``; ``!`` negates. The
    client host name is tried first (full name, then each parent ``.domain``; a ``!`` hit
    stops the name check), then the address: exact, then every prefix from the longest to
    /0, the negated form before the plain one at each step — so the most specific entry
    wins (``192.168.1.1`` beats ``!192.168.1.0/24``). An IPv4-mapped IPv6 client address
    is checked as IPv4 (Postfix presents IPv4 clients as IPv4 anyway).
    """

    def __init__(self, exact: frozenset[str], patterns: tuple[re.Pattern[str], ...] = (),
                 items: tuple[str, ...] = ()) -> None:
        self._exact = exact
        self._patterns = patterns
        self.items = items
        self._ipmap = self._index(exact)
        self._memo: dict[tuple[str | None, str], bool] = {}

    @staticmethod
    def _index(exact: frozenset[str]) -> dict[tuple[int, int | None, int], bool]:
        """(IP version, prefix or None, network as int) -> verdict, for the address check.

        Exact entries are validated as inet_ntop() text, so a string lookup of OpenDKIM's
        query "NET/BITS" equals this integer lookup. Where several entries share a key,
        the one OpenDKIM asks first wins: "!x", "x", "![x]", "[x]".
        """
        best: dict[tuple[int, int | None, int], tuple[int, bool]] = {}
        for entry in exact:
            neg = entry.startswith("!")
            addr, slash, bits = entry.removeprefix("!").partition("/")
            bracketed = addr.startswith("[") and addr.endswith("]")
            try:
                ip = ipaddress.ip_address(addr[1:-1] if bracketed else addr)
            except ValueError:
                continue            # a host name
            key = (ip.version, int(bits) if slash else None, int(ip))
            rank = (2 if bracketed else 0) + (0 if neg else 1)
            if key not in best or rank < best[key][0]:
                best[key] = (rank, not neg)
        return {k: v for k, (_, v) in best.items()}

    @classmethod
    def load(cls, items: Sequence[str], *, source: str = "<config>",
             setting: str = "signing.internal_hosts", addresses_only: bool = False) -> HostList:
        """*items* are entries, or datasets ``file:/path``, ``refile:/path``, ``csl:a,b`` or ``/path``.

        *addresses_only*: a list matched against addresses we did not verify a name for
        (trusted relays named in Received headers) refuses host names and ``!``, which
        could never match there.
        """
        exact: set[str] = set()
        patterns: list[re.Pattern[str]] = []
        for raw in items:
            item = raw.strip()
            if addresses_only and not item.startswith(("file:", "refile:", "csl:", "/")):
                try:
                    ipaddress.ip_network(item.strip("[]"), strict=False)
                except ValueError:
                    raise ConfigError(source, setting, f"{item!r}: not an IP address or CIDR network "
                                      "(this list is matched by address only)") from None
            if item.startswith(("file:", "refile:", "csl:", "/")):
                ds = Dataset.open(item, icase=True, source=source, setting=setting)
                for rec in ds.records:
                    if ds.kind == "refile":
                        patterns.append(glob_to_regex(rec.key, icase=True, where=(rec.file, rec.line)))
                    else:
                        exact.add(_check_host_entry(rec.key, rec.file, rec.line) if ds.kind == "file"
                                  else _check_host_entry(rec.key, source, None, setting))
            else:
                exact.add(_check_host_entry(item, source, None, setting))
        return cls(frozenset(exact), tuple(patterns), tuple(items))

    def _exists(self, key: str) -> bool:
        return _lower(key) in self._exact or any(rx.search(key) for rx in self._patterns)

    def _check(self, key: str) -> bool | None:
        """True/False when *key* (or its negation) is listed, None when neither is."""
        if self._exists("!" + key):
            return False
        if self._exists(key):
            return True
        return None

    def contains_host(self, hostname: str) -> bool:
        host = hostname.strip()
        if not host:
            return False
        candidates = [host] + [host[i:] for i in range(1, len(host)) if host[i] == "."]
        for cand in candidates:
            hit = self._check(cand)
            if hit is not None:
                return hit
        return False

    def contains_ip(self, ip: str | None) -> bool:
        if not ip or not (self._exact or self._patterns):
            return False  # nothing listed (the usual trusted_relays): no address walk
        text = ip.strip().strip("[]")
        if text[:5].lower() == "ipv6:":
            text = text[5:]
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        maxbits = addr.max_prefixlen
        if not self._patterns:
            # The same walk with integers: exact address, then every prefix, longest first.
            value, version = int(addr), addr.version
            hit = self._ipmap.get((version, None, value))
            if hit is not None:
                return hit
            full = (1 << maxbits) - 1
            for bits in range(maxbits, -1, -1):
                hit = self._ipmap.get((version, bits, value & (full ^ ((1 << (maxbits - bits)) - 1))))
                if hit is not None:
                    return hit
            return False
        text = ntop(addr)
        for key in (text, f"[{text}]"):
            hit = self._check(key)
            if hit is not None:
                return hit
        for bits in range(maxbits, -1, -1):
            net = ipaddress.ip_network(f"{addr}/{bits}", strict=False)
            naddr = ntop(net.network_address)
            for key in (f"{naddr}/{bits}", f"[{naddr}]/{bits}"):
                hit = self._check(key)
                if hit is not None:
                    return hit
        return False

    def contains(self, ip: str | None, hostname: str = "") -> bool:
        """Is the client (address, MTA-verified host name) on the list? Host name first.

        Verdicts are memoised per client (the list never changes after load; an IPv6
        miss walks 129 prefixes), in a bounded dict: plain dict operations are atomic
        under the GIL, so worker threads may share it."""
        key = (ip, hostname)
        hit = self._memo.get(key)
        if hit is None:
            hit = self.contains_host(hostname) or self.contains_ip(ip)
            if len(self._memo) >= 4096:
                self._memo.clear()
            self._memo[key] = hit
        return hit
