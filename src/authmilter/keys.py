"""Signing keys: loading with permission checks, and the genkey/testkey commands.

Formats read: PEM PKCS#1 ("BEGIN RSA PRIVATE KEY", what opendkim-genkey wrote before
2.11), PEM PKCS#8 for RSA or Ed25519 (opendkim-genkey 2.11, openssl genpkey), and
dkimpy's Ed25519 form: the 32-octet seed in base64 on one line (dknewkey,
dkimpy-milter). genkey writes RSA as PKCS#8 PEM (what opendkim-genkey 2.11 writes) and
Ed25519 in dkimpy's seed form, so dkimpy-milter can use our Ed25519 keys unchanged.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import os
import stat
import sys
import textwrap
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from .dkim.sign import SigningKey, public_key_bytes
from .dkim.tags import TagListError, parse_key_record
from .domain import DomainError, normalize_domain
from .errors import AuthmilterError, ConfigError, KeyError_

MIN_RSA_BITS = 1024   # RFC 8301 §3.2: verifiers do not accept shorter keys

# testkey exit codes
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NO_RECORD = 3
EXIT_MISMATCH = 4
EXIT_REVOKED = 5
EXIT_WEAK = 6
EXIT_DNS_TEMP = 7
EXIT_SYNTAX = 8
EXIT_KEY_UNUSABLE = 9


def check_key_permissions(path: str) -> None:
    """Refuse a key an attacker could replace or read (design: "Key files").

    The file must not be group- or world-writable nor world-readable, and its
    directory must be neither world-writable nor world-readable.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read key: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyError_(f"{path}: not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise KeyError_(f"{path}: key file is group- or world-writable (mode {mode:04o}); "
                        f"run: chmod 600 {path}")
    if mode & 0o004:
        raise KeyError_(f"{path}: key file is world-readable (mode {mode:04o}); run: chmod 600 {path}")
    directory = os.path.dirname(os.path.realpath(path))
    dmode = stat.S_IMODE(os.stat(directory).st_mode)
    if dmode & 0o006:
        raise KeyError_(f"{path}: key directory {directory} is world-{'writable' if dmode & 0o002 else 'readable'} "
                        f"(mode {dmode:04o}); run: chmod o-rwx {directory}")


