"""DKIM tag lists and key records (RFC 6376 §3.2, §3.6.1; RFC 8463 §4).

Shared by DKIM-Signature, the ARC header fields (RFC 8617 §4.1, same tag-list grammar)
and the key records both fetch from DNS.
"""
from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


class TagListError(ValueError):
    """A tag-list (RFC 6376 §3.2) that does not parse."""


_TAG_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9_]*\Z")
FWS = b" \t\r\n"


@dataclass(frozen=True)
class Tag:
    value: bytes            # the tag-value without surrounding FWS
    start: int              # span of everything between "=" and the next ";" (or the end)
    end: int


@lru_cache(maxsize=256)
def parse_tag_list(data: bytes, *, strict: bool = False) -> Mapping[str, Tag]:
    """Parse ``tag=value; tag=value`` into a read-only {tag name: Tag}.

    Memoised: one message's signature is read more than once (the one-pass body hash
    collects every signature's c=/a=/l= before each signature is verified), and the
    result is immutable so sharing it is safe.

    Tag names are case-sensitive (§3.2). A duplicate tag or a spec without "=" is an
    error; empty specs (";;" or a trailing ";") are tolerated, as deployed DKIM
    verifiers do. *strict* follows the grammar (only the trailing ";" may stand alone),
    as ARC validators do (RFC 8617 §4.1; the ValiMail suite's tags_sc cases).
    """
    tags: dict[str, Tag] = {}
    pos = 0
    n = len(data)
    while pos <= n:
        semi = data.find(b";", pos)
        end = n if semi < 0 else semi
        spec = data[pos:end]
        if strict and not spec.strip(FWS) and semi >= 0:
            raise TagListError("empty tag-spec (';;')")
        if spec.strip(FWS):
            eq = spec.find(b"=")
            if eq < 0:
                raise TagListError(f"tag without '=': {show(spec.strip(FWS))}")
            name = spec[:eq].strip(FWS)
            if not _TAG_NAME.match(name):
                raise TagListError(f"bad tag name {show(name)}")
            key = name.decode("ascii")
            if key in tags:
                raise TagListError(f"duplicate tag {key}=")
            tags[key] = Tag(spec[eq + 1:].strip(FWS), pos + eq + 1, end)
        if semi < 0:
            break
        pos = semi + 1
    return MappingProxyType(tags)


def show(raw: bytes, limit: int = 40) -> str:
    """Remote bytes made safe for a reason string (printable ASCII, bounded)."""
    text = raw.decode("ascii", "replace")
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def b64decode(value: bytes, what: str) -> bytes:
    """A base64 tag value; FWS inside it is ignored (RFC 6376 §3.5 b=, bh=)."""
    compact = re.sub(rb"[ \t\r\n]+", b"", value)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise TagListError(f"{what} is not valid base64") from None


def split_list(value: bytes, sep: bytes = b":") -> tuple[str, ...]:
    """A colon-separated tag value (h=, s=, t=, q=), lowercased, empty items dropped."""
    return tuple(p.strip(FWS).decode("ascii", "replace").lower() for p in value.split(sep) if p.strip(FWS))


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
            raise TagListError(f"key v= is {show(tags['v'].value)}, not DKIM1")
        if next(iter(tags)) != "v":
            raise TagListError("key v= is not the first tag")
    if "p" not in tags:
        raise TagListError("key record has no p=")
    key_type = tags["k"].value.strip(FWS).decode("ascii", "replace").lower() if "k" in tags else "rsa"
    hashes_ = split_list(tags["h"].value) if "h" in tags else None
    services = split_list(tags["s"].value) if "s" in tags else ("*",)
    flags = split_list(tags["t"].value) if "t" in tags else ()
    public = b64decode(tags["p"].value, "key p=")
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
    raise TagListError(f"unknown key type k={show(key_type.encode())}")
