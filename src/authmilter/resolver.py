"""One DNS resolver for every check: dnspython, a shared TTL-honouring cache, a time
budget per message, and adapters for pyspf and dkimpy.

Remote trouble never escapes as an exception: every lookup returns an `Answer` whose
`status` says OK, NXDOMAIN, NODATA or TEMPERROR (timeout, SERVFAIL, refused, budget
exhausted) or BADNAME (a name that cannot be queried). Checks turn these into
temperror/permerror/none per their RFC.

With ``dnssec=True`` queries carry the EDNS DO bit and the AD bit (RFC 4035 §3.2.1,
RFC 6840 §5.7), and each answer records whether the resolver said it validated it
(``authenticated``, the AD flag) and whether it came with signatures (``signed``). The
flag means something only when the configured servers are a validating resolver the
admin trusts over a trusted path (a local unbound): we do not validate ourselves.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver

from .dnsudp import TIMEOUT, Refusals, Reply, Sent, UdpExchange


class DnsStatus(StrEnum):
    OK = "ok"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    TEMPERROR = "temperror"
    BADNAME = "badname"


@dataclass(frozen=True, slots=True)
class Answer:
    """The outcome of one lookup.

    ``records`` holds, by type: A/AAAA address strings; TXT/SPF one ``bytes`` per RR
    (its character-strings concatenated); MX ``(preference, exchange)`` with the
    exchange as text without the trailing dot; PTR/CNAME/NS target text.
    """

    name: str
    rdtype: str
    status: DnsStatus
    records: tuple = ()
    ttl: int = 0
    error: str = ""
    # DNSSEC, when asked for (else None): the AD flag of the response (RFC 4035 §3.2.3).
    authenticated: bool | None = None
    signed: bool = False            # RRSIGs came with the answer section
    bogus: bool = False             # SERVFAIL with an RFC 8914 DNSSEC error code (validation failed)

    @property
    def ok(self) -> bool:
        return self.status is DnsStatus.OK

    @property
    def temporary(self) -> bool:
        return self.status is DnsStatus.TEMPERROR


class DnsLookup(Protocol):
    """What checks need: anything with this method (Resolver, a budget view, a test zone)."""

    def query(self, name: str, rdtype: str) -> Answer: ...


def _rdata_value(rdtype: str, rdata: object) -> object:
    if rdtype in ("TXT", "SPF"):
        return b"".join(rdata.strings)  # type: ignore[attr-defined]
    if rdtype in ("A", "AAAA"):
        return rdata.address  # type: ignore[attr-defined]
    if rdtype == "MX":
        return (rdata.preference, rdata.exchange.to_text(omit_final_dot=True))  # type: ignore[attr-defined]
    if rdtype in ("PTR", "CNAME", "NS"):
        return rdata.target.to_text(omit_final_dot=True)  # type: ignore[attr-defined]
    return rdata.to_text()  # type: ignore[attr-defined]


class _Cache:
    """A small thread-safe LRU with per-entry expiry (monotonic seconds)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, now: float) -> tuple[float, Any] | None:
        """(expires, value) while fresh, else None."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if item[0] <= now:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return item

    def put(self, key: Hashable, answer: Any, expires: float) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[key] = (expires, answer)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


log = logging.getLogger("authmilter.dns")


class _ServerHealth:
    """The dead-server fast path: whether our DNS servers answer anything at all.

    When a query waited at least *min_silence_s* and no server answered anything since it
    was sent, the servers are taken for down: lookups then fail at once as TEMPERROR,
    except one probe at a time (waiting at most *min_silence_s*; after a probe that got
    no answer, the next one *retry_s* later); any answer brings them back. One slow name
    in a quiet worker therefore costs the next lookup nothing: it goes out as the probe.
    Without this, a dead server costs every message its whole time budget while it holds
    one of libmilter's worker threads; messages queued behind it in the same worker (the
    libmilter pool does not always start a thread for each ready session) then wait for
    those budgets to run out before their own even begins.
    """

    def __init__(self, min_silence_s: float, retry_s: float = 1.0) -> None:
        self.min_silence_s = min_silence_s
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._last_answer = float("-inf")
        self.down = False
        self._probing = False
        self._next_probe = 0.0

    def admit(self, now: float) -> str:
        """'go' (ask the servers), 'probe' (ask, as the one probe) or '' (do not ask)."""
        with self._lock:
            if not self.down:
                return "go"
            if self._probing or now < self._next_probe:
                return ""
            self._probing = True
            return "probe"

    def answered(self, now: float, admitted: str) -> None:
        with self._lock:
            self._last_answer = max(self._last_answer, now)
            if admitted == "probe":
                self._probing = False
            if self.down:
                self.down = False
                log.warning("DNS servers answer again")

    def silent(self, started: float, now: float, admitted: str) -> None:
        """A query sent at *started* got no answer from any server by *now*."""
        with self._lock:
            if admitted == "probe":
                self._probing = False
                self._next_probe = now + self.retry_s
            elif (not self.down and now - started >= self.min_silence_s
                    and self._last_answer < started):
                self.down = True
                self._next_probe = now
                log.warning("DNS servers do not answer: lookups fail at once until one does")

    def failed(self, now: float, admitted: str) -> None:
        """Neither answer nor silence (a local socket error): release the probe."""
        if admitted == "probe":
            with self._lock:
                self._probing = False
                self._next_probe = now + self.retry_s


class _Flight:
    """One query in flight: its asker's deadline, and the answer once it lands. A flight
    `send_ahead` started is *parked* (its query sent, nobody reading the socket) until a
    lookup claims it and leads it from there."""

    __slots__ = ("deadline", "done", "result", "waiters", "parked")

    def __init__(self, deadline: float, parked: Sent | None = None) -> None:
        self.deadline = deadline
        self.waiters = 0
        self.done = threading.Event()
        self.result: tuple[Answer, float] = (Answer("", "", DnsStatus.TEMPERROR), 0.0)
        self.parked = parked


class Parked:
    """What `Resolver.send_ahead` started: `Resolver.unpark` drops it if nobody read it."""

    __slots__ = ("key", "flight")

    def __init__(self, key: tuple[str, str], flight: _Flight) -> None:
        self.key, self.flight = key, flight


class Resolver:
    """The production resolver: thread-safe, shared by every connection of a runtime."""

    MAX_PARKED = 256          # queries sent ahead and not yet read, per process (send_ahead)

    def __init__(
        self,
        servers: Sequence[tuple[str, int]] = (),
        timeout_s: float = 5.0,
        cache_entries: int = 50000,
        max_ttl_s: int = 3600,
        negative_ttl_s: int = 300,
        derived_entries: int = 10000,
        dnssec: bool = False,
    ) -> None:
        if servers:
            res = dns.resolver.Resolver(configure=False)
            res.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in servers]
        else:
            res = dns.resolver.Resolver(configure=True)
        # One attempt may be retried within the lifetime; a lost UDP packet is not an error.
        res.timeout = min(2.0, timeout_s)
        res.lifetime = timeout_s
        res.cache = None  # our own cache below: it keeps negative answers too
        self.dnssec = dnssec
        if dnssec:
            # DO asks for signatures; AD in the query asks for the AD bit back (RFC 6840 §5.7).
            res.use_edns(0, dns.flags.DO, 1232)
            res.flags = dns.flags.RD | dns.flags.AD
        self._res = res
        # The usual exchange (one UDP query, NOERROR/NXDOMAIN) without dnspython's resolver
        # machinery; everything else still goes through `res` (dnsudp.py).
        self._udp = UdpExchange(_plain_servers(res), flags=res.flags if res.flags is not None else dns.flags.RD,
                                edns=(res.payload, res.ednsflags) if res.edns >= 0 else None,
                                attempt_s=res.timeout)
        self.timeout_s = timeout_s
        self.health = _ServerHealth(min_silence_s=min(1.0, res.timeout))
        self.max_ttl_s = max_ttl_s
        self.negative_ttl_s = negative_ttl_s
        self._cache = _Cache(cache_entries)
        # Queries in flight, by (name, type): later askers wait for the first one's answer.
        self._flights: dict[tuple[str, str], _Flight] = {}
        self._flights_lock = threading.Lock()
        # Parked flights in the order they were sent (send_ahead), for the sweep of the
        # ones nobody claimed or unparked. Each holds a socket until it is read: at most
        # MAX_PARKED at once, so that hundreds of sessions cannot use up the process's
        # descriptors (beyond it a lookup simply waits to be asked).
        self._parked: OrderedDict[tuple[str, str], _Flight] = OrderedDict()
        # Results computed from DNS answers alone (SPF check_host()), kept until the
        # first of those answers expires from the cache above: see `derived`.
        self.derived = DerivedCache(derived_entries if cache_entries > 0 else 0)
        # Called with (rdtype, seconds, status) after every lookup that went to the network
        # (ops/metrics.py: DNS latency histogram); None = off.
        self.observer: Callable[[str, float, str], None] | None = None

    def clear_cache(self) -> None:
        self._cache.clear()
        self.derived.clear()

    def query(self, name: str, rdtype: str, *, lifetime: float | None = None) -> Answer:
        return self.lookup(name, rdtype, lifetime=lifetime)[0]

    def lookup(self, name: str, rdtype: str, *, lifetime: float | None = None) -> tuple[Answer, float]:
        """The answer and the monotonic time until which the cache holds it (0.0: not
        cached, e.g. a temporary error, a zero TTL or the cache turned off).

        Identical queries in flight are coalesced (singleflight): while one caller asks
        the servers for (name, type), another waits for that answer instead of sending
        the same query again, but never beyond its own *lifetime* (then TEMPERROR, as if
        its own query had timed out). When the answer it waited for is a timeout of a
        caller whose time ran out before its own, it asks again with what it has left."""
        key = _key(name, rdtype)
        rdtype = key[1]
        now = time.monotonic()
        cached = self._cache.get(key, now)
        if cached is not None:
            return cached[1], cached[0]
        lifetime = lifetime if lifetime is not None else self.timeout_s
        if lifetime <= 0:
            return self._resolve(key, rdtype, lifetime)     # budget exhausted: no traffic, nothing shared
        deadline = now + lifetime
        while True:
            claimed: Sent | None = None
            with self._flights_lock:
                cached = self._cache.get(key, time.monotonic())   # a flight may have just landed
                if cached is not None:
                    return cached[1], cached[0]
                flight = self._flights.get(key)
                leader = flight is None
                if flight is None:
                    flight = self._flights[key] = _Flight(deadline)
                elif flight.parked is not None:          # sent ahead: read its answer
                    claimed, flight.parked = flight.parked, None
                    self._parked.pop(key, None)
                    flight.deadline = deadline
                    leader = True
                else:
                    flight.waiters += 1
            if leader:
                return self._lead(key, rdtype, lifetime, flight, claimed)
            remaining = deadline - time.monotonic()
            landed = remaining > 0 and flight.done.wait(remaining)
            with self._flights_lock:
                flight.waiters -= 1
            if not landed:
                return Answer(key[0], rdtype, DnsStatus.TEMPERROR, error=f"timeout after {lifetime:.1f}s"), 0.0
            answer, expires = flight.result
            if (answer.temporary and flight.deadline < deadline and deadline > time.monotonic()
                    and answer.error.startswith(("timeout", "DNS time budget"))):
                lifetime = deadline - time.monotonic()   # the leader's time ran out, not ours
                continue
            return answer, expires

    def cached(self, name: str, rdtype: str) -> bool:
        """Whether a lookup of (name, type) would be answered from the cache now."""
        return self._cache.get(_key(name, rdtype), time.monotonic()) is not None

    def warm(self, name: str, rdtype: str) -> bool:
        """Whether a lookup of (name, type) now would be answered without a query of its
        own: from the cache, or by joining the identical query already in flight."""
        key = _key(name, rdtype)
        if self._cache.get(key, time.monotonic()) is not None:
            return True
        with self._flights_lock:
            return key in self._flights

    def waiting(self, name: str, rdtype: str) -> int:
        """How many callers wait for the query for (name, type) in flight (0: none is)."""
        with self._flights_lock:
            flight = self._flights.get(_key(name, rdtype))
            return flight.waiters if flight is not None else 0

    def send_ahead(self, name: str, rdtype: str) -> Parked | None:
        """Send the query for (name, type) now and return without waiting: the first
        lookup that asks for it reads the answer from the socket (as if it had sent the
        query itself, when it was sent), and lookups meanwhile join it as a query in
        flight. No thread waits for it: a warm-up that costs one datagram and no thread
        hand-off. None when nothing was sent: already cached or in flight, the servers
        taken for down, or a query the usual exchange does not send (see dnsudp).
        A sent query nobody asks for is dropped by `unpark` (the message ended) or, at
        the latest, by the sweep once it is older than the lookup timeout."""
        key = _key(name, rdtype)
        type_code = _rdtype_code(key[1])
        if type_code is None or self.health.down:
            return None
        now = time.monotonic()
        self._sweep(now)
        if self._cache.get(key, now) is not None:
            return None
        with self._flights_lock:
            if key in self._flights or len(self._parked) >= self.MAX_PARKED:
                return None
        try:
            qname = dns.name.from_text(key[0])
        except (dns.exception.DNSException, UnicodeError, ValueError):
            return None
        sent = self._udp.send(qname, type_code)
        if sent is None:
            return None
        with self._flights_lock:
            if key in self._flights:            # another thread got there first
                sent.close()
                return None
            flight = self._flights[key] = self._parked[key] = _Flight(sent.at + self.timeout_s, sent)
        return Parked(key, flight)

    def unpark(self, parked: Parked) -> None:
        """Drop a query `send_ahead` sent if no lookup has claimed it (its socket closed)."""
        if parked.flight.parked is not None:    # claimed ones (the usual case) need no lock
            self._drop(parked.key, parked.flight)

    def _drop(self, key: tuple[str, str], flight: _Flight) -> None:
        with self._flights_lock:
            sent = flight.parked
            if sent is None or self._flights.get(key) is not flight:
                return                          # claimed (or already dropped)
            flight.parked = None
            del self._flights[key]
            self._parked.pop(key, None)
        sent.close()
        flight.done.set()

    def _sweep(self, now: float) -> None:
        """Drop parked flights older than the lookup timeout (their message never asked
        and never ended cleanly); at most a few per call."""
        if not self._parked:
            return
        stale: list[tuple[tuple[str, str], _Flight]] = []
        with self._flights_lock:
            while self._parked and len(stale) < 4:
                key, flight = next(iter(self._parked.items()))
                if flight.parked is not None and now - flight.parked.at <= self.timeout_s:
                    break
                del self._parked[key]
                if flight.parked is not None:
                    stale.append((key, flight))
        for key, flight in stale:
            self._drop(key, flight)

    def _lead(self, key: tuple[str, str], rdtype: str, lifetime: float, flight: _Flight,
              sent: Sent | None = None) -> tuple[Answer, float]:
        """Ask the servers for *key* on behalf of every caller waiting on *flight* (reading
        the answer to *sent*, the query `send_ahead` sent, when there is one)."""
        result: tuple[Answer, float] = (Answer(key[0], rdtype, DnsStatus.TEMPERROR, error="lookup failed"), 0.0)
        try:
            result = self._resolve(key, rdtype, lifetime, sent)
            return result
        finally:
            flight.result = result
            with self._flights_lock:
                self._flights.pop(key, None)
            flight.done.set()

    def _resolve(self, key: tuple[str, str], rdtype: str, lifetime: float,
                 sent: Sent | None = None) -> tuple[Answer, float]:
        """One lookup that missed the cache: ask, observe, cache."""
        now = time.monotonic()
        try:
            answer = self._lookup(key[0], rdtype, lifetime, sent)
        finally:
            if sent is not None:
                sent.close()                     # read or not, it is done with
        if sent is not None:
            now = min(now, sent.at)              # the latency the metrics see: from the send
        if self.observer is not None:
            self.observer(rdtype, time.monotonic() - now, answer.status.value)
        if answer.status in (DnsStatus.OK,):
            ttl = min(answer.ttl, self.max_ttl_s)
        elif answer.status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA):
            ttl = min(answer.ttl or self.negative_ttl_s, self.negative_ttl_s)
        else:
            ttl = 0
        if ttl > 0 and self._cache.size > 0:
            self._cache.put(key, answer, now + ttl)
            return answer, now + ttl
        return answer, 0.0

    def _lookup(self, name: str, rdtype: str, lifetime: float, sent: Sent | None = None) -> Answer:
        try:
            qname = sent.qname if sent is not None else dns.name.from_text(name)   # parsed when sent
        except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
            return Answer(name, rdtype, DnsStatus.BADNAME, error=f"bad name: {exc}")
        if lifetime <= 0:
            return Answer(name, rdtype, DnsStatus.TEMPERROR, error="DNS time budget exhausted")
        started = time.monotonic()
        admitted = self.health.admit(started)
        if not admitted:
            return Answer(name, rdtype, DnsStatus.TEMPERROR, error="DNS servers not answering")
        if admitted == "probe":
            lifetime = min(lifetime, self.health.min_silence_s)
        if sent is not None:
            started = min(started, sent.at)      # silence counts from when the query went out
        answer = self._ask(qname, name, rdtype, lifetime, sent)
        now = time.monotonic()
        # SERVFAIL/REFUSED from every server (NoNameservers) is an answer: they are up.
        if answer.status is not DnsStatus.TEMPERROR or answer.error.startswith("no server answered"):
            self.health.answered(now, admitted)
        elif answer.error.startswith("timeout"):
            self.health.silent(started, now, admitted)
        else:
            self.health.failed(now, admitted)
        return answer

    def _ask(self, qname: dns.name.Name, name: str, rdtype: str, lifetime: float,
             sent: Sent | None = None) -> Answer:
        started = time.monotonic()
        type_code = _rdtype_code(rdtype)
        if type_code is not None:
            got = self._udp.ask(qname, type_code, lifetime, sent)
            if got is TIMEOUT:
                return Answer(name, rdtype, DnsStatus.TEMPERROR, error=f"timeout after {lifetime:.1f}s")
            if isinstance(got, Refusals):
                request = dns.message.make_query(qname, rdtype, use_edns=self._res.edns,
                                                 want_dnssec=self.dnssec, payload=self._res.payload)
                errors = [(f"Do53:{ip}@{port}", False, port, rcode, response)
                          for ip, port, rcode, response in got.errors]
                return self._no_servers(dns.resolver.NoNameservers(request=request, errors=errors), name, rdtype)
            if isinstance(got, Reply):
                return self._from_reply(got, name, rdtype)
            if isinstance(got, dns.message.QueryMessage):
                answer = self._from_response(got, name, rdtype)
                if answer is not None:
                    return answer
            # HANDBACK, or a response dnspython would not have taken: its resolver, with the time left.
            lifetime -= time.monotonic() - started
            if lifetime <= 0:
                return Answer(name, rdtype, DnsStatus.TEMPERROR, error="timeout after "
                              f"{time.monotonic() - started:.1f}s")
        return self._ask_dnspython(qname, name, rdtype, lifetime)

    def _from_reply(self, reply: Reply, name: str, rdtype: str) -> Answer:
        """A response read by dnsudp.read_reply: the Answer `_from_response` gives for it."""
        ad = reply.ad if self.dnssec else None
        if reply.nxdomain:
            return Answer(name, rdtype, DnsStatus.NXDOMAIN, ttl=reply.ttl, error="NXDOMAIN", authenticated=ad)
        if not reply.found:
            return Answer(name, rdtype, DnsStatus.NODATA, ttl=reply.ttl, authenticated=ad)
        return Answer(name, rdtype, DnsStatus.OK, records=reply.records, ttl=reply.ttl, authenticated=ad,
                      signed=self.dnssec and reply.signed)

    def _from_response(self, r: dns.message.QueryMessage, name: str, rdtype: str) -> Answer | None:
        """What dnspython's resolver makes of a whole NOERROR/NXDOMAIN response, by the
        same chaining code (None: it would have refused it, so it is asked again)."""
        try:
            chain = r.resolve_chaining()
        except (dns.exception.DNSException, AttributeError, IndexError, ValueError):
            return None
        if r.rcode() == dns.rcode.NXDOMAIN:
            return Answer(name, rdtype, DnsStatus.NXDOMAIN, ttl=_soa_ttl(r), error="NXDOMAIN",
                          authenticated=self._ad(r))
        if chain.answer is None:
            return Answer(name, rdtype, DnsStatus.NODATA, ttl=_soa_ttl(r), authenticated=self._ad(r))
        try:
            values = tuple(_rdata_value(rdtype, rd) for rd in chain.answer)
        except (AttributeError, TypeError, ValueError):
            return None
        return Answer(name, rdtype, DnsStatus.OK, records=values, ttl=chain.answer.ttl,
                      authenticated=self._ad(r),
                      signed=self.dnssec and any(rr.rdtype == dns.rdatatype.RRSIG for rr in r.answer))

    def _ask_dnspython(self, qname: dns.name.Name, name: str, rdtype: str, lifetime: float) -> Answer:
        try:
            ans = self._res.resolve(qname, rdtype, raise_on_no_answer=False, lifetime=lifetime,
                                    search=False)
        except dns.resolver.NXDOMAIN as exc:
            return Answer(name, rdtype, DnsStatus.NXDOMAIN, ttl=_negative_ttl(exc), error="NXDOMAIN",
                          authenticated=self._ad(*exc.responses().values()))
        except dns.resolver.LifetimeTimeout:
            return Answer(name, rdtype, DnsStatus.TEMPERROR, error=f"timeout after {lifetime:.1f}s")
        except dns.resolver.NoNameservers as exc:
            return self._no_servers(exc, name, rdtype)
        except dns.resolver.YXDOMAIN:
            return Answer(name, rdtype, DnsStatus.BADNAME, error="name too long after DNAME")
        except dns.exception.DNSException as exc:
            return Answer(name, rdtype, DnsStatus.TEMPERROR, error=_short(f"{type(exc).__name__}: {exc}"))
        except OSError as exc:
            return Answer(name, rdtype, DnsStatus.TEMPERROR, error=_short(f"socket error: {exc}"))
        if ans.rrset is None:
            return Answer(name, rdtype, DnsStatus.NODATA, ttl=_soa_ttl(ans.response),
                          authenticated=self._ad(ans.response))
        values = tuple(_rdata_value(rdtype, r) for r in ans.rrset)
        return Answer(name, rdtype, DnsStatus.OK, records=values, ttl=ans.rrset.ttl,
                      authenticated=self._ad(ans.response),
                      signed=self.dnssec and any(r.rdtype == dns.rdatatype.RRSIG for r in ans.response.answer))

    def _no_servers(self, exc: dns.resolver.NoNameservers, name: str, rdtype: str) -> Answer:
        """Every server answered with an error rcode (SERVFAIL, REFUSED...): TEMPERROR,
        naming the RFC 8914 extended errors they gave."""
        ede, bogus = _extended_errors(exc)
        return Answer(name, rdtype, DnsStatus.TEMPERROR, error=_short(f"no server answered: {ede}{exc}"),
                      bogus=bogus)

    def _ad(self, *responses: dns.message.Message) -> bool | None:
        """The AD flag of the response(s), or None when DNSSEC was not asked for."""
        if not self.dnssec:
            return None
        return bool(responses) and all(r.flags & dns.flags.AD for r in responses)


    def budget(self, seconds: float) -> BudgetResolver:
        """A per-message view: same cache, but lookups stop at the deadline."""
        return BudgetResolver(self, seconds)


class BudgetResolver:
    """A resolver view with a deadline; lookups past it are TEMPERROR without traffic."""

    def __init__(self, parent: Resolver, seconds: float) -> None:
        self.parent = parent
        self.deadline = time.monotonic() + seconds

    @property
    def derived(self) -> DerivedCache:
        return self.parent.derived

    def query(self, name: str, rdtype: str) -> Answer:
        return self.lookup(name, rdtype)[0]

    def lookup(self, name: str, rdtype: str) -> tuple[Answer, float]:
        remaining = self.deadline - time.monotonic()
        return self.parent.lookup(name, rdtype, lifetime=min(self.parent.timeout_s, remaining))


class DnssecTally:
    """A `DnsLookup` over a resolver (or budget view) that notes whether every answer a
    check read came back DNSSEC-validated, for the log line: `summary` is "yes" (all
    authenticated), "no" (at least one not), or "" (no answer read, or DNSSEC not asked)."""

    def __init__(self, inner: Resolver | BudgetResolver) -> None:
        self.inner = inner
        self.read = 0
        self.authenticated = 0

    @property
    def derived(self) -> DerivedCache:
        return self.inner.derived

    def query(self, name: str, rdtype: str) -> Answer:
        return self.lookup(name, rdtype)[0]

    def lookup(self, name: str, rdtype: str) -> tuple[Answer, float]:
        answer, expires = self.inner.lookup(name, rdtype)
        if answer.authenticated is not None:
            self.read += 1
            self.authenticated += answer.authenticated
        return answer, expires

    def credit(self, read: int, authenticated: int) -> None:
        """Count answers a stored result read (DerivedCache): the check took the result
        instead of reading them again, and the log says the same as if it had."""
        self.read += read
        self.authenticated += authenticated

    @property
    def summary(self) -> str:
        if not self.read:
            return ""
        return "yes" if self.authenticated == self.read else "no"


class DerivedCache:
    """Values computed from DNS answers and nothing else, reused while every answer
    they read is still in the resolver's cache.

    Recomputing one before then would read the same cached answers and return the same
    value, so a hit changes nothing but the CPU spent. Use `recording` to compute: it
    notes the earliest expiry of what was read, and anything the cache did not keep
    (a temporary error, a zero TTL, the cache turned off) makes the value unstorable.
    """

    def __init__(self, size: int) -> None:
        self._cache = _Cache(size)

    @property
    def enabled(self) -> bool:
        return self._cache.size > 0

    def get(self, key: Hashable) -> tuple[Any, int, int] | None:
        """(value, answers it read that carried a DNSSEC status, how many of those were
        validated) while stored, else None: a `DnssecTally` credits the two counts."""
        item = self._cache.get(key, time.monotonic())
        return None if item is None else item[1]   # type: ignore[no-any-return]

    def put(self, key: Hashable, value: Any, recorder: Recording) -> bool:
        """Store *value* if everything *recorder* saw is cached; True when stored."""
        if not self.enabled or not recorder.storable or recorder.expires <= time.monotonic():
            return False
        self._cache.put(key, (value, recorder.dnssec_read, recorder.dnssec_authenticated), recorder.expires)
        return True

    def clear(self) -> None:
        self._cache.clear()


class Recording:
    """A `DnsLookup` over a resolver (or budget view) that notes what each lookup
    returned: the earliest cache expiry, whether any answer was uncached, whether any
    TXT record read contains "%" (an SPF macro, whose expansion depends on more than the
    domain), and the DNSSEC status of the answers (stored with the result)."""

    def __init__(self, inner: Resolver | BudgetResolver) -> None:
        self.inner = inner
        self.expires = float("inf")
        self.storable = True
        self.saw_percent = False
        self.dnssec_read = 0               # as DnssecTally counts them
        self.dnssec_authenticated = 0

    def query(self, name: str, rdtype: str) -> Answer:
        answer, expires = self.inner.lookup(name, rdtype)
        if answer.authenticated is not None:
            self.dnssec_read += 1
            self.dnssec_authenticated += answer.authenticated
        if expires <= 0.0:
            self.storable = False
        elif expires < self.expires:
            self.expires = expires
        if answer.rdtype in ("TXT", "SPF") and any(b"%" in r for r in answer.records):
            self.saw_percent = True
        return answer



def _key(name: str, rdtype: str) -> tuple[str, str]:
    """The cache and in-flight key of a lookup: the name without case or final dot."""
    return name.lower().rstrip("."), rdtype.upper()


def _plain_servers(res: dns.resolver.Resolver) -> list[tuple[str, int]]:
    """The resolver's servers as (address, port), or [] when any is not plain DNS over
    UDP/TCP port (DoH, DoT...): then every query goes through dnspython's resolver."""
    out: list[tuple[str, int]] = []
    for ns in res.nameservers:
        if isinstance(ns, str):
            out.append((ns, res.port))
        elif type(ns) is dns.nameserver.Do53Nameserver:
            out.append((ns.address, ns.port))
        else:
            return []
    return out


