"""The usual DNS exchange, without dnspython's resolver machinery around it.

Almost every lookup a message makes is one UDP query answered by the first server
with NOERROR or NXDOMAIN. For that case dnspython's ``Resolver.resolve`` costs more
than the exchange itself: a query message object, a new epoll selector per wait,
per-attempt bookkeeping and exceptions. `UdpExchange.ask` does just the exchange: the
query written as bytes, a fresh UDP socket per query (a random source port, as
before) connected to the server with a plain timeout, and the response read with
dnspython's own wire parser and CNAME chaining, so what a response means is decided
by the same code as before.

A server that does not answer within the attempt timeout is skipped for the next one,
and one that answers with another rcode (SERVFAIL, REFUSED...) is not asked again for
this query, as dnspython does; `TIMEOUT` says the time ran out, `Refusals` that every
server answered with an error (the responses kept: their extended errors say why).

Anything else out of the ordinary is not handled here: a truncated response (TCP),
YXDOMAIN, a response that does not parse, a socket error. `ask` then returns
`HANDBACK` and the caller asks dnspython's resolver with the time left, which does
what it always did.

`UdpExchange.send` sends a query's first attempt and returns without waiting (`Sent`);
a later `ask` given it waits on that socket instead of sending again. The resolver uses
it to send a query from the thread that learns the name, with no thread to wait for the
answer (see `Resolver.send_ahead`).
"""
from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Sequence
from typing import Final, NamedTuple

import dns.exception
import dns.flags
import dns.ipv4
import dns.ipv6
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass

HANDBACK: Final = "handback"
TIMEOUT: Final = "timeout"


class Refusals(NamedTuple):
    """Every server answered this query with an error rcode: (server, port, rcode text,
    response) each, in the order asked (dnspython's NoNameservers ``errors``, less the
    TCP flag)."""

    errors: tuple[tuple[str, int, str, dns.message.Message], ...]

_QR = dns.flags.QR
_TC = dns.flags.TC
_IN = dns.rdataclass.IN
_OPT = 41
_WHOLE = (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)


class Sent:
    """A query's first attempt, sent to the first server and not waited for: the socket
    the response will arrive on, and what `ask` needs to go on with the query."""

    __slots__ = ("sock", "qid", "wire", "qname", "rdtype", "at")

    def __init__(self, sock: socket.socket, qid: int, wire: bytes, qname: dns.name.Name, rdtype: int,
                 at: float) -> None:
        self.sock, self.qid, self.wire, self.qname, self.rdtype, self.at = sock, qid, wire, qname, rdtype, at

    def close(self) -> None:
        self.sock.close()


