"""The dkim package: RFC 6376 mechanics, and signatures byte-identical to dkimpy's.

dkimpy verifies our signatures through dkim_dnsfunc against the loopback DNS server.
"""
from __future__ import annotations

import base64
import hashlib

import dkim
import dkim.canonicalization
import dkim.util
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import example, given
from hypothesis import strategies as st

from authmilter import model
from authmilter.dkim.canon import (
    CANONS,
    BodyCanonicalizer,
    BodyDigest,
    BodyHasher,
    body_hash,
    canon_body,
    canon_header,
    headers_to_sign,
    select_headers,
)
from authmilter.dkim.sign import DkimSignError, SigningKey, public_key_bytes, sign
from authmilter.dkim.tags import TagListError, parse_key_record, parse_tag_list
from authmilter.resolver import dkim_dnsfunc

T = 1700000000

MESSAGE = (
    b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"From: Alice Example <alice@example.com>\r\n"
    b"To: bob@example.org,\r\n  carol@example.org\r\n"
    b"Subject:  Hello   there \t \r\n\tfolded  line\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"X-Extra: not signed\r\n"
    b"\r\n"
    b"Hello  Bob, \r\n"
    b"\tthis is  a test.\t\r\n"
    b"\r\n"
    b"-- \r\n"
    b"Alice\r\n"
    b"\r\n\r\n"
)
SIGN = ("From", "To", "Subject", "Date", "Message-ID", "Reply-To", "Cc")
OVERSIGN = ("From", "To", "Subject", "Date", "Reply-To", "Cc")


@pytest.fixture(scope="module")
def rsa2048():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa1024():
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


@pytest.fixture(scope="module")
def ed_key():
    return ed25519.Ed25519PrivateKey.generate()


def signing_key(key, selector="sel", domain="example.com") -> SigningKey:
    if isinstance(key, rsa.RSAPrivateKey):
        return SigningKey(domain, selector, "rsa-sha256", key, key.key_size, "<test>")
    return SigningKey(domain, selector, "ed25519-sha256", key, 256, "<test>")


