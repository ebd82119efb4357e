"""Frozen value objects describing one message as the MTA presented it.

The milter adapter records these facts; everything after end-of-message works on them
and never on pymilter objects, so the pipeline runs the same offline (`authmilter verify`).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import IO

from .results import DnsListResult

CHUNK_BYTES = 1 << 16      # what Body.chunks() yields at most: bounded work and memory per step


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


class Body:
    """A message body (CRLF line ends), in memory or in the milter's spool file.

    The milter spools the body as it arrives and hands the spool over unread, so a large
    message never exists as one bytes object: readers take it in bounded chunks
    (`chunks`). `as_bytes` copies it whole, for the rare paths that need the entire
    message (tests, tools); DKIM and ARC verification read chunks.

    A spooled Body reads from a file its owner (the milter handler) closes after
    end-of-message; it never writes to it, and each read seeks first under a lock, so
    readers in several threads (DKIM and ARC verified concurrently) may interleave.
    """

    __slots__ = ("_data", "_file", "_lock", "size")

    def __init__(self, data: bytes = b"") -> None:
        self._data = bytes(data)
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()
        self.size = len(self._data)

    @classmethod
    def spooled(cls, file: IO[bytes], size: int) -> Body:
        """The first *size* octets of *file* (read from offset 0)."""
        body = cls()
        body._file, body.size = file, size
        return body

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The body in order, in pieces of at most *size* octets (none for an empty body)."""
        if self._file is None:
            if self.size <= size:
                if self.size:
                    yield self._data
                return
            for start in range(0, self.size, size):
                yield self._data[start:start + size]
            return
        pos = 0
        while pos < self.size:
            with self._lock:     # seek + read as one step: another thread may read too
                self._file.seek(pos)
                piece = self._file.read(min(size, self.size - pos))
            if not piece:
                raise OSError(f"body spool ended at {pos} of {self.size} octets")
            pos += len(piece)
            yield piece

    def as_bytes(self) -> bytes:
        """The whole body as one bytes object: a full copy, avoid on the mail path."""
        if self._file is None:
            return self._data
        return b"".join(self.chunks())

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (bytes, bytearray)):
            return self.size == len(other) and self.as_bytes() == other
        if isinstance(other, Body):
            return self.size == other.size and self.as_bytes() == other.as_bytes()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equality follows content that may live in a file

    def __repr__(self) -> str:
        where = "spooled" if self._file is not None else "in memory"
        return f"Body({self.size} octets {where})"


def header_key(name: bytes) -> bytes:
    """The one header-name matcher: case-insensitive, white space around the name ignored
    (RFC 5322 §4.5.3 obsolete syntax allows ``Name :``, and MTAs pass it on)."""
    return name.strip(b" \t").lower()


@dataclass(frozen=True, slots=True)
class Message:
    """Header fields exactly as received, and the body with CRLF line ends.

    ``headers`` holds (name, value) byte pairs in arrival order. ``value`` is everything
    after the colon, *including* the leading whitespace and any folding, with line
    breaks normalised to CRLF, so ``name + b":" + value + b"\\r\\n"`` is the header as
    it stood in the message (what DKIM c=simple hashes). ``body`` is a `Body`; bytes
    are accepted and wrapped (tests and `from_bytes` build messages from bytes).
    """

    headers: tuple[tuple[bytes, bytes], ...]
    body: Body

    def __post_init__(self) -> None:
        if not isinstance(self.body, Body):
            object.__setattr__(self, "body", Body(self.body))

    def get_all(self, name: str) -> list[bytes]:
        """Values of every header called *name*, in arrival order (see `header_key`)."""
        key = name.lower().encode()
        return [v for n, v in self.headers if header_key(n) == key]

    def numbered(self, name: str) -> list[tuple[int, bytes]]:
        """(occurrence index from 1, value) of every header called *name*: the index
        smfi_chgheader takes to change or delete that occurrence."""
        return list(enumerate(self.get_all(name), 1))

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
        return cls(headers=tuple(headers), body=Body(body_crlf))

    def milter_headers(self) -> list[tuple[bytes, bytes]]:
        """Headers as an MTA hands them to a milter: folds as bare LF inside the value."""
        return [(n, v.replace(b"\r\n", b"\n")) for n, v in self.headers]

    def as_bytes(self) -> bytes:
        """The whole message in one bytes object (a full copy of the body)."""
        out = b"".join(n + b":" + v + b"\r\n" for n, v in self.headers)
        return out + b"\r\n" + self.body.as_bytes()


@dataclass(frozen=True, slots=True)
class Session:
    """Everything the MTA told us about one message."""

    client: Client
    envelope: Envelope
    message: Message
    macros: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    queue_id: str = ""
    # Facts gathered before end-of-message: the client against [dnsbl]/[dnswl] (looked up
    # at connect), and what the RCPT stage logged (greylisting), for the one log line.
    dnsbl: DnsListResult | None = None
    dnswl: DnsListResult | None = None
    early_log: tuple[tuple[str, str], ...] = ()

    def macro(self, name: str) -> str:
        """A macro by its name with or without braces ({auth_type} == auth_type)."""
        key = name.strip("{}")
        return self.macros.get(key, "") or self.macros.get("{" + key + "}", "")
