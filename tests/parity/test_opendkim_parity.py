"""Key choice parity with the real OpenDKIM 2.11 (Debian package ``opendkim``).

Each scenario starts ``opendkim -f -x CONF`` on a free loopback port with the fixture
tables (tests/data/opendkim/), sends one message per From address over the milter
protocol, reads d= and s= of the DKIM-Signature headers it inserts, and compares them
with what ``Signer.choose()`` picks from the same tables.

One OpenDKIM 2.11 defect is modelled rather than copied: with MultipleSignatures it
keeps only the first and the last signing request (dkimf_add_signrequest() never
advances ``mctx_srtail``, so every new request replaces the second one). authmilter
signs with every match, as opendkim.conf(5) documents; the tests assert OpenDKIM's
output is exactly [first, last] of our list whenever there are more than two.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Self

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from infra.milter import MilterClient, split_message
from infra.procs import Process, accepts, free_port
from support import require

from authmilter.config.opendkim import expand_keyname
from authmilter.config.schema import SigningSettings
from authmilter.signing import Signer

pytestmark = pytest.mark.opendkim

DATA = Path(__file__).resolve().parents[1] / "data" / "opendkim"
KEY_FILES = ["k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "example.net"]


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(shutil.which("opendkim") is not None, "the Debian opendkim package is not installed")
    d = tmp_path_factory.mktemp("keys")
    d.chmod(0o700)
    for name in KEY_FILES:
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(d / f"{name}.private", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, pem)
        os.close(fd)
    return d


def render(name: str, keydir: Path, out: Path) -> Path:
    path = out / name
    path.write_text((DATA / name).read_text().replace("@KEYDIR@", str(keydir)))
    return path


class OpenDKIM:
    """One opendkim process in the foreground on 127.0.0.1:PORT; stopped by close()."""

    def __init__(self, workdir: Path, **conf: str) -> None:
        # A free port can be taken by someone else before opendkim binds it: try another.
        for _attempt in range(5):
            if self._start(workdir, conf):
                return
        raise AssertionError(f"opendkim could not bind a port: {self.logfile.read_text()}")

    def _start(self, workdir: Path, conf: dict[str, str]) -> bool:
        self.port = free_port()
        settings = {"Syslog": "no", "Mode": "s", "Socket": f"inet:{self.port}@127.0.0.1",
                    "RequireSafeKeys": "false", "Canonicalization": "relaxed/relaxed",
                    "InternalHosts": "127.0.0.1", **conf}
        path = workdir / f"opendkim-{self.port}.conf"
        path.write_text("".join(f"{k} {v}\n" for k, v in settings.items()))
        self.logfile = workdir / f"opendkim-{self.port}.log"
        self.process = Process("opendkim", ["opendkim", "-f", "-x", str(path)], self.logfile).start()
        self.proc = self.process.popen
        assert self.proc is not None
        while True:   # ready when the socket accepts; a process that exits is a failure
            if self.proc.poll() is not None:
                text = self.logfile.read_text()
                if "in use" in text:
                    return False
                raise AssertionError("opendkim exited: " + text)
            if accepts(("127.0.0.1", self.port), timeout_s=5):
                return True
            try:
                self.proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass

    def close(self) -> None:
        # libmilter notices SIGTERM only after its 5 s accept timeout; this instance has
        # no state to flush (inet socket, no pid file), so it is killed outright.
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, from_address: str, ip: str = "127.0.0.1", hostname: str = "localhost"
             ) -> tuple[str, list[tuple[str, str]]]:
        """("signed", [(d, s)...]) / ("unsigned", []) / ("tempfail", []) for one message."""
        message = (f"From: <{from_address}>\r\nTo: <rcpt@example.invalid>\r\nSubject: parity\r\n"
                   f"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\n").encode()
        with MilterClient(("127.0.0.1", self.port)) as c:
            c.negotiate()
            c.connect(hostname=hostname, ip=ip, macros={"j": "mx.parity.test"})
            c.helo("client.parity.test")
            c.mail("sender@example.invalid", macros={"i": "PARITY1"})
            c.rcpt("rcpt@example.invalid")
            headers, body = split_message(message)
            for name, value in headers:
                c.header(name, value)
            r = c.eoh()
            if r is not None and r[0] == "t":
                return "tempfail", []
            if r is not None and r[0] == "a":     # Mode s and nothing to sign: accepted at EOH
                return "unsigned", []
            assert r is None or r[0] == "c", r
            c.body(body)
            result = c.eom()
        sigs = []
        self.identities = []
        for value in result.headers_named("DKIM-Signature"):
            d = re.search(r"(?:^|;)\s*d=([^;\s]+)", value)
            s = re.search(r"(?:^|;)\s*s=([^;\s]+)", value)
            i = re.search(r"(?:^|;)\s*i=([^;\s]+)", value)
            assert d and s, value
            sigs.append((d[1].lower(), s[1]))
            self.identities.append(i[1] if i else "@" + d[1].lower())   # no i= means i=@d
        if result.action == "tempfail":
            return "tempfail", []
        return ("signed" if sigs else "unsigned"), sigs


def ours(signer: Signer, address: str) -> tuple[str, list[tuple[str, str]]]:
    choice = signer.choose(address)
    if choice.missing:
        return "tempfail", []
    return ("signed" if choice.keys else "unsigned"), [(k.domain, k.selector) for k in choice.keys]


def opendkim_model(signer: Signer, address: str, multiple: bool) -> list[tuple[str, str]]:
    """OpenDKIM 2.11's signatures: every raw match (repeats included), but first + last only."""
    domain = address.rpartition("@")[2].lower()
    raw = []
    for m in signer.signing_table.matches(address, multiple=multiple):
        entry = signer.key_table.get(m.keyname)
        assert entry is not None
        d, s, _ = expand_keyname(entry, domain)
        raw.append((d, s))
    return raw if len(raw) <= 2 else [raw[0], raw[-1]]


