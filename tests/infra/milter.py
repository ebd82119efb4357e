"""The MTA side of the milter protocol (version 6), for tests and bench/: one implementation.

Framing, negotiation, macros, header/body sending and the end-of-message actions, written
from Sendmail's libmilter docs and Postfix ``milter8.c``. Whatever the milter negotiated
is honoured exactly as an MTA must: steps it asked to skip (``SMFIP_NO*``) are not sent,
together with their macros; no reply is awaited where it said it will not answer
(``SMFIP_NR_*``, waiting would hang); ``SMFIP_HDR_LEADSPC`` decides whether the space after
the colon travels; a body chunk answered with skip (``s``) jumps to end-of-message.

Two ways to drive a session, on the same encoders and the same framing:

* `MilterClient`, step by step with decoded replies, for tests::

      with MilterClient("/path/to/sock") as c:          # or ("127.0.0.1", port), "inet:P@H"
          c.negotiate()
          result = c.session(ip="192.0.2.1", helo="mx.example", mail_from="a@example.com",
                             rcpts=["b@example.net"], message=raw_bytes,
                             macros={"j": "mx.test", "i": "QID1"})
      result.action          # "accept" | "reject" | "tempfail" | "continue" | "discard"
      result.reply           # "550 5.7.1 ..." or None
      result.quarantine      # reason or None
      result.inserted        # [(index, name, value)] from smfi_insheader
      result.changed         # [(index, name, value)]; value "" is a deletion
      result.envelope        # [("chgfrom" | "delrcpt" | "addrcpt", address)]
      result.apply(headers)  # the header list as the MTA would store it

* the fast path for load generation: `negotiate()` probes a milter once, `Prepared`
  pre-encodes every packet of a message into steps (bytes to write, then the one reply to
  wait for; runs of no-reply packets merged into one write), `run_one()` plays it blocking.
  bench/client.py drives the same `Prepared` steps from an epoll loop.
"""
from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from authmilter.model import Message

# -- constants (Sendmail libmilter mfdef.h; milter protocol version 6) ---------------------

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
MTA_PROTOCOL = 0x001FFFFF         # SMFI_V6_PROT
MTA_ACTIONS = 0x000001FF          # SMFI_V6_ACTS: every modification

# command letter -> the flag that skips it / that says the milter will not answer it
NO_BIT = {"C": SMFIP_NOCONNECT, "H": SMFIP_NOHELO, "M": SMFIP_NOMAIL, "R": SMFIP_NORCPT,
          "T": SMFIP_NODATA, "L": SMFIP_NOHDRS, "N": SMFIP_NOEOH, "B": SMFIP_NOBODY}
NR_BIT = {"C": SMFIP_NR_CONN, "H": SMFIP_NR_HELO, "M": SMFIP_NR_MAIL, "R": SMFIP_NR_RCPT,
          "T": SMFIP_NR_DATA, "L": SMFIP_NR_HDR, "N": SMFIP_NR_EOH, "B": SMFIP_NR_BODY}

# macro stages (SMFIM_*): the command each precedes, and the names tests use for them
STAGE_CMD = {0: b"C", 1: b"H", 2: b"M", 3: b"R", 4: b"T", 5: b"E", 6: b"N"}
STAGE_NAMES = {0: "connect", 1: "helo", 2: "envfrom", 3: "envrcpt", 4: "data", 5: "eom", 6: "eoh"}

# Replies that end the message (and, for an MTA, the milter's say in it).
FINAL = frozenset(b"acrtdy4f")
PROGRESS = ord("p")
CONTINUE = ord("c")
SKIP = ord("s")
_FINAL_NAMES = {"a": "accept", "c": "continue", "r": "reject", "t": "tempfail", "d": "discard", "y": "reply"}


class MilterProtocolError(Exception):
    """The milter said something an MTA would not accept (or hung up mid-session)."""


ProtocolError = MilterProtocolError      # the name bench/ has always used


# -- framing ---------------------------------------------------------------------------------


def packet(cmd: bytes, data: bytes = b"") -> bytes:
    """One milter packet: 32-bit big-endian length (command byte included), command, data."""
    return struct.pack("!I", len(data) + 1) + cmd + data