@functools.cache
def _rdtype_code(rdtype: str) -> int | None:
    """The type's number, or None for a name dnspython does not know (asked its way)."""
    try:
        return int(dns.rdatatype.from_text(rdtype))
    except (dns.exception.DNSException, ValueError):
        return None


def _soa(response: dns.message.Message) -> int | None:
    """The negative-caching TTL a response gives (RFC 2308 §5): its first SOA's TTL capped
    by the SOA's MINIMUM; None without a (readable) SOA."""
    try:
        for rr in response.authority:
            if rr.rdtype == dns.rdatatype.SOA:
                return int(min(rr.ttl, rr[0].minimum))
    except (AttributeError, IndexError):
        pass
    return None


def _soa_ttl(response: dns.message.Message) -> int:
    ttl = _soa(response)
    return 0 if ttl is None else ttl


def _negative_ttl(exc: dns.resolver.NXDOMAIN) -> int:
    """`_soa_ttl` of the first of the NXDOMAIN responses that has an SOA."""
    try:
        responses = list(exc.responses().values())
    except (AttributeError, KeyError):
        return 0
    return next((ttl for r in responses if (ttl := _soa(r)) is not None), 0)


# RFC 8914 extended DNS error codes that say DNSSEC validation failed (bogus data):
# 5 DNSSEC Indeterminate, 6 DNSSEC Bogus, 7 Signature Expired, 8 Signature Not Yet Valid,
# 9 DNSKEY Missing, 10 RRSIGs Missing, 11 No Zone Key Bit Set, 12 NSEC Missing.
_EDE_BOGUS = frozenset(range(5, 13))


