"""A milter client that plays the MTA side of one SMTP session, for tests and bench/.

Built on the `miltertest` package (framing, reply decoding). It sends exact bytes for
header values and body chunks, honours the no-reply bits the milter negotiated (a
no-reply step gets no answer, and waiting for one would hang), and collects the
end-of-message actions::

    with MilterClient("/path/to/sock") as c:          # or ("127.0.0.1", port)
        c.negotiate()
        result = c.session(ip="192.0.2.1", helo="mx.example", mail_from="a@example.com",
                           rcpts=["b@example.net"], message=raw_bytes,
                           macros={"j": "mx.test", "i": "QID1"})
    result.action            # "accept" | "reject" | "tempfail" | "continue" | "discard"
    result.reply             # "550 5.7.1 ..." or None
    result.quarantine        # reason or None
    result.inserted          # [(index, name, value)] from smfi_insheader
    result.changed           # [(index, name, value)]; value "" is a deletion
    result.envelope          # [("chgfrom" | "delrcpt" | "addrcpt", address)]
    result.apply(headers)    # the header list as the MTA would store it
"""
from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self

from miltertest import MilterConnection
from miltertest import codec as _codec
from miltertest import constants as C

from authmilter.model import Message

# Which macro stage a command's macros belong to (the SMFIC_MACRO cmdcode).
_NR_BIT = {
    C.SMFIC_CONNECT: C.SMFIP_NR_CONN,
    C.SMFIC_HELO: C.SMFIP_NR_HELO,
    C.SMFIC_MAIL: C.SMFIP_NR_MAIL,
    C.SMFIC_RCPT: C.SMFIP_NR_RCPT,
    C.SMFIC_DATA: C.SMFIP_NR_DATA,
    C.SMFIC_HEADER: C.SMFIP_NR_HDR,
    C.SMFIC_EOH: C.SMFIP_NR_EOH,
    C.SMFIC_BODY: C.SMFIP_NR_BODY,
}
_NO_BIT = {
    C.SMFIC_CONNECT: C.SMFIP_NOCONNECT,
    C.SMFIC_HELO: C.SMFIP_NOHELO,
    C.SMFIC_MAIL: C.SMFIP_NOMAIL,
    C.SMFIC_RCPT: C.SMFIP_NORCPT,
    C.SMFIC_DATA: C.SMFIP_NODATA,
    C.SMFIC_HEADER: C.SMFIP_NOHDRS,
    C.SMFIC_EOH: C.SMFIP_NOEOH,
    C.SMFIC_BODY: C.SMFIP_NOBODY,
}
# libmilter's smfi_chgfrom(ctx, from, NULL) sends the address alone; miltertest's table
# wants ESMTP arguments after it. Read them as optional (an empty list when absent).
_codec.codectypes.setdefault("optstrs", (_codec.encode_strs,
                                         lambda data: _codec.decode_strs(data, empty_ok=True)))
_codec.codec[C.SMFIR_CHGFROM] = (("from", "str"), ("args", "optstrs"))

_FINAL = {C.SMFIR_ACCEPT: "accept", C.SMFIR_CONTINUE: "continue", C.SMFIR_REJECT: "reject",
          C.SMFIR_TEMPFAIL: "tempfail", C.SMFIR_DISCARD: "discard", C.SMFIR_REPLYCODE: "reply"}
STAGE_NAMES = {0: "connect", 1: "helo", 2: "envfrom", 3: "envrcpt", 4: "data", 5: "eom", 6: "eoh"}


class MilterProtocolError(Exception):
    pass


def _b(value: str | bytes) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def _frame(cmd: str, payload: bytes = b"") -> bytes:
    return struct.pack("!Lc", len(payload) + 1, cmd.encode()) + payload


@dataclass
class Negotiated:
    version: int
    actions: int
    protocol: int
    symlists: dict[str, list[str]]   # stage name -> macro names the milter asked for

    def skips(self, cmd: str) -> bool:
        return bool(self.protocol & _NO_BIT.get(cmd, 0))

    def no_reply(self, cmd: str) -> bool:
        return bool(self.protocol & _NR_BIT.get(cmd, 0))


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


