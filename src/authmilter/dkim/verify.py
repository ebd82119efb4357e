"""DKIM verification (RFC 6376 §6, RFC 8301, RFC 8463): one DKIM-Signature in, one
`results.DkimResult` out.

Remote data never raises out of `verify_signature`: every problem is a result with an
RFC 8601 value and a reason. The key lookup (`key_fetcher`) and the key and signature
checks (`lookup_key`, `check_signature`) are shared with ARC (`dkim.arc`).
"""
from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from .. import model
from ..domain import DomainError, is_subdomain, normalize_domain
from ..resolver import DnsLookup, DnsStatus
from ..results import DkimResult, Result
from .canon import BodyDigest, BodySpec, body_digests, canon_header, parse_canons, select_headers
from .tags import KeyRecord, TagListError, b64decode, parse_key_record, parse_tag_list, show, split_list

ALGORITHMS = ("rsa-sha256", "ed25519-sha256", "rsa-sha1")

# fetch_key(name) -> (None, "", TXT strings, dnssec) or (TEMPERROR | PERMERROR, reason, (), dnssec);
# dnssec: the key answer's AD flag; None when DNSSEC was not asked for or no key came back.
KeyFetcher = Callable[[str], tuple[Result | None, str, Sequence[bytes], bool | None]]


def key_fetcher(resolver: DnsLookup, *, require_dnssec: bool = False) -> KeyFetcher:
    """Key TXT lookups through *resolver* (RFC 6376 §6.1.2): DNS trouble is temperror,
    no record a permerror ("no key").

    *require_dnssec* (``[dns] dnssec = "require-for-keys"``): a key the validating
    resolver refused (SERVFAIL) stays temperror, its reason naming the DNSSEC failure
    when the resolver says so (RFC 8914); a key answer that came signed (RRSIGs) but not
    authenticated (no AD flag) is a permerror. An unsigned key is accepted (reported as
    unprotected)."""
    def fetch(name: str) -> tuple[Result | None, str, Sequence[bytes], bool | None]:
        answer = resolver.query(name, "TXT")
        ad = answer.authenticated
        if answer.status is DnsStatus.TEMPERROR:
            why = "key failed DNSSEC validation" if answer.bogus else "key lookup failed"
            return Result.TEMPERROR, f"{why}: {answer.error or 'DNS temporary failure'}", (), None
        if answer.status is not DnsStatus.OK or not answer.records:
            return Result.PERMERROR, "no key", (), None
        if require_dnssec and answer.signed and not ad:
            return Result.PERMERROR, "key signed but not DNSSEC-validated", (), ad
        return None, "", answer.records, ad

    return fetch


class Stop(Exception):
    """Internal: ends verification of one signature with a result."""

    def __init__(self, result: Result, reason: str) -> None:
        super().__init__(reason)
        self.result, self.reason = result, reason


DIGITS = re.compile(rb"[0-9]{1,76}\Z")


def lookup_key(fetch_key: KeyFetcher, selector: str, domain: str,
               info: dict[str, object] | None = None) -> KeyRecord:
    """The first usable key record at ``selector._domainkey.domain`` (RFC 6376 §6.1.2);
    `Stop` with temperror/permerror otherwise. A broken record next to a good one is
    skipped, as several TXT records may share the name. *info* gets ``dnssec``, the
    answer's AD flag, when DNSSEC was asked for."""
    status, why, records, dnssec = fetch_key(f"{selector}._domainkey.{domain}")
    if info is not None and dnssec is not None:
        info["dnssec"] = dnssec
    if status is not None:
        raise Stop(status, why)
    error = ""
    for txt in records:
        try:
            return parse_key_record(txt)
        except TagListError as exc:
            error = error or str(exc)
    raise Stop(Result.PERMERROR, f"key syntax error: {error}" if error else "no key")


