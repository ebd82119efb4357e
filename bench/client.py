"""A lean milter-protocol load client, speaking to a milter as an MTA does.

Each message is one connection (as Postfix opens one per SMTP session): OPTNEG, then
macros, CONNECT, HELO, MAIL, RCPT, DATA, the headers, EOH, body chunks and EOM, after
which the end-of-message actions are read and QUIT is sent. The client honours what
the milter negotiated exactly as an MTA must (Sendmail's libmilter/docs and Postfix
``milter8.c`` behaviour): steps the milter asked to skip (``SMFIP_NO*``) are not sent,
together with their macros, and no reply is awaited for steps the milter said it will
not answer (``SMFIP_NR_*``); ``SMFIP_HDR_LEADSPC`` decides whether the space after the
colon is sent, and macro lists set with ``SMFIR_SETSYMLIST`` are honoured.

To stay out of the milter's way on shared cores, everything that does not depend on a
reply is encoded once: the negotiation is probed on one connection, each message's
packets are then pre-encoded into "steps" (bytes to write, then the one reply to wait
for), and runs of steps needing no reply are merged into a single write. The load loop
is one epoll state machine per process (no threads, no asyncio overhead).

A target is a chain of milters ("hops"): a message passes through every hop in turn,
each seeing the headers the previous ones inserted, as Postfix's cleanup server
presents one message to ``smtpd_milters = A, B`` — this is how OpenDKIM followed by
OpenDMARC is measured.

Command line (for a quick look; ``bench/run.py`` drives the real matrix)::

    python bench/client.py unix:/path/to.sock message.eml -c 8 -n 2000 -t 20
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

# -- protocol constants (Sendmail libmilter mfdef.h; milter protocol version 6) ----------

MILTER_VERSION = 6
CHUNK = 65535                     # MILTER_CHUNK_SIZE: largest body packet an MTA sends

SMFIP_NOCONNECT = 0x00000001
SMFIP_NOHELO = 0x00000002
SMFIP_NOMAIL = 0x00000004
SMFIP_NORCPT = 0x00000008
SMFIP_NOBODY = 0x00000010
SMFIP_NOHDRS = 0x00000020
SMFIP_NOEOH = 0x00000040
SMFIP_NR_HDR = 0x00000080
SMFIP_NOUNKNOWN = 0x00000100
SMFIP_NODATA = 0x00000200
SMFIP_SKIP = 0x00000400
SMFIP_RCPT_REJ = 0x00000800
SMFIP_NR_CONN = 0x00001000
SMFIP_NR_HELO = 0x00002000
SMFIP_NR_MAIL = 0x00004000
SMFIP_NR_RCPT = 0x00008000
SMFIP_NR_DATA = 0x00010000
SMFIP_NR_UNKN = 0x00020000
SMFIP_NR_EOH = 0x00040000
SMFIP_NR_BODY = 0x00080000
SMFIP_HDR_LEADSPC = 0x00100000

# What we offer, like Postfix 3.x: every skip, every no-reply flag, SKIP, leading space.
MTA_PROTOCOL = 0x001FFFFF
MTA_ACTIONS = 0x000001FF          # SMFI_V6_ACTS: every modification

# macro stages (SMFIM_*) and the command each precedes
STAGE_CMD = {0: b"C", 1: b"H", 2: b"M", 3: b"R", 4: b"T", 5: b"E", 6: b"N"}

# Replies that end the message (and, for an MTA, the milter's say in it).
FINAL = frozenset(b"acrtdy4f")
PROGRESS = ord("p")
CONTINUE = ord("c")
SKIP = ord("s")

# step kinds
REPLY = 1        # wait for one reply (continue/skip/final)
EOM = 2          # wait for modification actions then a final reply


def packet(cmd: bytes, data: bytes = b"") -> bytes:
    """One milter packet: 32-bit big-endian length (command byte included), command, data."""
    return struct.pack("!I", len(data) + 1) + cmd + data


def cstr(*parts: bytes) -> bytes:
    return b"".join(p + b"\0" for p in parts)


# -- what the milter negotiated ------------------------------------------------------------


@dataclass(frozen=True)
class Negotiated:
    """The milter's OPTNEG answer: version, actions, protocol flags, macro lists."""

    version: int
    actions: int
    protocol: int
    symlists: dict[int, frozenset[bytes]] = field(default_factory=dict)
    raw: bytes = b""              # the reply packet body, to check every session gets the same

    def skips(self, flag: int) -> bool:
        return bool(self.protocol & flag)


