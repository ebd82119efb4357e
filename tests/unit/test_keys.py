"""Key loading (formats, permission checks), genkey, and testkey end to end.

testkey runs as a subprocess (the installed `authmilter` script) against the loopback
DNS server, configured through a config file whose [dns] servers points at it.
"""
from __future__ import annotations

import argparse
import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from support import require

from authmilter import keys, model
from authmilter.dkim.sign import public_key_bytes, sign
from authmilter.dkim.tags import parse_key_record
from authmilter.errors import KeyError_
from authmilter.resolver import dkim_dnsfunc

AUTHMILTER = Path(sys.executable).with_name("authmilter")
NOCRYPT = serialization.NoEncryption()


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed_key():
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def keydir(tmp_path):
    d = tmp_path / "keys"
    d.mkdir(mode=0o700)
    return d


def write_key(directory: Path, name: str, data: bytes, mode: int = 0o600) -> Path:
    path = directory / name
    path.write_bytes(data)
    path.chmod(mode)
    return path


def pem(key, fmt=serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, NOCRYPT)


def seed(key) -> bytes:
    return base64.b64encode(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, NOCRYPT))


def genkey_args(directory, **kw) -> argparse.Namespace:
    base = {"domain": "example.com", "selector": "sel", "bits": 2048, "type": "rsa", "directory": str(directory),
            "testmode": False, "restrict": False}
    base.update(kw)
    return argparse.Namespace(**base)


def zone_strings(text: str) -> list[str]:
    return re.findall(r'"([^"]*)"', text)


# -- load_signing_key -------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["pkcs1", "pkcs8", "der-base64"])
def test_rsa_formats_load(keydir, rsa_key, fmt):
    data = {
        "pkcs1": pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL),
        "pkcs8": pem(rsa_key),
        "der-base64": base64.b64encode(rsa_key.private_bytes(serialization.Encoding.DER,
                                                             serialization.PrivateFormat.PKCS8, NOCRYPT)),
    }[fmt]
    path = write_key(keydir, "test-rsa.private", data)
    sk = keys.load_signing_key(str(path), "Example.COM", "Sel")
    assert (sk.domain, sk.selector, sk.algorithm, sk.bits, sk.path) == (
        "example.com", "sel", "rsa-sha256", 2048, str(path))
    assert sk.private_key.private_numbers() == rsa_key.private_numbers()


@pytest.mark.parametrize("fmt", ["seed", "pkcs8"])
def test_ed25519_formats_load(keydir, ed_key, fmt):
    path = write_key(keydir, "test-ed.private", seed(ed_key) + b"\n" if fmt == "seed" else pem(ed_key))
    sk = keys.load_signing_key(str(path), "example.com", "ed")
    assert (sk.algorithm, sk.bits) == ("ed25519-sha256", 256)
    assert public_key_bytes(sk.private_key) == public_key_bytes(ed_key)


def test_inline_key_data_loads(rsa_key):
    sk = keys.signing_key_from_data(pem(rsa_key), "example.com", "sel")
    assert sk.algorithm == "rsa-sha256" and sk.path == "<inline key>"


@pytest.mark.parametrize("file_mode,dir_mode,why", [
    (0o620, 0o700, "group- or world-writable"),
    (0o602, 0o700, "group- or world-writable"),
    (0o604, 0o700, "world-readable"),
    (0o600, 0o755, "world-readable"),
    (0o600, 0o703, "world-writable"),
])
def test_unsafe_permissions_are_refused(keydir, rsa_key, file_mode, dir_mode, why):
    path = write_key(keydir, "test-rsa.private", pem(rsa_key), file_mode)
    keydir.chmod(dir_mode)
    try:
        with pytest.raises(KeyError_) as info:
            keys.load_signing_key(str(path), "example.com", "sel")
    finally:
        keydir.chmod(0o700)
    assert str(path) in str(info.value) and why in str(info.value) and "chmod" in str(info.value)


def test_group_readable_key_is_accepted(keydir, ed_key):
    path = write_key(keydir, "test-ed.private", seed(ed_key), 0o640)
    keydir.chmod(0o750)
    assert keys.load_signing_key(str(path), "example.com", "sel").algorithm == "ed25519-sha256"


def test_unusable_keys_are_refused_with_path_and_reason(keydir, rsa_key):
    cases = {
        "test-missing.private": None,
        "test-garbage.private": b"not a key at all\n",
        "test-encrypted.private": rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.BestAvailableEncryption(b"pw")),
        "test-ec.private": pem(ec.generate_private_key(ec.SECP256R1())),
    }
    for name, data in cases.items():
        path = keydir / name
        if data is not None:
            write_key(keydir, name, data)
        with pytest.raises(KeyError_) as info:
            keys.load_signing_key(str(path), "example.com", "sel")
        assert str(path) in str(info.value)
    with pytest.raises(KeyError_, match="invalid"):
        keys.load_signing_key(str(keydir / "test-garbage.private"), "bad..domain", "sel")


