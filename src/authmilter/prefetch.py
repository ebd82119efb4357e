"""DNS prefetch: start a message's lookups as soon as their input is known, so that
end-of-message finds the answers in the cache or in flight.

    MAIL FROM         SPF for MAIL FROM (the same check_host() walk, on a thread);
                      the HELO name's SPF record, sent ahead
    From header       DMARC record discovery: the Author Domain's record sent ahead (the
                      whole RFC 9989 tree walk, on a thread, for a name of 3+ labels)
    DKIM-Signature    its key record (selector._domainkey.domain TXT), sent ahead

A prefetch only warms the shared resolver. A walk on a thread runs the same pure check
against it and throws the result away; a query *sent ahead* (`Resolver.send_ahead`) is
one datagram sent from the callback's own thread, whose answer the first lookup that
asks for it reads: a single lookup needs no thread, and a thread hand-off costs more
CPU than the check it would run early (bench/results/cold-round5.md). End-of-message
runs the real checks, which read what was cached or join a query still in flight (the
resolver coalesces identical queries), so a result never depends on whether a prefetch
ran, finished or failed. The work of a message that ends (RSET, abort, close, the next
MAIL FROM) is cancelled: queued tasks are dropped, a running walk stops before its next
query, and a query sent ahead that nobody read is dropped. Walks run on a bounded pool
per worker (tasks.PREFETCH); when every thread is busy, the walk is skipped.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .checks import dmarc as dmarc_check
from .checks import fromhdr, spf
from .checks.dkim import key_name
from .checks.orgdomain import single_query
from .model import Body, Client, Envelope, Message, Session
from .outcome import Direction
from .pipeline import classify
from .resolver import Answer, BudgetResolver, DnsStatus, Parked
from .runtime import Runtime
from .tasks import PREFETCH, Pool

log = logging.getLogger("authmilter.prefetch")


class _Cancellable:
    """The resolver view a prefetch reads through: the message's budget, and after
    `cancel` every lookup is a temporary error without traffic (a pyspf walk then ends).

    Its ``derived`` is the resolver's cache of SPF results: a walk that completes from
    answers the cache keeps is stored there, and end-of-message reads it instead of
    evaluating the same records a second time (a hit is, by construction, what a new
    evaluation of those cached answers would return, and it carries their DNSSEC status
    for the log line). A cancelled walk read temporary errors, which are never stored."""

    def __init__(self, inner: BudgetResolver, cancelled: threading.Event) -> None:
        self.inner = inner
        self.cancelled = cancelled
        self.derived = inner.derived

    def query(self, name: str, rdtype: str) -> Answer:
        return self.lookup(name, rdtype)[0]

    def lookup(self, name: str, rdtype: str) -> tuple[Answer, float]:
        if self.cancelled.is_set():
            return Answer(name, rdtype.upper(), DnsStatus.TEMPERROR, error="prefetch cancelled"), 0.0
        return self.inner.lookup(name, rdtype)


class Prefetch:
    """The prefetch work of one message, started by the milter adapter as facts arrive."""

    def __init__(self, runtime: Runtime, pool: Pool = PREFETCH) -> None:
        self.runtime = runtime
        self.pool = pool
        self._cancelled = threading.Event()
        budget_s = runtime.settings.dns.message_budget_s
        self.view = _Cancellable(runtime.resolver.budget(budget_s), self._cancelled)
        self._futures: list[Future[Any]] = []
        self._sent: list[Parked] = []
        self._keys = 0
        self._from_seen = False

    @classmethod
    def start(cls, runtime: Runtime, client: Client, mail_from: str, macros: dict[str, str],
              pool: Pool = PREFETCH) -> Prefetch | None:
        """The prefetch for a message whose MAIL FROM just arrived, with its SPF walks
        started; None when there is nothing to prefetch (turned off, checks off, or
        outbound mail: the same classification end-of-message makes)."""
        settings = runtime.settings
        if not settings.dns.prefetch or not settings.verify.enabled:
            return None
        session = Session(client=client, envelope=Envelope(mail_from=mail_from), message=Message(headers=(), body=Body()),
                          macros=macros)
        if classify(session, runtime)[0] is not Direction.INBOUND:
            return None
        self = cls(runtime, pool)
        ip, helo = client.ip, client.helo
        # Behind our own relays SPF applies to a hop known only from the headers.
        if ip and not runtime.trusted_relays.contains_ip(ip):
            receiver = runtime.authserv_id(macros.get("j", ""))
            budget_s = settings.dns.message_budget_s
            if self._cold(mail_from.rpartition("@")[2] if mail_from else helo):
                self._submit("spf", lambda: spf.check_spf(ip, mail_from, helo, self.view, receiver=receiver,
                                                          timeout_s=budget_s))
            if settings.verify.spf_helo and helo and mail_from:
                self._send_ahead(helo, "TXT")    # the HELO check's first (usually only) query
        return self

    def header(self, name: bytes, value: bytes) -> None:
        """One header as it arrives: From starts the DMARC discovery, DKIM-Signature its key."""
        lname = name.rstrip(b" \t").lower()
        if lname == b"from" and not self._from_seen:
            self._from_seen = True
            from_ = fromhdr.parse_from(Message(headers=((name, value),), body=Body()))
            if not from_.ok or not self._cold(f"_dmarc.{from_.domain}"):
                return
            v = self.runtime.settings.verify
            policy_name = single_query(from_.domain, v.dmarc_mode)
            if policy_name is not None:
                self._send_ahead(policy_name, "TXT")
            else:
                self._submit("dmarc", lambda: dmarc_check.discover_dmarc(from_, self.view, mode=v.dmarc_mode,
                                                                         psl=self.runtime.psl))
        elif lname == b"dkim-signature" and self._keys < self.runtime.settings.verify.max_signatures:
            self._keys += 1
            key = key_name(value)
            if key is not None:
                self._send_ahead(key, "TXT")

    def _cold(self, name: str) -> bool:
        """Whether the first lookup of a walk misses the cache and is not in flight
        already (a known sender's walk is all cached, and one in flight for another
        message fills the cache anyway: starting it would only cost a thread hand-off)."""
        return bool(name) and not self.runtime.resolver.warm(name, "TXT")

    def cancel(self) -> None:
        """The message ended: drop what has not started, stop what runs at its next query,
        and drop the queries sent ahead that no lookup read."""
        self._cancelled.set()
        for future in self._futures:
            future.cancel()
        self._futures.clear()
        resolver = self.runtime.resolver
        for parked in self._sent:
            resolver.unpark(parked)
        self._sent.clear()

    def _send_ahead(self, name: str, rdtype: str) -> None:
        if self._cancelled.is_set():
            return
        parked = self.runtime.resolver.send_ahead(name, rdtype)
        if parked is not None:
            self._sent.append(parked)

    def _submit(self, what: str, call: Callable[[], object]) -> None:
        if self._cancelled.is_set():
            return
        future = self.pool.try_submit(self._run, what, call)
        if future is None:
            log.debug("prefetch of %s skipped: all prefetch threads busy", what)
        else:
            self._futures.append(future)

    def _run(self, what: str, call: Callable[[], object]) -> None:
        if self._cancelled.is_set():
            return
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - a warm-up never affects the message; eom checks for real
            log.debug("prefetch of %s failed: %s: %s", what, type(exc).__name__, exc)