def optneg_packet() -> bytes:
    return packet(b"O", struct.pack("!III", MILTER_VERSION, MTA_ACTIONS, MTA_PROTOCOL))


def parse_optneg(body: bytes) -> Negotiated:
    """Decode the milter's 'O' reply body (after the command byte)."""
    if len(body) < 12:
        raise ProtocolError(f"short OPTNEG reply ({len(body)} bytes)")
    version, actions, protocol = struct.unpack("!III", body[:12])
    if protocol & ~MTA_PROTOCOL:
        raise ProtocolError(f"milter asked for protocol flags we did not offer: {protocol & ~MTA_PROTOCOL:#x}")
    symlists: dict[int, frozenset[bytes]] = {}
    rest = body[12:]
    while len(rest) >= 4:           # SMFIR_SETSYMLIST data: (uint32 stage, "macro macro\0")*
        (stage,) = struct.unpack("!I", rest[:4])
        text, _, rest = rest[4:].partition(b"\0")
        symlists[stage] = frozenset(m.strip(b"{}") for m in text.split())
    return Negotiated(version, actions, protocol, symlists, body)


class ProtocolError(Exception):
    """The milter said something an MTA would not accept."""


# -- messages and their pre-encoded steps -------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """The SMTP session an MTA presents: client, HELO, envelope, macros by stage."""

    client_addr: str = "192.0.2.10"
    client_port: int = 40000
    client_name: str = "mail.sender.example"
    family: str = "4"                            # '4', '6', 'L' (unix) or 'U' (unknown)
    helo: str = "mail.sender.example"
    mail_from: str = "<sender@example.net>"
    rcpts: tuple[str, ...] = ("<user@example.com>",)
    # stage -> {macro name without braces: value}; sent before that stage's command
    macros: dict[int, dict[str, str]] = field(default_factory=dict)