def test_opendkim_genkey_key_loads(keydir):
    require(shutil.which("opendkim-genkey") is not None, "opendkim-genkey (Debian opendkim-tools) not installed")
    subprocess.run(["opendkim-genkey", "-D", str(keydir), "-d", "example.com", "-s", "test-odk"], check=True)
    sk = keys.load_signing_key(str(keydir / "test-odk.private"), "example.com", "test-odk")
    assert sk.algorithm == "rsa-sha256"
    text = (keydir / "test-odk.txt").read_text()
    published = parse_key_record("".join(zone_strings(text)).encode())
    assert published.public == public_key_bytes(sk.private_key)[1]


# -- genkey -----------------------------------------------------------------------

def test_genkey_rsa_writes_0600_key_and_zone_stub(keydir, dns_server, resolver):
    assert keys.cmd_genkey(genkey_args(keydir, testmode=True, restrict=True)) == 0
    private, txt = keydir / "sel.private", keydir / "sel.txt"
    assert private.stat().st_mode & 0o777 == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    text = txt.read_text()
    assert text.startswith("sel._domainkey\tIN\tTXT\t( \"v=DKIM1; k=rsa; t=y; s=email; \"")
    assert text.rstrip().endswith(")  ; ----- DKIM key sel for example.com")
    strings = zone_strings(text)
    assert len(strings) >= 3 and all(len(s.encode()) <= 255 for s in strings)
    record = "".join(strings)
    sk = keys.load_signing_key(str(private), "example.com", "sel")
    assert sk.bits == 2048
    parsed = parse_key_record(record.encode())
    assert parsed.public == public_key_bytes(sk.private_key)[1] and parsed.testing
    # what genkey prints is what a verifier needs: publish it and let dkimpy check a signature
    dns_server.add_txt("sel._domainkey.example.com", record)
    msg = b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n"
    value = sign(model.Message.from_bytes(msg), sk, sign_headers=("From", "Subject"))
    assert dkim.verify(b"DKIM-Signature:" + value.encode() + b"\r\n" + msg, dnsfunc=dkim_dnsfunc(resolver))


def test_genkey_ed25519_writes_dkimpy_seed(keydir):
    assert keys.cmd_genkey(genkey_args(keydir, type="ed25519", selector="ed")) == 0
    data = (keydir / "ed.private").read_bytes()
    assert len(base64.b64decode(data.strip(), validate=True)) == 32
    sk = keys.load_signing_key(str(keydir / "ed.private"), "example.com", "ed")
    record = "".join(zone_strings((keydir / "ed.txt").read_text()))
    assert record.startswith("v=DKIM1; k=ed25519; p=")
    assert parse_key_record(record.encode()).public == public_key_bytes(sk.private_key)[1]


def test_genkey_refuses_short_keys_and_overwriting(keydir, capsys):
    assert keys.cmd_genkey(genkey_args(keydir, bits=768)) == 2
    assert not (keydir / "sel.private").exists()
    assert keys.cmd_genkey(genkey_args(keydir, bits=1024)) == 0
    before = (keydir / "sel.private").read_bytes()
    assert keys.cmd_genkey(genkey_args(keydir, bits=1024)) == 2
    assert (keydir / "sel.private").read_bytes() == before
    assert "exists" in capsys.readouterr().err


def test_genkey_via_cli_with_short_flags(tmp_path):
    out = tmp_path / "new"
    proc = subprocess.run([str(AUTHMILTER), "genkey", "-d", "example.org", "-s", "s2026", "-b", "1024", "-D", str(out)],
                          check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (out / "s2026.private").stat().st_mode & 0o777 == 0o600
    assert out.stat().st_mode & 0o777 == 0o700
    assert "DKIM key s2026 for example.org" in (out / "s2026.txt").read_text()


# -- testkey (subprocess, loopback DNS) ---------------------------------------------

@pytest.fixture
def config(tmp_path, dns_server):
    path = tmp_path / "authmilter.toml"
    path.write_text(f'[dns]\nservers = ["{dns_server.address}"]\ntimeout_s = 1.0\ncache_entries = 0\n')
    return path


def run_testkey(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(AUTHMILTER), "testkey", "-c", str(config), *args], check=False, capture_output=True,
                          text=True, timeout=60)


