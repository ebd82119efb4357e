"""A lean milter-protocol load client, speaking to a milter as an MTA does.

Each message is one connection (as Postfix opens one per SMTP session): OPTNEG, then
macros, CONNECT, HELO, MAIL, RCPT, DATA, the headers, EOH, body chunks and EOM, after
which the end-of-message actions are read and QUIT is sent. The client honours what
the milter negotiated exactly as an MTA must (Sendmail's libmilter/docs and Postfix
``milter8.c`` behaviour): steps the milter asked to skip (``SMFIP_NO*``) are not sent,
together with their macros, and no reply is awaited for steps the milter said it will
not answer (``SMFIP_NR_*``); ``SMFIP_HDR_LEADSPC`` decides whether the space after the
colon is sent, and macro lists set with ``SMFIR_SETSYMLIST`` are honoured.

The protocol itself (framing, negotiation, encoding, the pre-encoded "steps") is
tests/infra/milter.py, shared with the test suite's client; this module is the load
layer on it. To stay out of the milter's way on shared cores, everything that does not
depend on a reply is encoded once: the negotiation is probed on one connection, each
message's packets are then pre-encoded into steps (bytes to write, then the one reply
to wait for), and runs of steps needing no reply are merged into a single write. The
load loop is one epoll state machine per process (no threads, no asyncio overhead).

A target is a chain of milters ("hops"): a message passes through every hop in turn,
each seeing the headers the previous ones inserted, as Postfix's cleanup server
presents one message to ``smtpd_milters = A, B`` — this is how OpenDKIM followed by
OpenDMARC is measured.

Command line (for a quick look; ``bench/run.py`` drives the real matrix)::

    python bench/client.py unix:/path/to.sock message.eml -c 8 -n 2000 -t 20
"""

from __future__ import annotations

import argparse
import heapq
import json
import multiprocessing
import resource
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The protocol lives with the tests (tests/infra/), importable from here as bench's siblings are.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from infra.milter import (  # noqa: F401  (re-exported: bench/run.py and others use mc.<name>)
    CHUNK,
    CONTINUE,
    EOM,
    FINAL,
    PROGRESS,
    REPLY,
    SKIP,
    Envelope,
    Hop,
    Negotiated,
    Prepared,
    ProtocolError,
    SessionResult,
    apply_header_edits,
    build_steps,
    negotiate,
    optneg_packet,
    packet,
    run_one,
    split_message,
)
from infra.milter import open_socket as connect

# -- the load loop ------------------------------------------------------------------------


class _Session:
    __slots__ = (
        "buf",
        "fd",
        "hop",
        "hops",
        "i",
        "mods",
        "optneg",
        "out",
        "prep",
        "sock",
        "steps",
        "t0",
        "waiting",
    )

    def __init__(self) -> None:
        self.buf = bytearray()
        self.hops: list[tuple[str, list[bytes]]] = []