def signer_for(kt: Path, st: str, multiple: bool) -> Signer:
    return Signer.from_settings(SigningSettings(key_table=f"file:{kt}", signing_table=st,
                                                multiple_signatures=multiple))


# Every file: lookup step is the first hit of at least one address below.
FILE_ADDRESSES = [
    "alice@sub.example.com",        # user@host (and every later step)
    "bob@sub.example.com",          # host, .parent, user@.parent (bob@.com), *
    "carol@sub.example.com",        # host, .parent, *
    "alice@deep.sub.example.com",   # user@.parent first
    "carol@deep.sub.example.com",   # .parent first
    "bob@other.com",                # user@.com
    "alice@other.org",              # user@*
    "carol@other.org",              # * only
    "ALICE@Sub.Example.COM",        # keys compare without case
    "alice@example.com",            # host "example.com" is not listed; parents only
]

REFILE_ADDRESSES = [
    "alice@sub.example.com", "bob@sub.example.com", "bob@a.example.com", "alice@a.b.example.com",
    "alice+tag@example.org", "aliceXtag@example.org", "bob@example.org", "bob@examplezorg",
    "alice@other.test", "carol@other.test", "Carol@SUB.EXAMPLE.COM",
]


@pytest.mark.parametrize("multiple", [False, True], ids=["single", "multiple"])
def test_file_signing_table_lookup_order_matches_opendkim(keydir: Path, tmp_path: Path, multiple: bool) -> None:
    kt = render("KeyTable", keydir, tmp_path)
    st = render("SigningTable.file", keydir, tmp_path)
    signer = signer_for(kt, f"file:{st}", multiple)
    with OpenDKIM(tmp_path, KeyTable=f"file:{kt}", SigningTable=f"file:{st}",
                  MultipleSignatures="yes" if multiple else "no") as od:
        for address in FILE_ADDRESSES:
            got = od.send(address)
            mine = ours(signer, address)
            assert got == (mine[0], opendkim_model(signer, address, multiple)), address
            if multiple:
                assert mine[1] == list(dict.fromkeys(opendkim_model_all(signer, address))), address
            else:
                assert mine == got, address


