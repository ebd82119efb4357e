"""Sender Rewriting Scheme: the address codec and the rules for when to rewrite. Pure.

The scheme is Shevek's (libsrs2, "guarded" mode), as postsrsd implements it, so that an
admin who moves from postsrsd with the same secret keeps the bounces in flight working:

    forward  user@orig.example      -> SRS0=HHHH=TT=orig.example=user@srs.example
    forward  SRS0=HHHH=TT=d=u@fwd.example
                                    -> SRS1=GGGG=fwd.example==HHHH=TT=d=u@srs.example
    forward  SRS1=XXXX=first.example==HHHH=TT=d=u@fwd.example
                                    -> SRS1=GGGG=first.example==HHHH=TT=d=u@srs.example
    reverse  SRS0 -> user@orig.example (hash and age checked)
    reverse  SRS1 -> SRS0=HHHH=TT=d=u@first.example (hash checked; the first forwarder
             checks the age)

HHHH is HMAC-SHA1 (the secret as key) over the lower-cased fields, base64, the first
``hash_length`` characters; compared case-insensitively because some MTAs lower-case
local parts. TT is the day number (Unix time / 86400) modulo 1024 in two base32
characters; an address is valid for ``max_age_days``. Several secrets: the first signs,
every one verifies (rotation). The separator after SRS0/SRS1 may be ``=``, ``-`` or ``+``
on input; we write ``=``.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

SEPARATORS = "=-+"
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_DAY_S = 86400
_SLOTS = 1024                  # two base32 characters of day number


class Reversal(StrEnum):
    RESTORED = "restored"      # a valid address of ours: .address is the one it stands for
    NOT_SRS = "not_srs"        # not an SRS address at all: leave it alone
    MALFORMED = "malformed"    # SRS0/SRS1 prefix but fields missing
    FORGED = "forged"          # the hash does not verify with any of our secrets
    EXPIRED = "expired"        # SRS0 older than max_age_days (or a bad timestamp)


@dataclass(frozen=True, slots=True)
class Reversed:
    status: Reversal
    address: str = ""          # the restored address for RESTORED
    reason: str = ""           # for the log line and the reply text


def is_srs_local(local: str) -> bool:
    """``SRS0=…`` / ``SRS1=…`` (any case, any of the three separators)."""
    return len(local) > 4 and local[:3].upper() == "SRS" and local[3] in "01" and local[4] in SEPARATORS


def split_address(address: str) -> tuple[str, str]:
    """(local part, domain) at the last '@'; ("", "") for an address without one."""
    local, at, domain = address.rpartition("@")
    return (local, domain) if at and local and domain else ("", "")


@dataclass(frozen=True)
class SrsCodec:
    """Forward and reverse SRS addresses for one SRS domain and set of secrets."""

    domain: str
    secrets: tuple[bytes, ...]
    max_age_days: int = 21
    hash_length: int = 4

    def __post_init__(self) -> None:
        if not self.secrets:
            raise ValueError("SRS needs at least one secret")

    # -- pieces ---------------------------------------------------------------------------
    def _hash(self, secret: bytes, *fields: str) -> str:
        mac = hmac.new(secret, digestmod=hashlib.sha1)
        for f in fields:
            # libsrs2 lower-cases ASCII only (isupper/tolower in the C locale).
            mac.update(f.encode("utf-8", "surrogateescape").translate(_ASCII_LOWER))
        return base64.b64encode(mac.digest()).decode()[: self.hash_length]

    def _hash_ok(self, given: str, *fields: str) -> bool:
        if len(given) < self.hash_length:
            return False
        want = given[: self.hash_length].lower()
        return any(hmac.compare_digest(self._hash(s, *fields).lower(), want) for s in self.secrets)

    @staticmethod
    def timestamp(now: float) -> str:
        day = int(now // _DAY_S)
        return _BASE32[(day >> 5) & 31] + _BASE32[day & 31]

    def _age_ok(self, stamp: str, now: float) -> bool:
        then = 0
        for ch in stamp.upper():
            pos = _BASE32.find(ch)
            if pos < 0:
                return False
            then = (then << 5) | pos
        if len(stamp) != 2:
            return False
        today = int(now // _DAY_S) % _SLOTS
        while today < then:          # the day counter wrapped since (every 2.8 years)
            today += _SLOTS
        return today <= then + self.max_age_days

    # -- forward --------------------------------------------------------------------------
    def forward(self, address: str, now: float | None = None) -> str:
        """The SRS address for *address* (which must have a local part and a domain).

        An address already at our SRS domain is returned unchanged (libsrs2 without
        "always rewrite"); SRS0/SRS1 addresses of other forwarders become SRS1.
        """
        local, host = split_address(address)
        if not local:
            raise ValueError(f"not an address: {address!r}")
        if host.lower() == self.domain.lower():
            return address
        sign = self.secrets[0]
        if is_srs_local(local) and local[:4].upper() == "SRS1":
            # SRS1<sep>HASH=firsthost=rest: keep the first forwarder and the SRS0 part.
            _hash, eq, tail = local[5:].partition("=")
            first, eq2, rest = tail.partition("=")
            if not (_hash and eq and first and eq2 and rest):
                raise ValueError(f"malformed SRS1 address: {address!r}")
            return f"SRS1={self._hash(sign, first, rest)}={first}={rest}@{self.domain}"
        if is_srs_local(local) and local[:4].upper() == "SRS0":
            rest = local[4:]                        # "=HHHH=TT=d=u": the SRS0 part after its tag
            return f"SRS1={self._hash(sign, host, rest)}={host}={rest}@{self.domain}"
        stamp = self.timestamp(time.time() if now is None else now)
        return f"SRS0={self._hash(sign, stamp, host, local)}={stamp}={host}={local}@{self.domain}"

    # -- reverse --------------------------------------------------------------------------
    def reverse(self, address: str, now: float | None = None) -> Reversed:
        """The address an SRS address stands for, with its hash (and SRS0 age) checked.
        The domain is not checked here (libsrs2 neither): callers decide whose it is."""
        local = address.rpartition("@")[0] if "@" in address else address
        if not is_srs_local(local):
            return Reversed(Reversal.NOT_SRS)
        now = time.time() if now is None else now
        fields = local[5:].split("=")
        if local[3] == "1":
            # SRS1<sep>HASH=firsthost=<SRS0 part, which starts with its own separator>
            hash_, _, tail = local[5:].partition("=")
            first, eq, rest = tail.partition("=")
            if not (hash_ and first and eq and rest):
                return Reversed(Reversal.MALFORMED, reason="SRS1 address without hash, host or user")
            if not self._hash_ok(hash_, first, rest):
                return Reversed(Reversal.FORGED, reason="SRS1 hash does not verify")
            return Reversed(Reversal.RESTORED, f"SRS0{rest}@{first}")
        if len(fields) < 4 or not all(fields[:4]):
            return Reversed(Reversal.MALFORMED, reason="SRS0 address without hash, timestamp, host or user")
        hash_, stamp, host = fields[0], fields[1], fields[2]
        user = "=".join(fields[3:])
        if not self._age_ok(stamp, now):
            return Reversed(Reversal.EXPIRED, reason=f"SRS0 timestamp {stamp} older than {self.max_age_days} days")
        if not self._hash_ok(hash_, stamp, host, user):
            return Reversed(Reversal.FORGED, reason="SRS0 hash does not verify")
        return Reversed(Reversal.RESTORED, f"{user}@{host}")


_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


def read_secrets(text: str) -> tuple[bytes, ...]:
    """Secrets from a secret file: one per line (the first signs), blank lines skipped.
    Like postsrsd, a line is the secret as written up to its line end."""
    return tuple(line.encode("utf-8", "surrogateescape") for line in text.splitlines() if line.strip())


# -- the rules (shared by the milter step and the socketmap) ------------------------------

DomainTest = Callable[[str], bool]


@dataclass(frozen=True)
class SrsRules:
    """When to rewrite: the codec and the two domain lists as predicates."""

    codec: SrsCodec
    is_local: DomainTest               # srs.local_domains (the SRS domain always counts)
    is_excluded: DomainTest            # srs.exclude_domains

    def local(self, domain: str) -> bool:
        d = domain.lower().rstrip(".")
        return d == self.codec.domain.lower() or self.is_local(d)

    def forward_sender(self, sender: str, now: float | None = None) -> str | None:
        """The rewritten sender, or None when this sender keeps its address: the null
        sender, an address without a domain, a local or excluded domain, or an SRS
        address of ours (postsrsd: "already rewritten")."""
        local, domain = split_address(sender)
        if not local or self.local(domain) or self.is_excluded(domain.lower().rstrip(".")):
            return None
        if is_srs_local(local) and self.codec.reverse(sender, now).status is Reversal.RESTORED:
            return None
        try:
            rewritten = self.codec.forward(sender, now)
        except ValueError:
            return None
        return None if rewritten == sender else rewritten

    def forward_needed(self, rcpts: Iterable[str]) -> bool:
        """Whether mail to these recipients leaves our domains (any recipient outside)."""
        return any(not self.local(split_address(r)[1]) for r in rcpts if split_address(r)[1])

    def reverse_recipient(self, rcpt: str, now: float | None = None) -> Reversed:
        """For a recipient at our SRS domain: what it stands for; NOT_SRS otherwise."""
        local, domain = split_address(rcpt)
        if not local or domain.lower().rstrip(".") != self.codec.domain.lower() or not is_srs_local(local):
            return Reversed(Reversal.NOT_SRS)
        return self.codec.reverse(rcpt, now)