def split_message(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers as (name, value-with-leading-space, LF folding) and the CRLF body."""
    msg = Message.from_bytes(raw)
    return msg.milter_headers(), msg.body.as_bytes()


class MilterClient:
    """The MTA side of one milter connection."""

    def __init__(self, address: str | tuple[str, int], timeout: float = 30.0) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else (
            socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if family != socket.AF_UNIX:
            # As an MTA should: the milter protocol is request/reply with small frames,
            # and Nagle would hold the last frame of a burst until the milter's ACK.
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock.connect(address)
        except OSError:
            self.sock.close()
            raise
        self.conn = MilterConnection(self.sock)
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
    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise MilterProtocolError("connection closed by the milter")
            buf += chunk
        return buf

    def _send(self, cmd: str, payload: bytes = b"") -> None:
        self.sock.sendall(_frame(cmd, payload))

    def _macros(self, cmd: str, macros: Mapping[str, str] | None) -> None:
        if not macros:
            return
        payload = cmd.encode() + b"".join(_b(k) + b"\0" + _b(v) + b"\0" for k, v in macros.items())
        self._send(C.SMFIC_MACRO, payload)

    def _step(self, cmd: str, payload: bytes = b"", macros: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
        """Send one command; read its reply unless the milter negotiated no-reply."""
        assert self.neg is not None, "negotiate() first"
        if self.neg.skips(cmd):
            return None
        self._macros(cmd, macros)
        self._send(cmd, payload)
        if self.neg.no_reply(cmd):
            return None
        return self.conn.recv()

    # -- the conversation -----------------------------------------------------------------
    def negotiate(self, actions: int = C.SMFI_V6_ACTS, protocol: int = C.SMFI_V6_PROT) -> Negotiated:
        """Offer what Postfix 3 offers (all v6 actions and steps) unless told otherwise."""
        self._send(C.SMFIC_OPTNEG, struct.pack("!LLL", C.MILTER_VERSION, actions, protocol))
        (length,) = struct.unpack("!L", self._recv_exact(4))
        data = self._recv_exact(length)
        if data[:1] != C.SMFIC_OPTNEG.encode():
            raise MilterProtocolError(f"expected an OPTNEG reply, got {data[:1]!r}")
        version, ract, rprot = struct.unpack("!LLL", data[1:13])
        if ract & ~actions or rprot & ~protocol & C.SMFI_V6_PROT:
            raise MilterProtocolError(f"milter asked for more than offered: {ract:#x}/{rprot:#x}")
        symlists: dict[str, list[str]] = {}
        rest = data[13:]
        while len(rest) >= 4:
            (stage,) = struct.unpack("!L", rest[:4])
            names, _, rest = rest[4:].partition(b"\0")
            symlists[STAGE_NAMES.get(stage, str(stage))] = names.decode().split()
        self.neg = Negotiated(version, ract, rprot, symlists)
        return self.neg

    def connect(self, hostname: str = "client.example", ip: str | None = "192.0.2.1", port: int = 40000,
                family: str | None = None, macros: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
        """SMFIC_CONNECT; ``ip=None`` presents family 'U' (unknown: local submission)."""
        if family is None:
            family = C.SMFIA_UNKNOWN if ip is None else (C.SMFIA_INET6 if ":" in ip else C.SMFIA_INET)
        payload = _b(hostname) + b"\0" + family.encode()
        if family != C.SMFIA_UNKNOWN:
            payload += struct.pack("!H", port) + _b(ip or "") + b"\0"
        return self._step(C.SMFIC_CONNECT, payload, macros)

    def helo(self, name: str, macros: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
        return self._step(C.SMFIC_HELO, _b(name) + b"\0", macros)

    def mail(self, sender: str, *params: str, macros: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
        args = [f"<{sender}>", *params]
        return self._step(C.SMFIC_MAIL, b"".join(_b(a) + b"\0" for a in args), macros)

    def rcpt(self, rcpt: str, macros: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
        return self._step(C.SMFIC_RCPT, _b(f"<{rcpt}>") + b"\0", macros)

    def header(self, name: str | bytes, value: str | bytes) -> tuple[str, dict] | None:
        """``value`` as it follows the colon (leading space, LF folding); the space is
        removed when the milter did not negotiate SMFIP_HDR_LEADSPC, like an MTA does."""
        assert self.neg is not None
        v = _b(value)
        if not self.neg.protocol & C.SMFIP_HDR_LEADSPC:
            v = v.lstrip(b" \t")
        return self._step(C.SMFIC_HEADER, _b(name) + b"\0" + v + b"\0")

    def eoh(self, macros: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
        return self._step(C.SMFIC_EOH, b"", macros)

    def body(self, data: bytes, chunk: int = C.MILTER_CHUNK_SIZE) -> None:
        for start in range(0, len(data), chunk):
            self._step(C.SMFIC_BODY, data[start:start + chunk])

    def eom(self, macros: Mapping[str, str] | None = None) -> MilterResult:
        self._macros(C.SMFIC_BODYEOB, macros)
        self._send(C.SMFIC_BODYEOB)
        result = MilterResult()
        while True:
            cmd, args = self.conn.recv()
            result.raw.append((cmd, args))
            if cmd == C.SMFIR_INSHEADER:
                result.inserted.append((args["index"], args["name"], args["value"]))
            elif cmd == C.SMFIR_ADDHEADER:
                result.added.append((args["name"], args["value"]))
            elif cmd == C.SMFIR_CHGHEADER:
                result.changed.append((args["index"], args["name"], args["value"]))
            elif cmd == C.SMFIR_QUARANTINE:
                result.quarantine = args["reason"]
            elif cmd == C.SMFIR_CHGFROM:
                result.envelope.append(("chgfrom", args["from"]))
            elif cmd in (C.SMFIR_ADDRCPT, C.SMFIR_ADDRCPT_PAR):
                result.envelope.append(("addrcpt", args["rcpt"]))
            elif cmd == C.SMFIR_DELRCPT:
                result.envelope.append(("delrcpt", args["rcpt"]))
            elif cmd in _FINAL:
                if cmd == C.SMFIR_REPLYCODE:
                    result.reply = f"{args['smtpcode']}{args['space']}{args['text']}"
                    result.action = {"4": "tempfail", "5": "reject"}.get(args["smtpcode"][:1], "reply")
                else:
                    result.action = _FINAL[cmd]
                return result
            else:
                raise MilterProtocolError(f"unexpected reply at eom: {cmd!r} {args}")

    def abort(self) -> None:
        self._send(C.SMFIC_ABORT)

    def quit(self) -> None:
        try:
            self._send(C.SMFIC_QUIT)
        except OSError:
            pass

    # -- a whole message ------------------------------------------------------------------
    def message(self, *, mail_from: str, rcpts: Iterable[str], message: bytes,
                macros: Mapping[str, str] | None = None, body_chunk: int = C.MILTER_CHUNK_SIZE) -> MilterResult:
        """MAIL, RCPT..., headers, EOH, body, EOM on an already connected session.

        ``macros`` are presented the way Postfix does: ``i`` and the auth macros with MAIL,
        ``i`` again at eom.
        """
        macros = dict(macros or {})
        mail_macros = {k: v for k, v in macros.items() if k in ("i", "{auth_type}", "{auth_authen}",
                                                                  "{auth_author}", "{mail_addr}")}
        r = self.mail(mail_from, macros=mail_macros)
        if r is not None and r[0] != C.SMFIR_CONTINUE:
            return MilterResult(action=_FINAL.get(r[0], r[0]), early="mail", raw=[r])
        for rcpt in rcpts:
            r = self.rcpt(rcpt)
            if r is not None and r[0] != C.SMFIR_CONTINUE:
                return MilterResult(action=_FINAL.get(r[0], r[0]), early="rcpt", raw=[r])
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
