"""Inbound DKIM verification (RFC 6376 §6) against keys served by the loopback DNS server.

Signatures come from our signer (keys loaded from files in every supported format) and
from dkimpy; dkimpy checks ours and we check dkimpy's.
"""
from __future__ import annotations

import base64
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from authmilter import model
from authmilter.checks.dkim import verify_dkim
from authmilter.dkim.sign import SigningKey, public_key_bytes, sign
from authmilter.dkim.tags import parse_tag_list
from authmilter.keys import load_signing_key
from authmilter.resolver import dkim_dnsfunc
from authmilter.results import Result

D = "example.com"
MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: quarterly   report\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <42@example.com>\r\n"
    b"\r\n"
    b"Numbers  are up.\r\n"
    b"\r\n"
)
SIGN = ("From", "To", "Subject", "Date", "Message-ID")
NOPASS = (Result.FAIL, Result.PERMERROR, Result.NEUTRAL, Result.POLICY, Result.TEMPERROR)


def _nocrypt() -> serialization.NoEncryption:
    return serialization.NoEncryption()


@pytest.fixture(scope="module")
def keydir(tmp_path_factory):
    """Test keys written at run time in each format load_signing_key reads."""
    d = tmp_path_factory.mktemp("dkimkeys")
    d.chmod(0o700)
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    e = ed25519.Ed25519PrivateKey.generate()
    files = {
        "test-rsa-pkcs1": r.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                          _nocrypt()),
        "test-rsa-pkcs8": r.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _nocrypt()),
        "test-ed-seed": base64.b64encode(e.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                         _nocrypt())) + b"\n",
        "test-ed-pkcs8": e.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _nocrypt()),
    }
    for name, data in files.items():
        path = d / f"{name}.private"
        path.write_bytes(data)
        path.chmod(0o600)
    return d


@pytest.fixture(scope="module")
def rsa1024():
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def key_of(keydir, name: str, selector: str = "sel") -> SigningKey:
    return load_signing_key(str(keydir / f"{name}.private"), D, selector)


def publish(dns_server, key, selector="sel", extra="", domain=D) -> None:
    k, public = public_key_bytes(key)
    dns_server.add_txt(f"{selector}._domainkey.{domain}",
                       f"v=DKIM1; k={k};{extra} p={base64.b64encode(public).decode()}")


def dkimpy_private(key) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _nocrypt())
    return base64.b64encode(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, _nocrypt()))


def signed(sk: SigningKey, message: bytes = MESSAGE, **kw) -> bytes:
    kw.setdefault("sign_headers", SIGN)
    value = sign(model.Message.from_bytes(message), sk, **kw)
    return b"DKIM-Signature:" + value.encode() + b"\r\n" + message


def verify(raw: bytes, resolver, **kw):
    return verify_dkim(model.Message.from_bytes(raw), resolver, **kw)