def parse_private_key(data: bytes, path: str = "<key>") -> object:
    """An RSAPrivateKey or Ed25519PrivateKey from any of the formats this module reads."""
    if b"-----BEGIN" in data:
        if b"ENCRYPTED" in data:
            raise KeyError_(f"{path}: encrypted keys are not supported (the milter cannot ask for a passphrase)")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyError_(f"{path}: not a usable PEM private key ({exc})") from None
    else:
        try:
            raw = base64.b64decode(b"".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == 32:  # dkimpy's Ed25519 seed
            key = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
        else:
            # base64 DER is what an OpenDKIM KeyTable may hold inline; else a DER file.
            try:
                key = serialization.load_der_private_key(raw or data, password=None)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise KeyError_(f"{path}: not a PEM key, DER key or base64 Ed25519 seed") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise KeyError_(f"{path}: {type(key).__name__} keys cannot sign DKIM (RSA or Ed25519 only)")
    return key


def read_private_key(path: str) -> object:
    """Check permissions, read and parse; KeyError_ with the path and the reason."""
    check_key_permissions(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read key: {exc.strerror}") from None
    return parse_private_key(data, path)


def key_algorithm(key: object) -> tuple[str, int]:
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa-sha256", key.key_size
    return "ed25519-sha256", 256


def load_signing_key(path: str, domain: str, selector: str) -> SigningKey:
    """Load a private key once for signing (RFC 6376 §3.3, RFC 8463).

    Raises KeyError_ naming the path and the reason: unsafe permissions, unreadable,
    unknown format, or an RSA key shorter than 1024 bits (RFC 8301 — no verifier would
    accept its signatures).
    """
    return _signing_key(None, path, domain, selector)


def signing_key_from_data(data: bytes, domain: str, selector: str, source: str = "<inline key>"
                          ) -> SigningKey:
    """Like load_signing_key for key material held inline (an OpenDKIM KeyTable may
    carry the key itself instead of a path); there is no file to check."""
    return _signing_key(data, source, domain, selector)


def _signing_key(data: bytes | None, path: str, domain: str, selector: str) -> SigningKey:
    try:
        domain = normalize_domain(domain)
        selector = normalize_domain(selector, allow_underscore=True)
    except DomainError as exc:
        raise KeyError_(f"{path}: {exc}") from None
    key = read_private_key(path) if data is None else parse_private_key(data, path)
    algorithm, bits = key_algorithm(key)
    if algorithm.startswith("rsa") and bits < MIN_RSA_BITS:
        raise KeyError_(f"{path}: RSA key of {bits} bits is too short (RFC 8301 requires {MIN_RSA_BITS})")
    return SigningKey(domain=domain, selector=selector, algorithm=algorithm, private_key=key,
                               bits=bits, path=path)


# ---------------------------------------------------------------------------
# genkey

def dns_record(key: object, *, testmode: bool = False, restrict: bool = False) -> str:
    """The TXT record text (RFC 6376 §3.6.1) publishing *key*'s public half."""
    k, public = public_key_bytes(key)
    tags = ["v=DKIM1", f"k={k}"]
    if testmode:
        tags.append("t=y")
    if restrict:
        tags.append("s=email")
    return "; ".join(tags) + "; p=" + base64.b64encode(public).decode("ascii")


def zone_text(selector: str, domain: str, record: str) -> str:
    """opendkim-genkey's zone-file stub: the record as quoted strings of at most 255
    octets (RFC 1035 character-strings), tags first, then p= in 250-octet pieces."""
    head, _, p = record.partition("p=")
    parts = [head] + textwrap.wrap("p=" + p, 250, break_on_hyphens=False)
    quoted = "\n\t  ".join(f'"{s}"' for s in parts)
    return f"{selector}._domainkey\tIN\tTXT\t( {quoted} )  ; ----- DKIM key {selector} for {domain}\n"


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite a key; the mode is set at creation, never widened later.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def cmd_genkey(args: argparse.Namespace) -> int:
    """``authmilter genkey -d DOMAIN -s SELECTOR [-b BITS] [--type rsa|ed25519] [-D DIR] [-t] [-r]``.

    Writes DIR/SELECTOR.private (mode 0600, created exclusively) and DIR/SELECTOR.txt,
    the DNS record in opendkim-genkey's zone-file form. Exit 0, or 2 on a usage error
    or an existing key file.
    """
    try:
        domain = normalize_domain(args.domain)
        selector = normalize_domain(args.selector, allow_underscore=True)
    except DomainError as exc:
        print(f"authmilter genkey: {exc}", file=sys.stderr)
        return EXIT_USAGE
    key_type = getattr(args, "type", "rsa") or "rsa"
    if key_type == "rsa":
        bits = int(args.bits or 2048)
        if bits < MIN_RSA_BITS:
            print(f"authmilter genkey: {bits} bits is too short; RFC 8301 requires at least {MIN_RSA_BITS}",
                  file=sys.stderr)
            return EXIT_USAGE
        key: object = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        private = key.private_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                                    serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        seed = key.private_bytes(serialization.Encoding.Raw,  # type: ignore[attr-defined]
                                 serialization.PrivateFormat.Raw, serialization.NoEncryption())
        private = base64.b64encode(seed) + b"\n"
    directory = Path(args.directory or ".")
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
    priv_path = directory / f"{selector}.private"
    txt_path = directory / f"{selector}.txt"
    record = dns_record(key, testmode=bool(args.testmode), restrict=bool(args.restrict))
    try:
        _write_new(priv_path, private, 0o600)
    except FileExistsError:
        print(f"authmilter genkey: {priv_path} exists; not overwriting a key", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"authmilter genkey: {priv_path}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        txt_path.unlink(missing_ok=True)
        _write_new(txt_path, zone_text(selector, domain, record).encode("ascii"), 0o644)
    except OSError as exc:
        print(f"authmilter genkey: {txt_path}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    dmode = stat.S_IMODE(directory.stat().st_mode)
    if dmode & 0o006:
        print(f"authmilter genkey: note: {directory} is accessible to others (mode {dmode:04o}); "
              f"authmilter refuses keys there until you run: chmod o-rwx {directory}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------------
# testkey

_MESSAGES = {
    EXIT_NO_RECORD: "no key record published",
    EXIT_MISMATCH: "published key does not match the private key",
    EXIT_REVOKED: "key revoked (empty p=)",
    EXIT_WEAK: "RSA key shorter than 1024 bits",
    EXIT_DNS_TEMP: "DNS temporary failure",
    EXIT_SYNTAX: "key record syntax error",
    EXIT_KEY_UNUSABLE: "private key unreadable or unsafe",
}


def check_published_key(resolver: object, domain: str, selector: str, keyfile: str, *,
                        inline: bool = False) -> tuple[int, str]:
    """Compare the published record for *selector*._domainkey.*domain* with *keyfile*
    (or, with *inline*, the key material itself).

    Returns (exit code, detail). The private key is checked first (permissions and
    format), then DNS, then the record against the key.
    """
    try:
        key = parse_private_key(keyfile.encode(), "inline key") if inline else read_private_key(keyfile)
    except KeyError_ as exc:
        return EXIT_KEY_UNUSABLE, str(exc)
    name = f"{selector}._domainkey.{domain}"
    answer = resolver.query(name, "TXT")  # type: ignore[attr-defined]
    code, detail = _compare_record(name, answer, key, keyfile, inline=inline)
    # [dns] dnssec report / require-for-keys: say whether the answer was validated
    # (the resolver's AD flag), as the milter's Authentication-Results comment does.
    if answer.bogus:
        detail += " (the validating resolver refused it: DNSSEC validation failed)"
    elif answer.authenticated is True:
        detail += " (DNSSEC-validated)"
    elif answer.authenticated is False and not answer.temporary:
        detail += " (unprotected key: not DNSSEC-validated" + (", the zone is signed)" if answer.signed else ")")
    return code, detail


def _compare_record(name: str, answer: Any, key: object, keyfile: str, *, inline: bool) -> tuple[int, str]:
    if answer.temporary:
        return EXIT_DNS_TEMP, f"{name}: {answer.error or 'temporary failure'}"
    if not answer.ok or not answer.records:
        return EXIT_NO_RECORD, f"{name}: {answer.error or answer.status.value}"
    k, public = public_key_bytes(key)
    errors: list[tuple[int, str]] = []
    for txt in answer.records:
        try:
            record = parse_key_record(txt)
        except TagListError as exc:
            errors.append((EXIT_SYNTAX, f"{name}: {exc}"))
            continue
        if record.revoked:
            errors.append((EXIT_REVOKED, f"{name}: p= is empty"))
        elif record.key_type != k or record.public != public:
            where = "the inline key" if inline else keyfile
            errors.append((EXIT_MISMATCH, f"{name}: k={record.key_type} key differs from {where}"))
        elif record.key_type == "rsa" and record.bits < MIN_RSA_BITS:
            errors.append((EXIT_WEAK, f"{name}: {record.bits}-bit RSA key (RFC 8301 requires {MIN_RSA_BITS})"))
        else:
            return EXIT_OK, f"{name}: key OK ({k}, {record.bits} bits{', testing' if record.testing else ''})"
    # Several TXT records: report the problem of the first one (one is usually all there is).
    return errors[0]


def _load_settings(path: str | None) -> object:
    from .config.schema import Settings, load_settings

    if path and os.path.exists(path):
        return load_settings(path)
    return Settings()


def cmd_testkey(args: argparse.Namespace) -> int:
    """``authmilter testkey -d DOMAIN -s SELECTOR -k KEYFILE [-c FILE] [-v]`` or ``--all``.

    Fetches SELECTOR._domainkey.DOMAIN TXT through the configured resolver ([dns] of -c
    FILE; the system resolver when FILE does not exist) and checks it publishes the
    public half of KEYFILE. ``--all`` checks every KeyTable entry of the config.

    Exit codes (--all: the highest over all keys):
      0 key OK                          5 key revoked (p= empty)
      2 usage or config error           6 weak key (RSA < 1024 bits)
      3 no record (NXDOMAIN / no TXT)   7 DNS temporary failure
      4 published key != private key    8 record syntax error
                                        9 private key unreadable or unsafe
    """
    from .runtime import resolver_for  # runtime -> signing -> keys: imported when the command runs

    try:
        if args.all and not os.path.exists(args.config or ""):
            raise ConfigError(args.config or "", "", "file not found (--all reads the KeyTable from it)")
        settings = _load_settings(args.config)
    except ConfigError as exc:
        print(f"authmilter testkey: {exc}", file=sys.stderr)
        return EXIT_USAGE
    resolver = resolver_for(settings.dns)  # type: ignore[attr-defined]

    jobs: list[tuple[str, str, str, bool]] = []
    if args.all:
        if args.domain or args.selector or args.keyfile:
            print("authmilter testkey: --all takes no -d/-s/-k", file=sys.stderr)
            return EXIT_USAGE
        try:
            jobs = _keytable_jobs(settings)
        except (AuthmilterError, OSError) as exc:
            print(f"authmilter testkey: {exc}", file=sys.stderr)
            return EXIT_USAGE
    else:
        if not (args.domain and args.selector and args.keyfile):
            print("authmilter testkey: -d DOMAIN -s SELECTOR -k KEYFILE are required (or --all)", file=sys.stderr)
            return EXIT_USAGE
        try:
            jobs = [(normalize_domain(args.domain), normalize_domain(args.selector, allow_underscore=True),
                     args.keyfile, False)]
        except DomainError as exc:
            print(f"authmilter testkey: {exc}", file=sys.stderr)
            return EXIT_USAGE
    worst = EXIT_OK
    for domain, selector, keyfile, inline in jobs:
        code, detail = check_published_key(resolver, domain, selector, keyfile, inline=inline)
        worst = max(worst, code)
        if code != EXIT_OK:
            print(f"authmilter testkey: {_MESSAGES[code]}: {detail}", file=sys.stderr)
        elif args.verbose:
            print(detail)
    return worst


def _keytable_jobs(settings: object) -> list[tuple[str, str, str, bool]]:
    # Imported here: the KeyTable parser belongs to the config package.
    from .config.opendkim import KeyTable, expand_keyname

    spec = settings.signing.key_table  # type: ignore[attr-defined]
    if not spec:
        raise ConfigError(getattr(settings, "source", ""), "signing.key_table", "not set; --all has nothing to test")
    table = KeyTable.load(spec, source=getattr(settings, "source", "<config>"))
    jobs = []
    for entry in table.entries.values():
        if entry.domain == "%":
            # d= is the From domain of each message: there is no one record to test.
            print(f"authmilter testkey: skipped {entry.name}: its domain is % (the From domain)", file=sys.stderr)
            continue
        domain, selector, keypath = expand_keyname(entry, entry.domain)
        jobs.append((domain, selector, keypath, entry.inline))
    return jobs