def cstr(*parts: bytes) -> bytes:
    return b"".join(p + b"\0" for p in parts)


def read_packet(s: socket.socket, buf: bytearray) -> bytes:
    """The next packet (command byte + data); *buf* keeps what was read beyond it."""
    while True:
        if len(buf) >= 4:
            (n,) = struct.unpack_from("!I", buf)
            if len(buf) >= 4 + n:
                pkt = bytes(buf[4:4 + n])
                del buf[:4 + n]
                return pkt
        data = s.recv(65536)
        if not data:
            raise MilterProtocolError("connection closed by the milter")
        buf.extend(data)


def open_socket(address: str | tuple[str, int], timeout: float = 10.0) -> socket.socket:
    """Connect to a milter: ``(host, port)``, ``inet:PORT@HOST``, ``inet6:PORT@HOST``,
    ``unix:/path``, ``local:/path`` or a bare path."""
    if isinstance(address, tuple):
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        target: Any = address
    else:
        kind, _, rest = address.partition(":")
        if kind in ("inet", "inet6"):
            port, _, host = rest.partition("@")
            family = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
            target = (host.strip("[]") or ("::1" if kind == "inet6" else "127.0.0.1"), int(port))
        else:
            family = socket.AF_UNIX
            target = rest if kind in ("unix", "local") else address
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if family != socket.AF_UNIX:
        # As an MTA should: the protocol is request/reply with small frames, and Nagle
        # would hold the last frame of a burst until the milter's ACK.
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        s.connect(target)
    except BaseException:
        s.close()
        raise
    return s


# -- encoding the MTA's commands ---------------------------------------------------------------


def _b(value: str | bytes) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def optneg_packet(actions: int = MTA_ACTIONS, protocol: int = MTA_PROTOCOL) -> bytes:
    return packet(b"O", struct.pack("!III", MILTER_VERSION, actions, protocol))


def macro_packet(cmd: bytes, items: Iterable[tuple[str | bytes, str | bytes]]) -> bytes:
    """SMFIC_MACRO for the command *cmd*, names as given (``i``, ``{auth_type}``); b"" if none."""
    pairs = [_b(k) + b"\0" + _b(v) + b"\0" for k, v in items]
    return packet(b"D", cmd + b"".join(pairs)) if pairs else b""


def connect_packet(hostname: str | bytes, family: str, port: int = 0, addr: str | bytes = b"") -> bytes:
    """SMFIC_CONNECT; family '4', '6', 'L' (unix) or 'U' (unknown: no port, no address)."""
    data = _b(hostname) + b"\0" + family.encode()
    if family != "U":
        data += struct.pack("!H", port) + _b(addr) + b"\0"
    return packet(b"C", data)


def header_packet(name: str | bytes, value: str | bytes, leadspc: bool) -> bytes:
    """SMFIC_HEADER; *value* as it follows the colon (leading space, LF folding). Without
    SMFIP_HDR_LEADSPC an MTA drops the whitespace after the colon."""
    v = _b(value)
    if not leadspc:
        v = v.lstrip(b" \t")
    return packet(b"L", _b(name) + b"\0" + v + b"\0")