def dkimpy_private(key) -> bytes:
    """The private key in the form dkimpy's sign() takes."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return base64.b64encode(raw)


def publish(dns_server, key, selector="sel", domain="example.com") -> None:
    k, public = public_key_bytes(key)
    dns_server.add_txt(f"{selector}._domainkey.{domain}", f"v=DKIM1; k={k}; p={base64.b64encode(public).decode()}")


def h_tag(value: str) -> list[bytes]:
    tags = dkim.util.parse_tag_value(value.encode().replace(b"\r\n", b""))
    return [h.strip() for h in tags[b"h"].split(b":")]


# -- tag lists (§3.2) -----------------------------------------------------------

def test_tag_list_parses_fws_and_records_value_spans():
    data = b" v=1;\r\n\ta = rsa-sha256 ; b= ab\r\n cd ;"
    tags = parse_tag_list(data)
    assert tags["v"].value == b"1"
    assert tags["a"].value == b"rsa-sha256"
    assert tags["b"].value == b"ab\r\n cd"
    assert data[tags["b"].start:tags["b"].end] == b" ab\r\n cd "


@pytest.mark.parametrize("bad", [b"v=1; v=1", b"v=1; novalue", b"1a=x", b"v=1; =x", b"a b=c"])
def test_tag_list_rejects_duplicates_and_bad_specs(bad):
    with pytest.raises(TagListError):
        parse_tag_list(bad)


def test_tag_names_are_case_sensitive():
    tags = parse_tag_list(b"v=1; V=2")
    assert tags["v"].value == b"1" and tags["V"].value == b"2"


# -- canonicalization (§3.4) ----------------------------------------------------

def test_rfc6376_section_3_4_5_example():
    headers = [(b"A", b" X"), (b"B ", b" Y\t\r\n\tZ  ")]
    assert b"".join(canon_header(n, v, "relaxed") for n, v in headers) == b"a:X\r\nb:Y Z\r\n"
    assert b"".join(canon_header(n, v, "simple") for n, v in headers) == b"A: X\r\nB : Y\t\r\n\tZ  \r\n"
    body = b" C \r\nD \t E\r\n\r\n\r\n"
    assert canon_body(body, "relaxed") == b" C\r\nD E\r\n"
    assert canon_body(body, "simple") == b" C \r\nD \t E\r\n"


def test_empty_body_is_crlf_for_simple_and_empty_for_relaxed():
    for body in (b"", b"\r\n", b"\r\n\r\n\r\n"):
        assert canon_body(body, "simple") == b"\r\n"
        assert canon_body(body, "relaxed") == b""


ODD_BODIES = [
    b"", b"x", b"x  ", b"x \t", b" \r\n", b"\t\r\n\r\n", b"a\r\n \r\n", b"a\r\r\n", b"a\r\n\r", b"a\n\r\n",
    b"a \t b\t\r\nc", b"line\r\n" * 3 + b"\r\n" * 5, b"\r\n" * 7 + b"x", b"  lead\r\n\ttab  \t\r\n",
    b"x" + b" " * 1000 + b"y\r\n",
    b"x\r\n" + b"\r\n" * 20000 + b"\n\r\n",   # a regex anchored at the end would backtrack quadratically
]


@pytest.mark.parametrize("body", ODD_BODIES)
@pytest.mark.parametrize("canon", ["simple", "relaxed"])
def test_body_canonicalization_agrees_with_dkimpy(body, canon):
    policy = dkim.canonicalization.CanonicalizationPolicy.from_c_value(f"{canon}/{canon}".encode())
    assert canon_body(body, canon) == policy.canonicalize_body(body)


def test_relaxed_body_of_100kb():
    line = b"Lorem  ipsum dolor\tsit amet, consectetur adipiscing elit \r\n"
    body = line * (100_000 // len(line)) + b"\r\n\r\n"
    policy = dkim.canonicalization.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    assert canon_body(body, "relaxed") == policy.canonicalize_body(body)


def test_body_hash_honours_length():
    body = b"abc\r\ndef\r\n"
    assert body_hash(body, "simple", length=5) == body_hash(b"abc\r\n", "simple")


# -- incremental body canonicalization ---------------------------------------------

def canon_in_chunks(body: bytes, canon: str, cuts: list[int]) -> bytes:
    out: list[bytes] = []
    c = BodyCanonicalizer(canon, out.append)
    start = 0
    for cut in sorted(cuts) + [len(body)]:
        c.update(body[start:cut])
        start = max(start, cut)
    c.finish()
    return b"".join(out)


# Bodies from the octets that matter to canonicalization, so runs of spaces, CR, LF and
# CRLF meet chunk boundaries often; cut positions anywhere (repeats give empty chunks).
BODIES = st.lists(st.sampled_from([b" ", b"\t", b"\r", b"\n", b"\r\n", b"a", b"b c", b"\r\n\r\n"]),
                  max_size=40).map(b"".join) | st.binary(max_size=60)
CUTS = st.lists(st.integers(min_value=0, max_value=200), max_size=12)


@given(body=BODIES, cuts=CUTS, canon=st.sampled_from(CANONS))
@example(body=b"x \r\n", cuts=[1, 2, 3], canon="relaxed")
@example(body=b"a\r\n\r\n \r\n", cuts=[3, 4, 5, 6], canon="relaxed")
@example(body=b"\r\n \r\n", cuts=[2], canon="relaxed")
@example(body=b"a \t \r", cuts=[2, 3], canon="relaxed")
def test_incremental_canonicalization_equals_one_shot_for_any_chunking(body, cuts, canon):
    cuts = [c for c in cuts if c <= len(body)]
    assert canon_in_chunks(body, canon, cuts) == canon_body(body, canon)


@pytest.mark.parametrize("body", ODD_BODIES)
@pytest.mark.parametrize("canon", ["simple", "relaxed"])
def test_incremental_canonicalization_agrees_with_dkimpy_octet_by_octet(body, canon):
    policy = dkim.canonicalization.CanonicalizationPolicy.from_c_value(f"{canon}/{canon}".encode())
    step = 1 if len(body) < 2000 else 997
    assert canon_in_chunks(body, canon, list(range(0, len(body), step))) == policy.canonicalize_body(body)


def test_a_long_run_of_blank_lines_is_held_as_a_count():
    out: list[bytes] = []
    c = BodyCanonicalizer("relaxed", out.append)
    for _ in range(100):
        c.update(b"\r\n" * 10_000)
    assert out == [] and len(c._carry) == 0
    c.update(b"end")
    c.finish()
    assert max(len(piece) for piece in out) <= 2 * (1 << 15)
    assert b"".join(out) == b"\r\n" * 1_000_000 + b"end\r\n"


@given(body=BODIES, cuts=CUTS, length=st.none() | st.integers(min_value=0, max_value=120))
def test_body_hasher_computes_every_spec_in_one_pass(body, cuts, length):
    specs = [(canon, alg, lim) for canon in CANONS for alg in ("sha256", "sha1") for lim in (None, length)]
    hasher = BodyHasher(specs)
    start = 0
    for cut in sorted(c for c in cuts if c <= len(body)) + [len(body)]:
        hasher.update(body[start:cut])
        start = max(start, cut)
    found = hasher.finish()
    for canon, alg, lim in specs:
        cbody = canon_body(body, canon)
        want = hashlib.new(alg, cbody if lim is None else cbody[:lim]).digest()
        assert found[(canon, alg, lim)] == BodyDigest(want, len(cbody))


def test_spooled_body_hashes_like_bytes(tmp_path):
    body = b"Hello  world \r\n" * 20_000 + b"\r\n\r\n"
    with open(tmp_path / "spool", "w+b") as fh:
        fh.write(body + b"trailing octets past the body's size")
        spooled = model.Body.spooled(fh, len(body))
        assert spooled == body and list(spooled.chunks())[0] == body[:1 << 16]
        for canon in CANONS:
            assert body_hash(spooled, canon) == hashlib.sha256(canon_body(body, canon)).digest()


# -- header selection (§5.4.2) --------------------------------------------------

def test_select_headers_takes_instances_from_the_bottom():
    headers = [(b"From", b" a"), (b"Subject", b" s"), (b"from", b" b")]
    assert select_headers(headers, ["from", "subject", "to", "from", "from"]) == [
        (b"from", b" b"), (b"Subject", b" s"), (b"From", b" a")]


def test_headers_to_sign_lists_each_instance_then_oversigns_once_more():
    headers = [(b"Received", b" x"), (b"From", b" a"), (b"To", b" b"), (b"To", b" c"), (b"X-Other", b" y")]
    assert headers_to_sign(headers, ["from", "to", "subject"], ["From", "To", "Reply-To", "from"]) == [
        "from", "to", "to", "from", "to", "reply-to"]


# -- signing -------------------------------------------------------------------

@pytest.mark.parametrize("canon", ["relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"])
@pytest.mark.parametrize("which", ["rsa2048", "rsa1024", "ed_key"])
def test_signature_is_byte_identical_to_dkimpy(request, monkeypatch, canon, which):
    key = request.getfixturevalue(which)
    hc, bc = canon.split("/")
    msg = model.Message.from_bytes(MESSAGE)
    value = sign(msg, signing_key(key), header_canon=hc, body_canon=bc, sign_headers=SIGN,
                          oversign=OVERSIGN, timestamp=T)
    monkeypatch.setattr(dkim.time, "time", lambda: T)
    algorithm = b"rsa-sha256" if which.startswith("rsa") else b"ed25519-sha256"
    theirs = dkim.sign(MESSAGE, b"sel", b"example.com", dkimpy_private(key), canonicalize=(hc.encode(), bc.encode()),
                       include_headers=h_tag(value), signature_algorithm=algorithm)
    assert b"DKIM-Signature:" + value.encode() + b"\r\n" == theirs


@pytest.mark.parametrize("which", ["rsa2048", "ed_key"])
def test_dkimpy_verifies_our_signature_over_dns(request, dns_server, resolver, which):
    key = request.getfixturevalue(which)
    publish(dns_server, key)
    msg = model.Message.from_bytes(MESSAGE)
    value = sign(msg, signing_key(key), sign_headers=SIGN, oversign=OVERSIGN)
    signed = b"DKIM-Signature:" + value.encode() + b"\r\n" + MESSAGE
    assert dkim.verify(signed, dnsfunc=dkim_dnsfunc(resolver))
    # oversigning: a second Subject added later breaks the signature
    assert not dkim.verify(signed.replace(b"Subject:", b"Subject: evil\r\nSubject:", 1), dnsfunc=dkim_dnsfunc(resolver))


def test_header_layout_no_length_tag_and_lines_within_72_columns(rsa2048):
    msg = model.Message.from_bytes(MESSAGE)
    value = sign(msg, signing_key(rsa2048), sign_headers=SIGN, oversign=OVERSIGN, timestamp=T)
    assert value.startswith(" v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;")
    assert not value.endswith("\r\n")
    tags = parse_tag_list(value.encode())
    assert "l" not in tags and "x" not in tags
    assert tags["t"].value == str(T).encode()
    assert h_tag(value) == [b"from", b"to", b"subject", b"date", b"message-id",
                            b"from", b"to", b"subject", b"date", b"reply-to", b"cc"]
    lines = ("DKIM-Signature:" + value).split("\r\n")
    assert all(len(line) <= 72 for line in lines)
    assert all(line.startswith(" ") for line in lines[1:])


def test_expiry_and_identity(ed_key):
    msg = model.Message.from_bytes(MESSAGE)
    value = sign(msg, signing_key(ed_key), sign_headers=SIGN, identity="alice@mail.example.com",
                          timestamp=T, expire_s=3600)
    tags = parse_tag_list(value.encode())
    assert tags["x"].value == str(T + 3600).encode()
    assert tags["i"].value == b"alice@mail.example.com"


@pytest.mark.parametrize("kwargs", [
    {"sign_headers": ("To", "Subject")},                              # From not signed
    {"sign_headers": SIGN, "identity": "alice@example.net"},         # i= outside d=
    {"sign_headers": SIGN, "identity": "alice@badexample.com"},      # suffix is not a subdomain
    {"sign_headers": SIGN, "header_canon": "nofws"},
])
def test_sign_refuses_what_cannot_verify(ed_key, kwargs):
    with pytest.raises(DkimSignError):
        sign(model.Message.from_bytes(MESSAGE), signing_key(ed_key), **kwargs)


def test_key_record_parsing(rsa2048, ed_key):
    _k, public = public_key_bytes(rsa2048)
    rec = parse_key_record(b"v=DKIM1; h=sha256; k=rsa; t=y:s; s=email; p=" + base64.b64encode(public))
    assert (rec.key_type, rec.hashes, rec.flags, rec.services, rec.bits) == (
        "rsa", ("sha256",), ("y", "s"), ("email",), 2048)
    assert rec.testing and not rec.revoked
    assert parse_key_record(b"v=DKIM1; p=").revoked
    _k, public = public_key_bytes(ed_key)
    assert parse_key_record(b"k=ed25519; p=" + base64.b64encode(public)).bits == 256
    for bad in (b"v=DKIM2; p=", b"k=rsa; p=@@@", b"k=rsa", b"k=ed25519; p=AAAA", b"k=dsa; p=AAAA",
                b"p=; v=DKIM1", b"k=rsa; p=" + base64.b64encode(public)):
        with pytest.raises(TagListError):
            parse_key_record(bad)