@dataclass
class LoadResult:
    """What one load run measured (one process, or merged over processes)."""

    sent: int = 0
    completed: int = 0
    errors: int = 0
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    client_sys_s: float = 0.0          # the kernel part: socket syscalls an MTA pays too
    latencies_s: list[float] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)
    samples: list[SessionResult] = field(default_factory=list)
    error_texts: list[str] = field(default_factory=list)
    check_failures: int = 0
    # paced runs (run_paced): from the client's end-of-data to the last milter's final reply
    eom_latencies_s: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.completed / self.wall_s if self.wall_s else 0.0

    def percentile(self, p: float, eom: bool = False) -> float:
        lat = self.eom_latencies_s if eom else self.latencies_s
        if not lat:
            return float("nan")
        xs = sorted(lat)
        k = min(len(xs) - 1, max(0, round(p / 100.0 * (len(xs) - 1))))
        return xs[k]

    def add_completed(self, latency_s: float, action: str) -> None:
        self.completed += 1
        self.latencies_s.append(latency_s)
        self.actions[action] = self.actions.get(action, 0) + 1

    def add_error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_texts) < 20:
            self.error_texts.append(text)

    def merge(self, other: LoadResult) -> None:
        self.sent += other.sent
        self.completed += other.completed
        self.errors += other.errors
        self.wall_s = max(self.wall_s, other.wall_s)
        self.client_cpu_s += other.client_cpu_s
        self.client_sys_s += other.client_sys_s
        self.latencies_s.extend(other.latencies_s)
        self.eom_latencies_s.extend(other.eom_latencies_s)
        for k, v in other.actions.items():
            self.actions[k] = self.actions.get(k, 0) + v
        self.samples.extend(other.samples)
        self.error_texts.extend(other.error_texts)
        self.check_failures += other.check_failures

    def summary(self) -> dict[str, object]:
        return {
            "completed": self.completed, "errors": self.errors, "wall_s": round(self.wall_s, 3),
            "msg_per_s": round(self.rate, 1),
            "p50_ms": round(self.percentile(50) * 1e3, 2), "p90_ms": round(self.percentile(90) * 1e3, 2),
            "p99_ms": round(self.percentile(99) * 1e3, 2),
            **({"eom_p50_ms": round(self.percentile(50, True) * 1e3, 2),
                "eom_p90_ms": round(self.percentile(90, True) * 1e3, 2),
                "eom_p99_ms": round(self.percentile(99, True) * 1e3, 2)} if self.eom_latencies_s else {}),
            "client_cpu_pct": round(100.0 * self.client_cpu_s / self.wall_s, 1) if self.wall_s else 0.0,
            "client_sys_pct": round(100.0 * self.client_sys_s / self.wall_s, 1) if self.wall_s else 0.0,
            "actions": dict(self.actions), "check_failures": self.check_failures,
            "error_texts": self.error_texts[:5],
        }


Check = Callable[[SessionResult], bool]


# -- what the plain (run_load) and the paced (run_paced) loops share


def _next_packet(buf: bytearray) -> bytes | None:
    """Take one whole milter packet (without its length) off the front of *buf*; None
    while it has not all arrived."""
    if len(buf) < 4:
        return None
    (n,) = struct.unpack_from("!I", buf)
    if len(buf) < 4 + n:
        return None
    pkt = bytes(buf[4:4 + n])
    del buf[:4 + n]
    return pkt


def _close_conn(ep: select.epoll, fd: int, sock: socket.socket, quit_pkt: bytes) -> None:
    """Stop polling one milter connection, send it QUIT (if it still takes it) and close it."""
    try:
        ep.unregister(fd)
    except OSError:
        pass
    try:
        sock.send(quit_pkt)
    except OSError:
        pass
    sock.close()


def _conclude(res: LoadResult, done: list[SessionResult], t_start: float, t_last: float,
              ru0: resource.struct_rusage, check: Check | None, keep_samples: int) -> LoadResult:
    """Wall time up to the last completion, the client's CPU since *ru0*, the checks and the
    samples: the end of a run."""
    res.wall_s = t_last - t_start
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    res.client_sys_s = ru1.ru_stime - ru0.ru_stime
    res.client_cpu_s = ru1.ru_utime - ru0.ru_utime + res.client_sys_s
    if check is not None:
        res.check_failures = sum(1 for r in done if not check(r))
    res.samples = done[:keep_samples]
    return res