def split_message(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """RFC 5322 text -> ([(name, value-with-leading-space)], body with CRLF line ends).

    A folded header keeps its line breaks as LF inside the value, as Sendmail and
    Postfix pass them to milters.
    """
    msg = Message.from_bytes(raw)
    return msg.milter_headers(), msg.body.as_bytes()


# -- what the milter negotiated ------------------------------------------------------------------


@dataclass(frozen=True)
class Negotiated:
    """The milter's OPTNEG answer: version, actions, protocol flags, macro lists."""

    version: int
    actions: int
    protocol: int
    macro_lists: dict[int, tuple[str, ...]] = field(default_factory=dict)   # stage -> names as sent
    raw: bytes = b""              # the reply packet body, to check every session gets the same

    @property
    def symlists(self) -> dict[str, list[str]]:
        """Stage name ("connect", "envfrom", "eom", ...) -> macro names the milter asked for."""
        return {STAGE_NAMES.get(st, str(st)): list(names) for st, names in self.macro_lists.items()}

    def has(self, flag: int) -> bool:
        return bool(self.protocol & flag)

    def skips(self, cmd: str) -> bool:
        return bool(self.protocol & NO_BIT.get(cmd, 0))

    def no_reply(self, cmd: str) -> bool:
        return bool(self.protocol & NR_BIT.get(cmd, 0))

    def wants_macro(self, stage: int, name: str) -> bool:
        """True unless the milter sent a macro list for *stage* without *name* (braces ignored)."""
        names = self.macro_lists.get(stage)
        return names is None or name.strip("{}") in {n.strip("{}") for n in names}


def parse_optneg(body: bytes, actions: int = MTA_ACTIONS, protocol: int = MTA_PROTOCOL) -> Negotiated:
    """Decode the milter's 'O' reply data (after the command byte), offered *actions*/*protocol*."""
    if len(body) < 12:
        raise MilterProtocolError(f"short OPTNEG reply ({len(body)} bytes)")
    version, ract, rprot = struct.unpack("!III", body[:12])
    if ract & ~actions or rprot & ~protocol:
        raise MilterProtocolError(f"milter asked for more than offered: {ract:#x}/{rprot:#x}")
    lists: dict[int, tuple[str, ...]] = {}
    rest = body[12:]
    while len(rest) >= 4:           # SMFIR_SETSYMLIST data: (uint32 stage, "macro macro\0")*
        (stage,) = struct.unpack("!I", rest[:4])
        text, _, rest = rest[4:].partition(b"\0")
        lists[stage] = tuple(text.decode().split())
    return Negotiated(version, ract, rprot, lists, body)


# -- decoding the milter's replies ---------------------------------------------------------------

# reply command -> its fields (the names miltertest's codec uses, so `MilterResult.raw` reads the same)
_REPLY_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "a": (), "c": (), "r": (), "t": (), "d": (), "p": (), "s": (), "f": (), "4": (),
    "y": (("smtpcode", "char3"), ("space", "char"), ("text", "str")),
    "h": (("name", "str"), ("value", "str")),
    "i": (("index", "u32"), ("name", "str"), ("value", "str")),
    "m": (("index", "u32"), ("name", "str"), ("value", "str")),
    "q": (("reason", "str"),),
    # libmilter's smfi_chgfrom(ctx, from, NULL) sends the address alone: args optional
    "e": (("from", "str"), ("args", "optstrs")),
    "+": (("rcpt", "str"),),
    "-": (("rcpt", "str"),),
    "2": (("rcpt", "str"), ("args", "optstrs")),
    "b": (("buf", "buf"),),
    "l": (("where", "u32"), ("macros", "str")),
}


def decode_reply(pkt: bytes) -> tuple[str, dict[str, Any]]:
    """(command letter, fields) of one reply packet; strings strict UTF-8 as miltertest did."""
    cmd = pkt[:1].decode("latin-1")
    spec = _REPLY_FIELDS.get(cmd)
    if spec is None:
        raise MilterProtocolError(f"unknown reply command {pkt[:1]!r}")
    data, out = pkt[1:], {}
    try:
        for name, kind in spec:
            if kind == "u32":
                if len(data) < 4:
                    raise MilterProtocolError(f"{cmd!r} reply truncated")
                (out[name],), data = struct.unpack("!I", data[:4]), data[4:]
            elif kind in ("char", "char3"):
                n = 1 if kind == "char" else 3
                if len(data) < n:
                    raise MilterProtocolError(f"{cmd!r} reply truncated")
                out[name], data = data[:n].decode(), data[n:]
            elif kind == "str":
                value, sep, data = data.partition(b"\0")
                if not sep:
                    raise MilterProtocolError(f"{cmd!r} reply: unterminated string")
                out[name] = value.decode()
            elif kind == "optstrs":
                parts = data.split(b"\0")
                out[name], data = [p.decode() for p in parts[:-1]], b""
            else:   # buf: the rest
                out[name], data = data.decode(), b""
    except UnicodeDecodeError as exc:
        raise MilterProtocolError(f"{cmd!r} reply: {exc}") from None
    return cmd, out


# -- a step-by-step session (tests) --------------------------------------------------------------


