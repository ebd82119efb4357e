"""Which keys sign (Signer.choose), the authenticated-user restriction, and the header edits.

Signatures are verified by dkimpy against public keys served by the loopback DNS server.
"""
from __future__ import annotations

import base64
import os
from pathlib import Path

import dkim
import dkim.util
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from authmilter import model
from authmilter.config.schema import SigningSettings
from authmilter.dkim.sign import SigningKey, public_key_bytes
from authmilter.errors import ConfigError, KeyError_
from authmilter.resolver import dkim_dnsfunc
from authmilter.signing import Choice, Signer

MESSAGE = (b"From: Bob <bob@example.com>\r\nTo: carol@example.org\r\nSubject: plan\r\n"
           b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello.\r\n")


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("signing-keys")
    d.chmod(0o700)
    for name in ("rsa-a", "rsa-b", "rsa-c", "example.net"):
        write_key(d / f"{name}.private", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    write_key(d / "ed.private", ed25519.Ed25519PrivateKey.generate())
    return d


def write_key(path: Path, key: object) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, pem)
    os.close(fd)


def make(tmp_path: Path, keydir: Path, keytable: str, signingtable: str, kind: str = "refile",
         **settings: object) -> Signer:
    kt = tmp_path / "KeyTable"
    kt.write_text(keytable.replace("@K@", str(keydir)))
    st = tmp_path / "SigningTable"
    st.write_text(signingtable)
    return Signer.from_settings(SigningSettings(key_table=f"file:{kt}", signing_table=f"{kind}:{st}", **settings))


KEYS = """\
ex      example.com:a:@K@/rsa-a.private
ex-ed   example.com:ed:@K@/ed.private
org     example.org:b:@K@/rsa-b.private
plat    platform.example:p:@K@/rsa-c.private
shared  %:shared:@K@/rsa-c.private
"""


def picked(choice: Choice) -> list[tuple[str, str]]:
    return [(k.domain, k.selector) for k in choice.keys]


# -- choosing ---------------------------------------------------------------------------------

def test_first_match_or_every_match(tmp_path, keydir):
    table = "*@example.com ex\n*@example.com ex-ed\n* plat\n"
    one = make(tmp_path, keydir, KEYS, table)
    assert picked(one.choose("bob@example.com")) == [("example.com", "a")]
    assert one.choose("bob@example.com").why[0].endswith('"*@example.com" matched')
    every = make(tmp_path, keydir, KEYS, table, multiple_signatures=True)
    assert picked(every.choose("bob@example.com")) == [("example.com", "a"), ("example.com", "ed"),
                                                       ("platform.example", "p")]
    assert [k.algorithm for k in every.choose("bob@example.com").keys] == ["rsa-sha256", "ed25519-sha256",
                                                                            "rsa-sha256"]
    assert picked(every.choose("nobody@elsewhere.test")) == [("platform.example", "p")]


def test_no_match_is_an_empty_choice(tmp_path, keydir):
    s = make(tmp_path, keydir, KEYS, "*@example.com ex\n")
    assert s.choose("x@example.org") == Choice((), ())
    assert s.choose("not an address") == Choice((), ())


def test_the_same_key_is_used_once(tmp_path, keydir):
    """OpenDKIM would add two identical signatures; one is enough."""
    s = make(tmp_path, keydir, KEYS, "bob@example.com ex\nexample.com ex\n* plat\n", kind="file",
             multiple_signatures=True)
    choice = s.choose("bob@example.com")
    assert picked(choice) == [("example.com", "a"), ("platform.example", "p")]
    assert "full address" in choice.why[0]


def test_percent_domain_key_is_parsed_once_and_takes_the_from_domain(tmp_path, keydir):
    s = make(tmp_path, keydir, KEYS, "* shared\n")
    a, b = s.choose("x@one.example").keys[0], s.choose("y@two.example").keys[0]
    assert (a.domain, b.domain) == ("one.example", "two.example")
    assert a.private_key is b.private_key          # one parse, two domains


def test_percent_key_path_loads_per_domain_and_missing_files_are_reported(tmp_path, keydir):
    s = make(tmp_path, keydir, "perdom %:sel:@K@/%.private\n", "* perdom\n")
    ok = s.choose("a@example.net")
    assert picked(ok) == [("example.net", "sel")] and ok.keys[0].path == f"{keydir}/example.net.private"
    assert s.choose("b@example.net").keys[0] is ok.keys[0]      # cached, not parsed again
    missing = s.choose("a@example.org")
    assert missing.keys == () and "example.org.private" in missing.missing[0]


def test_percent_key_name_without_keytable_entry_is_missing(tmp_path, keydir):
    s = make(tmp_path, keydir, KEYS + "example.org example.org:pct:@K@/rsa-b.private\n", "* %\n")
    assert picked(s.choose("a@example.org")) == [("example.org", "pct")]
    choice = s.choose("a@unknown.test")
    assert choice.keys == () and choice.missing[0].startswith("unknown.test (not in the KeyTable")


def test_signing_table_naming_an_unknown_key_stops_loading(tmp_path, keydir):
    with pytest.raises(ConfigError) as exc:
        make(tmp_path, keydir, KEYS, "*@example.com ex\n*@example.org nosuchkey\n")
    assert exc.value.line == 2 and exc.value.file == str(tmp_path / "SigningTable")
    with pytest.raises(ConfigError, match="separates an i= signer with ':'"):
        make(tmp_path, keydir, KEYS, "*@example.com ex alice@example.com\n")


def test_unsafe_key_file_is_refused_naming_the_keytable_line(tmp_path, keydir):
    bad = tmp_path / "keys"
    bad.mkdir(mode=0o700)
    write_key(bad / "k.private", ed25519.Ed25519PrivateKey.generate())
    (bad / "k.private").chmod(0o666)
    with pytest.raises(KeyError_) as exc:
        make(tmp_path, keydir, f"k example.com:k:{bad}/k.private\n", "* k\n")
    assert f"KeyTable file:{tmp_path / 'KeyTable'}:1" in str(exc.value) and "chmod 600" in str(exc.value)


def test_inline_keys_in_the_keytable(tmp_path, keydir):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    der = base64.b64encode(rsa_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption())).decode()
    # As in OpenDKIM, a value starting with "/" is a path: one random seed in 64 encodes
    # to such a string, so draw until the inline form is unambiguous.
    seed = "/"
    while seed.startswith("/"):
        seed = base64.b64encode(ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())).decode()
    s = make(tmp_path, keydir, f"r example.com:r:{der}\ne example.com:e:{seed}\n", "* r\n* e\n",
             multiple_signatures=True)
    assert [(k.selector, k.algorithm) for k in s.choose("a@example.com").keys] == [
        ("r", "rsa-sha256"), ("e", "ed25519-sha256")]


