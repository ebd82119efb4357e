"""The pymilter connection object: callbacks record facts, end-of-message decides.

One `Handler` lives for one MTA connection (which may carry several messages). Every
callback before eom only records what the MTA said and is marked ``@noreply`` so the
MTA does not wait for an answer (milter protocol v6 SMFIP_NR_*): that halves the round
trips. Header values arrive as bytes with their leading whitespace (SMFIP_HDR_LEADSPC)
so DKIM ``c=simple`` sees them exactly as sent. RCPT is asked for only when a feature
reads the recipients (runtime.recipients_needed; otherwise SMFIP_NORCPT: each one would
cost the MTA two packets), and envelope-changing actions only when a feature makes them.
At eom the facts become a `model.Session`, `pipeline.process` turns it into an `Outcome` with the runtime
captured when the connection started (a reload never changes rules mid-connection),
and `apply` hands the result to the MTA.

Fail closed by construction. A connection starts in the state "no connect information"
and only a `connect` callback that ran to the end clears it; a message starts without an
envelope and only `envfrom` gives it one. Any exception in a callback, and any argument
pymilter could not decode before calling us (a non-UTF-8 hostname, HELO or header name:
pymilter reports it through ``sys.excepthook``, which `install_excepthook` routes to the
session it belongs to), is remembered and answered at eom with ``[policy]
on_internal_error`` (451 4.3.0 or accept) and one log line. So a callback that never ran
can never make a session look like local submission, and nothing is checked or signed on
partial facts.

Test hook (documented, inert in production): when the environment variable
``AUTHMILTER_TEST_FAULT`` is set to a header name when the worker starts, a message
carrying that header raises inside eom, to exercise the internal-error path from outside.
"""
from __future__ import annotations

import os
import re
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType
from typing import Any

import Milter  # type: ignore[import-untyped]

from .. import antispam, pipeline
from ..checks import dnsbl
from ..domain import normalize_ip
from ..model import Body, Client, Envelope, Message, Session
from ..ops.logging import get_logger
from ..ops.logsafe import log_line, sanitize
from ..ops.metrics import METRICS
from ..outcome import Action
from ..prefetch import Prefetch
from ..results import DnsListResult
from ..runtime import HOLDER, Runtime, envelope_edits_needed, rcpt_reply_needed, recipients_needed
from .apply import apply, reply_text

log = get_logger("milter")

# What we may do at eom: add/insert headers, delete forged ones, quarantine; and ask
# for our macro lists. Nothing else is requested from the MTA.
ACTIONS = Milter.ADDHDRS | Milter.CHGHDRS | Milter.QUARANTINE | Milter.SETSYMLIST
# Envelope edits (SRS), requested only when a feature needs them.
ENVELOPE_ACTIONS = Milter.CHGFROM | Milter.ADDRCPT | Milter.DELRCPT
# Macros per stage (at most 5 each: smfi_setsymlist). Postfix sends `i` from MAIL on.
SYMLISTS = (
    (Milter.M_CONNECT, ("j", "{daemon_name}", "{client_addr}", "{client_name}", "{if_addr}")),
    (Milter.M_ENVFROM, ("i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}")),
    (Milter.M_EOM, ("i", "j")),
)
SPOOL_BYTES = 1 << 20      # body kept in memory up to this, then in a temporary file
_LINE_BREAK = re.compile(rb"\r?\n")
_CTRL = re.compile(r"[\x00-\x1f\x7f]")
_TEST_FAULT = os.environ.get("AUTHMILTER_TEST_FAULT", "").strip().lower().encode()

# pymilter gives every milter context its own Python thread state, and a threading.local
# lives in the thread state: this is per MTA connection, whichever libmilter thread runs
# the callback. It lets the excepthook find the session whose arguments failed to decode.
_SESSION = threading.local()


_LOOKUPS: tuple[int, ThreadPoolExecutor] | None = None
LOOKUP_THREADS = 16


def _lookup_pool() -> ThreadPoolExecutor:
    """This worker's threads for DNS list queries started at connect (made after fork:
    threads do not survive it)."""
    global _LOOKUPS
    if _LOOKUPS is None or _LOOKUPS[0] != os.getpid():
        _LOOKUPS = (os.getpid(), ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="dnslist"))
    return _LOOKUPS[1]


