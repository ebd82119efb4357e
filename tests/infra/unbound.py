"""A validating resolver on loopback for DNSSEC tests: Debian's unbound with its own
configuration in a temporary directory, in front of a knotd that signs some zones.

- `SigningKnot`: `infra.knot.Knot` whose zones named in *signed* are signed by knotd
  itself (``dnssec-signing: on``, one ECDSA P-256 CSK per zone, keys in its KASP db).
- `validating_resolver`: both together, for zones signed and anchored, signed with a
  broken anchor, signed without one, or unsigned.
- `lan_resolver`: `validating_resolver` for the DNSSEC suites' four zones under ``lan.``
  (SIGNED, PLAIN, BROKEN, ISLAND), each with SPF, a DKIM key and DMARC p=reject;
  `write_dkim_key` writes the Ed25519 key whose public half they publish.
- `Unbound`: unbound in the foreground (``-d``), listening on 127.0.0.1 at a free port,
  validating, with stub zones pointing at the knotd and the trust anchors it is given;
  no root hints are ever used (every test name is under a stub zone).

Neither touches the system services: both run from files under the test's directory
and are stopped by the test.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from support import require

from authmilter import keys

from .knot import Knot, Zone, knotd_path
from .procs import Process, free_port, wait_for

UNBOUND = "/usr/sbin/unbound"

# The DNSSEC suites' zones under ``lan.`` (itself unsigned), and their DKIM selector.
SIGNED, PLAIN, BROKEN, ISLAND = "signed.lan", "plain.lan", "broken.lan", "island.lan"
SELECTOR = "sel"


def unbound_path() -> str:
    return shutil.which("unbound") or UNBOUND


class SigningKnot(Knot):
    """knotd serving *zones*; those whose origin is in *signed* are DNSSEC-signed by knotd
    (automatic key management, policy ``authmilter-test``) when it loads them."""

    def __init__(self, base: Path, zones: Iterable[Zone], signed: Iterable[str], **kw: object) -> None:
        super().__init__(base, zones, **kw)  # type: ignore[arg-type]
        self.signed = {s.rstrip(".").lower() for s in signed}

    def _write(self) -> None:
        super()._write()
        (self.dir / "db").mkdir(exist_ok=True)   # knotd creates its KASP db (the keys) there
        conf = self.dir / "knot.conf"
        text = conf.read_text()
        policy = ("policy:\n  - id: authmilter-test\n    algorithm: ecdsap256sha256\n"
                  "    single-type-signing: on\n    nsec3: off\n")
        text = text.replace("template:\n", policy + "template:\n", 1)
        for zone in self.zones:
            if zone.origin in self.signed:
                entry = f"  - domain: {zone.fqdn}\n    file: {zone.file_name}\n"
                if entry not in text:
                    raise AssertionError(f"zone entry for {zone.fqdn} not found in knot.conf")
                text = text.replace(entry, entry + "    dnssec-signing: on\n    dnssec-policy: authmilter-test\n")
        conf.write_text(text)

    def start(self) -> None:
        super().start()
        for origin in self.signed:
            wait_for(lambda o=origin: self._signed(o), f"knot to sign {origin}")

    def _signed(self, origin: str) -> bool:
        try:
            resp = self._ask(origin, "DNSKEY")
        except (OSError, dns.exception.Timeout):
            return False
        return any(r.rdtype == dns.rdatatype.DNSKEY for r in resp.answer) and \
            any(r.rdtype == dns.rdatatype.RRSIG for r in resp.answer)

    def _ask(self, name: str, rdtype: str) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, want_dnssec=True)
        return dns.query.udp(q, self.host, port=self.port, timeout=1.0)

    def dnskeys(self, origin: str) -> dns.rrset.RRset:
        """The zone's DNSKEY RRset as knotd publishes it."""
        resp = self._ask(origin, "DNSKEY")
        for rrset in resp.answer:
            if rrset.rdtype == dns.rdatatype.DNSKEY:
                return rrset
        raise AssertionError(f"no DNSKEY at {origin}")

    def ds_lines(self, origin: str, *, owner: str | None = None) -> list[str]:
        """DS records (SHA-256) of the zone's key-signing keys, in zone-file syntax, with
        *owner* as their owner name: another zone's name gives a DS that matches no key
        of that zone (a broken chain of trust)."""
        name = dns.name.from_text(origin)
        lines = []
        for key in self.dnskeys(origin):
            if key.flags & 0x0001:   # SEP: a key-signing key (a CSK here)
                ds = dns.dnssec.make_ds(name, key, "SHA256")
                lines.append(f"{(owner or origin).rstrip('.')}. IN DS {ds.to_text()}")
        if not lines:
            raise AssertionError(f"no key-signing key at {origin}")
        return lines