@dataclass
class MilterResult:
    action: str = ""
    reply: str | None = None
    quarantine: str | None = None
    added: list[tuple[str, str]] = field(default_factory=list)
    inserted: list[tuple[int, str, str]] = field(default_factory=list)
    changed: list[tuple[int, str, str]] = field(default_factory=list)
    early: str | None = None          # a stage that answered before eom (e.g. "rcpt:reject")
    # Envelope edits in the order received: ("chgfrom", addr), ("delrcpt", addr), ("addrcpt", addr).
    envelope: list[tuple[str, str]] = field(default_factory=list)
    raw: list[tuple[str, dict]] = field(default_factory=list)

    def headers_named(self, name: str) -> list[str]:
        n = name.lower()
        return [v for _, hn, v in self.inserted if hn.lower() == n] + [v for hn, v in self.added if hn.lower() == n]

    def apply(self, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The MTA's view after our edits, applied in the order received (as Postfix does)."""
        out = list(headers)
        for index, name, value in self.changed:
            positions = [i for i, (n, _) in enumerate(out) if n.lower() == name.lower()]
            if 1 <= index <= len(positions):
                pos = positions[index - 1]
                if value:
                    out[pos] = (out[pos][0], value)
                else:
                    del out[pos]
        for index, name, value in self.inserted:
            out.insert(min(index, len(out)), (name, value))
        for name, value in self.added:
            out.append((name, value))
        return out


def collect_eom(result: MilterResult, cmd: str, args: dict[str, Any]) -> bool:
    """Record one end-of-message reply in *result*; True when it was the final one."""
    result.raw.append((cmd, args))
    if cmd == "i":
        result.inserted.append((args["index"], args["name"], args["value"]))
    elif cmd == "h":
        result.added.append((args["name"], args["value"]))
    elif cmd == "m":
        result.changed.append((args["index"], args["name"], args["value"]))
    elif cmd == "q":
        result.quarantine = args["reason"]
    elif cmd == "e":
        result.envelope.append(("chgfrom", args["from"]))
    elif cmd in ("+", "2"):
        result.envelope.append(("addrcpt", args["rcpt"]))
    elif cmd == "-":
        result.envelope.append(("delrcpt", args["rcpt"]))
    elif cmd in _FINAL_NAMES:
        if cmd == "y":
            result.reply = f"{args['smtpcode']}{args['space']}{args['text']}"
            result.action = {"4": "tempfail", "5": "reject"}.get(args["smtpcode"][:1], "reply")
        else:
            result.action = _FINAL_NAMES[cmd]
        return True
    else:
        raise MilterProtocolError(f"unexpected reply at eom: {cmd!r} {args}")
    return False


class MilterClient:
    """The MTA side of one milter connection, one command at a time."""

    def __init__(self, address: str | tuple[str, int], timeout: float = 30.0) -> None:
        self.sock = open_socket(address, timeout)
        self._buf = bytearray()
        self.neg: Negotiated | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- low level ----------------------------------------------------------------------
    def recv(self) -> tuple[str, dict[str, Any]]:
        """The next reply that is not SMFIR_PROGRESS, decoded."""
        while True:
            pkt = read_packet(self.sock, self._buf)
            if pkt[0] != PROGRESS:
                return decode_reply(pkt)

    def _send(self, cmd: str, payload: bytes = b"") -> None:
        self.sock.sendall(packet(cmd.encode(), payload))

    def _step(self, cmd: str, payload: bytes = b"", macros: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
        """Send one command; read its reply unless the milter negotiated no-reply."""
        assert self.neg is not None, "negotiate() first"
        if self.neg.skips(cmd):
            return None
        self.sock.sendall(macro_packet(cmd.encode(), (macros or {}).items()) + packet(cmd.encode(), payload))
        if self.neg.no_reply(cmd):
            return None
        return self.recv()

    # -- the conversation -----------------------------------------------------------------
    def negotiate(self, actions: int = MTA_ACTIONS, protocol: int = MTA_PROTOCOL) -> Negotiated:
        """Offer what Postfix 3 offers (all v6 actions and steps) unless told otherwise."""
        self.sock.sendall(optneg_packet(actions, protocol))
        pkt = read_packet(self.sock, self._buf)
        if pkt[:1] != b"O":
            raise MilterProtocolError(f"expected an OPTNEG reply, got {pkt[:1]!r}")
        self.neg = parse_optneg(pkt[1:], actions, protocol)
        return self.neg

    def connect(self, hostname: str = "client.example", ip: str | None = "192.0.2.1", port: int = 40000,
                family: str | None = None, macros: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
        """SMFIC_CONNECT; ``ip=None`` presents family 'U' (unknown: local submission)."""
        if family is None:
            family = "U" if ip is None else ("6" if ":" in ip else "4")
        payload = connect_packet(hostname, family, port, ip or "")[5:]
        return self._step("C", payload, macros)

    def helo(self, name: str, macros: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
        return self._step("H", _b(name) + b"\0", macros)

    def mail(self, sender: str, *params: str, macros: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
        return self._step("M", cstr(*(_b(a) for a in (f"<{sender}>", *params))), macros)

    def rcpt(self, rcpt: str, macros: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
        return self._step("R", _b(f"<{rcpt}>") + b"\0", macros)

    def header(self, name: str | bytes, value: str | bytes) -> tuple[str, dict] | None:
        """``value`` as it follows the colon (leading space, LF folding); the space is
        removed when the milter did not negotiate SMFIP_HDR_LEADSPC, like an MTA does."""
        assert self.neg is not None
        return self._step("L", header_packet(name, value, self.neg.has(SMFIP_HDR_LEADSPC))[5:])

    def eoh(self, macros: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
        return self._step("N", b"", macros)

    def body(self, data: bytes, chunk: int = CHUNK) -> None:
        for start in range(0, len(data), chunk):
            self._step("B", data[start:start + chunk])

    def eom(self, macros: Mapping[str, str] | None = None) -> MilterResult:
        self.sock.sendall(macro_packet(b"E", (macros or {}).items()) + packet(b"E"))
        result = MilterResult()
        while not collect_eom(result, *self.recv()):
            pass
        return result

    def abort(self) -> None:
        self._send("A")

    def quit(self) -> None:
        try:
            self._send("Q")
        except OSError:
            pass

    # -- a whole message ------------------------------------------------------------------
    def message(self, *, mail_from: str, rcpts: Iterable[str], message: bytes,
                macros: Mapping[str, str] | None = None, body_chunk: int = CHUNK) -> MilterResult:
        """MAIL, RCPT..., headers, EOH, body, EOM on an already connected session.

        ``macros`` are presented the way Postfix does: ``i`` and the auth macros with MAIL,
        ``i`` again at eom.
        """
        macros = dict(macros or {})
        mail_macros = {k: v for k, v in macros.items() if k in ("i", "{auth_type}", "{auth_authen}",
                                                                  "{auth_author}", "{mail_addr}")}
        r = self.mail(mail_from, macros=mail_macros)
        if r is not None and r[0] != "c":
            return MilterResult(action=_FINAL_NAMES.get(r[0], r[0]), early="mail", raw=[r])
        for rcpt in rcpts:
            r = self.rcpt(rcpt)
            if r is not None and r[0] != "c":
                return MilterResult(action=_FINAL_NAMES.get(r[0], r[0]), early="rcpt", raw=[r])
        headers, body = split_message(message)
        for name, value in headers:
            self.header(name, value)
        self.eoh()
        self.body(body, body_chunk)
        return self.eom(macros={k: v for k, v in macros.items() if k == "i"})

    def session(self, *, ip: str | None = "192.0.2.1", hostname: str = "client.example", helo: str = "client.example",
                mail_from: str, rcpts: Iterable[str], message: bytes, macros: Mapping[str, str] | None = None,
                family: str | None = None) -> MilterResult:
        """connect + helo + one message; negotiates first if not done yet."""
        if self.neg is None:
            self.negotiate()
        macros = dict(macros or {})
        conn_macros = {k: v for k, v in macros.items() if k in ("j", "{daemon_name}", "{client_addr}",
                                                                 "{client_name}", "{if_addr}", "_")}
        self.connect(hostname=hostname, ip=ip, family=family, macros=conn_macros)
        if helo:
            self.helo(helo)
        return self.message(mail_from=mail_from, rcpts=rcpts, message=message, macros=macros)


# -- the fast path: pre-encoded steps (bench/) ---------------------------------------------------


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


# step kinds
REPLY = 1        # wait for one reply (continue/skip/final)
EOM = 2          # wait for modification actions then a final reply


@dataclass
class Step:
    data: bytes           # bytes to write
    kind: int             # REPLY, EOM, or 0 = no reply (merged away by compile_steps)
    # the command letter ("C", "H", "M", "R", "T", "N") for the others; "hdr" for headers,
    # "body" for body chunks (a 's' reply skips them), "eob" for EOM
    tag: str = ""


def _stage_macros(neg: Negotiated, stage: int, env: Envelope) -> bytes:
    # one-letter macros travel bare ("j", "i"), longer ones in braces ("{daemon_name}"),
    # and only those in the milter's macro list for the stage, if it sent one
    items = [(k if len(k) == 1 else "{" + k + "}", v) for k, v in env.macros.get(stage, {}).items()
             if neg.wants_macro(stage, k)]
    return macro_packet(STAGE_CMD[stage], items)


def build_steps(neg: Negotiated, env: Envelope, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> list[Step]:
    """Every packet after OPTNEG for one message, with the reply each one needs."""
    steps: list[Step] = []

    def add(stage: int, data: bytes) -> None:
        cmd = STAGE_CMD[stage].decode()
        if neg.skips(cmd):
            return                      # skipped steps are not sent, nor their macros
        steps.append(Step(_stage_macros(neg, stage, env) + data, 0 if neg.no_reply(cmd) else REPLY, cmd))

    port = 0 if env.family == "L" else env.client_port
    add(0, connect_packet(env.client_name, env.family, port, env.client_addr))
    add(1, packet(b"H", cstr(env.helo.encode())))
    add(2, packet(b"M", cstr(env.mail_from.encode())))
    for rcpt in env.rcpts:
        add(3, packet(b"R", cstr(rcpt.encode())))
    add(4, packet(b"T"))
    if not neg.skips("L"):
        kind = 0 if neg.no_reply("L") else REPLY
        leadspc = neg.has(SMFIP_HDR_LEADSPC)
        steps.extend(Step(header_packet(n, v, leadspc), kind, "hdr") for n, v in headers)
    add(6, packet(b"N"))
    if not neg.skips("B"):
        kind = 0 if neg.no_reply("B") else REPLY
        for i in range(0, len(body), CHUNK):
            steps.append(Step(packet(b"B", body[i:i + CHUNK]), kind, "body"))
    steps.append(Step(_stage_macros(neg, 5, env) + packet(b"E"), EOM, "eob"))
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


def negotiate(address: str, timeout: float = 10.0) -> Negotiated:
    """Open one connection, send OPTNEG, return what the milter answered, QUIT."""
    with open_socket(address, timeout) as s:
        s.sendall(optneg_packet())
        pkt = read_packet(s, bytearray())
        if pkt[:1] != b"O":
            raise MilterProtocolError(f"expected an OPTNEG reply, got {pkt[:1]!r}")
        neg = parse_optneg(pkt[1:])
        s.sendall(packet(b"Q"))
        return neg


def run_one(prep: Prepared, timeout: float = 30.0) -> SessionResult:
    """One message through every hop, blocking (not for load; for checks)."""
    t0 = time.perf_counter()
    hops: list[tuple[str, list[bytes]]] = []
    steps = prep.first
    action = ""
    for h, hop in enumerate(prep.hops):
        if h:
            steps = prep.steps_for(h, [m for _, mods in hops for m in mods])
        with open_socket(hop.address, timeout) as s:
            buf = bytearray()
            s.sendall(optneg_packet())
            pkt = read_packet(s, buf)
            if pkt[:1] != b"O" or pkt[1:] != hop.neg.raw:
                raise MilterProtocolError("the milter negotiated differently than on the probe")
            i, mods = 0, []
            while True:
                data, kind, eob = steps[i]
                s.sendall(data)
                while True:
                    pkt = read_packet(s, buf)
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
                    raise MilterProtocolError(f"unexpected reply {chr(c)!r}")
            s.sendall(packet(b"Q"))
        hops.append((action, mods))
        if action not in ("c", "a"):
            break
    return SessionResult(time.perf_counter() - t0, action, hops)
