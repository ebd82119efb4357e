"""Frozen value objects describing one message as the MTA presented it.

The milter adapter records these facts; everything after end-of-message works on them
and never on pymilter objects, so the pipeline runs the same offline (`authmilter verify`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Client:
    """The SMTP client as the MTA saw it."""

    ip: str | None                 # None for local/unix injection (sendmail(1) via pickup)
    hostname: str = ""             # the MTA's verified name or "[ip]"/"unknown"
    helo: str = ""                 # HELO/EHLO argument, "" if none
    port: int | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    mail_from: str                 # reverse-path without angle brackets; "" for <>
    rcpts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Message:
    """Header fields exactly as received, and the body with CRLF line ends.

    ``headers`` holds (name, value) byte pairs in arrival order. ``value`` is everything
    after the colon, *including* the leading whitespace and any folding, with line
    breaks normalised to CRLF, so ``name + b":" + value + b"\\r\\n"`` is the header as
    it stood in the message (what DKIM c=simple hashes).
    """

    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def get_all(self, name: str) -> list[bytes]:
        key = name.lower().encode()
        return [v for n, v in self.headers if n.lower() == key]

    @classmethod
    def from_bytes(cls, raw: bytes) -> Message:
        """Parse an RFC 5322 message (LF or CRLF line ends) into a Message.

        Used by `authmilter verify` and tests; the milter builds Message from callbacks.
        """
        data = raw.replace(b"\r\n", b"\n")
        head, sep, body = data.partition(b"\n\n")
        if not sep:
            # No blank line: all header if it looks like one, else all body.
            head, body = data, b""
        headers: list[tuple[bytes, bytes]] = []
        for line in head.split(b"\n"):
            if not line:
                continue
            if line[:1] in (b" ", b"\t") and headers:
                n, v = headers[-1]
                headers[-1] = (n, v + b"\r\n" + line)
                continue
            name, colon, value = line.partition(b":")
            if not colon:
                # Not a header line; keep it as a malformed header so checks can see it.
                headers.append((line, b""))
                continue
            headers.append((name, value))
        body_crlf = body.replace(b"\n", b"\r\n")
        return cls(headers=tuple(headers), body=body_crlf)

    def milter_headers(self) -> list[tuple[bytes, bytes]]:
        """Headers as an MTA hands them to a milter: folds as bare LF inside the value."""
        return [(n, v.replace(b"\r\n", b"\n")) for n, v in self.headers]

    def as_bytes(self) -> bytes:
        out = b"".join(n + b":" + v + b"\r\n" for n, v in self.headers)
        return out + b"\r\n" + self.body


@dataclass(frozen=True, slots=True)
class Session:
    """Everything the MTA told us about one message."""

    client: Client
    envelope: Envelope
    message: Message
    macros: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    queue_id: str = ""

    def macro(self, name: str) -> str:
        """A macro by its name with or without braces ({auth_type} == auth_type)."""
        key = name.strip("{}")
        return self.macros.get(key, "") or self.macros.get("{" + key + "}", "")