def test_domains_and_internal_hosts(tmp_path, keydir):
    s = make(tmp_path, keydir, KEYS, "alice@sub.example.com ex\n.example.org org\n* shared\n", kind="file",
             internal_hosts=("127.0.0.1", "10.0.0.0/8"))
    assert s.domains == frozenset({"example.com", "example.org", "platform.example", "sub.example.com"})
    assert s.internal_hosts.contains("10.2.3.4") and not s.internal_hosts.contains("192.0.2.1")


# -- authenticated is not authorised -------------------------------------------------------------

AUTH_TABLE = "*@example.com ex\n*@example.org org\n*@*.test shared\n"


@pytest.mark.parametrize("login,sender,signed", [
    ("alice@example.com", "bob@example.com", [("example.com", "a")]),   # same key as the login's own
    ("Alice@EXAMPLE.com", "bob@example.com", [("example.com", "a")]),
    ("alice@example.com", "ceo@example.org", []),                       # another domain's key
    ("alice@one.test", "x@one.test", [("one.test", "shared")]),         # % d= follows the login's domain
    ("alice@one.test", "x@two.test", []),                               # same key entry, other d=
    ("alice", "bob@example.com", []),                                   # a bare login names no domain
    ("mallory@nowhere.invalid", "bob@example.com", []),                 # no entry of its own
])
def test_sasl_user_signs_only_with_its_own_keys(tmp_path, keydir, login, sender, signed):
    s = make(tmp_path, keydir, KEYS, AUTH_TABLE)
    choice = s.choose(sender, sasl_user=login)
    assert picked(choice) == signed
    assert bool(choice.refused) is (not signed)