def opendkim_model_all(signer: Signer, address: str) -> list[tuple[str, str]]:
    domain = address.rpartition("@")[2].lower()
    out = []
    for m in signer.signing_table.matches(address, multiple=True):
        entry = signer.key_table.get(m.keyname)
        assert entry is not None
        out.append(expand_keyname(entry, domain)[:2])
    return out


def test_file_table_with_every_step_yields_all_six_matches_for_user_at_host(keydir: Path, tmp_path: Path) -> None:
    kt = render("KeyTable", keydir, tmp_path)
    st = render("SigningTable.file", keydir, tmp_path)
    signer = signer_for(kt, f"file:{st}", True)
    assert [s for _, s in ours(signer, "alice@sub.example.com")[1]] == [
        "k-full", "k-host", "k-uparent", "k-parent", "k-ustar", "k-star"]


@pytest.mark.parametrize("multiple", [False, True], ids=["single", "multiple"])
def test_refile_signing_table_order_matches_opendkim(keydir: Path, tmp_path: Path, multiple: bool) -> None:
    kt = render("KeyTable", keydir, tmp_path)
    st = render("SigningTable.refile", keydir, tmp_path)
    signer = signer_for(kt, f"refile:{st}", multiple)
    with OpenDKIM(tmp_path, KeyTable=f"file:{kt}", SigningTable=f"refile:{st}",
                  MultipleSignatures="yes" if multiple else "no") as od:
        for address in REFILE_ADDRESSES:
            got = od.send(address)
            assert got == (ours(signer, address)[0], opendkim_model(signer, address, multiple)), address
            if not multiple:
                assert got == ours(signer, address), address


def test_percent_substitution_matches_opendkim(keydir: Path, tmp_path: Path) -> None:
    kt = render("KeyTable.percent", keydir, tmp_path)
    st = render("SigningTable.percent", keydir, tmp_path)
    signer = signer_for(kt, f"refile:{st}", True)
    cases = {
        "a@example.org": ("signed", [("example.org", "org")]),            # key name % -> "example.org"
        "a@example.net": ("signed", [("example.net", "net")]),            # d=% and %.private
        "a@x.example.com": ("signed", [("x.example.com", "shared")]),     # d=% with one key file
        "a@nokey.test": ("tempfail", []),                                 # % names a key that does not exist
        "a@unlisted.invalid": ("unsigned", []),
    }
    with OpenDKIM(tmp_path, KeyTable=f"file:{kt}", SigningTable=f"refile:{st}", MultipleSignatures="yes") as od:
        for address, expected in cases.items():
            assert od.send(address) == expected, address
            assert ours(signer, address) == expected, address


def test_csl_signing_table_matches_opendkim(keydir: Path, tmp_path: Path) -> None:
    kt = render("KeyTable", keydir, tmp_path)
    spec = "csl:example.org=k-org,alice@*=k-ustar,*=k-star"
    for multiple in (False, True):
        signer = signer_for(kt, spec, multiple)
        with OpenDKIM(tmp_path, KeyTable=f"file:{kt}", SigningTable=spec,
                      MultipleSignatures="yes" if multiple else "no") as od:
            for address in ("alice@example.org", "bob@example.org", "alice@x.test", "bob@x.test"):
                assert od.send(address) == (ours(signer, address)[0], opendkim_model(signer, address, multiple))