def run_load(preps: Sequence[Prepared], concurrency: int, count: int, duration_s: float,
             check: Check | None = None, io_timeout_s: float = 30.0, keep_samples: int = 3) -> LoadResult:
    """Keep `concurrency` sessions in flight until `count` messages were sent or
    `duration_s` passed, whichever first; then let the ones in flight finish.

    Messages cycle through `preps`. Latency is measured from connect() to the final
    end-of-message reply of the last hop (QUIT and close are not counted, as an SMTP
    client is answered before them). `check` (if given) judges every completed session
    after the clock stops; failures are counted, not raised.
    """
    ep = select.epoll()
    live: dict[int, _Session] = {}
    res = LoadResult()
    done: list[SessionResult] = []
    optneg = optneg_packet()
    quit_pkt = packet(b"Q")
    IN, OUT = select.EPOLLIN, select.EPOLLOUT
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t_start = time.perf_counter()
    deadline = t_start + duration_s
    hard_deadline = deadline + io_timeout_s
    n_prep = len(preps)
    t_last = t_start

    def open_hop(s: _Session, hop: int) -> None:
        s.hop = hop
        s.sock = connect(s.prep.hops[hop].address)
        s.sock.setblocking(False)
        s.fd = s.sock.fileno()
        s.i = 0
        s.optneg = True
        s.mods = []
        s.out = b""
        live[s.fd] = s
        write(s, optneg, register=True)

    def write(s: _Session, data: bytes, register: bool = False) -> None:
        if s.out:                       # still flushing an earlier write: queue behind it
            s.out += data
            return
        try:
            n = s.sock.send(data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            s.out = data[n:]
            if register:
                ep.register(s.fd, OUT)
            else:
                ep.modify(s.fd, OUT)
        elif register:
            ep.register(s.fd, IN)

    def close_hop(s: _Session) -> None:
        live.pop(s.fd, None)
        _close_conn(ep, s.fd, s.sock, quit_pkt)

    def finish(s: _Session, action: str, error: str = "") -> None:
        nonlocal t_last
        now = time.perf_counter()
        if live.get(s.fd) is s:
            close_hop(s)
        if error:
            res.add_error(error)
            return
        t_last = now
        res.add_completed(now - s.t0, action)
        done.append(SessionResult(now - s.t0, action, s.hops))

    def start() -> None:
        s = _Session()
        s.prep = preps[res.sent % n_prep]
        s.steps = s.prep.first
        res.sent += 1
        s.t0 = time.perf_counter()
        try:
            open_hop(s, 0)
        except OSError as exc:
            res.add_error(f"connect: {exc}")

    def on_packet(s: _Session, pkt: bytes) -> bool:
        """Handle one reply; True when the session left this socket (next hop or done)."""
        c = pkt[0]
        if s.optneg:
            if pkt[:1] != b"O" or pkt[1:] != s.prep.hops[s.hop].neg.raw:
                raise ProtocolError("the milter negotiated differently than on the probe")
            s.optneg = False
            write(s, s.steps[0][0])
            return False
        if c == PROGRESS:
            return False
        _data, kind, eob = s.steps[s.i]
        if kind == EOM and c not in FINAL:
            s.mods.append(pkt)
            return False
        if c == SKIP and s.i < eob:
            s.i = eob
            write(s, s.steps[eob][0])
            return False
        if c not in FINAL:
            raise ProtocolError(f"unexpected reply {chr(c)!r} at step {s.i}")
        if kind != EOM and c == CONTINUE:
            s.i += 1
            write(s, s.steps[s.i][0])
            return False
        # the milter's last word on this message
        s.hops.append((chr(c), s.mods))
        nxt = s.hop + 1
        if c in (CONTINUE, ord("a")) and nxt < len(s.prep.hops):
            close_hop(s)
            s.steps = s.prep.steps_for(nxt, [m for _, mods in s.hops for m in mods])
            s.buf = bytearray()
            open_hop(s, nxt)
            return True
        finish(s, chr(c))
        return True

    try:
        while True:
            now = time.perf_counter()
            while len(live) < concurrency and res.sent < count and now < deadline:
                start()
            if not live:
                break
            if now > hard_deadline:
                for s in list(live.values()):
                    finish(s, "", "timeout")
                break
            for fd, ev in ep.poll(1.0):
                s = live.get(fd)
                if s is None:
                    continue
                try:
                    if ev & OUT:
                        n = s.sock.send(s.out)
                        s.out = s.out[n:]
                        if not s.out:
                            ep.modify(fd, IN)
                        continue
                    data = s.sock.recv(262144)
                    if not data:
                        raise ProtocolError("milter closed the connection")
                    buf = s.buf
                    buf += data
                    while (pkt := _next_packet(buf)) is not None:
                        if on_packet(s, pkt):
                            break           # the session moved to its next hop or ended
                except BlockingIOError:
                    continue
                except (OSError, ProtocolError) as exc:
                    finish(s, "", f"{type(exc).__name__}: {exc}")
    finally:
        for s in list(live.values()):
            close_hop(s)
        ep.close()
    return _conclude(res, done, t_start, t_last, ru0, check, keep_samples)


def _worker(args: tuple) -> LoadResult:
    preps, concurrency, count, duration_s, check, io_timeout_s = args
    return run_load(preps, concurrency, count, duration_s, check, io_timeout_s)


def run_load_procs(preps: Sequence[Prepared], concurrency: int, count: int, duration_s: float,
                   procs: int = 1, check: Check | None = None, io_timeout_s: float = 30.0) -> LoadResult:
    """run_load split over `procs` forked processes (sessions and count divided evenly).

    The client's CPU (user and system, getrusage) is measured inside each process and summed.
    """
    procs = max(1, min(procs, concurrency))
    if procs == 1:
        return run_load(preps, concurrency, count, duration_s, check, io_timeout_s)
    jobs = []
    for p in range(procs):
        c = concurrency // procs + (1 if p < concurrency % procs else 0)
        n = count // procs + (1 if p < count % procs else 0)
        jobs.append((preps, c, n, duration_s, check, io_timeout_s))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(procs) as pool:
        parts = pool.map(_worker, jobs)
    total = LoadResult()
    for part in parts:
        total.merge(part)
    return total


def prepare(addresses: Sequence[str], messages: Sequence[bytes], env: Envelope) -> list[Prepared]:
    """Probe each milter's negotiation and pre-encode every message for it."""
    hops = tuple(Hop(a, negotiate(a)) for a in addresses)
    out = []
    for raw in messages:
        headers, body = split_message(raw)
        out.append(Prepared(env, headers, body, hops))
    return out


# -- paced sessions: an SMTP client's timing, as Postfix presents it to its milters ----------

ENVELOPE_TAGS = ("C", "H", "M", "R", "T")
_OPEN, _SEND, _WAIT, _EOD, _CONTENT = range(5)


@dataclass
class PacedMessage:
    """One message as Postfix hands it to ``smtpd_milters = hop0, hop1, ...``.

    ``phases``: per SMTP command of the client (connect, EHLO, MAIL, each RCPT, DATA) the
    packets each hop gets for it, hop by hop: smtpd passes every command to its milters as
    the client sends it. The content (headers, EOH, body chunks, EOM) goes after the
    client's end-of-data, as Postfix's cleanup server sends it: to hop 0 in full, then to
    hop 1 with hop 0's header edits applied, and so on (`content`).
    """

    env: Envelope
    headers: list[tuple[bytes, bytes]]
    body: bytes
    hops: tuple[Hop, ...]
    phases: list[list[tuple[int, bytes, int]]]      # [SMTP command] -> [(hop, bytes, reply kind)]
    tag: object = None                               # the caller's label (e.g. the sender domain)

    def content(self, hop: int, edits: Sequence[bytes]) -> list[tuple[bytes, int, str]]:
        headers = apply_header_edits(self.headers, edits) if edits else self.headers
        steps = build_steps(self.hops[hop].neg, self.env, headers, self.body)
        return [(st.data, st.kind, st.tag) for st in steps if st.tag not in ENVELOPE_TAGS]


def paced_message(hops: Sequence[Hop], env: Envelope, raw: bytes, tag: object = None) -> PacedMessage:
    """Encode one message for `run_paced` (the hops' negotiations probed beforehand)."""
    headers, body = split_message(raw)
    n_phase = 4 + len(env.rcpts)
    phases: list[list[tuple[int, bytes, int]]] = [[] for _ in range(n_phase)]
    first = {"C": 0, "H": 1, "M": 2, "T": n_phase - 1}
    for h, hop in enumerate(hops):
        r = 0
        for st in build_steps(hop.neg, env, headers, body):
            if st.tag == "R":
                k, r = 3 + r, r + 1
            elif st.tag in first:
                k = first[st.tag]
            else:
                continue
            phases[k].append((h, st.data, st.kind))
    return PacedMessage(env, headers, body, tuple(hops), phases, tag)


class _Conn:
    __slots__ = ("buf", "fd", "hop", "out", "sess", "sock")


class _Paced:
    __slots__ = ("conns", "finals", "i", "mods", "msg", "ops", "t0", "t_eod", "wait_hop", "wait_kind", "wait_tag")


def run_paced(msgs: Sequence[PacedMessage], concurrency: int, duration_s: float, rtt_s: float,
              check: Check | None = None, io_timeout_s: float = 60.0, keep_samples: int = 3,
              tick: Callable[[], None] | None = None, tick_s: float = 0.1) -> LoadResult:
    """Keep `concurrency` SMTP sessions in flight, each message used once, paced like a
    real SMTP client talking to Postfix, until every message was sent or `duration_s`
    passed; then let the sessions in flight finish.

    Timeline of one session: the milter connections are opened and CONNECT sent as the
    client connects; EHLO, MAIL, each RCPT and DATA follow one client round trip
    (`rtt_s`) after the previous command was answered; the content follows one more round
    trip after DATA (the 354 reply, then the client's text and its end-of-data). From then
    on nothing waits for the client: headers, EOH, body chunks and EOM go to each milter in
    turn, each packet its own write. Latency: from connect to the last milter's final
    reply (the whole transaction as the client sees it, its own round trips included) and
    from end-of-data to that reply (``eom_latencies_s``: what the client waits after
    its final dot). `tick` is called about every `tick_s` seconds (e.g. to sample RSS).
    """
    ep = select.epoll()
    conns: dict[int, _Conn] = {}
    res = LoadResult()
    done: list[SessionResult] = []
    live: set[_Paced] = set()
    timers: list[tuple[float, int, _Paced]] = []
    seq = 0
    optneg = optneg_packet()
    quit_pkt = packet(b"Q")
    IN, OUT = select.EPOLLIN, select.EPOLLOUT
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t_start = time.perf_counter()
    deadline = t_start + duration_s
    t_last = t_start
    next_tick = t_start
    count = len(msgs)

    def write(c: _Conn, data: bytes) -> None:
        if c.out:
            c.out += data
            return
        n = 0
        try:
            n = c.sock.send(data)
        except BlockingIOError:
            pass
        if n < len(data):
            c.out = data[n:]
            ep.modify(c.fd, IN | OUT)

    def close_all(s: _Paced) -> None:
        for c in s.conns:
            if c is None:
                continue
            conns.pop(c.fd, None)
            _close_conn(ep, c.fd, c.sock, quit_pkt)
        live.discard(s)

    def finish(s: _Paced, action: str, error: str = "") -> None:
        nonlocal t_last
        now = time.perf_counter()
        close_all(s)
        if error:
            res.add_error(error)
            return
        t_last = now
        res.add_completed(now - s.t0, action)
        if s.t_eod:
            res.eom_latencies_s.append(now - s.t_eod)
        done.append(SessionResult(now - s.t0, action, [(s.finals[h], s.mods[h]) for h in range(len(s.finals))
                                                       if s.finals[h]]))

    def advance(s: _Paced) -> None:
        nonlocal seq
        ops = s.ops
        while s.i < len(ops):
            op = ops[s.i]
            s.i += 1
            code = op[0]
            if code == _SEND:
                _, h, data, kind, tag = op
                write(s.conns[h], data)
                if kind:
                    s.wait_hop, s.wait_kind, s.wait_tag = h, kind, tag
                    return
            elif code == _WAIT:
                if rtt_s > 0:
                    seq += 1
                    heapq.heappush(timers, (time.perf_counter() + rtt_s, seq, s))
                    return
            elif code == _OPEN:
                h = op[1]
                c = _Conn()
                c.sess, c.hop, c.buf, c.out = s, h, bytearray(), b""
                c.sock = connect(s.msg.hops[h].address)
                c.sock.setblocking(False)
                c.fd = c.sock.fileno()
                s.conns[h] = c
                conns[c.fd] = c
                ep.register(c.fd, IN)
                write(c, optneg)
                s.wait_hop, s.wait_kind, s.wait_tag = h, -1, ""
                return
            elif code == _EOD:
                s.t_eod = time.perf_counter()
            else:   # _CONTENT for hop h: built now, with the earlier hops' header edits applied
                h = op[1]
                edits = [m for k in range(h) for m in s.mods[k]]
                ops[s.i:s.i] = [(_SEND, h, d, k, t) for d, k, t in s.msg.content(h, edits)]
        finish(s, s.finals[-1] or "c")

    def start() -> None:
        s = _Paced()
        s.msg = msgs[res.sent]
        res.sent += 1
        n = len(s.msg.hops)
        s.conns = [None] * n
        s.mods = [[] for _ in range(n)]
        s.finals = [""] * n
        s.t_eod = 0.0
        s.i = 0
        ops: list[tuple] = [(_OPEN, h) for h in range(n)]
        for k, phase in enumerate(s.msg.phases):
            if k:
                ops.append((_WAIT,))
            ops.extend((_SEND, h, data, kind, "") for h, data, kind in phase)
        ops += [(_WAIT,), (_EOD,)] + [(_CONTENT, h) for h in range(n)]
        s.ops = ops
        live.add(s)
        s.t0 = time.perf_counter()
        try:
            advance(s)
        except OSError as exc:
            finish(s, "", f"connect: {exc}")

    def on_packet(c: _Conn, pkt: bytes) -> None:
        s = c.sess
        h = c.hop
        if h != s.wait_hop:
            raise ProtocolError(f"a reply from hop {h} while waiting for hop {s.wait_hop}")
        cmd = pkt[0]
        if s.wait_kind == -1:
            if pkt[:1] != b"O" or pkt[1:] != s.msg.hops[h].neg.raw:
                raise ProtocolError("the milter negotiated differently than on the probe")
            s.wait_hop = -2
            advance(s)
            return
        if cmd == PROGRESS:
            return
        if s.wait_kind == EOM and cmd not in FINAL:
            s.mods[h].append(pkt)
            return
        if cmd == SKIP and s.wait_tag == "body":
            while s.ops[s.i][0] == _SEND and s.ops[s.i][4] == "body":
                s.i += 1
            s.wait_hop = -2
            advance(s)
            return
        if cmd not in FINAL:
            raise ProtocolError(f"unexpected reply {chr(cmd)!r} (waiting for {s.wait_tag or 'envelope'})")
        s.wait_hop = -2
        if s.wait_kind == EOM:
            s.finals[h] = chr(cmd)
            if cmd in (CONTINUE, ord("a")):
                advance(s)
            else:
                finish(s, chr(cmd))
        elif cmd == CONTINUE:
            advance(s)
        else:       # an answer before end-of-message that ends the transaction (reject, ...)
            s.finals[h] = chr(cmd)
            finish(s, chr(cmd))

    try:
        while True:
            now = time.perf_counter()
            while len(live) < concurrency and res.sent < count and now < deadline:
                start()
            if tick is not None and now >= next_tick:
                tick()
                next_tick = now + tick_s
            while timers and timers[0][0] <= now:
                s = heapq.heappop(timers)[2]
                if s in live:
                    try:
                        advance(s)
                    except OSError as exc:
                        finish(s, "", f"{type(exc).__name__}: {exc}")
            if not live:
                break
            if now > deadline + io_timeout_s:
                for s in list(live):
                    finish(s, "", "timeout")
                break
            wait = min(tick_s, (timers[0][0] - now) if timers else tick_s)
            for fd, ev in ep.poll(max(0.0, wait)):
                c = conns.get(fd)
                if c is None:
                    continue
                s = c.sess
                try:
                    if ev & OUT and c.out:
                        n = c.sock.send(c.out)
                        c.out = c.out[n:]
                        if not c.out:
                            ep.modify(fd, IN)
                    if not ev & IN:
                        continue
                    data = c.sock.recv(262144)
                    if not data:
                        raise ProtocolError("milter closed the connection")
                    buf = c.buf
                    buf += data
                    while s in live and (pkt := _next_packet(buf)) is not None:
                        on_packet(c, pkt)
                except BlockingIOError:
                    continue
                except (OSError, ProtocolError) as exc:
                    if s in live:
                        finish(s, "", f"{type(exc).__name__}: {exc}")
    finally:
        for s in list(live):
            close_all(s)
        ep.close()
    return _conclude(res, done, t_start, t_last, ru0, check, keep_samples)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("milter", nargs="+", help="milter socket(s), e.g. unix:/run/x.sock; several = a chain")
    ap.add_argument("-m", "--message", action="append", required=True, help="RFC 5322 message file (repeatable)")
    ap.add_argument("-c", "--concurrency", type=int, default=8)
    ap.add_argument("-n", "--count", type=int, default=2000)
    ap.add_argument("-t", "--time", type=float, default=20.0, help="stop starting sessions after this many seconds")
    ap.add_argument("-P", "--procs", type=int, default=1)
    ap.add_argument("--client-addr", default="192.0.2.10")
    ap.add_argument("--mail-from", default="<sender@example.net>")
    ap.add_argument("--rcpt", default="<user@example.com>")
    ap.add_argument("--auth", default="", help="{auth_authen} macro value (SASL user)")
    a = ap.parse_args(argv)
    msgs = []
    for path in a.message:
        with open(path, "rb") as fh:
            msgs.append(fh.read())
    env = default_envelope(a.client_addr, a.mail_from, (a.rcpt,), auth=a.auth)
    preps = prepare(a.milter, msgs, env)
    res = run_load_procs(preps, a.concurrency, a.count, a.time, a.procs)
    json.dump(res.summary(), sys.stdout, indent=1)
    print()
    return 0 if not res.errors else 1


def default_envelope(client_addr: str = "192.0.2.10", mail_from: str = "<sender@example.net>",
                     rcpts: tuple[str, ...] = ("<user@example.com>",), auth: str = "",
                     helo: str = "mail.sender.example", daemon_name: str = "smtpd") -> Envelope:
    """The macros Postfix sends by default (milter_*_macros), with a fixed queue id."""
    macros = {
        0: {"j": "mx.bench.test", "daemon_name": daemon_name, "_": f"{helo} [{client_addr}]",
            "client_addr": client_addr, "client_name": helo},
        1: {},
        2: {"i": "4BENCH0QID", "mail_addr": mail_from.strip("<>")},
        3: {"rcpt_addr": rcpts[0].strip("<>")},
        4: {"i": "4BENCH0QID"},
        6: {"i": "4BENCH0QID"},
        5: {"i": "4BENCH0QID"},
    }
    if auth:
        macros[2].update({"auth_type": "PLAIN", "auth_authen": auth})
    fam = "6" if ":" in client_addr else "4"
    return Envelope(client_addr=client_addr, family=fam, client_name=helo, helo=helo,
                    mail_from=mail_from, rcpts=rcpts, macros=macros)


if __name__ == "__main__":
    sys.exit(main())
