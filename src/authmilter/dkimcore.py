"""DKIM mechanics (RFC 6376, RFC 8301, RFC 8463): tag lists, canonicalization, header
selection, body hash, signature construction, and the signing/verifying primitives.

Everything works on the header bytes exactly as received (`model.Message`): c=simple
hashes them unchanged. The cryptography is OpenSSL's, through `cryptography`; the
DKIM-Signature we produce is byte-identical to dkimpy's for the same inputs (same tag
order, same folding), so either implementation verifies the other's signatures.

Remote data never raises out of `verify_signature`: problems come back as a
`Verification` with an RFC 8601 result; `DkimSignError` is for our callers' mistakes.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from . import model
from .domain import DomainError, is_subdomain, normalize_domain
from .errors import AuthmilterError
from .results import Result

ALGORITHMS = ("rsa-sha256", "ed25519-sha256", "rsa-sha1")
CANONS = ("simple", "relaxed")
SIG_HEADER = b"DKIM-Signature"


class DkimSignError(AuthmilterError):
    """sign() was called with arguments that cannot produce a valid signature."""


class TagListError(ValueError):
    """A tag-list (RFC 6376 §3.2) that does not parse."""


@dataclass(frozen=True)
class SigningKey:
    """A private key parsed once at load time (keys.load_signing_key)."""

    domain: str
    selector: str
    algorithm: str          # "rsa-sha256" | "ed25519-sha256"
    private_key: object     # RSAPrivateKey | Ed25519PrivateKey
    bits: int
    path: str


# ---------------------------------------------------------------------------
# tag lists (RFC 6376 §3.2)

_TAG_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9_]*\Z")
_FWS = b" \t\r\n"


@dataclass(frozen=True)
class Tag:
    value: bytes            # the tag-value without surrounding FWS
    start: int              # span of everything between "=" and the next ";" (or the end)
    end: int


def parse_tag_list(data: bytes) -> dict[str, Tag]:
    """Parse ``tag=value; tag=value`` into {tag name: Tag}.

    Tag names are case-sensitive (§3.2). A duplicate tag or a spec without "=" is an
    error; empty specs (";;" or a trailing ";") are tolerated, as deployed verifiers do.
    """
    tags: dict[str, Tag] = {}
    pos = 0
    n = len(data)
    while pos <= n:
        semi = data.find(b";", pos)
        end = n if semi < 0 else semi
        spec = data[pos:end]
        if spec.strip(_FWS):
            eq = spec.find(b"=")
            if eq < 0:
                raise TagListError(f"tag without '=': {_show(spec.strip(_FWS))}")
            name = spec[:eq].strip(_FWS)
            if not _TAG_NAME.match(name):
                raise TagListError(f"bad tag name {_show(name)}")
            key = name.decode("ascii")
            if key in tags:
                raise TagListError(f"duplicate tag {key}=")
            tags[key] = Tag(spec[eq + 1:].strip(_FWS), pos + eq + 1, end)
        if semi < 0:
            break
        pos = semi + 1
    return tags


def _show(raw: bytes, limit: int = 40) -> str:
    """Remote bytes made safe for a reason string (printable ASCII, bounded)."""
    text = raw.decode("ascii", "replace")
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


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


# ---------------------------------------------------------------------------
# signing (RFC 6376 §5)

_FIRST_LINE = 72 - len(SIG_HEADER)   # what is left of column 72 after "DKIM-Signature"
_NEXT_LINE = 71                      # continuation lines start with one space


def _fold(text: str) -> str:
    """Fold a tag-list greedily at column 72: break at the last space that fits, or hard
    at the column when none does (base64). The same rule as dkimpy's fold(), so our
    headers are byte-identical to dkimpy's."""
    width = _FIRST_LINE
    if len(text) <= width:
        return text
    lines = []
    while len(text) > width:
        cut = text.rfind(" ", 0, width)
        if cut < 0:
            lines.append(text[:width])
            text = text[width:]
        else:
            lines.append(text[:cut])
            text = text[cut + 1:]
        width = _NEXT_LINE
    lines.append(text)
    return "\r\n ".join(lines)