def _extended_errors(exc: dns.resolver.NoNameservers) -> tuple[str, bool]:
    """("EDE 6 DNSSEC Bogus (text): " or "", whether a code says validation failed)
    from the responses the servers gave (unbound sends them with ``ede: yes``)."""
    texts: list[str] = []
    bogus = False
    for err in exc.kwargs.get("errors") or ():
        response = err[4] if len(err) > 4 else None
        if not isinstance(response, dns.message.Message):
            continue
        for ede in response.extended_errors():
            code = int(ede.code)
            bogus = bogus or code in _EDE_BOGUS
            label = getattr(ede.code, "name", str(code)).replace("_", " ")
            texts.append(f"EDE {code} {label}" + (f" ({ede.text})" if ede.text else ""))
    return ("; ".join(dict.fromkeys(texts)) + ": " if texts else ""), bogus


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# adapters: the libraries' global hooks route to the resolver of the current thread

_current = threading.local()


@contextmanager
def using(resolver: DnsLookup) -> Iterator[DnsLookup]:
    """Make *resolver* the one pyspf's global DNSLookup hook uses in this thread."""
    previous = getattr(_current, "resolver", None)
    _current.resolver = resolver
    try:
        yield resolver
    finally:
        _current.resolver = previous


def current() -> DnsLookup:
    res = getattr(_current, "resolver", None)
    if res is None:
        raise RuntimeError("no resolver bound to this thread (use resolver.using())")
    return res