def check_signature(record: KeyRecord, hash_name: str, sig: bytes, data: bytes) -> bool:
    """Whether *sig* signs the canonicalized header *data* under *record*'s key."""
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


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def clean(text: str, limit: int = 64) -> str:
    """Remote text that goes into a result: no control characters, bounded length."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text[:limit]


def verify_signature(headers: Sequence[tuple[bytes, bytes]], index: int, body: model.Body | bytes,
                     fetch_key: KeyFetcher, *,
                     min_rsa_bits: int = 1024, allow_sha1: bool = False, now: int | None = None,
                     body_cache: dict[BodySpec, BodyDigest] | None = None) -> DkimResult:
    """Verify the DKIM-Signature at ``headers[index]`` (RFC 6376 §6.1).

    *fetch_key* is usually `key_fetcher(resolver)`. *body_cache* holds body digests
    shared between the signatures of one message; fill it in one pass with
    ``body_digests(body, body_specs(headers, indexes))``. A digest missing from it is
    computed here (another pass over the body) and added. Results follow RFC 8601
    §2.7.1 (see checks/dkim.py).
    """
    info: dict[str, object] = {}
    try:
        return _verify(headers, index, body, fetch_key, info, min_rsa_bits, allow_sha1,
                       int(time.time()) if now is None else now, body_cache if body_cache is not None else {})
    except Stop as stop:
        return DkimResult(stop.result, reason=stop.reason, **info)  # type: ignore[arg-type]


def _verify(headers: Sequence[tuple[bytes, bytes]], index: int, body: model.Body | bytes,
            fetch_key: KeyFetcher, info: dict[str, object], min_rsa_bits: int, allow_sha1: bool, now: int,
            body_cache: dict[BodySpec, BodyDigest]) -> DkimResult:
    name, value = headers[index]
    try:
        tags = parse_tag_list(value)
    except TagListError as exc:
        raise Stop(Result.PERMERROR, f"signature syntax error: {exc}") from None

    def get(tag: str) -> bytes | None:
        t = tags.get(tag)
        return None if t is None else t.value

    # What the result reports is filled in first, so even a permerror names d=/s=/b=.
    if get("b") is not None:
        info["b_prefix"] = clean(re.sub(rb"[ \t\r\n]+", b"", get("b") or b"")[:8].decode("ascii", "replace"))
    if get("a") is not None:
        info["algorithm"] = clean(text(get("a") or b"").lower(), 32)
    info["has_length_tag"] = "l" in tags
    for tag in ("v", "a", "b", "bh", "d", "h", "s"):
        if tag not in tags:
            raise Stop(Result.PERMERROR, f"signature missing required tag {tag}=")
    try:
        domain = normalize_domain(text(get("d") or b""), allow_underscore=True)
    except DomainError:
        raise Stop(Result.PERMERROR, f"invalid d= {show(get('d') or b'')}") from None
    info["domain"] = domain
    try:
        selector = normalize_domain(text(get("s") or b""), allow_underscore=True)
    except DomainError:
        raise Stop(Result.PERMERROR, f"invalid s= {show(get('s') or b'')}") from None
    info["selector"] = selector
    identity = text(get("i") or b"") if "i" in tags else "@" + domain
    info["identity"] = clean(identity, 256)

    if get("v") != b"1":
        raise Stop(Result.PERMERROR, f"unsupported version v={show(get('v') or b'')}")
    algorithm = info["algorithm"]
    if algorithm not in ALGORITHMS:
        # RFC 8601 §2.7.1 "neutral": signed, but not able to be processed by us.
        raise Stop(Result.NEUTRAL, f"unsupported algorithm a={show(get('a') or b'')}")
    key_type, hash_name = str(algorithm).split("-")
    try:
        sig = b64decode(get("b") or b"", "b=")
        bh = b64decode(get("bh") or b"", "bh=")
    except TagListError as exc:
        raise Stop(Result.PERMERROR, str(exc)) from None
    if not sig:
        raise Stop(Result.PERMERROR, "empty b=")
    canon = parse_canons(get("c"))
    if canon is None:
        raise Stop(Result.PERMERROR, f"unknown canonicalization c={show(get('c') or b'')}")
    h_list = [n for n in split_list(get("h") or b"")]
    if "from" not in h_list:
        raise Stop(Result.PERMERROR, "From is not signed (RFC 6376 §6.1.1)")
    _local, at, i_domain = identity.rpartition("@")
    if not at:
        raise Stop(Result.PERMERROR, "i= has no @")
    try:
        i_domain = normalize_domain(i_domain, allow_underscore=True)
    except DomainError:
        raise Stop(Result.PERMERROR, f"invalid i= domain {show(i_domain.encode())}") from None
    if not is_subdomain(i_domain, domain):
        raise Stop(Result.PERMERROR, "i= is not in d= (RFC 6376 §6.1.1)")
    length: int | None = None
    if "l" in tags:
        if not DIGITS.match(get("l") or b""):
            raise Stop(Result.PERMERROR, "l= is not a number")
        length = int(get("l") or b"0")
    if "q" in tags and "dns/txt" not in split_list(get("q") or b""):
        raise Stop(Result.PERMERROR, f"unsupported q={show(get('q') or b'')}")
    stamps = {}
    for tag in ("t", "x"):
        if tag in tags:
            if not DIGITS.match(get(tag) or b""):
                raise Stop(Result.PERMERROR, f"{tag}= is not a number")
            stamps[tag] = int(get(tag) or b"0")
    if "x" in stamps:
        if "t" in stamps and stamps["x"] < stamps["t"]:
            raise Stop(Result.PERMERROR, "x= is before t=")
        if now > stamps["x"]:
            raise Stop(Result.FAIL, "signature expired")

    # §6.1.2: the key.
    record = lookup_key(fetch_key, selector, domain, info)
    info["testing"] = record.testing
    check_key(record, algorithm)
    if "s" in record.flags and i_domain != domain:
        raise Stop(Result.PERMERROR, "key t=s forbids an i= subdomain")
    info["key_bits"] = record.bits

    # §6.1.3: body hash, then the signature over the headers.
    spec = (canon[1], hash_name, length)
    found = body_cache.get(spec)
    if found is None:
        found = body_cache[spec] = body_digests(body, [spec])[spec]
    if length is not None and length > found.length:
        raise Stop(Result.PERMERROR, "l= is longer than the body")
    if found.digest != bh:
        raise Stop(Result.FAIL, "body hash did not verify")
    hcanon = canon[0]
    data = b"".join(canon_header(n, v, hcanon) for n, v in select_headers(headers, h_list))
    b_tag = tags["b"]
    unsigned = value[:b_tag.start] + value[b_tag.end:]   # §3.5: b= value (and its FWS) deleted
    data += canon_header(name, unsigned, hcanon)[:-2]     # hashed without its final CRLF
    if not check_signature(record, hash_name, sig, data):
        raise Stop(Result.FAIL, "signature did not verify")
    if record.key_type == "rsa" and record.bits < min_rsa_bits:
        # RFC 8301 §3.2; RFC 8601 §2.7.1 "policy": signed, but not acceptable to us.
        raise Stop(Result.POLICY, f"RSA key too short ({record.bits} bits, RFC 8301)")
    if hash_name == "sha1" and not allow_sha1:
        raise Stop(Result.POLICY, "rsa-sha1 is not acceptable (RFC 8301)")
    return DkimResult(Result.PASS, **info)  # type: ignore[arg-type]



def check_key(record: KeyRecord, algorithm: str) -> None:
    """The key record rules of RFC 6376 §6.1.2 that DKIM and ARC signatures share: not
    revoked, k= matching a=, h= allowing the hash, s= allowing email (raises Stop)."""
    key_type, hash_name = algorithm.split("-")
    if record.revoked:
        raise Stop(Result.PERMERROR, "key revoked")
    if record.key_type != key_type:
        raise Stop(Result.PERMERROR, f"key type k={record.key_type} does not match a={algorithm}")
    if record.hashes is not None and hash_name not in record.hashes:
        raise Stop(Result.PERMERROR, f"key h= does not allow {hash_name}")
    if "*" not in record.services and "email" not in record.services:
        raise Stop(Result.PERMERROR, "key s= does not allow email")


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
        canon = parse_canons(tags["c"].value if "c" in tags else None)
        length: int | None = None
        if "l" in tags:
            if not DIGITS.match(tags["l"].value):
                continue
            length = int(tags["l"].value)
        if algorithm in ALGORITHMS and canon is not None:
            specs.append((canon[1], algorithm.split("-")[1], length))
    return list(dict.fromkeys(specs))


def dkim_signature_indexes(headers: Sequence[tuple[bytes, bytes]]) -> list[int]:
    """Indexes of the DKIM-Signature fields, in header order."""
    return [i for i, (n, _) in enumerate(headers) if n.rstrip(b" \t").lower() == b"dkim-signature"]