def _signature_b64_len(key: SigningKey) -> int:
    octets = 64 if key.algorithm.startswith("ed25519") else (key.bits + 7) // 8
    return 4 * ((octets + 2) // 3)


def sign(message: model.Message, key: SigningKey, *, header_canon: str = "relaxed",
         body_canon: str = "relaxed", sign_headers: Sequence[str], oversign: Sequence[str] = (),
         identity: str | None = None, timestamp: int | None = None, expire_s: int = 0,
         bh: bytes | None = None) -> str:
    """Sign *message*; return the DKIM-Signature header value (RFC 6376 §5).

    The value starts with the space after the colon and is folded with CRLF + space
    (dkimpy's folding, so the header is byte-identical to dkimpy's). It never has l=.
    rsa-sha256 is RSASSA-PKCS1-v1_5 (§3.3.1); ed25519-sha256 signs the SHA-256 digest of
    the header data with Ed25519 (RFC 8463 §3). *bh* is the body hash when the caller
    already has it (`body_hash(body, body_canon)`): several keys share one pass over the body.
    """
    if header_canon not in CANONS or body_canon not in CANONS:
        raise DkimSignError(f"unknown canonicalization {header_canon}/{body_canon}")
    h_list = headers_to_sign(message.headers, sign_headers, oversign)
    if "from" not in h_list:
        raise DkimSignError("From must be signed (RFC 6376 §5.4)")
    if identity is not None:
        _local, at, idom = identity.rpartition("@")
        if not at or not is_subdomain(idom.lower(), key.domain.lower()):
            raise DkimSignError(f"i={identity} is not in d={key.domain}")
    t = int(time.time()) if timestamp is None else int(timestamp)
    digest = body_hash(message.body, body_canon) if bh is None else bh
    bh_text = base64.b64encode(digest).decode("ascii")
    # dkimpy's tag order; x= (which dkimpy does not write) right after t=.
    tags = [("v", "1"), ("a", key.algorithm), ("c", f"{header_canon}/{body_canon}"), ("d", key.domain),
            ("i", identity or "@" + key.domain), ("q", "dns/txt"), ("s", key.selector), ("t", str(t))]
    if expire_s > 0:
        tags.append(("x", str(t + expire_s)))
    tags += [("h", " : ".join(h_list)), ("bh", bh_text)]
    head = "; ".join(f"{k}={v}" for k, v in tags) + "; b="
    # Fold with a placeholder of the signature's length: b= holds no spaces, so every
    # break before it is the same as in the final header and we can hash "... b=".
    folded = _fold(head + "0" * _signature_b64_len(key))
    unsigned = " " + folded[:folded.rindex("b=") + 2]
    data = b"".join(canon_header(n, v, header_canon) for n, v in select_headers(message.headers, h_list))
    data += canon_header(SIG_HEADER, unsigned.encode("ascii"), header_canon)[:-2]
    sig = _sign_bytes(key, data)
    return " " + _fold(head + base64.b64encode(sig).decode("ascii"))


def _sign_bytes(key: SigningKey, data: bytes) -> bytes:
    pk = key.private_key
    if key.algorithm == "rsa-sha256":
        return pk.sign(data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[attr-defined,no-any-return]
    if key.algorithm == "ed25519-sha256":
        return pk.sign(hashlib.sha256(data).digest())  # type: ignore[attr-defined,no-any-return]
    raise DkimSignError(f"cannot sign with {key.algorithm}")


# ---------------------------------------------------------------------------
# key records (RFC 6376 §3.6.1, RFC 8463 §4)

@dataclass(frozen=True)
class KeyRecord:
    key_type: str                   # k= ("rsa" default)
    hashes: tuple[str, ...] | None  # h= (None: any)
    services: tuple[str, ...]       # s=
    flags: tuple[str, ...]          # t=
    public: bytes                   # p= decoded; b"" = revoked
    key: object = None              # RSAPublicKey | Ed25519PublicKey, None when revoked
    bits: int = 0

    @property
    def revoked(self) -> bool:
        return not self.public

    @property
    def testing(self) -> bool:
        return "y" in self.flags


def _b64decode(value: bytes, what: str) -> bytes:
    compact = re.sub(rb"[ \t\r\n]+", b"", value)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise TagListError(f"{what} is not valid base64") from None


def _split_list(value: bytes, sep: bytes = b":") -> tuple[str, ...]:
    return tuple(p.strip(_FWS).decode("ascii", "replace").lower() for p in value.split(sep) if p.strip(_FWS))


@lru_cache(maxsize=1024)
def parse_key_record(txt: bytes) -> KeyRecord:
    """Parse a DKIM key TXT record; TagListError when it is not one we can use.

    A record with empty p= parses (revoked); its key is None. Memoised on the record
    bytes: the result is immutable, and loading the public key is the costly part of
    every verification of a busy sender's mail (errors are not cached).
    """
    tags = parse_tag_list(txt)
    if "v" in tags:
        if tags["v"].value != b"DKIM1":
            raise TagListError(f"key v= is {_show(tags['v'].value)}, not DKIM1")
        if next(iter(tags)) != "v":
            raise TagListError("key v= is not the first tag")
    if "p" not in tags:
        raise TagListError("key record has no p=")
    key_type = tags["k"].value.strip(_FWS).decode("ascii", "replace").lower() if "k" in tags else "rsa"
    hashes_ = _split_list(tags["h"].value) if "h" in tags else None
    services = _split_list(tags["s"].value) if "s" in tags else ("*",)
    flags = _split_list(tags["t"].value) if "t" in tags else ()
    public = _b64decode(tags["p"].value, "key p=")
    if not public:
        return KeyRecord(key_type, hashes_, services, flags, b"")
    if key_type == "rsa":
        try:
            pub = serialization.load_der_public_key(public)
        except (ValueError, UnsupportedAlgorithm):
            raise TagListError("key p= is not an RSA public key") from None
        if not isinstance(pub, rsa.RSAPublicKey):
            raise TagListError("key p= is not an RSA public key")
        return KeyRecord(key_type, hashes_, services, flags, public, pub, pub.key_size)
    if key_type == "ed25519":
        if len(public) != 32:
            raise TagListError(f"ed25519 key p= has {len(public)} octets, not 32")
        try:
            pub_ed = ed25519.Ed25519PublicKey.from_public_bytes(public)
        except ValueError:
            raise TagListError("key p= is not an Ed25519 public key") from None
        return KeyRecord(key_type, hashes_, services, flags, public, pub_ed, 256)
    raise TagListError(f"unknown key type k={_show(key_type.encode())}")


def public_key_bytes(private_key: object) -> tuple[str, bytes]:
    """(k= value, p= octets) for a private key: SubjectPublicKeyInfo DER for RSA (what
    every signer publishes), the raw 32 octets for Ed25519 (RFC 8463 §4)."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        return "rsa", private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return "ed25519", private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raise DkimSignError(f"unsupported key type {type(private_key).__name__}")


# ---------------------------------------------------------------------------
# verification (RFC 6376 §6)

@dataclass(frozen=True)
class Verification:
    """What verifying one DKIM-Signature found; checks/dkim.py turns it into a DkimResult."""

    result: Result
    reason: str = ""
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    identity: str = ""
    b_prefix: str = ""
    has_length_tag: bool = False
    key_bits: int | None = None
    testing: bool = False


class _Stop(Exception):
    """Internal: ends verification of one signature with a result."""

    def __init__(self, result: Result, reason: str) -> None:
        super().__init__(reason)
        self.result, self.reason = result, reason


_DIGITS = re.compile(rb"[0-9]{1,76}\Z")


def verify_signature(headers: Sequence[tuple[bytes, bytes]], index: int, body: model.Body | bytes,
                     fetch_key: Callable[[str], tuple[Result | None, str, Sequence[bytes]]], *,
                     min_rsa_bits: int = 1024, allow_sha1: bool = False, now: int | None = None,
                     body_cache: dict[BodySpec, BodyDigest] | None = None) -> Verification:
    """Verify the DKIM-Signature at ``headers[index]`` (RFC 6376 §6.1).

    *fetch_key(name)* returns ``(None, "", records)`` with the TXT strings, or
    ``(Result.TEMPERROR|PERMERROR, reason, ())``. *body_cache* holds body digests shared
    between the signatures of one message; fill it in one pass with
    ``body_digests(body, body_specs(headers, indexes))``. A digest missing from it is
    computed here (another pass over the body) and added.
    """
    info: dict[str, object] = {}
    try:
        return _verify(headers, index, body, fetch_key, info, min_rsa_bits, allow_sha1,
                       int(time.time()) if now is None else now, body_cache if body_cache is not None else {})
    except _Stop as stop:
        return Verification(stop.result, stop.reason, **info)  # type: ignore[arg-type]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _clean(text: str, limit: int = 64) -> str:
    """Remote text that goes into a result: no control characters, bounded length."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text[:limit]


def _verify(headers: Sequence[tuple[bytes, bytes]], index: int, body: model.Body | bytes,
            fetch_key: Callable[[str], tuple[Result | None, str, Sequence[bytes]]],
            info: dict[str, object], min_rsa_bits: int, allow_sha1: bool, now: int,
            body_cache: dict[BodySpec, BodyDigest]) -> Verification:
    name, value = headers[index]
    try:
        tags = parse_tag_list(value)
    except TagListError as exc:
        raise _Stop(Result.PERMERROR, f"signature syntax error: {exc}") from None

    def get(tag: str) -> bytes | None:
        t = tags.get(tag)
        return None if t is None else t.value

    # What the result reports is filled in first, so even a permerror names d=/s=/b=.
    if get("b") is not None:
        info["b_prefix"] = _clean(re.sub(rb"[ \t\r\n]+", b"", get("b") or b"")[:8].decode("ascii", "replace"))
    if get("a") is not None:
        info["algorithm"] = _clean(_text(get("a") or b"").lower(), 32)
    info["has_length_tag"] = "l" in tags
    for tag in ("v", "a", "b", "bh", "d", "h", "s"):
        if tag not in tags:
            raise _Stop(Result.PERMERROR, f"signature missing required tag {tag}=")
    try:
        domain = normalize_domain(_text(get("d") or b""), allow_underscore=True)
    except DomainError:
        raise _Stop(Result.PERMERROR, f"invalid d= {_show(get('d') or b'')}") from None
    info["domain"] = domain
    try:
        selector = normalize_domain(_text(get("s") or b""), allow_underscore=True)
    except DomainError:
        raise _Stop(Result.PERMERROR, f"invalid s= {_show(get('s') or b'')}") from None
    info["selector"] = selector
    identity = _text(get("i") or b"") if "i" in tags else "@" + domain
    info["identity"] = _clean(identity, 256)

    if get("v") != b"1":
        raise _Stop(Result.PERMERROR, f"unsupported version v={_show(get('v') or b'')}")
    algorithm = info["algorithm"]
    if algorithm not in ALGORITHMS:
        # RFC 8601 §2.7.1 "neutral": signed, but not able to be processed by us.
        raise _Stop(Result.NEUTRAL, f"unsupported algorithm a={_show(get('a') or b'')}")
    key_type, hash_name = str(algorithm).split("-")
    try:
        sig = _b64decode(get("b") or b"", "b=")
        bh = _b64decode(get("bh") or b"", "bh=")
    except TagListError as exc:
        raise _Stop(Result.PERMERROR, str(exc)) from None
    if not sig:
        raise _Stop(Result.PERMERROR, "empty b=")
    canon = _canons(get("c"))
    if canon is None:
        raise _Stop(Result.PERMERROR, f"unknown canonicalization c={_show(get('c') or b'')}")
    h_list = [n for n in _split_list(get("h") or b"")]
    if "from" not in h_list:
        raise _Stop(Result.PERMERROR, "From is not signed (RFC 6376 §6.1.1)")
    _local, at, i_domain = identity.rpartition("@")
    if not at:
        raise _Stop(Result.PERMERROR, "i= has no @")
    try:
        i_domain = normalize_domain(i_domain, allow_underscore=True)
    except DomainError:
        raise _Stop(Result.PERMERROR, f"invalid i= domain {_show(i_domain.encode())}") from None
    if not is_subdomain(i_domain, domain):
        raise _Stop(Result.PERMERROR, "i= is not in d= (RFC 6376 §6.1.1)")
    length: int | None = None
    if "l" in tags:
        if not _DIGITS.match(get("l") or b""):
            raise _Stop(Result.PERMERROR, "l= is not a number")
        length = int(get("l") or b"0")
    if "q" in tags and "dns/txt" not in _split_list(get("q") or b""):
        raise _Stop(Result.PERMERROR, f"unsupported q={_show(get('q') or b'')}")
    stamps = {}
    for tag in ("t", "x"):
        if tag in tags:
            if not _DIGITS.match(get(tag) or b""):
                raise _Stop(Result.PERMERROR, f"{tag}= is not a number")
            stamps[tag] = int(get(tag) or b"0")
    if "x" in stamps:
        if "t" in stamps and stamps["x"] < stamps["t"]:
            raise _Stop(Result.PERMERROR, "x= is before t=")
        if now > stamps["x"]:
            raise _Stop(Result.FAIL, "signature expired")

    # §6.1.2: the key.
    status, why, records = fetch_key(f"{selector}._domainkey.{domain}")
    if status is not None:
        raise _Stop(status, why)
    record: KeyRecord | None = None
    error = ""
    for txt in records:
        try:
            record = parse_key_record(txt)
            break
        except TagListError as exc:
            error = error or str(exc)
    if record is None:
        raise _Stop(Result.PERMERROR, f"key syntax error: {error}" if error else "no key")
    info["testing"] = record.testing
    if record.revoked:
        raise _Stop(Result.PERMERROR, "key revoked")
    if record.key_type != key_type:
        raise _Stop(Result.PERMERROR, f"key type k={record.key_type} does not match a={algorithm}")
    if record.hashes is not None and hash_name not in record.hashes:
        raise _Stop(Result.PERMERROR, f"key h= does not allow {hash_name}")
    if "*" not in record.services and "email" not in record.services:
        raise _Stop(Result.PERMERROR, "key s= does not allow email")
    if "s" in record.flags and i_domain != domain:
        raise _Stop(Result.PERMERROR, "key t=s forbids an i= subdomain")
    info["key_bits"] = record.bits

    # §6.1.3: body hash, then the signature over the headers.
    spec = (canon[1], hash_name, length)
    found = body_cache.get(spec)
    if found is None:
        found = body_cache[spec] = body_digests(body, [spec])[spec]
    if length is not None and length > found.length:
        raise _Stop(Result.PERMERROR, "l= is longer than the body")
    if found.digest != bh:
        raise _Stop(Result.FAIL, "body hash did not verify")
    hcanon = canon[0]
    data = b"".join(canon_header(n, v, hcanon) for n, v in select_headers(headers, h_list))
    b_tag = tags["b"]
    unsigned = value[:b_tag.start] + value[b_tag.end:]   # §3.5: b= value (and its FWS) deleted
    data += canon_header(name, unsigned, hcanon)[:-2]     # hashed without its final CRLF
    if not _check(record, hash_name, sig, data):
        raise _Stop(Result.FAIL, "signature did not verify")
    if record.key_type == "rsa" and record.bits < min_rsa_bits:
        # RFC 8301 §3.2; RFC 8601 §2.7.1 "policy": signed, but not acceptable to us.
        raise _Stop(Result.POLICY, f"RSA key too short ({record.bits} bits, RFC 8301)")
    if hash_name == "sha1" and not allow_sha1:
        raise _Stop(Result.POLICY, "rsa-sha1 is not acceptable (RFC 8301)")
    return Verification(Result.PASS, "", **info)  # type: ignore[arg-type]


def _check(record: KeyRecord, hash_name: str, sig: bytes, data: bytes) -> bool:
    try:
        if isinstance(record.key, rsa.RSAPublicKey):
            algo = hashes.SHA256() if hash_name == "sha256" else hashes.SHA1()
            record.key.verify(sig, data, padding.PKCS1v15(), algo)
        elif isinstance(record.key, ed25519.Ed25519PublicKey):
            record.key.verify(sig, hashlib.sha256(data).digest())
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def _canons(c_value: bytes | None) -> tuple[str, str] | None:
    """c= as (header, body) canonicalization; absent is simple/simple, one word sets the
    header canonicalization only (§3.5). None when not understood."""
    parts = (c_value or b"simple/simple").decode("ascii", "replace").lower().split("/")
    if len(parts) == 1:
        parts.append("simple")
    if len(parts) != 2 or parts[0] not in CANONS or parts[1] not in CANONS:
        return None
    return parts[0], parts[1]


def body_specs(headers: Sequence[tuple[bytes, bytes]], indexes: Iterable[int]) -> list[BodySpec]:
    """The body digests the DKIM-Signatures at *indexes* will ask for, so that one pass
    over the body computes them all. Signatures whose a=, c= or l= do not parse need none
    (verification stops before the body hash); the rest is not checked here."""
    specs: list[BodySpec] = []
    for index in indexes:
        try:
            tags = parse_tag_list(headers[index][1])
        except TagListError:
            continue
        algorithm = tags["a"].value.decode("ascii", "replace").lower() if "a" in tags else ""
        canon = _canons(tags["c"].value if "c" in tags else None)
        length: int | None = None
        if "l" in tags:
            if not _DIGITS.match(tags["l"].value):
                continue
            length = int(tags["l"].value)
        if algorithm in ALGORITHMS and canon is not None:
            specs.append((canon[1], algorithm.split("-")[1], length))
    return list(dict.fromkeys(specs))


def dkim_signature_indexes(headers: Sequence[tuple[bytes, bytes]]) -> list[int]:
    """Indexes of the DKIM-Signature fields, in header order."""
    return [i for i, (n, _) in enumerate(headers) if n.rstrip(b" \t").lower() == b"dkim-signature"]