class Unbound:
    """unbound -d on 127.0.0.1:PORT, validating; *stubs* maps a zone to (ip, port) of
    its authoritative server, *trust_anchors* are DS or DNSKEY lines in zone-file syntax
    (one ``trust-anchor:`` each). RFC 8914 extended errors are on (``ede: yes``)."""

    def __init__(self, base: Path, stubs: Mapping[str, tuple[str, int]], trust_anchors: Iterable[str],
                 port: int | None = None) -> None:
        self.dir = base / "unbound"
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.stubs = dict(stubs)
        self.trust_anchors = list(trust_anchors)
        self.log = self.dir / "unbound.log"
        self.conf = self.dir / "unbound.conf"
        self.process = Process("unbound", [unbound_path(), "-d", "-c", str(self.conf)], self.log)

    def _write(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        anchors = "".join(f'    trust-anchor: "{a}"\n' for a in self.trust_anchors)
        # Unbound answers some special-use names itself (RFC 6761 and others): ours are
        # stub zones, so their defaults are switched off.
        nodefault = "".join(f'    local-zone: "{z.rstrip(".")}." nodefault\n' for z in self.stubs)
        stubs = "".join(f'stub-zone:\n    name: "{z.rstrip(".")}."\n    stub-addr: {ip}@{port}\n'
                        for z, (ip, port) in self.stubs.items())
        self.conf.write_text(f"""\
server:
    interface: {self.host}
    port: {self.port}
    do-ip6: no
    do-tcp: yes
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    username: ""
    chroot: ""
    directory: "{self.dir}"
    pidfile: "{self.dir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    val-log-level: 2
    module-config: "validator iterator"
    ede: yes
    qname-minimisation: no
    harden-referral-path: no
    target-fetch-policy: "0 0 0 0 0"
{anchors}{nodefault}remote-control:
    control-enable: no
{stubs}""")

    def start(self) -> None:
        self._write()
        self.process.start()
        zone = next(iter(self.stubs))
        wait_for(lambda: self._answers(zone), "unbound to answer")

    def _answers(self, zone: str) -> bool:
        if not self.process.running:
            raise AssertionError(f"unbound exited: {self.process.log_tail(2000)}")
        q = dns.message.make_query(zone, "SOA")
        try:
            dns.query.udp(q, self.host, port=self.port, timeout=1.0)
        except (OSError, dns.exception.Timeout):
            return False
        return True

    def stop(self) -> None:
        self.process.stop()

    @property
    def server(self) -> str:
        """``[dns] servers`` entry for it."""
        return f"{self.host}:{self.port}"


@contextmanager
def validating_resolver(base: Path, zones: Iterable[Zone], *, anchored: Iterable[str], broken: Iterable[str] = (),
                        unanchored: Iterable[str] = ()) -> Iterator[Unbound]:
    """A knotd serving *zones* behind a validating unbound, both stopped on exit.

    Zones in *anchored* are signed with their key as unbound's trust anchor (answers
    validate: AD); *broken* ones are signed and anchored to a DS of the first anchored
    zone's key, which matches none of theirs (validation fails: SERVFAIL, RFC 8914 EDE);
    *unanchored* ones are signed with no anchor (RRSIGs, no AD). Every other zone is
    served unsigned. Each zone is a stub zone of unbound."""
    zones = list(zones)
    anchored, broken, unanchored = list(anchored), list(broken), list(unanchored)
    knot = SigningKnot(base, zones, signed=(*anchored, *broken, *unanchored))
    server = None
    try:
        knot.start()
        anchors = [line for z in anchored for line in knot.ds_lines(z)]
        anchors += [line for z in broken for line in knot.ds_lines(anchored[0], owner=z)]
        server = Unbound(base, {z.origin: (knot.host, knot.port) for z in zones}, anchors)
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
        knot.stop()


def write_dkim_key(directory: Path) -> str:
    """A new Ed25519 private key (PKCS#8 PEM, mode 0600) at *directory*/sel.private, the
    directory made 0700; returns its path."""
    directory.chmod(0o700)
    path = directory / f"{SELECTOR}.private"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.close(fd)
    return str(path)


@contextmanager
def lan_resolver(base: Path, keyfile: str, *, spf: str, a: str | None = None) -> Iterator[Unbound]:
    """`validating_resolver` for ``lan.`` (unsigned) and SIGNED (signed, anchored), PLAIN
    (unsigned), BROKEN (signed, wrong anchor) and ISLAND (signed, no anchor). Each of the
    four publishes the public half of *keyfile* at SELECTOR, the SPF record *spf*,
    DMARC p=reject and, if *a* is given, that A record. Skips (fails under CI) without
    knotd or unbound."""
    require(os.access(knotd_path(), os.X_OK), "knotd missing (make test-deps installs knot)")
    require(os.access(unbound_path(), os.X_OK), "unbound missing (make test-deps installs unbound)")
    record = keys.dns_record(keys.load_signing_key(keyfile, SIGNED, SELECTOR).private_key)
    zones = [Zone("lan")]
    for origin in (SIGNED, PLAIN, BROKEN, ISLAND):
        zone = Zone(origin).txt(f"{SELECTOR}._domainkey.{origin}", record)
        zone.txt(origin, spf).txt(f"_dmarc.{origin}", "v=DMARC1; p=reject")
        if a is not None:
            zone.add(origin, "A", a)
        zones.append(zone)
    with validating_resolver(base, zones, anchored=[SIGNED], broken=[BROKEN], unanchored=[ISLAND]) as server:
        yield server
