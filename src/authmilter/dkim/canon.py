"""DKIM canonicalization and header selection (RFC 6376 §3.4, §3.5, §5.4.2).

The header algorithms work on header bytes exactly as received (`model.Message`), so
c=simple hashes them unchanged. The body side works on chunks (`model.Body`):
`BodyCanonicalizer` canonicalizes incrementally and `BodyHasher` computes every body
hash a message needs (DKIM-Signatures, ARC-Message-Signatures, our own signatures) in
one pass. ARC (RFC 8617 §4.1.2) reuses both unchanged.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import model

CANONS = ("simple", "relaxed")

# ---------------------------------------------------------------------------
# canonicalization (RFC 6376 §3.4)

_WSP_RUN = re.compile(rb"[ \t]+")
_TAB_TO_SPACE = bytes.maketrans(b"\t", b" ")
_CRLF_PAIRS_REVERSED = re.compile(rb"(?:\n\r)*")
_LINE_BREAK = re.compile(rb"\r?\n")


def canon_header(name: bytes, value: bytes, canon: str) -> bytes:
    """One header field canonicalized, with its CRLF (§3.4.1 simple, §3.4.2 relaxed)."""
    if canon == "simple":
        return name + b":" + value + b"\r\n"
    v = value.replace(b"\r\n", b"")
    if b"\n" in v:
        v = _LINE_BREAK.sub(b"", v)
    if b"\t" in v or b"  " in v:
        v = _WSP_RUN.sub(b" ", v)
    return name.rstrip(b" \t").lower() + b":" + v.strip(b" \t") + b"\r\n"


def canon_body(body: bytes, canon: str) -> bytes:
    """The canonical body (§3.4.3 simple, §3.4.4 relaxed) of a body in one buffer.

    The reference for `BodyCanonicalizer`, which the mail path uses on chunks.

    Same steps and order as dkimpy (trailing WSP, WSP runs, trailing empty lines, then
    the missing final CRLF), so both sides agree on the odd bodies too.
    """
    if canon == "relaxed":
        # Whole-buffer C operations, no per-match Python work: a tab is one WSP, so it
        # becomes one space; each replace pass halves every run of spaces; a run at a
        # line end is then a single space to drop (the same as dropping the run first).
        if b"\t" in body:
            body = body.translate(_TAB_TO_SPACE)
        while b"  " in body:
            body = body.replace(b"  ", b" ")
        if b" \r\n" in body:
            body = body.replace(b" \r\n", b"\r\n")
    if body.endswith(b"\r\n"):
        # Keep one CRLF of the trailing run of CRLFs. The run is found by a greedy match
        # on the reversed tail: a forward search anchored at \Z backtracks quadratically
        # on a tail like CRLF*n LF CRLF.
        tail = body[len(body.rstrip(b"\r\n")):]
        run = _CRLF_PAIRS_REVERSED.match(tail[::-1]).end()  # type: ignore[union-attr]
        body = body[:len(body) - run + 2]
        if body == b"\r\n" and canon == "relaxed":
            body = b""
    elif body:
        body += b"\r\n"
    elif canon == "simple":
        body = b"\r\n"  # §3.4.3: an empty body is one CRLF
    return body


class BodyCanonicalizer:
    """`canon_body` fed in chunks: the same output for any split of the same body.

    Each chunk goes through the whole-buffer steps of `canon_body`; only what the next
    chunk could still change is held back: a trailing space (relaxed: more spaces join
    its run, a CRLF drops it), a trailing CR (an LF may follow), and the trailing run
    of CRLFs, kept as a count, never as bytes, so a body of blank lines stays small.
    Output goes to *sink* in pieces of at most about one chunk.
    """

    __slots__ = ("canon", "_sink", "_carry", "_crlfs", "_emitted")

    def __init__(self, canon: str, sink: Callable[[bytes], object]) -> None:
        if canon not in CANONS:
            raise ValueError(f"unknown canonicalization {canon}")
        self.canon = canon
        self._sink = sink
        self._carry = b""      # at most b" \r": bytes whose meaning depends on what follows
        self._crlfs = 0        # CRLFs held back at the end of the output so far
        self._emitted = False  # anything but those CRLFs sent yet

    def update(self, chunk: bytes) -> None:
        if self.canon == "relaxed":
            if b"\t" in chunk:
                chunk = chunk.translate(_TAB_TO_SPACE)
            data = self._carry + chunk if self._carry else chunk
            while b"  " in data:
                data = data.replace(b"  ", b" ")
            if b" \r\n" in data:
                data = data.replace(b" \r\n", b"\r\n")
            keep = 2 if data.endswith(b" \r") else 1 if data.endswith((b" ", b"\r")) else 0
        else:
            data = self._carry + chunk if self._carry else chunk
            keep = 1 if data.endswith(b"\r") else 0
        if keep:
            self._carry, data = data[-keep:], data[:-keep]
        else:
            self._carry = b""
        if not data:
            return
        # CRLF pairs at the end of this piece join the held-back run (see canon_body).
        tail = data[len(data.rstrip(b"\r\n")):]
        run = _CRLF_PAIRS_REVERSED.match(tail[::-1]).end()  # type: ignore[union-attr]
        if run == len(data):
            self._crlfs += run // 2
            return
        self._flush_crlfs()
        self._sink(data[:len(data) - run])
        self._emitted = True
        self._crlfs = run // 2

    def finish(self) -> None:
        """The end of the body: settle what was held back (RFC 6376 §3.4.3, §3.4.4)."""
        if self._carry:
            self._flush_crlfs()
            self._sink(self._carry + b"\r\n")          # the missing final CRLF
        elif self._crlfs:
            if self._emitted or self.canon == "simple":
                self._sink(b"\r\n")                    # one CRLF of the trailing run
        elif self._emitted:
            self._sink(b"\r\n")
        elif self.canon == "simple":
            self._sink(b"\r\n")                        # an empty body is one CRLF
        self._carry, self._crlfs = b"", 0

    def _flush_crlfs(self) -> None:
        # Blank lines followed by more text are part of the body; sent in bounded pieces.
        while self._crlfs:
            n = min(self._crlfs, _CRLF_BLOCK)
            self._sink(b"\r\n" * n)
            self._emitted = True
            self._crlfs -= n


_CRLF_BLOCK = 1 << 15

BodySpec = tuple[str, str, int | None]   # (body canonicalization, hash name, l= or None)


@dataclass(frozen=True)
class BodyDigest:
    digest: bytes           # of the canonical body, or of its first l= octets
    length: int             # octets of the whole canonical body (l= may not exceed it)


class BodyHasher:
    """Every body hash one message needs, in one pass over the body.

    One canonicalizer per canonicalization feeds every digest that uses it; a digest
    with l= takes only the first l octets (RFC 6376 §3.5).
    """

    def __init__(self, specs: Iterable[BodySpec]) -> None:
        self._specs = list(dict.fromkeys(specs))
        self._hashes = {spec: hashlib.new(spec[1]) for spec in self._specs}
        self._sizes: dict[str, int] = {}
        self._canons: list[BodyCanonicalizer] = []
        for canon in dict.fromkeys(c for c, _, _ in self._specs):
            self._sizes[canon] = 0
            targets = [(spec[2], self._hashes[spec]) for spec in self._specs if spec[0] == canon]
            self._canons.append(BodyCanonicalizer(canon, self._sink_for(canon, targets)))

    def _sink_for(self, canon: str, targets: list[tuple[int | None, Any]]) -> Callable[[bytes], None]:
        def sink(data: bytes) -> None:
            start = self._sizes[canon]
            self._sizes[canon] = start + len(data)
            for limit, h in targets:
                if limit is None:
                    h.update(data)
                elif start < limit:
                    h.update(data[:limit - start])
        return sink

    def update(self, chunk: bytes) -> None:
        for c in self._canons:
            c.update(chunk)

    def finish(self) -> dict[BodySpec, BodyDigest]:
        for c in self._canons:
            c.finish()
        return {spec: BodyDigest(self._hashes[spec].digest(), self._sizes[spec[0]]) for spec in self._specs}


def body_digests(body: model.Body | bytes, specs: Iterable[BodySpec]) -> dict[BodySpec, BodyDigest]:
    """The digests for *specs*, reading *body* once in bounded chunks."""
    hasher = BodyHasher(specs)
    chunks = body.chunks() if isinstance(body, model.Body) else (body,)
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.finish()


def body_hash(body: model.Body | bytes, canon: str, hash_name: str = "sha256", length: int | None = None) -> bytes:
    """Raw digest of the canonical body, optionally the first *length* octets (l=)."""
    spec = (canon, hash_name, length)
    return body_digests(body, [spec])[spec].digest


# ---------------------------------------------------------------------------
# header selection (RFC 6376 §5.4.2)

def select_headers(headers: Sequence[tuple[bytes, bytes]], names: Sequence[str]
                   ) -> list[tuple[bytes, bytes]]:
    """The header instances *names* (h=) refer to: each repeat of a name takes the next
    instance from the bottom; a name with no instance left contributes nothing."""
    positions: dict[str, list[int]] = {}
    for i, (n, _) in enumerate(headers):
        positions.setdefault(n.rstrip(b" \t").lower().decode("ascii", "replace"), []).append(i)
    out: list[tuple[bytes, bytes]] = []
    for name in names:
        stack = positions.get(name)
        if stack:
            out.append(headers[stack.pop()])
    return out


def headers_to_sign(headers: Sequence[tuple[bytes, bytes]], sign_headers: Sequence[str],
                    oversign: Sequence[str] = ()) -> list[str]:
    """The h= list: every present instance of a signed name, in message order, then each
    oversigned name once more, so a further instance cannot be added unnoticed."""
    over = list(dict.fromkeys(n.lower() for n in oversign))
    wanted = {n.lower() for n in sign_headers} | set(over)
    listed = [name for name in (n.rstrip(b" \t").lower().decode("ascii", "replace") for n, _ in headers)
              if name in wanted]
    return listed + over



def parse_canons(c_value: bytes | None) -> tuple[str, str] | None:
    """c= as (header, body) canonicalization; absent is simple/simple, one word sets the
    header canonicalization only (RFC 6376 §3.5). None when not understood."""
    parts = (c_value or b"simple/simple").decode("ascii", "replace").lower().split("/")
    if len(parts) == 1:
        parts.append("simple")
    if len(parts) != 2 or parts[0] not in CANONS or parts[1] not in CANONS:
        return None
    return parts[0], parts[1]