class UdpExchange:
    """One query at a time per call, any number of calls at once (nothing shared but
    settings). *servers* are (address, port) pairs tried in order."""

    def __init__(self, servers: Sequence[tuple[str, int]], *, flags: int, edns: tuple[int, int] | None,
                 attempt_s: float) -> None:
        self.servers = tuple(servers)
        self.flags = flags
        # EDNS(0) as (payload size, flags), or None for none (dnspython's default).
        self._opt = b"" if edns is None else b"\x00" + struct.pack("!HHIH", _OPT, edns[0], edns[1] & 0xFFFF, 0)
        self.attempt_s = attempt_s
        self._families = tuple(socket.AF_INET6 if ":" in ip else socket.AF_INET for ip, _ in self.servers)

    def query_wire(self, qid: int, qname: dns.name.Name, rdtype: int) -> bytes:
        header = struct.pack("!HHHHHH", qid, self.flags, 1, 0, 0, 1 if self._opt else 0)
        return header + qname.to_wire() + struct.pack("!HH", rdtype, _IN) + self._opt  # type: ignore[operator]

    def send(self, qname: dns.name.Name, rdtype: int) -> Sent | None:
        """Send the first attempt of a query to the first server and return at once; None
        when nothing was sent (no servers, a relative name, a socket error)."""
        if not self.servers or not qname.is_absolute():
            return None
        qid = int.from_bytes(os.urandom(2), "big")
        wire = self.query_wire(qid, qname, rdtype)
        try:
            sock = socket.socket(self._families[0], socket.SOCK_DGRAM)
        except OSError:
            return None
        try:
            sock.connect(self.servers[0])     # the kernel drops datagrams from anyone else
            sock.send(wire)
        except OSError:
            sock.close()
            return None
        return Sent(sock, qid, wire, qname, rdtype, time.monotonic())

    def ask(self, qname: dns.name.Name, rdtype: int, lifetime: float, sent: Sent | None = None
            ) -> Reply | dns.message.QueryMessage | Refusals | str:
        """The response (NOERROR or NXDOMAIN, whole, for this question: a `Reply` for the
        types read here, else dnspython's message), `Refusals` when
        every server answered with another rcode, `TIMEOUT` when the servers left did not
        answer within *lifetime*, or `HANDBACK` for anything else.

        With *sent* (this query's first attempt, from `send`), the first server's first
        turn waits on that socket for what is left of its attempt time instead of sending
        again (nothing left: only a response already there counts); the socket is closed
        either way. Everything after that is as without it."""
        if sent is not None and (sent.qname != qname or sent.rdtype != rdtype):
            sent.close()                      # not this query's: never read another's answer
            sent = None
        if not self.servers or not qname.is_absolute():
            if sent is not None:
                sent.close()
            return HANDBACK
        deadline = time.monotonic() + lifetime
        if sent is not None:
            qid, wire = sent.qid, sent.wire
        else:
            qid = int.from_bytes(os.urandom(2), "big")
            wire = self.query_wire(qid, qname, rdtype)
        left_in_mix = list(range(len(self.servers)))
        refused: list[tuple[str, int, str, dns.message.Message]] = []
        turn = 0
        while left_in_mix:
            left = deadline - time.monotonic()
            if left <= 0:
                if sent is not None:
                    sent.close()
                return TIMEOUT
            i = left_in_mix[turn % len(left_in_mix)]
            if sent is not None and i == 0:
                wait = min(self.attempt_s - (time.monotonic() - sent.at), left)
                got = self._wait(sent.sock, qid, qname, rdtype, wait)
                sent = None
            else:
                got = self._one(self._families[i], self.servers[i], wire, qid, qname, rdtype,
                                min(self.attempt_s, left))
            if got is None:             # silent: the next server, then this one again
                turn += 1
                continue
            if isinstance(got, dns.message.Message) and got.rcode() not in _WHOLE:
                refused.append((*self.servers[i], dns.rcode.to_text(got.rcode()), got))
                left_in_mix.remove(i)   # asked again for this query it would say the same
                continue
            return got
        return Refusals(tuple(refused))

    def _one(self, family: int, server: tuple[str, int], wire: bytes, qid: int, qname: dns.name.Name,
             rdtype: int, timeout: float) -> Reply | dns.message.QueryMessage | str | None:
        """One attempt at one server: the response, HANDBACK, or None (no answer in time)."""
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError:
            return HANDBACK
        try:
            sock.connect(server)      # the kernel drops datagrams from anyone else
            sock.send(wire)
        except OSError:
            sock.close()
            return HANDBACK
        return self._wait(sock, qid, qname, rdtype, timeout)

    @staticmethod
    def _wait(sock: socket.socket, qid: int, qname: dns.name.Name, rdtype: int, timeout: float
              ) -> Reply | dns.message.QueryMessage | str | None:
        """The response to our query on *sock* within *timeout* (at most 0: only one that
        is already there), HANDBACK, or None (no answer in time). Closes *sock*."""
        end = time.monotonic() + timeout
        try:
            with sock:
                while True:
                    left = end - time.monotonic()
                    if left > 0:
                        sock.settimeout(left)
                    else:
                        sock.setblocking(False)
                    try:
                        data = sock.recv(65535)
                    except (TimeoutError, BlockingIOError):
                        return None
                    response = _match(data, qid, qname, rdtype)
                    if response is not None:
                        return response
                    if left <= 0:             # a stray datagram and no time: keep nothing
                        return None
        except OSError:
            return HANDBACK


