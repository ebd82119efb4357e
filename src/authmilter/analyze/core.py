"""Read a message's path the way an expert reads it: the hops, who checked what where,
and where authentication went wrong (``authmilter analyze``).

Pure and offline: bytes in, an `Analysis` (frozen values) out. The JSON and the text
renderer both read that value; neither parses the other.

How the headers are read:

* Received headers (RFC 5321 §4.4) are prepended, so the bottom one is hop 1. Each is
  parsed by `checks.received.parse_received`, the project's one Received parser.
* A trace header (Authentication-Results, RFC 8601 §5; Received-SPF, RFC 7208 §9.1;
  ARC-Authentication-Results, RFC 8617 §4.1.1; X-...-Spam) is prepended above the
  Received header its writer added, so it belongs to the nearest Received header
  *below* it. One below every Received header is matched by its authserv-id.
* Hosts: the receiver of hop k sent hop k+1, so they are one host; hosts that share an
  address or a name across the chain are one host too (a relay seen from both sides).
* Organisations: a hop over a non-routable address, or between hosts that share a
  registered domain (Public Suffix List), stays inside one organisation; any other hop
  enters another. A host seen twice keeps its organisation.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from ..authresults import ParsedResinfo, parse_authres, parse_received_spf
from ..checks.orgdomain import org_domain_psl
from ..checks.received import ReceivedFields, parse_received
from ..checks.rfc5322 import one_line
from ..domain import normalize_ip
from ..model import Message, header_key
from .software import software_of

__all__ = ["Analysis", "Finding", "Hint", "Hop", "Host", "Result", "Scope", "address_scope", "analyze",
           "read_message"]

MAX_HOPS = 1000            # a longer chain is cut (oldest kept out): bounded work on hostile input
MAX_RESULTS = 2000
_MAX_NAME = 255            # DNS names are shorter; longer "names" are garbage, kept bounded


class Scope(StrEnum):
    """Where an address is routable (RFC 6890 special-purpose registries)."""

    PUBLIC = "public"
    PRIVATE = "private"              # RFC 1918
    SHARED = "shared"                # RFC 6598 carrier-grade NAT
    LOOPBACK = "loopback"
    LINK_LOCAL = "link-local"
    ULA = "ula"                      # RFC 4193 IPv6 unique local
    DOCUMENTATION = "documentation"  # RFC 5737, RFC 3849: examples and tests
    RESERVED = "reserved"


# Addresses that never cross the Internet: a hop over one stays inside an organisation.
INTERNAL = frozenset({Scope.PRIVATE, Scope.SHARED, Scope.LOOPBACK, Scope.LINK_LOCAL, Scope.ULA})
# Addresses of a network between machines (not a host talking to itself): they reveal a layout.
NETWORK_INTERNAL = INTERNAL - {Scope.LOOPBACK}
_NETS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, Scope], ...] = tuple(
    (ipaddress.ip_network(net), scope) for net, scope in (
        ("10.0.0.0/8", Scope.PRIVATE), ("172.16.0.0/12", Scope.PRIVATE), ("192.168.0.0/16", Scope.PRIVATE),
        ("100.64.0.0/10", Scope.SHARED), ("127.0.0.0/8", Scope.LOOPBACK), ("::1/128", Scope.LOOPBACK),
        ("169.254.0.0/16", Scope.LINK_LOCAL), ("fe80::/10", Scope.LINK_LOCAL), ("fc00::/7", Scope.ULA),
        ("192.0.2.0/24", Scope.DOCUMENTATION), ("198.51.100.0/24", Scope.DOCUMENTATION),
        ("203.0.113.0/24", Scope.DOCUMENTATION), ("2001:db8::/32", Scope.DOCUMENTATION),
        ("3fff::/20", Scope.DOCUMENTATION)))


def address_scope(ip: str | None) -> Scope | None:
    """The scope of an address given as text; None when it is not one."""
    if not ip:
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    for net, scope in _NETS:
        if addr.version == net.version and addr in net:
            return scope
    return Scope.PUBLIC if addr.is_global else Scope.RESERVED


# ---------------------------------------------------------------------------
# the values


@dataclass(frozen=True, slots=True)
class Hop:
    """One Received header, numbered from the oldest (1)."""

    index: int
    from_name: str
    from_ip: str | None
    rdns: str
    helo: str
    by_name: str
    by_ip: str | None
    protocol: str
    via: str
    id: str
    recipient: str
    timestamp: datetime | None
    delay_s: float | None          # since the previous hop's timestamp
    scope: Scope | None            # of from_ip
    by_scope: Scope | None
    software: str | None
    from_host: int                 # Host.id of the sender and of the receiver
    by_host: int
    own_relay: bool                # from_ip is one of this server's relays (-c CONFIG)


@dataclass(frozen=True, slots=True)
class Host:
    """One machine as the chain shows it: every name and address it was seen with."""

    id: int
    names: tuple[str, ...]
    ips: tuple[str, ...]
    positions: tuple[int, ...]     # k: the receiver of hop k (0: the first sender)


@dataclass(frozen=True, slots=True)
class Result:
    """One authentication verdict found in the headers."""

    hop: int | None                # the hop whose receiver wrote it; None when unknown
    source: str                    # header name as written
    method: str
    result: str
    client_ip: str | None
    authserv_id: str | None
    domain: str                    # smtp.mailfrom / header.d / header.from, as written
    detail: str                    # comments and reason
    instance: int | None = None    # ARC i=
    srs: bool = False              # SPF's MAIL FROM is an SRS address (SRS0=/SRS1=): rewritten by a forwarder


@dataclass(frozen=True, slots=True)
class Hint:
    """A topology observation (not a fault)."""

    kind: str                      # two-addresses | dmz-transit | leaves-and-reenters | relay-revisited
    hop: int
    text: str
    ips: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Finding:
    """Something that went wrong, or that the headers give away, with its evidence."""

    kind: str
    hop: int | None
    text: str
    client_ip: str | None = None
    origin_ip: str | None = None
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Analysis:
    hops: tuple[Hop, ...]
    hosts: tuple[Host, ...]
    results: tuple[Result, ...]
    hints: tuple[Hint, ...]
    findings: tuple[Finding, ...]
    origin_ip: str | None          # the oldest routable sender address
    trusted_relays_proposal: tuple[str, ...]
    subject: str
    notes: tuple[str, ...] = ()
    config_used: bool = False


# ---------------------------------------------------------------------------
# reading


def _strip_mbox(raw: bytes) -> bytes:
    """Drop an mbox ``From `` separator line (and a leading BOM or blank lines)."""
    data = raw.removeprefix(b"\xef\xbb\xbf").lstrip(b"\r\n")
    if data.startswith(b"From "):
        _, _, data = data.partition(b"\n")
    return data


def read_message(raw: bytes) -> Message:
    """The message in *raw* as analyze reads it (an mbox ``From `` line dropped)."""
    return Message.from_bytes(_strip_mbox(raw))


def _name(text: str) -> str:
    return one_line(text)[:_MAX_NAME]


def _text(value: bytes) -> str:
    return " ".join(value.decode("utf-8", "replace").split())


_HOSTNAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)+")


def _host_key(name: str) -> str | None:
    """A name fit to identify a host across hops: dotted, LDH, not a placeholder."""
    n = name.lower().rstrip(".")
    if not _HOSTNAME.fullmatch(n) or n.startswith("localhost") or normalize_ip(n):
        return None
    return n


class _Union:
    def __init__(self) -> None:
        self.parent: dict[object, object] = {}

    def find(self, x: object) -> object:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:      # path compression keeps 1000 hops cheap
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: object, b: object) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


_IP_IN_TEXT = (re.compile(r"sender IP is ([0-9A-Fa-f:.]+)", re.IGNORECASE),
               re.compile(r"designates? ([0-9A-Fa-f:.]+) as permitted", re.IGNORECASE),
               re.compile(r"client-ip=([0-9A-Fa-f:.]+)", re.IGNORECASE),
               re.compile(r"\bCIP:([0-9A-Fa-f:.]+)"))
_IP_PROPS = ("client-ip", "smtp.remote-ip", "smtp.client-ip", "policy.iprev", "x-sender-ip", "policy.ip")


def _client_ip(info: ParsedResinfo) -> str | None:
    found = normalize_ip(info.prop(*_IP_PROPS)) if info.prop(*_IP_PROPS) else None
    if found:
        return found
    if info.method not in ("spf", "iprev"):
        return None
    for text in info.comments:
        for rx in _IP_IN_TEXT:
            m = rx.search(text)
            if m and normalize_ip(m.group(1).rstrip(".:")):
                return normalize_ip(m.group(1).rstrip(".:"))
    return None


_DOMAIN_OF = re.compile(r"domain of (?:\S*@)?([^\s@]+?)\.? (?:does not )?designate", re.IGNORECASE)


def _domain_of(info: ParsedResinfo) -> str:
    if info.method == "spf":
        value = info.prop("smtp.mailfrom", "envelope-from")
        if not value:   # Received-SPF and Gmail say it in words: "domain of x@example.org designates"
            found = next((m.group(1) for m in map(_DOMAIN_OF.search, info.comments) if m), "")
            value = found or info.prop("smtp.helo")
    elif info.method == "dkim":
        value = info.prop("header.d", "header.i")
    else:
        value = info.prop("header.from", "smtp.mailfrom")
    return value.rpartition("@")[2].strip("<> ").lower()[:_MAX_NAME]


_SRS = re.compile(r"srs[01][=+-]", re.IGNORECASE)
_LOCAL_PART = re.compile(r"\S+@")


def _is_srs(info: ParsedResinfo) -> bool:
    """The MAIL FROM the SPF verdict names is an SRS address (a forwarder rewrote it)."""
    if info.method != "spf":
        return False
    value = info.prop("smtp.mailfrom", "envelope-from") or next(
        (m.group(0) for m in map(_LOCAL_PART.search, info.comments) if m), "")
    return bool(_SRS.match(value.strip("<> ")))


_SPAM_SPF = re.compile(r"(?<![A-Za-z])SPF(?![_-]?HELO)[\s_:=-]*(pass|softfail|soft_fail|fail|hardfail|hard_fail|"
                       r"neutral|none|temperror|temp_error|permerror|perm_error)(?![A-Za-z])", re.IGNORECASE)


def _spam_spf(value: str) -> ParsedResinfo | None:
    """An SPF verdict named in an X-...-Spam header (SpamAssassin ``SPF_FAIL``, Forefront
    ``SPF:Fail``, Barracuda...), with the client address when the header states one."""
    m = _SPAM_SPF.search(value)
    if not m:
        return None
    result = m.group(1).lower().replace("_", "").replace("hardfail", "fail")
    props: tuple[tuple[str, str], ...] = ()
    for rx in _IP_IN_TEXT[2:]:
        ip = rx.search(value)
        if ip:
            props = (("client-ip", ip.group(1)),)
            break
    return ParsedResinfo("spf", result, "", (value[:200],), props)


def _results_of(name: bytes, value: bytes) -> tuple[str | None, int | None, list[ParsedResinfo]]:
    key = header_key(name)
    if key in (b"authentication-results", b"arc-authentication-results"):
        parsed = parse_authres(value)
        return parsed.authserv_id, parsed.instance, list(parsed.results)
    if key == b"received-spf":
        info = parse_received_spf(value)
        return info.prop("receiver") or None, None, ([info] if info.result else [])
    if key.startswith(b"x-") and b"spam" in key:
        info2 = _spam_spf(_text(value))
        return None, None, ([info2] if info2 else [])
    return None, None, []


def _org_domains(names: Sequence[str]) -> set[str]:
    out = set()
    for name in names:
        n = _host_key(name)
        if n:
            out.add(org_domain_psl(n))
    return out


# ---------------------------------------------------------------------------
# the analysis


def analyze(raw: bytes, *, own_relay: Callable[[str], bool] | None = None,
            trusted_relays: Sequence[str] = ()) -> Analysis:
    """The path, the verdicts and the findings for one message (any bytes; never raises
    on message content).

    *own_relay* tells whether an address is one of this server's relays (the config's
    ``internal_hosts`` and ``trusted_relays``); *trusted_relays* are the entries the
    config lists today, kept in the proposal.
    """
    msg = read_message(raw)
    notes: list[str] = []

    # Received headers top (newest) to bottom; trace headers remember how many Received
    # headers were above them, which names the hop below them.
    received: list[bytes] = []
    traces: list[tuple[int, str, bytes, bytes]] = []
    for name, value in msg.headers:
        key = header_key(name)
        if key == b"received":
            received.append(value)
        elif key in (b"authentication-results", b"arc-authentication-results", b"received-spf") or (
                key.startswith(b"x-") and b"spam" in key):
            traces.append((len(received), _name(name.decode("utf-8", "replace")), name, value))
    if len(received) > MAX_HOPS:
        notes.append(f"{len(received)} Received headers; only the newest {MAX_HOPS} were read")
        received = received[:MAX_HOPS]
    n = len(received)
    fields: list[ReceivedFields] = [parse_received(v) for v in reversed(received)]   # oldest first

    # hosts: node k is the receiver of hop k and the sender of hop k+1
    uf = _Union()
    for k, f in enumerate(fields, 1):
        sender = [("ip", f.from_ip)] if f.from_ip and address_scope(f.from_ip) != Scope.LOOPBACK else []
        rdns = _host_key(f.rdns)
        helo = _host_key(f.from_name)
        by = _host_key(f.by_name)
        if rdns:
            sender.append(("name", rdns))
        elif helo and helo != by:       # a client naming itself after its receiver is lying
            sender.append(("name", helo))
        receiver = [("name", by)] if by else []
        if f.by_ip and address_scope(f.by_ip) != Scope.LOOPBACK:
            receiver.append(("ip", f.by_ip))
        for item in sender:
            uf.union(("node", k - 1), item)
        for item in receiver:
            uf.union(("node", k), item)
    roots = [uf.find(("node", k)) for k in range(n + 1)]
    host_id: dict[object, int] = {}
    for r in roots:
        host_id.setdefault(r, len(host_id) + 1)
    names: dict[int, list[str]] = {i: [] for i in host_id.values()}
    ips: dict[int, list[str]] = {i: [] for i in host_id.values()}

    def add(lst: list[str], item: str) -> None:
        if item and item not in lst and len(lst) < 32:
            lst.append(item)

    for k, f in enumerate(fields, 1):
        s, r = host_id[roots[k - 1]], host_id[roots[k]]
        add(names[s], _name(f.rdns or f.from_name))
        add(ips[s], f.from_ip or "")
        add(names[r], _name(f.by_name))
        add(ips[r], f.by_ip or "")
    hosts = tuple(Host(i, tuple(names[i]), tuple(ips[i]),
                       tuple(k for k in range(n + 1) if host_id[roots[k]] == i))
                  for i in sorted(names))
    host_of = [host_id[r] for r in roots]

    # organisations, per node
    domains = {h.id: _org_domains(h.names) for h in hosts}
    org = [0] * (n + 1)
    for k, f in enumerate(fields, 1):
        # no recorded peer address (local pickup, LMTP, a header without one): nothing says the
        # message crossed a border, so the hop is taken as internal
        inside = (f.from_ip is None or address_scope(f.from_ip) in INTERNAL or host_of[k - 1] == host_of[k]
                  or bool(domains[host_of[k - 1]] & domains[host_of[k]]))
        org[k] = org[k - 1] if inside else k
    org_uf = _Union()
    first_org: dict[int, int] = {}
    for k in range(n + 1):
        org_uf.union(first_org.setdefault(host_of[k], org[k]), org[k])
    org = [int(org_uf.find(o)) for o in org]          # type: ignore[call-overload]

    # hops
    hops: list[Hop] = []
    for k, f in enumerate(fields, 1):
        prev = fields[k - 2].date if k > 1 else None
        delay = None
        if f.date is not None and prev is not None:
            try:
                delay = (f.date - prev).total_seconds()
            except (TypeError, OverflowError):
                delay = None
        hops.append(Hop(
            index=k, from_name=_name(f.from_name), from_ip=f.from_ip, rdns=_name(f.rdns), helo=_name(f.helo),
            by_name=_name(f.by_name), by_ip=f.by_ip, protocol=_name(f.protocol), via=_name(f.via), id=_name(f.id),
            recipient=_name(f.recipient), timestamp=f.date, delay_s=delay, scope=address_scope(f.from_ip),
            by_scope=address_scope(f.by_ip), software=software_of(f), from_host=host_of[k - 1],
            by_host=host_of[k], own_relay=bool(own_relay and f.from_ip and own_relay(f.from_ip))))

    # verdicts, each on the hop whose receiver wrote it
    results: list[Result] = []
    for above, source, name, value in traces:
        authserv, instance, infos = _results_of(name, value)
        hop: int | None = n - above if above < n else None
        if hop is None and authserv:
            wanted = authserv.lower().rstrip(".")
            hop = next((h.index for h in reversed(hops) if h.by_name.lower().rstrip(".") == wanted), None)
        for info in infos:
            if len(results) >= MAX_RESULTS:
                break
            detail = "; ".join(x for x in (*info.comments, info.reason) if x)
            results.append(Result(hop=hop, source=source, method=_name(info.method), result=_name(info.result),
                                  client_ip=_client_ip(info), authserv_id=_name(authserv) if authserv else None,
                                  domain=_domain_of(info), detail=_name(one_line(detail)), instance=instance,
                                  srs=_is_srs(info)))
    results.sort(key=lambda r: (r.hop if r.hop is not None else n + 1))

    hints = sorted(_hints(hops, hosts, host_of, org), key=lambda t: t.hop)
    subject = _name(_text(msg.get_all("Subject")[0])) if msg.get_all("Subject") else ""
    findings, proposal = _findings(hops, hosts, host_of, org, results, subject, msg, own_relay, trusted_relays)
    origin = next((h.from_ip for h in hops if h.from_ip and h.scope not in INTERNAL), None)
    return Analysis(hops=tuple(hops), hosts=hosts, results=tuple(results), hints=tuple(hints),
                    findings=tuple(findings), origin_ip=origin, trusted_relays_proposal=tuple(proposal),
                    subject=subject, notes=tuple(notes), config_used=own_relay is not None)


def _label(host: Host) -> str:
    return " / ".join(host.names[:3]) or (host.ips[0] if host.ips else "an unnamed host")


def _hints(hops: list[Hop], hosts: tuple[Host, ...], host_of: list[int], org: list[int]) -> list[Hint]:
    out: list[Hint] = []
    by_id = {h.id: h for h in hosts}
    # the receiver of hop k sent hop k+1: two different addresses are two sides of it
    for k in range(1, len(hops)):
        a, b = hops[k - 1].by_ip, hops[k].from_ip
        if a and b and a != b:
            sa, sb = address_scope(a), address_scope(b)
            kind = ("its public and internal side (NAT or dual-homed)"
                    if (sa in INTERNAL) != (sb in INTERNAL) else "two addresses (dual-homed or NAT)")
            host = by_id[host_of[k]]
            out.append(Hint("two-addresses", k,
                            f"{_label(host)} received hop {k} on {a} ({sa.value if sa else '?'}) and sent hop {k + 1} "
                            f"from {b} ({sb.value if sb else '?'}): one relay, {kind}", (a, b)))
    # the same host handling the message twice, with other hosts in between
    seen: dict[int, int] = {}
    for k, h in enumerate(host_of):
        first = seen.setdefault(h, k)
        if first < k - 1 and any(x != h for x in host_of[first + 1:k]):
            out.append(Hint("relay-revisited", k, f"{_label(by_id[h])} handled the message at hop {first} and again "
                            f"at hop {k}: it went through other hosts and came back", tuple(by_id[h].ips)))
            seen[h] = k
    # public -> internal -> public: a DMZ or a private link between two organisations
    k = 0
    while k < len(hops):
        if hops[k].scope in NETWORK_INTERNAL and k > 0 and hops[k - 1].scope not in INTERNAL and hops[k - 1].scope:
            end = k
            while end + 1 < len(hops) and hops[end + 1].scope in NETWORK_INTERNAL:
                end += 1
            if end + 1 < len(hops) and hops[end + 1].scope and hops[end + 1].scope not in INTERNAL:
                span = f"hop {k + 1} travels" if end == k else f"hops {k + 1}-{end + 1} travel"
                out.append(Hint("dmz-transit", k + 1,
                                f"{span} over internal addresses between public hops "
                                f"{k} and {end + 2}: a DMZ, an internal mail system, or a private B2B link",
                                tuple(h.from_ip for h in hops[k:end + 1] if h.from_ip)))
            k = end + 1
        else:
            k += 1
    # an organisation left and entered again
    runs: list[tuple[int, int]] = []     # (org, first node)
    for k, o in enumerate(org):
        if not runs or runs[-1][0] != o:
            runs.append((o, k))
    for i, (o, start) in enumerate(runs):
        earlier = [s for (p, s) in runs[:i] if p == o]
        if earlier and start > 0:
            out.append(Hint("leaves-and-reenters", start,
                            f"the message left the organisation of {_label(by_id[host_of[earlier[0]]])} and "
                            f"re-entered it at hop {start}"))
    return out


_SUBJECT_TAG = re.compile(r"^\s*((?:\[[^\]]{1,40}\]|\*{2,}[^*]{1,30}\*{2,}|\{[^}]{1,30}\}|\(EXT(?:ERNAL)?\)|"
                          r"EXT(?:ERNAL)?\s*:)\s*)+", re.IGNORECASE)
_BODY_TAG = re.compile(r"originated from outside|external (?:e-?mail|sender)|caution:? (?:this|external)|"
                       r"\[external\]|this (?:e-?mail|message) (?:has been|was) scanned|sent from outside",
                       re.IGNORECASE)
_INTERNAL_NAME = re.compile(r"\.(?:local|lan|internal|intranet|intra|corp|localdomain|home|private|ad)\.?$",
                            re.IGNORECASE)


def _walk_to_entry(org: list[int], node: int) -> int | None:
    """The hop through which the organisation of *node* was entered last before *node*
    (its sender outside, its receiver inside); None when the chain starts inside."""
    o = org[node]
    p = node
    while p > 0 and org[p - 1] == o:
        p -= 1
    return p if p > 0 else None


def _findings(hops: list[Hop], hosts: tuple[Host, ...], host_of: list[int], org: list[int],
              results: list[Result], subject: str, msg: Message, own_relay: Callable[[str], bool] | None,
              trusted_relays: Sequence[str]) -> tuple[list[Finding], list[str]]:
    out: list[Finding] = []
    by_id = {h.id: h for h in hosts}
    proposal: list[str] = list(trusted_relays)
    flagged: set[tuple[int, str]] = set()

    # 1. SPF evaluated for a relay instead of the origin
    for r in results:
        if r.method != "spf" or r.hop is None or not r.client_ip or (r.hop, r.client_ip) in flagged:
            continue
        j = next((k for k in range(r.hop, 0, -1) if hops[k - 1].from_ip == r.client_ip), None)
        if j is None or j == 1:
            continue
        sender = j - 1                       # the node that sent hop j: the address SPF was given
        entry: int | None = None
        why = ""
        if org[sender] == org[r.hop]:
            entry = _walk_to_entry(org, sender)
            why = f"{r.client_ip} belongs to the organisation that wrote the verdict"
        else:
            earlier, other = None, False
            for k in range(sender - 1, 0, -1):
                if host_of[k] != host_of[sender]:
                    other = True
                elif other:
                    earlier = k
            if earlier is not None:
                entry = _walk_to_entry(org, earlier)
                why = (f"{r.client_ip} ({_label(by_id[host_of[sender]])}) had itself received the message at hop "
                       f"{earlier} and sent it on after it passed through its own organisation")
        if own_relay is not None and own_relay(r.client_ip):
            # the config names it ours: at the latest, the first hop from a non-listed address
            if entry is None:
                entry = next((k for k in range(j - 1, 0, -1) if hops[k - 1].from_ip
                              and not own_relay(hops[k - 1].from_ip or "")), None)
            why = (why + "; " if why else "") + f"{r.client_ip} is one of this server's relays (config)"
        if entry is None or entry >= j:
            continue
        origin = hops[entry - 1].from_ip
        if not origin or origin == r.client_ip:
            continue
        flagged.add((r.hop, r.client_ip))
        writer = hops[r.hop - 1].by_name or f"hop {r.hop}"
        same = [x for x in results if x.method == "spf" and x.client_ip == origin and x.hop is not None]
        before = (f" Hop {same[0].hop} had evaluated SPF for {origin} and recorded {same[0].result}."
                  if same else "")
        evidence = [f"{x.source} at hop {x.hop}: spf={x.result} client {x.client_ip}" for x in results
                    if x.method == "spf" and x.hop == r.hop and x.client_ip == r.client_ip]
        evidence.append(why)
        out.append(Finding(
            "spf-checked-at-relay", r.hop,
            f"{writer} (hop {r.hop}) evaluated SPF for {r.client_ip} and got {r.result or 'no result'}, but "
            f"{r.client_ip} is an intermediate relay, not the sender: the message came from {origin}, the first hop "
            f"from outside the receiving organisation (hop {entry}), and SPF should be evaluated for that address."
            + before, client_ip=r.client_ip, origin_ip=origin, evidence=tuple(evidence)))
        for k in range(entry + 1, r.hop + 1):
            ip = hops[k - 1].from_ip
            if ip and ip not in proposal and not (own_relay and own_relay(ip)):
                proposal.append(ip)

    # 2. DKIM broken in transit: a pass at one hop, a fail at a later one (same domain)
    seen_fail: set[str] = set()
    for r in results:
        if r.method != "dkim" or r.result != "pass" or r.hop is None:
            continue
        for later in results:
            if (later.method == "dkim" and later.result in ("fail", "neutral", "permerror") and later.hop is not None
                    and later.hop > r.hop and (later.domain == r.domain or not later.domain or not r.domain)
                    and later.domain not in seen_fail):
                seen_fail.add(later.domain)
                between = ", ".join(h.by_name or "?" for h in hops[r.hop:later.hop - 1]) or "no other host"
                out.append(Finding(
                    "dkim-broken-in-transit", later.hop,
                    f"the DKIM signature of {r.domain or 'the message'} verified at hop {r.hop} but failed at hop "
                    f"{later.hop}: a host in between changed the signed headers or the body ({between}).",
                    evidence=(f"{r.source} at hop {r.hop}: dkim=pass", f"{later.source} at hop {later.hop}: "
                              f"dkim={later.result}" + (f" ({later.detail})" if later.detail else ""))))
                break

    # 3. tags added by an intermediary
    first_dkim_fail = next((r.hop for r in results if r.method == "dkim" and r.result == "fail"), None)
    tag = _SUBJECT_TAG.match(subject)
    if tag and not re.fullmatch(r"\s*(?:\[[^\]]*\]\s*)?", subject):
        out.append(Finding("subject-tagged", first_dkim_fail,
                           f"the Subject starts with {tag.group(0).strip()!r}, a tag an intermediary (list, gateway or "
                           "filter) adds; changing a signed Subject breaks DKIM."
                           + (f" DKIM failed at hop {first_dkim_fail}." if first_dkim_fail else ""),
                           evidence=(f"Subject: {subject[:120]}",)))
    body = b"".join(msg.body.chunks())[:8192] if msg.body.size <= 8192 else (
        msg.body.as_bytes()[:4096] + msg.body.as_bytes()[-4096:])
    m = _BODY_TAG.search(body.decode("latin-1"))
    if m:
        out.append(Finding("body-tagged", first_dkim_fail,
                           f"the body carries a banner ({m.group(0)!r}) that a gateway inserts; it changes the signed "
                           "body and breaks DKIM.", evidence=(m.group(0),)))

    # 4. forwarding without SRS: SPF fails for a forwarder while the envelope still names the origin
    for r in results:
        if (r.method != "spf" or r.result not in ("fail", "softfail") or r.hop is None or not r.client_ip
                or (r.hop, r.client_ip) in flagged):
            continue
        if r.srs:
            continue
        passed = [x for x in results if x.method == "spf" and x.result == "pass" and x.hop is not None
                  and x.hop < r.hop and x.client_ip and x.client_ip != r.client_ip]
        if not passed:
            continue
        out.append(Finding(
            "forwarding-without-srs", r.hop,
            f"SPF passed at hop {passed[0].hop} for {passed[0].client_ip}, then the message was forwarded and hop "
            f"{r.hop} evaluated SPF for the forwarder {r.client_ip} with the original envelope sender"
            f"{' (' + r.domain + ')' if r.domain else ''}: {r.result}. The forwarder should rewrite the envelope "
            "sender (SRS) or the receiver should trust it (ARC, trusted_forwarders).",
            client_ip=r.client_ip, origin_ip=passed[0].client_ip,
            evidence=(f"{passed[0].source} at hop {passed[0].hop}: spf=pass", f"{r.source} at hop {r.hop}: "
                      f"spf={r.result}")))

    # 5. what the headers give away about the organisations they crossed
    leaks: dict[int, tuple[int, list[str], list[str]]] = {}
    for h in hops:
        for ip, node in ((h.from_ip, h.index - 1), (h.by_ip, h.index)):
            if ip and address_scope(ip) in NETWORK_INTERNAL:
                first, addrs, _ = leaks.setdefault(org[node], (h.index, [], []))
                if ip not in addrs and len(addrs) < 50:
                    addrs.append(ip)
    for h in hops:
        for name, node, ip in ((h.from_name, h.index - 1, h.from_ip), (h.by_name, h.index, h.by_ip)):
            internal_ip = ip is not None and address_scope(ip) in NETWORK_INTERNAL
            odd = bool(_INTERNAL_NAME.search(name)) or (name and "." not in name and not name.startswith("[")
                                                         and normalize_ip(name) is None and name.lower() != "localhost")
            if name and (internal_ip or odd):
                first, _, hostnames = leaks.setdefault(org[node], (h.index, [], []))
                if name not in hostnames and len(hostnames) < 50:
                    hostnames.append(name)
    for o, (first, addrs, hostnames) in sorted(leaks.items(), key=lambda x: x[1][0]):
        software = sorted({h.software for h in hops if h.software and org[h.index] == o})
        parts = []
        if addrs:
            parts.append("internal addresses " + ", ".join(addrs))
        if hostnames:
            parts.append("names of hosts on internal links or in private zones " + ", ".join(hostnames))
        if software:
            parts.append("server software " + "; ".join(software))
        out.append(Finding("internal-leak", first,
                           "the headers written inside one organisation (from hop "
                           f"{first}) reveal " + "; ".join(parts) + ".",
                           evidence=tuple(addrs + hostnames)))
    return out, proposal
