"""DKIM signing (RFC 6376 §5, RFC 8463): the signature header value for one key.

The cryptography is OpenSSL's, through `cryptography`. The DKIM-Signature we produce
is byte-identical to dkimpy's for the same inputs (same tag order, same folding), so
either implementation verifies the other's; tests/unit/test_dkim_engine.py checks it.
`DkimSignError` is for our callers' mistakes, never for remote data.
"""
from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from .. import model
from ..domain import is_subdomain
from ..errors import AuthmilterError
from .canon import CANONS, body_hash, canon_header, headers_to_sign, select_headers

SIG_HEADER = b"DKIM-Signature"
SIGN_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")


class DkimSignError(AuthmilterError):
    """sign() was called with arguments that cannot produce a valid signature."""


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
# signing (RFC 6376 §5)

_LINE_WIDTH = 72                     # fold column, as dkimpy's fold()
_NEXT_LINE = 71                      # continuation lines start with one space


def fold(text: str, header_name: bytes = SIG_HEADER) -> str:
    """Fold a tag-list greedily at column 72: break at the last space that fits, or hard
    at the column when none does (base64). The same rule as dkimpy's fold(), so our
    headers are byte-identical to dkimpy's. The first line leaves room for the name."""
    width = _LINE_WIDTH - len(header_name)
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


def signature_b64_len(key: SigningKey) -> int:
    """Length of b= in base64 for *key*: Ed25519 signatures are 64 octets, RSA ones the
    modulus size."""
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
    folded = fold(head + "0" * signature_b64_len(key))
    unsigned = " " + folded[:folded.rindex("b=") + 2]
    data = b"".join(canon_header(n, v, header_canon) for n, v in select_headers(message.headers, h_list))
    data += canon_header(SIG_HEADER, unsigned.encode("ascii"), header_canon)[:-2]
    sig = sign_bytes(key, data)
    return " " + fold(head + base64.b64encode(sig).decode("ascii"))


def sign_bytes(key: SigningKey, data: bytes) -> bytes:
    """The b= octets over canonicalized header *data*: RSASSA-PKCS1-v1_5 with SHA-256
    (RFC 6376 §3.3.1), or Ed25519 over the SHA-256 digest of the data (RFC 8463 §3)."""
    pk = key.private_key
    if key.algorithm == "rsa-sha256":
        return pk.sign(data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[attr-defined,no-any-return]
    if key.algorithm == "ed25519-sha256":
        return pk.sign(hashlib.sha256(data).digest())  # type: ignore[attr-defined,no-any-return]
    raise DkimSignError(f"cannot sign with {key.algorithm}")



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