def _match(data: bytes, qid: int, qname: dns.name.Name, rdtype: int) -> Reply | dns.message.QueryMessage | str | None:
    """The response in *data* if it answers our query (None: not ours, ignore it);
    HANDBACK for one that does not parse, is truncated, or says YXDOMAIN."""
    if len(data) < 12 or struct.unpack_from("!H", data)[0] != qid:
        return None
    if rdtype in _FAST_TYPES:
        fast = read_fast(data, qid, qname, rdtype)
        if fast is not SLOW:
            return fast
    try:
        response = dns.message.from_wire(data)
    except (dns.exception.DNSException, ValueError, UnicodeError, struct.error, IndexError):
        return HANDBACK
    if not isinstance(response, dns.message.QueryMessage) or not response.flags & _QR or len(response.question) != 1:
        return None                      # not a response to our query (dnspython ignores these too)
    q = response.question[0]
    if q.name != qname or q.rdtype != rdtype or q.rdclass != _IN:
        return None
    if response.flags & _TC or response.rcode() == dns.rcode.YXDOMAIN:
        return HANDBACK
    return response


# -- the usual responses, read without building a dnspython message ------------------------
#
# A TXT, A or AAAA answer that is NOERROR or NXDOMAIN, not truncated, with no extended
# rcode, is read here: the header, every record's framing in every section (names with
# compression, fixed fields, lengths, nothing after the last record), the CNAME chain of
# the answer section as dnspython follows it (at most 16 links), the first SOA of the
# authority section for the negative TTL, and the records at the end of the chain. Any
# departure from that (a record that does not frame, a second SOA, an answer under an
# NXDOMAIN, a chain too long, an RRset whose data does not decode) returns SLOW: the same
# bytes are then read by dnspython's parser as before. Whatever the bytes, the result is
# a Reply, None (not an answer to our question) or SLOW, never an exception. One
# difference is deliberate: records the answer does not use (an unrelated CNAME's
# target, the rest of a SOA) are framed but not decoded, so a response whose unused
# record is malformed inside still gives the records asked for, where dnspython would
# refuse the whole message (and the lookup ended as a temporary error).

SLOW: Final = "slow"
_FAST_TYPES = frozenset({1, 16, 28, 99})        # A, TXT, AAAA, SPF
_CNAME, _SOA, _RRSIG = 5, 6, 46
_MAX_CHAIN = 16                                  # dnspython's resolve_chaining() limit


class Reply(NamedTuple):
    """A whole NOERROR/NXDOMAIN answer to a TXT, A, AAAA or SPF question."""

    nxdomain: bool
    found: bool          # records of the asked type at the end of the CNAME chain
    records: tuple       # TXT/SPF: bytes (character-strings joined); A/AAAA: address text
    ttl: int             # found: the RRset's TTL; else the negative TTL from the SOA (0: none)
    ad: bool             # the AD flag
    signed: bool         # RRSIGs in the answer section


class _Malformed(Exception):
    pass


def name_key(qname: dns.name.Name) -> bytes:
    """A name as length-prefixed lower-case labels (no root label): what `_name` returns."""
    return b"".join(bytes((len(label),)) + label.lower() for label in qname.labels if label)


def _name(data: bytes, pos: int) -> tuple[bytes, int]:
    """The name at *pos* (as `name_key` writes it) and the position after it. Pointers
    must point strictly before the previous one, as dnspython requires (so no loop)."""
    out: list[bytes] = []
    total = 1
    end = -1
    lowest = pos
    while True:
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length >= 0xC0:
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= lowest:
                raise _Malformed("bad compression pointer")
            if end < 0:
                end = pos + 2
            lowest = pos = target
            continue
        if length > 63:
            raise _Malformed("unknown label type")
        label = data[pos + 1:pos + 1 + length]
        if len(label) != length:
            raise _Malformed("short label")
        total += length + 1
        if total > 255:
            raise _Malformed("name too long")
        out.append(bytes((length,)) + label.lower())
        pos += 1 + length
    return b"".join(out), (end if end >= 0 else pos)