def _spf_dnslookup(name: str, qtype: str, strict: object = True, timeout: object = None) -> list:
    """pyspf's DNSLookup signature; returns [((name, type), value), ...] or raises TempError."""
    import spf  # pyspf

    answer = current().query(name, qtype)
    if answer.status is DnsStatus.TEMPERROR:
        raise spf.TempError(f"DNS {answer.error or 'temporary failure'} for {name} {qtype}")
    if answer.status is not DnsStatus.OK:
        return []
    out = []
    for value in answer.records:
        if qtype in ("TXT", "SPF"):
            # pyspf expects the list of character-strings; one joined string is equivalent.
            value = [value]
        out.append(((name, qtype), value))
    return out


_spf_installed = False


def install_spf_adapter() -> None:
    """Route pyspf's module-level DNSLookup through `current()` (idempotent)."""
    global _spf_installed
    if _spf_installed:
        return
    import spf

    spf.DNSLookup = _spf_dnslookup
    _spf_installed = True


def dkim_dnsfunc(resolver: DnsLookup):  # type: ignore[no-untyped-def]
    """A dkimpy ``dnsfunc``: bytes name in, TXT bytes out ('' when none).

    Temporary failures raise dkim's DNS error so dkimpy reports them as such.
    """

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        answer = resolver.query(text.rstrip("."), "TXT")
        if answer.status is DnsStatus.TEMPERROR:
            raise TimeoutError(answer.error or "DNS temporary failure")
        if answer.status is not DnsStatus.OK or not answer.records:
            return b""
        return answer.records[0]

    return dnsfunc