class _DnsLists:
    """The [dnsbl]/[dnswl] queries of one connection: sent at connect, all at once,
    collected (once) when RCPT or end-of-message needs them, within one DNS timeout."""

    def __init__(self, runtime: Runtime, ip: str) -> None:
        tables = runtime.antispam
        assert tables is not None
        self.runtime = runtime
        self.deadline = time.monotonic() + runtime.settings.dns.timeout_s
        res = runtime.resolver.budget(runtime.settings.dns.timeout_s)
        pool = _lookup_pool()
        self.bl = dnsbl.start(ip, tables.dnsbl, res, pool.submit)
        self.wl = dnsbl.start(ip, tables.dnswl, res, pool.submit)
        self._done: tuple[DnsListResult | None, DnsListResult | None] | None = None

    def results(self) -> tuple[DnsListResult | None, DnsListResult | None]:
        if self._done is None:
            tables, s = self.runtime.antispam, self.runtime.settings
            assert tables is not None
            bl = dnsbl.collect(self.bl, tables.dnsbl, self.deadline, s.dnsbl.threshold) if tables.dnsbl else None
            wl = dnsbl.collect(self.wl, tables.dnswl, self.deadline, s.dnswl.threshold) if tables.dnswl else None
            self._done = (bl, wl)
            for name, res in (("dnsbl", bl), ("dnswl", wl)):
                for zone, answer in (res.refused if res is not None else ()):
                    # Spamhaus & co answer 127.255.255.x to refused queries (public or
                    # unregistered resolver, quota): our operator must fix the resolver.
                    log.error("%s zone %s answered %s: query refused by the list (public resolver or "
                              "quota?); not counted as a listing. Fix [dns] servers or the list subscription",
                              name, sanitize(zone), sanitize(answer))
        return self._done


class IncompleteSession(Exception):
    """A fact the MTA must have given was never recorded (its callback did not run)."""


class UndecodableInput(Exception):
    """The MTA passed bytes we cannot read as the protocol requires."""


class _Failure(Exception):
    """A callback's failure, remembered until eom: where it happened and what it was."""

    def __init__(self, where: str, exc: BaseException) -> None:
        super().__init__(where, exc)
        self.where, self.exc = where, exc

    def __str__(self) -> str:
        return f"{self.where}: {type(self.exc).__name__}: {self.exc}"


def eom_callback(ctx: object) -> int:
    """The eom entry point libmilter calls: any failure, even with no session object at
    all, answers 451 (fail closed), never pymilter's exception policy."""
    try:
        handler = ctx.getpriv()  # type: ignore[attr-defined]
        if isinstance(handler, Handler):
            return int(handler.eom())
        log.error("NOQUEUE: action=tempfail dir=unknown reason=\"end of message without a session\"")
    except Exception as exc:  # noqa: BLE001 - the last guard before libmilter
        log.error("NOQUEUE: action=tempfail dir=unknown reason=%s", sanitize(f"internal error in eom: {exc!r}"))
    try:
        ctx.setreply("451", "4.3.0", "temporary local problem while checking this message; try again later")  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - the verdict stands without our text
        pass
    return int(Milter.TEMPFAIL)


def session_callback(method: str) -> Callable[..., int]:
    """The libmilter entry point for one recording step: the session's Handler method.

    A command that arrives before option negotiation (a broken or hostile MTA) has no
    Handler to record it in; it is ignored here, and the eom that may follow is answered
    451 by eom_callback, so nothing is ever processed on partial facts."""
    def call(ctx: Any, *args: Any) -> int:
        handler = ctx.getpriv()
        if not isinstance(handler, Handler):
            log.debug("NOQUEUE: %s before option negotiation ignored", method)
            return int(Milter.CONTINUE)
        return int(getattr(handler, method)(*args))

    call.__name__ = method
    return call


def install_excepthook() -> None:
    """Route exceptions pymilter reports itself (it calls sys.excepthook when it cannot
    build a callback's arguments) to the session they belong to, and to our logger."""

    def hook(kind: type[BaseException], exc: BaseException, tb: object) -> None:
        handler = getattr(_SESSION, "handler", None)
        if isinstance(handler, Handler) and not handler._closed:
            handler._failed("callback arguments", exc, per_message=handler.in_message)
        else:
            log.error("NOQUEUE: internal error outside a session: %s: %s", kind.__name__, sanitize(str(exc)))

    sys.excepthook = hook


class _Counters:
    """Open connections and messages in flight in this worker (graceful stop waits)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connections = 0
        self.messages = 0

    def add(self, connections: int = 0, messages: int = 0) -> None:
        with self._lock:
            self.connections += connections
            self.messages += messages


ACTIVE = _Counters()


def _queue_id(value: str | None) -> str:
    """The MTA's queue id, safe to start a log line with (no control characters)."""
    return _CTRL.sub("?", value or "")[:64]


def _strip_brackets(addr: str) -> str:
    addr = addr.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    return addr