def edit_sig(raw: bytes, pattern: bytes, repl: bytes) -> bytes:
    """Rewrite a tag in the (first) DKIM-Signature; the rest of the message is unchanged."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    return re.sub(pattern, repl, head, count=1) + sep + rest


# -- our signatures, every key format -------------------------------------------

@pytest.mark.parametrize("name", ["test-rsa-pkcs1", "test-rsa-pkcs8", "test-ed-seed", "test-ed-pkcs8"])
@pytest.mark.parametrize("canon", ["relaxed", "simple"])
def test_our_signature_verifies_with_dkimpy_and_with_us(keydir, dns_server, resolver, name, canon):
    sk = key_of(keydir, name)
    publish(dns_server, sk.private_key)
    raw = signed(sk, header_canon=canon, body_canon=canon, oversign=("From",))
    assert dkim.verify(raw, dnsfunc=dkim_dnsfunc(resolver))
    (res,) = verify(raw, resolver)
    assert res.result is Result.PASS, res.reason
    assert (res.domain, res.selector, res.algorithm, res.identity) == (D, "sel", sk.algorithm, "@example.com")
    b = parse_tag_list(raw.split(b"\r\n\r\n")[0].split(b":", 1)[1])["b"].value
    assert res.b_prefix == re.sub(rb"\s", b"", b)[:8].decode()
    assert res.key_bits == sk.bits and not res.has_length_tag and not res.testing


def test_dual_signature_gives_one_result_each_in_header_order(keydir, dns_server, resolver):
    rsa_key, ed_key = key_of(keydir, "test-rsa-pkcs8", "r1"), key_of(keydir, "test-ed-seed", "e1")
    publish(dns_server, rsa_key.private_key, "r1")
    publish(dns_server, ed_key.private_key, "e1")
    raw = signed(ed_key, signed(rsa_key))
    results = verify(raw, resolver)
    assert [(r.result, r.selector) for r in results] == [(Result.PASS, "e1"), (Result.PASS, "r1")]


# -- dkimpy's signatures ----------------------------------------------------------

@pytest.mark.parametrize("algorithm", [b"rsa-sha256", b"ed25519-sha256"])
@pytest.mark.parametrize("canon", [(b"relaxed", b"relaxed"), (b"simple", b"simple"), (b"relaxed", b"simple")])
def test_dkimpy_signatures_verify(keydir, dns_server, resolver, algorithm, canon):
    sk = key_of(keydir, "test-rsa-pkcs8" if algorithm.startswith(b"rsa") else "test-ed-seed")
    publish(dns_server, sk.private_key)
    raw = dkim.sign(MESSAGE, b"sel", D.encode(), dkimpy_private(sk.private_key), canonicalize=canon,
                    signature_algorithm=algorithm) + MESSAGE
    (res,) = verify(raw, resolver)
    assert res.result is Result.PASS, res.reason


def test_length_tag_is_honoured_and_recorded(keydir, dns_server, resolver):
    sk = key_of(keydir, "test-rsa-pkcs8")
    publish(dns_server, sk.private_key)
    raw = dkim.sign(MESSAGE, b"sel", D.encode(), dkimpy_private(sk.private_key), length=True) + MESSAGE
    (res,) = verify(raw + b"appended after signing\r\n", resolver)
    assert res.result is Result.PASS and res.has_length_tag
    (res,) = verify(edit_sig(raw, rb"l=\d+", b"l=99999"), resolver)
    assert res.result is Result.PERMERROR and res.has_length_tag


def test_rsa_sha1_is_policy_unless_allowed(keydir, dns_server, resolver):
    sk = key_of(keydir, "test-rsa-pkcs8")
    publish(dns_server, sk.private_key)
    raw = dkim.sign(MESSAGE, b"sel", D.encode(), dkimpy_private(sk.private_key),
                    signature_algorithm=b"rsa-sha1") + MESSAGE
    (res,) = verify(raw, resolver)
    assert res.result is Result.POLICY and "RFC 8301" in res.reason
    (res,) = verify(raw, resolver, allow_sha1=True)
    assert res.result is Result.PASS


def test_short_rsa_key_is_not_a_pass(dns_server, resolver, rsa1024):
    sk = SigningKey(D, "short", "rsa-sha256", rsa1024, 1024, "<test>")
    publish(dns_server, rsa1024, "short")
    raw = signed(sk)
    (res,) = verify(raw, resolver, min_rsa_bits=2048)
    assert res.result is Result.POLICY and res.key_bits == 1024
    (res,) = verify(raw, resolver)
    assert res.result is Result.PASS


# -- tampering --------------------------------------------------------------------

def test_tampered_body_fails(keydir, dns_server, resolver):
    sk = key_of(keydir, "test-ed-seed")
    publish(dns_server, sk.private_key)
    (res,) = verify(signed(sk).replace(b"are up", b"are down"), resolver)
    assert (res.result, res.reason) == (Result.FAIL, "body hash did not verify")


def test_tampered_header_fails(keydir, dns_server, resolver):
    sk = key_of(keydir, "test-rsa-pkcs1")
    publish(dns_server, sk.private_key)
    (res,) = verify(signed(sk).replace(b"quarterly", b"annual"), resolver)
    assert (res.result, res.reason) == (Result.FAIL, "signature did not verify")


def test_relaxed_survives_refolding_simple_does_not(keydir, dns_server, resolver):
    sk = key_of(keydir, "test-ed-seed")
    publish(dns_server, sk.private_key)
    for canon, expected in (("relaxed", Result.PASS), ("simple", Result.FAIL)):
        raw = signed(sk, header_canon=canon, body_canon=canon)
        (res,) = verify(raw.replace(b"Subject: quarterly", b"Subject:  quarterly\r\n\t"), resolver)
        assert res.result is expected


# -- malformed signatures ---------------------------------------------------------

@pytest.mark.parametrize("pattern,repl,result,reason", [
    (rb" d=example\.com;", b"", Result.PERMERROR, "missing required tag d="),
    (rb"bh=[^;]+;", b"bh=!!notbase64;", Result.PERMERROR, "bh= is not valid base64"),
    (rb" b=[A-Za-z0-9+/=\r\n ]+", b" b=AAA", Result.PERMERROR, "b= is not valid base64"),
    (rb"a=ed25519-sha256", b"a=rsa-sha512", Result.NEUTRAL, "unsupported algorithm"),
    (rb"v=1", b"v=2", Result.PERMERROR, "unsupported version"),
    (rb"c=relaxed/relaxed", b"c=fancy/relaxed", Result.PERMERROR, "unknown canonicalization"),
    (rb"h=from", b"h=subject", Result.PERMERROR, "From is not signed"),
    (rb"i=@example\.com", b"i=@example.net", Result.PERMERROR, "i= is not in d="),
    (rb"i=@example\.com", b"i=@badexample.com", Result.PERMERROR, "i= is not in d="),
    (rb"d=example\.com", b"d=exa_mple..com", Result.PERMERROR, "invalid d="),
    (rb"s=sel", b"s=se l!", Result.PERMERROR, "invalid s="),
    (rb"q=dns/txt", b"q=http/well-known", Result.PERMERROR, "unsupported q="),
    (rb"t=\d+", b"t=soon", Result.PERMERROR, "t= is not a number"),
    (rb"; t=", b"; v=1; t=", Result.PERMERROR, "duplicate tag v="),
    (rb"; t=", b"; junk; t=", Result.PERMERROR, "signature syntax error"),
])
def test_malformed_signature(keydir, dns_server, resolver, pattern, repl, result, reason):
    sk = key_of(keydir, "test-ed-seed")
    publish(dns_server, sk.private_key)
    raw = edit_sig(signed(sk), pattern, repl)
    assert raw != signed(sk)
    (res,) = verify(raw, resolver)
    assert res.result is result
    assert reason in res.reason


def test_expired_signature_fails_and_x_before_t_is_permerror(keydir, dns_server, resolver):
    sk = key_of(keydir, "test-ed-seed")
    publish(dns_server, sk.private_key)
    raw = signed(sk, timestamp=1_000_000_000, expire_s=60)
    (res,) = verify(raw, resolver)
    assert (res.result, res.reason) == (Result.FAIL, "signature expired")
    (res,) = verify(raw, resolver, now=1_000_000_030)
    assert res.result is Result.PASS
    (res,) = verify(edit_sig(raw, rb"x=\d+", b"x=999999999"), resolver, now=1_000_000_030)
    assert (res.result, res.reason) == (Result.PERMERROR, "x= is before t=")


# -- key records ------------------------------------------------------------------

def test_no_key_record_is_permerror(keydir, resolver):
    (res,) = verify(signed(key_of(keydir, "test-ed-seed")), resolver)
    assert (res.result, res.reason) == (Result.PERMERROR, "no key")


@pytest.mark.parametrize("record,reason", [
    ("v=DKIM1; k=ed25519; p=", "key revoked"),
    ("v=DKIM1; k=rsa; p={rsa}", "does not match"),
    ("v=DKIM1; k=ed25519; h=sha1; p={ed}", "key h= does not allow sha256"),
    ("v=DKIM1; k=ed25519; s=tlsrpt; p={ed}", "key s= does not allow email"),
    ("v=DKIM1; k=ed25519; p=%%%", "key syntax error"),
    ("v=DKIM1; k=ed25519; p=AAAA", "key syntax error"),
    ("v=spf1 -all", "key syntax error"),
])
def test_key_record_problems_are_permerror(keydir, dns_server, resolver, record, reason):
    sk = key_of(keydir, "test-ed-seed")
    rsa_pub = base64.b64encode(public_key_bytes(key_of(keydir, "test-rsa-pkcs8").private_key)[1]).decode()
    ed_pub = base64.b64encode(public_key_bytes(sk.private_key)[1]).decode()
    dns_server.add_txt("sel._domainkey.example.com", record.format(rsa=rsa_pub, ed=ed_pub))
    (res,) = verify(signed(sk), resolver)
    assert res.result is Result.PERMERROR
    assert reason in res.reason


def test_key_t_s_forbids_identity_subdomain_and_t_y_is_recorded(keydir, dns_server, resolver):
    sk = key_of(keydir, "test-ed-seed")
    publish(dns_server, sk.private_key, extra=" t=y:s;")
    (res,) = verify(signed(sk, identity="alice@sub.example.com"), resolver)
    assert res.result is Result.PERMERROR and res.testing
    (res,) = verify(signed(sk, identity="alice@example.com"), resolver)
    assert res.result is Result.PASS and res.testing and res.identity == "alice@example.com"


def test_a_broken_record_next_to_a_good_one_is_skipped(keydir, dns_server, resolver):
    sk = key_of(keydir, "test-ed-seed")
    dns_server.add_txt("sel._domainkey.example.com", "garbage without tags")
    publish(dns_server, sk.private_key)
    (res,) = verify(signed(sk), resolver)
    assert res.result is Result.PASS


@pytest.mark.parametrize("fault", ["timeout", "servfail"])
def test_dns_trouble_is_temperror(keydir, dns_server, resolver, fault):
    sk = key_of(keydir, "test-ed-seed")
    publish(dns_server, sk.private_key)
    dns_server.set_fault("sel._domainkey.example.com", fault)
    (res,) = verify(signed(sk), resolver)
    assert res.result is Result.TEMPERROR
    assert res.domain == D and res.selector == "sel"


# -- counting ---------------------------------------------------------------------

def test_no_signature_gives_no_result(resolver):
    assert verify(MESSAGE, resolver) == ()


def test_signatures_beyond_the_cap_add_one_permerror(keydir, dns_server, resolver):
    sk = key_of(keydir, "test-ed-seed")
    publish(dns_server, sk.private_key)
    raw = signed(sk, signed(sk, signed(sk)))
    results = verify(raw, resolver, max_signatures=2)
    assert [r.result for r in results] == [Result.PASS, Result.PASS, Result.PERMERROR]
    assert results[-1].reason == "too many signatures"
    assert len(dns_server.queries) == 2


@pytest.mark.parametrize("value", [
    b"", b";", b" =", b"\xff\xfe=\x00", b"v=1; a=rsa-sha256; d=\xc3\xa9xample.com; s=\xff; h=from; bh=; b=",
    b"v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=AAAA; b=AAAA; l=" + b"9" * 80,
    b"v=1; a=ed25519-sha256; d=example.com; s=sel; h=from; bh=AAAA; b=AAAA; i=\r\n",
])
def test_garbage_never_raises(resolver, value):
    raw = b"DKIM-Signature:" + value + b"\r\n" + MESSAGE
    (res,) = verify(raw, resolver)
    assert res.result in NOPASS