def split_message(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """RFC 5322 text -> ([(name, value-with-leading-space)], body with CRLF line ends).

    A folded header keeps its line breaks as LF inside the value, as Sendmail and
    Postfix pass them to milters.
    """
    from authmilter.model import Message

    msg = Message.from_bytes(raw)
    return msg.milter_headers(), msg.body.as_bytes()


@dataclass
class Step:
    data: bytes           # bytes to write
    kind: int             # REPLY, EOM, or 0 = no reply (merged away by compile_steps)
    tag: str = ""         # "body" for body chunks (a 's' reply skips them), "eob" for EOM


def _macro_packet(neg: Negotiated, stage: int, env: Envelope) -> bytes:
    wanted = env.macros.get(stage, {})
    allowed = neg.symlists.get(stage)
    items = [(k, v) for k, v in wanted.items() if allowed is None or k.encode().strip(b"{}") in allowed]
    if not items:
        return b""
    # one-letter macros travel bare ("j", "i"), longer ones in braces ("{daemon_name}")
    data = STAGE_CMD[stage] + b"".join(
        cstr((k if len(k) == 1 else "{" + k + "}").encode(), v.encode()) for k, v in items)
    return packet(b"D", data)


def header_steps(neg: Negotiated, headers: Iterable[tuple[bytes, bytes]]) -> list[Step]:
    if neg.skips(SMFIP_NOHDRS):
        return []
    kind = 0 if neg.skips(SMFIP_NR_HDR) else REPLY
    leadspc = neg.skips(SMFIP_HDR_LEADSPC)
    steps = []
    for name, value in headers:
        if not leadspc:
            # without HDR_LEADSPC an MTA drops the whitespace after the colon
            value = value.lstrip(b" \t")
        steps.append(Step(packet(b"L", cstr(name, value)), kind, "hdr"))
    return steps


def build_steps(neg: Negotiated, env: Envelope, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> list[Step]:
    """Every packet after OPTNEG for one message, with the reply each one needs."""
    steps: list[Step] = []

    def add(stage: int | None, skip: int, noreply: int, data: bytes, tag: str = "") -> None:
        if skip and neg.skips(skip):
            return                      # skipped steps are not sent, nor their macros
        pre = _macro_packet(neg, stage, env) if stage is not None else b""
        steps.append(Step(pre + data, 0 if noreply and neg.skips(noreply) else REPLY, tag))

    if env.family in ("4", "6"):
        conn = cstr(env.client_name.encode()) + env.family.encode() + struct.pack("!H", env.client_port) \
            + cstr(env.client_addr.encode())
    elif env.family == "L":
        conn = cstr(env.client_name.encode()) + b"L" + struct.pack("!H", 0) + cstr(env.client_addr.encode())
    else:
        conn = cstr(env.client_name.encode()) + b"U"
    add(0, SMFIP_NOCONNECT, SMFIP_NR_CONN, packet(b"C", conn))
    add(1, SMFIP_NOHELO, SMFIP_NR_HELO, packet(b"H", cstr(env.helo.encode())))
    add(2, SMFIP_NOMAIL, SMFIP_NR_MAIL, packet(b"M", cstr(env.mail_from.encode())))
    for rcpt in env.rcpts:
        add(3, SMFIP_NORCPT, SMFIP_NR_RCPT, packet(b"R", cstr(rcpt.encode())))
    add(4, SMFIP_NODATA, SMFIP_NR_DATA, packet(b"T"))
    steps.extend(header_steps(neg, headers))
    add(6, SMFIP_NOEOH, SMFIP_NR_EOH, packet(b"N"))
    if not neg.skips(SMFIP_NOBODY):
        kind = 0 if neg.skips(SMFIP_NR_BODY) else REPLY
        for i in range(0, len(body), CHUNK):
            steps.append(Step(packet(b"B", body[i:i + CHUNK]), kind, "body"))
    steps.append(Step(_macro_packet(neg, 5, env) + packet(b"E"), EOM, "eob"))
    return steps


def compile_steps(steps: Sequence[Step]) -> tuple[tuple[bytes, int, int], ...]:
    """Merge no-reply steps into the next write: ((data, kind, index of eob step), ...).

    The third field is where a 's' (skip) reply to a body chunk jumps to.
    """
    out: list[tuple[bytes, int, str]] = []
    pending = b""
    for st in steps:
        if st.kind == 0:
            pending += st.data
            continue
        out.append((pending + st.data, st.kind, st.tag))
        pending = b""
    assert not pending, "the EOM step always waits for a reply"
    eob = next(i for i, (_, _, tag) in enumerate(out) if tag == "eob")
    return tuple((d, k, eob) for d, k, _ in out)


@dataclass(frozen=True)
class Hop:
    """One milter in a chain, with the negotiation it answered."""

    address: str
    neg: Negotiated


@dataclass
class Prepared:
    """A message ready to send: per hop the compiled steps (hop 0 fixed; later hops
    depend on the headers earlier hops inserted and are built on demand, cached)."""

    env: Envelope
    headers: list[tuple[bytes, bytes]]
    body: bytes
    hops: tuple[Hop, ...]
    first: tuple[tuple[bytes, int, int], ...] = ()
    _later: dict[tuple[int, bytes], tuple[tuple[bytes, int, int], ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.first = compile_steps(build_steps(self.hops[0].neg, self.env, self.headers, self.body))

    def steps_for(self, hop: int, edits: Sequence[bytes]) -> tuple[tuple[bytes, int, int], ...]:
        key = (hop, b"\0\0".join(edits))
        got = self._later.get(key)
        if got is None:
            headers = apply_header_edits(self.headers, edits)
            got = compile_steps(build_steps(self.hops[hop].neg, self.env, headers, self.body))
            self._later[key] = got
        return got


def apply_header_edits(headers: Sequence[tuple[bytes, bytes]], edits: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """Apply 'h' (add), 'i' (insert at index) and 'm' (change/delete) replies, as the MTA
    would before presenting the message to the next milter."""
    out = list(headers)
    for pkt in edits:
        cmd, data = pkt[:1], pkt[1:]
        if cmd == b"h":
            name, value = data.split(b"\0")[:2]
            out.append((name, b" " + value.lstrip(b" ")))
        elif cmd == b"i":
            (idx,) = struct.unpack("!I", data[:4])
            name, value = data[4:].split(b"\0")[:2]
            out.insert(min(idx, len(out)), (name, b" " + value.lstrip(b" ")))
        elif cmd == b"m":
            (nth,) = struct.unpack("!I", data[:4])
            name, value = data[4:].split(b"\0")[:2]
            seen = 0
            for i, (n, _) in enumerate(out):
                if n.lower() == name.lower():
                    seen += 1
                    if seen == max(nth, 1):
                        if value:
                            out[i] = (n, b" " + value.lstrip(b" "))
                        else:
                            del out[i]
                        break
    return out


# -- results ------------------------------------------------------------------------------


@dataclass
class SessionResult:
    """One message: the final reply per hop and every modification packet (cmd+data)."""

    latency_s: float
    action: str                               # final reply command of the last hop reached
    hops: list[tuple[str, list[bytes]]]       # per hop: (final reply cmd, modification packets)
    error: str = ""

    def headers_added(self) -> list[tuple[str, str]]:
        out = []
        for _, mods in self.hops:
            for pkt in mods:
                if pkt[:1] == b"h":
                    name, value = pkt[1:].split(b"\0")[:2]
                elif pkt[:1] == b"i":
                    name, value = pkt[5:].split(b"\0")[:2]
                else:
                    continue
                out.append((name.decode("latin-1"), value.decode("latin-1")))
        return out


# -- negotiation probe and one blocking session (checks, tests) ---------------------------


def connect(address: str, timeout: float = 10.0) -> socket.socket:
    """'unix:/path' | 'local:/path' | '/path' | 'inet:PORT@HOST' | 'inet6:PORT@HOST'."""
    kind, _, rest = address.partition(":")
    if kind in ("unix", "local") or address.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = rest if kind in ("unix", "local") else address
    else:
        port, _, host = rest.partition("@")
        fam = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = (host.strip("[]") or ("::1" if kind == "inet6" else "127.0.0.1"), int(port))
    s.settimeout(timeout)
    try:
        s.connect(target)
    except BaseException:
        s.close()
        raise
    return s


def _read_packet(s: socket.socket, buf: bytearray) -> bytes:
    while True:
        if len(buf) >= 4:
            (n,) = struct.unpack_from("!I", buf)
            if len(buf) >= 4 + n:
                pkt = bytes(buf[4:4 + n])
                del buf[:4 + n]
                return pkt
        data = s.recv(65536)
        if not data:
            raise ProtocolError("milter closed the connection")
        buf.extend(data)


def negotiate(address: str, timeout: float = 10.0) -> Negotiated:
    """Open one connection, send OPTNEG, return what the milter answered, QUIT."""
    with connect(address, timeout) as s:
        s.sendall(optneg_packet())
        pkt = _read_packet(s, bytearray())
        if pkt[:1] != b"O":
            raise ProtocolError(f"expected an OPTNEG reply, got {pkt[:1]!r}")
        s.sendall(packet(b"Q"))
        return parse_optneg(pkt[1:])


def run_one(prep: Prepared, timeout: float = 30.0) -> SessionResult:
    """Send one message through every hop with blocking sockets (no load; for checks)."""
    t0 = time.perf_counter()
    hops: list[tuple[str, list[bytes]]] = []
    steps = prep.first
    action = ""
    for h, hop in enumerate(prep.hops):
        if h:
            steps = prep.steps_for(h, [m for _, mods in hops for m in mods])
        with connect(hop.address, timeout) as s:
            buf = bytearray()
            s.sendall(optneg_packet())
            pkt = _read_packet(s, buf)
            if pkt[:1] != b"O" or pkt[1:] != hop.neg.raw:
                raise ProtocolError("the milter negotiated differently than on the probe")
            i, mods = 0, []
            while True:
                data, kind, eob = steps[i]
                s.sendall(data)
                while True:
                    pkt = _read_packet(s, buf)
                    c = pkt[0]
                    if c == PROGRESS:
                        continue
                    if kind == EOM and c not in FINAL:
                        mods.append(pkt)
                        continue
                    break
                if c in FINAL:
                    action = chr(c)
                    if kind == EOM or c != CONTINUE:
                        break
                    i += 1
                elif c == SKIP:
                    i = eob
                else:
                    raise ProtocolError(f"unexpected reply {chr(c)!r}")
            s.sendall(packet(b"Q"))
        hops.append((action, mods))
        if action not in ("c", "a"):
            break
    return SessionResult(time.perf_counter() - t0, action, hops)


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

    @property
    def rate(self) -> float:
        return self.completed / self.wall_s if self.wall_s else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_s:
            return float("nan")
        xs = sorted(self.latencies_s)
        k = min(len(xs) - 1, max(0, round(p / 100.0 * (len(xs) - 1))))
        return xs[k]

    def merge(self, other: LoadResult) -> None:
        self.sent += other.sent
        self.completed += other.completed
        self.errors += other.errors
        self.wall_s = max(self.wall_s, other.wall_s)
        self.client_cpu_s += other.client_cpu_s
        self.client_sys_s += other.client_sys_s
        self.latencies_s.extend(other.latencies_s)
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
            "client_cpu_pct": round(100.0 * self.client_cpu_s / self.wall_s, 1) if self.wall_s else 0.0,
            "client_sys_pct": round(100.0 * self.client_sys_s / self.wall_s, 1) if self.wall_s else 0.0,
            "actions": dict(self.actions), "check_failures": self.check_failures,
            "error_texts": self.error_texts[:5],
        }


Check = Callable[[SessionResult], bool]


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
        try:
            ep.unregister(s.fd)
        except OSError:
            pass
        try:
            s.sock.send(quit_pkt)
        except OSError:
            pass
        s.sock.close()

    def finish(s: _Session, action: str, error: str = "") -> None:
        nonlocal t_last
        now = time.perf_counter()
        if live.get(s.fd) is s:
            close_hop(s)
        if error:
            res.errors += 1
            if len(res.error_texts) < 20:
                res.error_texts.append(error)
            return
        t_last = now
        res.completed += 1
        res.latencies_s.append(now - s.t0)
        res.actions[action] = res.actions.get(action, 0) + 1
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
            res.errors += 1
            if len(res.error_texts) < 20:
                res.error_texts.append(f"connect: {exc}")

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
                    while len(buf) >= 4:
                        (n,) = struct.unpack_from("!I", buf)
                        if len(buf) < 4 + n:
                            break
                        pkt = bytes(buf[4:4 + n])
                        del buf[:4 + n]
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
    res.wall_s = t_last - t_start
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    res.client_sys_s = ru1.ru_stime - ru0.ru_stime
    res.client_cpu_s = ru1.ru_utime - ru0.ru_utime + res.client_sys_s
    if check is not None:
        res.check_failures = sum(1 for r in done if not check(r))
    res.samples = done[:keep_samples]
    return res


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
