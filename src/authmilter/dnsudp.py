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

    def ask(self, qname: dns.name.Name, rdtype: int, lifetime: float) -> dns.message.QueryMessage | Refusals | str:
        """The response (NOERROR or NXDOMAIN, whole, for this question), `Refusals` when
        every server answered with another rcode, `TIMEOUT` when the servers left did not
        answer within *lifetime*, or `HANDBACK` for anything else."""
        if not self.servers or not qname.is_absolute():
            return HANDBACK
        deadline = time.monotonic() + lifetime
        qid = int.from_bytes(os.urandom(2), "big")
        wire = self.query_wire(qid, qname, rdtype)
        left_in_mix = list(range(len(self.servers)))
        refused: list[tuple[str, int, str, dns.message.Message]] = []
        turn = 0
        while left_in_mix:
            left = deadline - time.monotonic()
            if left <= 0:
                return TIMEOUT
            i = left_in_mix[turn % len(left_in_mix)]
            got = self._one(self._families[i], self.servers[i], wire, qid, qname, rdtype, min(self.attempt_s, left))
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
             rdtype: int, timeout: float) -> dns.message.QueryMessage | str | None:
        """One attempt at one server: the response, HANDBACK, or None (no answer in time)."""
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.settimeout(timeout)
                sock.connect(server)      # the kernel drops datagrams from anyone else
                sock.send(wire)
                end = time.monotonic() + timeout
                while True:
                    try:
                        data = sock.recv(65535)
                    except TimeoutError:
                        return None
                    response = _match(data, qid, qname, rdtype)
                    if response is not None:
                        return response
                    left = end - time.monotonic()   # a stray datagram: keep listening
                    if left <= 0:
                        return None
                    sock.settimeout(left)
        except OSError:
            return HANDBACK


def _match(data: bytes, qid: int, qname: dns.name.Name, rdtype: int) -> dns.message.QueryMessage | str | None:
    """The response in *data* if it answers our query (None: not ours, ignore it);
    HANDBACK for one that does not parse, is truncated, or says YXDOMAIN."""
    if len(data) < 12 or struct.unpack_from("!H", data)[0] != qid:
        return None
    try:
        response = dns.message.from_wire(data)
    except (dns.exception.DNSException, ValueError, UnicodeError, struct.error, IndexError):
        return HANDBACK
    if not isinstance(response, dns.message.QueryMessage) or not response.flags & _QR or len(response.question) != 1:
        return HANDBACK
    q = response.question[0]
    if q.name != qname or q.rdtype != rdtype or q.rdclass != _IN:
        return None
    if response.flags & _TC or response.rcode() == dns.rcode.YXDOMAIN:
        return HANDBACK
    return response