def publish(dns_server, key, name="sel._domainkey.example.com", extra=""):
    k, public = public_key_bytes(key)
    dns_server.add_txt(name, f"v=DKIM1; k={k};{extra} p={base64.b64encode(public).decode()}")


def test_testkey_exit_codes(keydir, config, dns_server, rsa_key, ed_key):
    rsa_path = write_key(keydir, "test-rsa.private", pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL))
    ed_path = write_key(keydir, "test-ed.private", seed(ed_key))
    args = ["-d", "example.com", "-s", "sel", "-k"]

    proc = run_testkey(config, *args, str(rsa_path))
    assert proc.returncode == 3 and "no key record" in proc.stderr        # NXDOMAIN
    publish(dns_server, rsa_key)
    proc = run_testkey(config, "-v", *args, str(rsa_path))
    assert proc.returncode == 0 and "key OK" in proc.stdout, proc.stderr
    assert run_testkey(config, *args, str(ed_path)).returncode == 4           # another key is published
    dns_server.remove("sel._domainkey.example.com")
    publish(dns_server, ed_key)
    assert run_testkey(config, "-v", *args, str(ed_path)).returncode == 0      # Ed25519 too
    dns_server.remove("sel._domainkey.example.com")
    dns_server.add_txt("sel._domainkey.example.com", "v=DKIM1; k=rsa; p=")
    assert run_testkey(config, *args, str(rsa_path)).returncode == 5           # revoked
    dns_server.remove("sel._domainkey.example.com")
    dns_server.add_txt("sel._domainkey.example.com", "v=DKIM1; k=rsa; p=#!")
    assert run_testkey(config, *args, str(rsa_path)).returncode == 8           # syntax
    dns_server.set_fault("sel._domainkey.example.com", "servfail")
    proc = run_testkey(config, *args, str(rsa_path))
    assert proc.returncode == 7 and "temporary" in proc.stderr             # DNS temporary failure
    dns_server.set_fault("sel._domainkey.example.com", None)
    rsa_path.chmod(0o644)
    assert run_testkey(config, *args, str(rsa_path)).returncode == 9           # unsafe key
    assert run_testkey(config, "-d", "example.com", "-s", "sel").returncode == 2   # no -k
    assert run_testkey(config, "-d", "bad..domain", "-s", "sel", "-k", str(ed_path)).returncode == 2


def test_testkey_weak_rsa_key(keydir, config, dns_server):
    require(shutil.which("openssl") is not None, "openssl command not installed")
    path = keydir / "test-weak.private"
    subprocess.run(["openssl", "genrsa", "-out", str(path), "512"], check=True, capture_output=True)
    path.chmod(0o600)
    weak = keys.parse_private_key(path.read_bytes())
    publish(dns_server, weak)
    assert run_testkey(config, "-d", "example.com", "-s", "sel", "-k", str(path)).returncode == 6
    with pytest.raises(KeyError_, match="too short"):
        keys.load_signing_key(str(path), "example.com", "sel")


def test_testkey_bad_config_is_usage_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[dns]\nservers = 5\n")
    assert run_testkey(bad, "-d", "example.com", "-s", "sel", "-k", "/nonexistent").returncode == 2


def test_testkey_all_reports_the_worst(keydir, tmp_path, dns_server, rsa_key, ed_key):
    rsa_path = write_key(keydir, "test-rsa.private", pem(rsa_key))
    ed_path = write_key(keydir, "test-ed.private", seed(ed_key))
    table = tmp_path / "KeyTable"
    table.write_text(f"rsa._domainkey.example.com example.com:rsa:{rsa_path}\n"
                     f"ed._domainkey.example.net example.net:ed:{ed_path}\n")
    signing_table = tmp_path / "SigningTable"
    signing_table.write_text("*@example.com rsa._domainkey.example.com\n")
    config = tmp_path / "all.toml"
    config.write_text(f'[dns]\nservers = ["{dns_server.address}"]\ntimeout_s = 1.0\n\n'
                      f'[signing]\nkey_table = "file:{table}"\nsigning_table = "refile:{signing_table}"\n')
    publish(dns_server, rsa_key, "rsa._domainkey.example.com")
    proc = run_testkey(config, "--all")
    assert proc.returncode == 3 and "ed._domainkey.example.net" in proc.stderr
    publish(dns_server, ed_key, "ed._domainkey.example.net")
    proc = run_testkey(config, "--all", "-v")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("key OK") == 2
    assert run_testkey(tmp_path / "missing.toml", "--all").returncode == 2
    assert run_testkey(config, "--all", "-d", "example.com").returncode == 2