def _client_ip(family: int, hostaddr: object) -> tuple[str | None, int | None]:
    """The IP for inet/inet6 connections; None for local (unix) or unknown families."""
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(hostaddr, tuple) and hostaddr:
        addr = normalize_ip(str(hostaddr[0]).split("%", 1)[0])  # without an IPv6 zone id
        if addr is None:
            return None, None
        port = hostaddr[1] if len(hostaddr) > 1 and isinstance(hostaddr[1], int) else None
        return addr, port
    return None, None


@Milter.header_leading_space
class Handler(Milter.Base):
    """One MTA connection."""

    def __init__(self) -> None:
        # The runtime this connection keeps until it closes, whatever reloads happen.
        self.runtime: Runtime = HOLDER.get()
        self.macros: dict[str, str] = {}
        self.client = Client(ip=None)
        self.dns_lists: _DnsLists | None = None
        # Cleared only by a connect callback that completes (see the module docstring).
        self.conn_error: BaseException | None = IncompleteSession("no connect information from the MTA")
        self._closed = False
        self._reset_message()
        _SESSION.handler = self
        ACTIVE.add(connections=1)

    # -- state helpers ------------------------------------------------------------------
    def _reset_message(self) -> None:
        self.in_message = False
        self.msg_macros: dict[str, str] = {}
        self.mail_from = ""
        self.rcpts: list[str] = []
        self.early_log: list[tuple[str, str]] = []
        self.headers: list[tuple[bytes, bytes]] = []
        self._body: tempfile.SpooledTemporaryFile[bytes] | None = None
        self._body_size = 0
        # Cleared by envfrom; an eom without a recorded MAIL FROM is never processed.
        self.msg_error: BaseException | None = IncompleteSession("no envelope sender from the MTA")
        self.queue_id = ""
        # DNS warm-ups of this message (prefetch.py), cancelled when it ends.
        self.prefetch: Prefetch | None = None

    def _end_message(self) -> None:
        if self.prefetch is not None:
            self.prefetch.cancel()
            log.debug("%s: prefetch cancelled", self.queue_id or "NOQUEUE")
        if self.in_message:
            ACTIVE.add(messages=-1)
        if self._body is not None:
            self._body.close()
        self._reset_message()

    def _record_macros(self, names: tuple[str, ...], into: dict[str, str]) -> None:
        for name in names:
            value = self.getsymval(name)
            if value:
                into[name.strip("{}")] = value

    def _failed(self, where: str, exc: BaseException, per_message: bool = True) -> None:
        """Remember the first failure of this message (or connection) for the eom answer."""
        qid = self.queue_id or "NOQUEUE"
        log.debug("%s: internal error in %s", qid, where, exc_info=exc)
        failure = _Failure(where, exc)
        if per_message:
            if self.msg_error is None or isinstance(self.msg_error, IncompleteSession):
                self.msg_error = failure
        elif self.conn_error is None or isinstance(self.conn_error, IncompleteSession):
            self.conn_error = failure

    # -- negotiation ---------------------------------------------------------------------
    def negotiate(self, opts: list[int]) -> int:
        """Ask only for the actions, steps and macros we use (milter protocol v6)."""
        try:
            offered_actions, offered_steps = opts[0], opts[1]
            wanted = ACTIONS | (ENVELOPE_ACTIONS if envelope_edits_needed(self.runtime.settings) else 0)
            self._actions = offered_actions & wanted
            opts[0] = self._actions
            if self._actions & Milter.SETSYMLIST:
                for stage, names in SYMLISTS:
                    # pymilter 1.0.5's Base.setsymlist passes bytes where the C call wants str.
                    self._ctx.setsymlist(stage, " ".join(names))
            # protocol_mask(): the steps and no-reply bits we do NOT want cleared.
            steps = offered_steps & ~self.protocol_mask()
            if not recipients_needed(self.runtime.settings):
                steps |= offered_steps & Milter.P_NORCPT   # RCPT on demand: skipped unless a feature reads it
            elif rcpt_reply_needed(self.runtime.settings):
                steps &= ~Milter.P_NR_RCPT   # greylisting / DNSBL answer RCPT: the MTA must wait for us
            opts[1] = self._protocol = steps
            opts[2] = opts[3] = 0
        except Exception as exc:  # noqa: BLE001 - never let negotiation kill the connection
            self._failed("negotiate", exc, per_message=False)
            return Milter.ALL_OPTS
        return Milter.CONTINUE

    # -- recording callbacks -------------------------------------------------------------
    @Milter.noreply
    def connect(self, hostname: str, family: int, hostaddr: object) -> int:
        try:
            ip, port = _client_ip(family, hostaddr)
            self.client = Client(ip=ip, hostname=hostname or "", port=port)
            self._record_macros(SYMLISTS[0][1], self.macros)
            tables = self.runtime.antispam
            if ip is not None and tables is not None and (tables.dnsbl or tables.dnswl):
                self.dns_lists = _DnsLists(self.runtime, ip)
            if isinstance(self.conn_error, IncompleteSession):
                self.conn_error = None
        except Exception as exc:  # noqa: BLE001 - recorded, answered at eom
            self._failed("connect", exc, per_message=False)
        return Milter.CONTINUE

    @Milter.noreply
    def hello(self, heloname: str) -> int:
        try:
            c = self.client
            self.client = Client(ip=c.ip, hostname=c.hostname, helo=heloname or "", port=c.port)
        except Exception as exc:  # noqa: BLE001 - recorded, answered at eom
            self._failed("helo", exc, per_message=False)
        return Milter.CONTINUE

    @Milter.noreply
    @Milter.decode("bytes")
    def envfrom(self, mailfrom: bytes, *params: bytes) -> int:
        self._end_message()  # a new transaction (RSET or a second message)
        self.in_message = True
        ACTIVE.add(messages=1)
        try:
            self._record_macros(SYMLISTS[1][1], self.msg_macros)
            self.queue_id = _queue_id(self.msg_macros.get("i"))
            try:
                # RFC 6531: an SMTPUTF8 reverse-path is UTF-8; other bytes are no address.
                self.mail_from = _strip_brackets(mailfrom.decode("utf-8"))
            except UnicodeDecodeError:
                raise UndecodableInput("envelope sender is not valid UTF-8") from None
            self.msg_error = None
        except Exception as exc:  # noqa: BLE001 - recorded, answered at eom
            self._failed("envfrom", exc)
            return Milter.CONTINUE
        if self.conn_error is None:
            self._start_prefetch()
        return Milter.CONTINUE

    def _start_prefetch(self) -> None:
        """SPF lookups start now (prefetch.py); a failure here only costs the head start."""
        try:
            self.prefetch = Prefetch.start(self.runtime, self.client, self.mail_from,
                                           {**self.macros, **self.msg_macros})
        except Exception as exc:   # never part of the verdict: eom checks for real
            log.debug("%s: prefetch not started: %s", self.queue_id or "NOQUEUE", exc, exc_info=exc)

    @Milter.noreply
    @Milter.decode("bytes")
    def envrcpt(self, rcpt: bytes, *params: bytes) -> int:
        """Recorded only when a feature asked for recipients (see negotiate). With
        greylisting or a blocklist acting at RCPT (not no-reply then), the RCPT stage's
        verdict is asked of `antispam.at_rcpt` and applied here."""
        try:
            try:
                address = _strip_brackets(rcpt.decode("utf-8"))
            except UnicodeDecodeError:
                raise UndecodableInput("envelope recipient is not valid UTF-8") from None
            if self._protocol & Milter.P_NR_RCPT or not rcpt_reply_needed(self.runtime.settings) \
                    or self.conn_error is not None or self.msg_error is not None:
                self.rcpts.append(address)   # a recorded failure is answered at eom
                return Milter.CONTINUE
            return self._rcpt_stage(address)
        except Exception as exc:  # noqa: BLE001 - recorded, answered at eom
            self._failed("envrcpt", exc)
        return Milter.CONTINUE

    def _rcpt_stage(self, address: str) -> int:
        verdict = antispam.at_rcpt(self._session(self.queue_id, rcpt_stage=True), address, self.runtime)
        self.early_log.extend(verdict.log)
        d = verdict.decision
        if d.action is Action.ACCEPT:
            self.rcpts.append(address)
            return Milter.CONTINUE
        qid = self.queue_id or "NOQUEUE"
        pairs = [("action", d.action.value), ("stage", "rcpt"), ("ip", self.client.ip or "-"),
                 ("rcpt", address), *antispam.dns_list_log(self._session(self.queue_id, rcpt_stage=True)),
                 *verdict.log]
        if d.reasons:
            pairs.append(("reason", "; ".join(d.reasons)))
        log.info(log_line(qid, tuple(pairs)))
        self.setreply(d.code, d.xcode or None, reply_text(d.text))
        return Milter.REJECT if d.action is Action.REJECT else Milter.TEMPFAIL

    @Milter.noreply
    @Milter.decode("bytes")
    def header(self, name: str, value: bytes) -> int:
        try:
            if not self._protocol & Milter.P_HDR_LEADSPC:
                # The MTA stripped the space after the colon; model.Message wants it.
                value = b" " + value
            raw_name = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else bytes(name)
            self.headers.append((raw_name, _LINE_BREAK.sub(b"\r\n", value)))
        except Exception as exc:  # noqa: BLE001 - recorded, answered at eom
            self._failed("header", exc)
            return Milter.CONTINUE
        if self.prefetch is not None:
            try:
                self.prefetch.header(*self.headers[-1])
            except Exception as exc:   # never part of the verdict: eom checks for real
                log.debug("%s: prefetch: %s", self.queue_id or "NOQUEUE", exc, exc_info=exc)
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        try:
            if self._body is None:
                self._body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
            self._body.write(chunk)
            self._body_size += len(chunk)
        except Exception as exc:  # noqa: BLE001 - recorded, answered at eom
            self._failed("body", exc)
        return Milter.CONTINUE

    # -- the decision ----------------------------------------------------------------------
    def eom(self) -> int:
        started = time.monotonic()
        runtime = self.runtime
        try:
            qid = _queue_id(self.getsymval("i")) or self.queue_id
        except Exception:  # noqa: BLE001 - the MAIL-stage queue id stands
            qid = self.queue_id
        self.queue_id = qid
        try:
            error = self.conn_error or self.msg_error
            if error is not None:
                return self._answer_error(runtime, qid, error)
            session = self._session(qid)
            if _TEST_FAULT and any(n.lower() == _TEST_FAULT for n, _ in session.message.headers):
                raise RuntimeError("fault injected by AUTHMILTER_TEST_FAULT")
            outcome = pipeline.process(session, runtime)
            rc = apply(self, outcome)
            log.info(log_line(qid, outcome.log))
            METRICS.observe_outcome(outcome, time.monotonic() - started)
            if outcome.records and runtime.store is not None:
                try:  # queued for the store's writer thread; the reply is already decided
                    runtime.store.submit(outcome.records)
                except Exception as exc:  # noqa: BLE001 - records are best-effort, never the verdict
                    log.warning("%s: store: %s", qid or "NOQUEUE", sanitize(str(exc)))
            return rc
        except Exception as exc:
            log.debug("%s: internal error in eom", qid or "NOQUEUE", exc_info=exc)
            return self._answer_error(runtime, qid, _Failure("eom", exc))
        finally:
            self._end_message()

    def _answer_error(self, runtime: Runtime, qid: str, error: BaseException) -> int:
        """``[policy] on_internal_error`` for this message, with its one log line. The
        remote client is told in plain words that the fault is ours; details stay in the log."""
        why = sanitize(f"internal error in {error}")
        if runtime.settings.policy.on_internal_error == "accept":
            log.error("%s: action=accept dir=unknown reason=%s", qid or "NOQUEUE", why)
            return Milter.ACCEPT
        log.error("%s: action=tempfail dir=unknown reason=%s", qid or "NOQUEUE", why)
        text = ("this message could not be read as the mail protocol requires; try again later"
                if isinstance(error, _Failure) and isinstance(error.exc, (UndecodableInput, UnicodeError))
                else "temporary local problem while checking this message; try again later")
        try:
            self.setreply("451", "4.3.0", text)
        except Exception as exc:  # noqa: BLE001 - the verdict still stands without our text
            log.debug("%s: setreply failed: %s", qid or "NOQUEUE", exc)
        return Milter.TEMPFAIL

    def _session(self, qid: str, rcpt_stage: bool = False) -> Session:
        # The spool is handed over unread: DKIM hashes it in chunks, so a large body is
        # never one bytes object (worker memory stays flat in message size). It stays
        # open until _end_message, after the pipeline is done with it.
        body = Body() if self._body is None else Body.spooled(self._body, self._body_size)
        macros = dict(self.macros)
        macros.update(self.msg_macros)
        if not rcpt_stage:
            for name in SYMLISTS[2][1]:
                value = self.getsymval(name)
                if value:
                    macros[name] = value
        bl, wl = self.dns_lists.results() if self.dns_lists is not None else (None, None)
        return Session(
            client=self.client,
            envelope=Envelope(mail_from=self.mail_from, rcpts=tuple(self.rcpts)),
            message=Message(headers=tuple(self.headers), body=body),
            macros=MappingProxyType(macros),
            queue_id=qid,
            dnsbl=bl, dnswl=wl, early_log=tuple(self.early_log),
        )

    def abort(self) -> int:
        # The MTA dropped this message (RSET, client gone); the connection may go on.
        self._end_message()
        return Milter.CONTINUE

    def close(self) -> int:
        self._end_message()
        if not self._closed:
            self._closed = True
            ACTIVE.add(connections=-1)
        return Milter.CONTINUE