HOST_CASES = [
    ("127.0.0.1", "localhost"),
    ("10.9.8.7", "unknown"),            # 10.0.0.0/8
    ("10.1.9.9", "unknown"),            # !10.1.0.0/16 is more specific
    ("10.1.2.3", "unknown"),            # the exact address beats the negated /16
    ("192.0.2.7", "unknown"),           # listed in [brackets]
    ("192.0.2.8", "unknown"),
    ("2001:db8::25", "unknown"),        # 2001:db8::/32
    ("2001:db8:1::25", "unknown"),      # !2001:db8:1::/48
    ("198.51.100.1", "relay.example.com"),
    ("198.51.100.2", "mx.trusted.example.net"),
    ("198.51.100.3", "bad.trusted.example.net"),
    ("10.9.8.7", "bad.trusted.example.net"),   # a negated name does not stop the address check
    ("198.51.100.4", "mx.example.com"),
]


def test_internal_hosts_match_opendkim(keydir: Path, tmp_path: Path) -> None:
    kt = render("KeyTable", keydir, tmp_path)
    hosts = render("InternalHosts", keydir, tmp_path)
    st = "csl:*=k-star"
    signer = Signer.from_settings(SigningSettings(key_table=f"file:{kt}", signing_table=st,
                                                  internal_hosts=(f"file:{hosts}",)))
    with OpenDKIM(tmp_path, KeyTable=f"file:{kt}", SigningTable=st, InternalHosts=f"file:{hosts}") as od:
        verdicts = {}
        for ip, name in HOST_CASES:
            status, _ = od.send("someone@example.net", ip=ip, hostname=name)
            verdicts[(ip, name)] = status == "signed"
            assert verdicts[(ip, name)] == signer.internal_hosts.contains(ip, name), (ip, name)
    assert verdicts[("10.1.2.3", "unknown")] and not verdicts[("10.1.9.9", "unknown")]


def test_refile_internal_hosts_match_opendkim(keydir: Path, tmp_path: Path) -> None:
    """A refile: host list is asked the same strings, including "ADDR/BITS" networks."""
    kt = render("KeyTable", keydir, tmp_path)
    hosts = tmp_path / "InternalHosts.re"
    hosts.write_text("198.51.100.*\n*.example.com\n")
    st = "csl:*=k-star"
    signer = Signer.from_settings(SigningSettings(key_table=f"file:{kt}", signing_table=st,
                                                  internal_hosts=(f"refile:{hosts}",)))
    cases = [("198.51.100.9", "unknown"), ("198.51.101.1", "unknown"), ("198.51.99.1", "unknown"),
             ("203.0.113.1", "mx.example.com"), ("203.0.113.1", "example.com")]
    with OpenDKIM(tmp_path, KeyTable=f"file:{kt}", SigningTable=st, InternalHosts=f"refile:{hosts}") as od:
        got = {(ip, name): od.send("someone@example.net", ip=ip, hostname=name)[0] == "signed" for ip, name in cases}
    assert got == {(ip, name): signer.internal_hosts.contains(ip, name) for ip, name in cases}
    assert got[("198.51.101.1", "unknown")] and not got[("198.51.99.1", "unknown")]


def test_signer_field_becomes_i_like_opendkim(keydir: Path, tmp_path: Path) -> None:
    """"keyname:signer" sets i= ("%" is the From domain); a signer outside d= is dropped."""
    from authmilter import model

    kt = render("KeyTable", keydir, tmp_path)
    st = tmp_path / "SigningTable.signer"
    st.write_text("*@sub.example.com k-full:@%\n*@example.org k-org:postmaster@%\n"
                  "*@example.net k-star:alice@example.net\n* k-host:someone@elsewhere.test\n")
    signer = signer_for(kt, f"refile:{st}", False)
    message = model.Message.from_bytes(b"From: <x@example.org>\r\nSubject: i\r\n\r\nbody\r\n")
    with OpenDKIM(tmp_path, KeyTable=f"file:{kt}", SigningTable=f"refile:{st}") as od:
        for address in ("a@sub.example.com", "a@example.org", "a@example.net", "a@other.test"):
            assert od.send(address)[0] == "signed"
            edits = signer.sign(message, signer.choose(address), timestamp=0)
            ours_i = [re.search(r"(?:^|;)\s*i=([^;\s]+)", e.value)[1] for e in edits]  # type: ignore[index]
            assert ours_i == od.identities, address