def read_fast(data: bytes, qid: int, qname: dns.name.Name, rdtype: int) -> Reply | str | None:
    """*data* read here: a `Reply`, None (not an answer to this query) or SLOW."""
    try:
        return read_reply(data, qid, name_key(qname), rdtype)
    except (_Malformed, struct.error, IndexError, ValueError):
        return SLOW


def read_reply(data: bytes, qid: int, qkey: bytes, rdtype: int) -> Reply | str | None:
    size = len(data)
    rid, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", data)
    if rid != qid:
        return None
    rcode = flags & 0xF
    if not flags & 0x8000 or flags & 0x7800 or flags & 0x0200 or qdcount != 1 or rcode not in (0, 3):
        return SLOW                      # not a QUERY response, truncated, or another rcode
    owner, pos = _name(data, 12)
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    pos += 4
    if owner != qkey or qtype != rdtype or qclass != _IN:
        return None
    answer: list[tuple[bytes, int, int, int, int, int]] = []
    negative: int | None = None
    signed = False
    for section, count in ((1, ancount), (2, nscount), (3, arcount)):
        for _ in range(count):
            owner, pos = _name(data, pos)
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, pos)
            pos += 10
            if ttl > 0x7FFFFFFF and rtype != _OPT:
                ttl = 0                  # RFC 2181 §8: the high bit set means zero (as dnspython reads it)
            end = pos + rdlen
            if end > size:
                raise _Malformed("record data past the end")
            if section == 1:
                answer.append((owner, rtype, rclass, ttl, pos, end))
                signed = signed or rtype == _RRSIG
            elif section == 2 and rtype == _SOA:
                if negative is not None:
                    return SLOW
                _, after = _name(data, pos)
                _, after = _name(data, after)
                if after + 20 != end:
                    raise _Malformed("bad SOA")
                negative = min(ttl, struct.unpack_from("!I", data, after + 16)[0])
            elif section == 3 and rtype == _OPT and ttl >> 24:
                return SLOW              # an extended rcode
            pos = end
    if pos != size:
        return SLOW                      # trailing bytes: dnspython refuses them
    # The CNAME chain, as dnspython's resolve_chaining() walks it.
    target = qkey
    found: list[tuple[bytes, int, int, int, int, int]] = []
    links = 0
    while links < _MAX_CHAIN:
        found = [rr for rr in answer if rr[0] == target and rr[1] == rdtype and rr[2] == _IN]
        if found:
            break
        cnames = [rr for rr in answer if rr[0] == target and rr[1] == _CNAME and rr[2] == _IN]
        if not cnames:
            break
        # CNAME is a singleton type: of several at one name dnspython keeps the last.
        target, after = _name(data, cnames[-1][4])
        if after != cnames[-1][5]:
            raise _Malformed("bad CNAME")
        links += 1
    else:
        return SLOW                      # chain too long
    ad = bool(flags & 0x0020)
    if rcode == 3:
        return SLOW if found else Reply(True, False, (), negative or 0, ad, signed)
    if not found:
        return Reply(False, False, (), negative or 0, ad, signed)
    seen: set[bytes] = set()
    records = []
    for rr in found:
        raw = data[rr[4]:rr[5]]
        if raw in seen:                  # an RRset is a set: dnspython keeps one copy
            continue
        seen.add(raw)
        value = _value(rdtype, raw)
        if value is None:
            return SLOW
        records.append(value)
    return Reply(False, True, tuple(records), min(rr[3] for rr in found), ad, signed)


def _value(rdtype: int, raw: bytes) -> object:
    if rdtype == 1:
        return dns.ipv4.inet_ntoa(raw) if len(raw) == 4 else None
    if rdtype == 28:
        return dns.ipv6.inet_ntoa(raw) if len(raw) == 16 else None
    # TXT/SPF: one or more character-strings filling the data exactly
    parts = []
    i = 0
    while i < len(raw):
        n = raw[i]
        if i + 1 + n > len(raw):
            return None
        parts.append(raw[i + 1:i + 1 + n])
        i += 1 + n
    return b"".join(parts) if parts else None