def test_refusal_reasons_say_why(tmp_path, keydir):
    s = make(tmp_path, keydir, KEYS, AUTH_TABLE)
    assert "not authorised for d=example.org" in s.choose("ceo@example.org", "alice@example.com").refused
    assert "is not an address" in s.choose("bob@example.com", "alice").refused


def test_restriction_keeps_the_keys_the_login_shares(tmp_path, keydir):
    s = make(tmp_path, keydir, KEYS, "*@example.com ex\n* plat\n", multiple_signatures=True)
    assert picked(s.choose("x@other.org", "alice@example.com")) == [("platform.example", "p")]
    assert picked(s.choose("x@example.com", "alice@example.com")) == [("example.com", "a"),
                                                                      ("platform.example", "p")]


def test_restriction_can_be_switched_off_and_needs_a_login(tmp_path, keydir):
    off = make(tmp_path, keydir, KEYS, AUTH_TABLE, authenticated_must_match=False)
    assert picked(off.choose("ceo@example.org", "alice@example.com")) == [("example.org", "b")]
    on = make(tmp_path, keydir, KEYS, AUTH_TABLE)
    assert picked(on.choose("ceo@example.org", "")) == [("example.org", "b")]   # internal host, no SASL


# -- signing ------------------------------------------------------------------------------------

def publish(dns_server, key: SigningKey) -> None:
    k, public = public_key_bytes(key.private_key)
    dns_server.add_txt(f"{key.selector}._domainkey.{key.domain}",
                       f"v=DKIM1; k={k}; p={base64.b64encode(public).decode()}")


def tags(value: str) -> dict[bytes, bytes]:
    return dkim.util.parse_tag_value(value.encode().replace(b"\r\n", b""))


def apply(message: bytes, edits) -> bytes:
    top = b"".join(f"{e.name}:{e.value}\r\n".encode() for e in reversed(edits))
    return top + message


def test_dual_rsa_and_ed25519_signatures_verify_with_dkimpy(tmp_path, keydir, dns_server, resolver):
    s = make(tmp_path, keydir, KEYS, "*@example.com ex\n*@example.com ex-ed\n", multiple_signatures=True)
    choice = s.choose("bob@example.com")
    for key in choice.keys:
        publish(dns_server, key)
    edits = s.sign(model.Message.from_bytes(MESSAGE), choice, timestamp=1_700_000_000)
    assert [(e.name, e.index) for e in edits] == [("DKIM-Signature", 0)] * 2
    assert {tags(e.value)[b"a"] for e in edits} == {b"rsa-sha256", b"ed25519-sha256"}
    assert {tags(e.value)[b"t"] for e in edits} == {b"1700000000"}
    assert all(b"l" not in tags(e.value) for e in edits)
    signed = apply(MESSAGE, edits)
    d = dkim.DKIM(signed)
    assert d.verify(idx=0, dnsfunc=dkim_dnsfunc(resolver)) and d.verify(idx=1, dnsfunc=dkim_dnsfunc(resolver))
    tampered = signed.replace(b"Hello.", b"Hello!")
    assert not dkim.verify(tampered, dnsfunc=dkim_dnsfunc(resolver))


def test_signature_options_from_settings(tmp_path, keydir):
    s = make(tmp_path, keydir, KEYS, "*@example.com ex:bob@example.com\n*@example.org org:x@example.com\n",
             canonicalization="relaxed", oversign_headers=(), expire_s=3600)
    msg = model.Message.from_bytes(MESSAGE)
    t = tags(s.sign(msg, s.choose("bob@example.com"), timestamp=100)[0].value)
    assert t[b"c"] == b"relaxed/simple"                 # one word: header canon, body simple
    assert t[b"i"] == b"bob@example.com"                # the SigningTable signer field
    assert t[b"x"] == b"3700"
    assert [h.strip().lower() for h in t[b"h"].split(b":")].count(b"from") == 2   # From always oversigned
    other = tags(s.sign(msg, s.choose("x@example.org"), timestamp=100)[0].value)
    assert other[b"i"] == b"@example.org"               # a signer outside d= is dropped, as OpenDKIM does


def test_nothing_chosen_nothing_signed(tmp_path, keydir):
    s = make(tmp_path, keydir, KEYS, "*@example.com ex\n")
    assert s.sign(model.Message.from_bytes(MESSAGE), s.choose("x@example.org")) == ()
