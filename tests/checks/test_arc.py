"""ARC verify and seal on our DKIM engine (RFC 8617), with dkimpy as the independent oracle.

Our RSA seals verify with dkimpy's ``arc_verify`` and dkimpy's ``arc_sign`` chains
verify with ours; chains mix both signers. dkimpy 1.1 has no Ed25519 for ARC ("unknown
signature algorithm"), so Ed25519 sets are checked by our verifier only (our Ed25519
DKIM signatures are checked against dkimpy in test_dkim.py; ARC uses the same
primitives). Keys are served by the loopback DNS server.
"""
from __future__ import annotations

import base64

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from authmilter.checks.arc import check_arc
from authmilter.dkim.arc import MAX_INSTANCES, ArcSealError, seal
from authmilter.dkim.sign import SigningKey, public_key_bytes
from authmilter.model import Message
from authmilter.resolver import dkim_dnsfunc
from authmilter.results import Result

MESSAGE = (
    b"Authentication-Results: relay.example; spf=pass smtp.mailfrom=alice@example.com\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: list@example.net\r\n"
    b"Subject: minutes  of the\r\n\tmeeting\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <7@example.com>\r\n"
    b"\r\n"
    b"Agreed:  ship it. \r\n"
    b"\r\n\r\n"
)
SIGN = ("From", "To", "Subject", "Date", "Message-ID")


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    e = ed25519.Ed25519PrivateKey.generate()
    return {"rsa": SigningKey("relay.example", "arc-r", "rsa-sha256", r, 2048, "<test>"),
            "ed25519": SigningKey("forwarder.example", "arc-e", "ed25519-sha256", e, 256, "<test>")}


@pytest.fixture
def published(dns_server, keys):
    for key in keys.values():
        k, public = public_key_bytes(key.private_key)
        dns_server.add_txt(f"{key.selector}._domainkey.{key.domain}",
                           f"v=DKIM1; k={k}; p={base64.b64encode(public).decode()}")
    return keys


def dkimpy_private(key: SigningKey) -> bytes:
    if isinstance(key.private_key, rsa.RSAPrivateKey):
        return key.private_key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption())
    return base64.b64encode(key.private_key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()))


def our_seal(raw: bytes, key: SigningKey, resolver, srv_id: str = "relay.example", modify=None) -> bytes:
    """Seal as a relay would: validate first, (modify, as a list does,) seal with that
    cv, prepend the set."""
    cv = check_arc(Message.from_bytes(raw), resolver).result.value
    if modify is not None:
        raw = modify(raw)
    msg = Message.from_bytes(raw)
    aar, ams, as_value = seal(msg, key, srv_id=srv_id, aar_results=f"arc={cv}; spf=pass smtp.mailfrom=example.com",
                              chain_validation=cv, sign_headers=SIGN)
    return (b"ARC-Seal:" + as_value.encode() + b"\r\nARC-Message-Signature:" + ams.encode()
            + b"\r\nARC-Authentication-Results:" + aar.encode() + b"\r\n" + raw)


def dkimpy_seal(raw: bytes, key: SigningKey, srv_id: str = "relay.example", cv: str = "none") -> bytes:
    """dkimpy seals with the arc= of the Authentication-Results for *srv_id*."""
    raw = f"Authentication-Results: {srv_id}; arc={cv}; dkim=none\r\n".encode() + raw
    lines = dkim.arc_sign(raw, key.selector.encode(), key.domain.encode(), dkimpy_private(key), srv_id.encode(),
                          signature_algorithm=key.algorithm.encode(),
                          include_headers=[h.lower().encode() for h in SIGN])
    return b"".join(lines) + raw


def verify_both(raw: bytes, resolver):
    """Our verdict, and dkimpy's when every set is RSA (see the module docstring)."""
    ours = check_arc(Message.from_bytes(raw), resolver)
    if b"a=ed25519-sha256" in raw:
        return ours, {Result.PASS: b"pass", Result.FAIL: b"fail"}.get(ours.result), "(ours only)"
    cv, _results, reason = dkim.arc_verify(raw, dnsfunc=dkim_dnsfunc(resolver))
    return ours, cv, reason


# -- our seals, verified by dkimpy and by us ---------------------------------------

@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_our_first_seal_verifies_with_dkimpy_and_with_us(published, resolver, algorithm):
    raw = our_seal(MESSAGE, published[algorithm], resolver)
    ours, cv, reason = verify_both(raw, resolver)
    assert ours.result is Result.PASS and ours.instances == 1 and ours.oldest_pass == 1, ours.reason
    assert cv == b"pass", reason


def test_a_chain_of_our_seals_with_both_algorithms(published, resolver):
    raw = MESSAGE
    for name in ("rsa", "ed25519", "rsa"):
        raw = our_seal(raw, published[name], resolver)
    ours, cv, reason = verify_both(raw, resolver)
    assert ours.result is Result.PASS and ours.instances == 3, ours.reason
    assert ours.domains == ("relay.example", "forwarder.example", "relay.example")
    assert cv == b"pass", reason


# -- dkimpy's seals, verified by us ------------------------------------------------

def test_dkimpy_seals_verify_with_us_and_we_extend_them(published, resolver):
    raw = dkimpy_seal(MESSAGE, published["rsa"])
    ours, cv, reason = verify_both(raw, resolver)
    assert cv == b"pass", reason
    assert ours.result is Result.PASS and ours.instances == 1, ours.reason
    raw = our_seal(raw, published["rsa"], resolver)
    ours, cv, reason = verify_both(raw, resolver)
    assert ours.result is Result.PASS and ours.instances == 2, ours.reason
    assert cv == b"pass", reason
    raw = dkimpy_seal(raw, published["rsa"], srv_id="list.example", cv="pass")   # its own AR, one arc= in it
    ours, cv, reason = verify_both(raw, resolver)
    assert ours.result is Result.PASS and ours.instances == 3, ours.reason
    assert cv == b"pass", reason


# -- chain rules (RFC 8617 §5.2) ---------------------------------------------------

def test_a_modified_message_fails_the_newest_ams(published, resolver):
    raw = our_seal(our_seal(MESSAGE, published["rsa"], resolver), published["ed25519"], resolver)
    ours, cv, _ = verify_both(raw.replace(b"ship it", b"ship  it!"), resolver)
    assert ours.result is Result.FAIL and "ARC-Message-Signature i=2" in ours.reason
    assert cv == b"fail"


def test_oldest_pass_is_the_set_after_a_modification(published, resolver):
    raw = our_seal(MESSAGE, published["rsa"], resolver)
    raw = our_seal(raw, published["rsa"], resolver, modify=lambda m: m.replace(b"ship it", b"ship it, says the list"))
    raw = our_seal(raw, published["rsa"], resolver)
    ours, cv, reason = verify_both(raw, resolver)
    assert (ours.result, ours.instances, ours.oldest_pass) == (Result.PASS, 3, 2)
    assert cv == b"pass", reason
    assert dict(ours.resinfo().props) == {"header.oldest-pass": "2"}


def test_a_chain_that_failed_is_sealed_with_cv_fail_once_and_then_not_again(published, resolver):
    raw = our_seal(our_seal(MESSAGE, published["rsa"], resolver), published["rsa"], resolver)
    broken = raw.replace(b"ship it", b"ship nothing")
    msg = Message.from_bytes(broken)
    assert check_arc(msg, resolver).result is Result.FAIL
    # Without the crypto, structure alone already rules out pass (RFC 8617 §5.1.2).
    no_ams = Message(tuple(h for h in msg.headers if not (h[0] == b"ARC-Message-Signature" and b"i=1;" in h[1])),
                     msg.body)
    with pytest.raises(ArcSealError, match="broken chain"):
        seal(no_ams, published["rsa"], srv_id="x", aar_results="arc=fail", chain_validation="pass", sign_headers=SIGN)
    failed = our_seal(broken, published["ed25519"], resolver)
    assert b"cv=fail" in failed.split(b"\r\nARC-Message-Signature:")[0]
    ours, cv, _ = verify_both(failed, resolver)
    assert ours.result is Result.FAIL and "cv=fail" in ours.reason and cv != b"pass"
    with pytest.raises(ArcSealError, match="cv=fail"):
        seal(Message.from_bytes(failed), published["rsa"], srv_id="x", aar_results="arc=fail",
             chain_validation="fail", sign_headers=SIGN)


def test_seal_arguments_follow_rfc8617(published):
    msg = Message.from_bytes(MESSAGE)
    for cv in ("pass", "fail", "Pass", "maybe"):
        with pytest.raises(ArcSealError):
            seal(msg, published["rsa"], srv_id="x", aar_results="", chain_validation=cv, sign_headers=SIGN)
    with pytest.raises(ArcSealError, match="ARC-Seal"):
        seal(msg, published["rsa"], srv_id="x", aar_results="", chain_validation="none",
             sign_headers=("From", "ARC-Seal"))
    aar, _ams, _as = seal(msg, published["rsa"], srv_id="x", aar_results="", chain_validation="none",
                          sign_headers=SIGN, timestamp=1)
    assert aar == " i=1; x; none"


def test_fifty_sets_verify_and_a_fifty_first_is_refused(published, resolver):
    raw = MESSAGE
    for _ in range(MAX_INSTANCES):
        raw = our_seal(raw, published["ed25519"], resolver)
    ours = check_arc(Message.from_bytes(raw), resolver)
    assert ours.result is Result.PASS and ours.instances == MAX_INSTANCES, ours.reason
    with pytest.raises(ArcSealError, match="50"):
        our_seal(raw, published["ed25519"], resolver)
    forged = raw.replace(b"i=50;", b"i=51;", 1)    # the newest ARC-Seal, on top
    assert check_arc(Message.from_bytes(forged), resolver).result is Result.FAIL


@pytest.mark.parametrize("fault", ["timeout", "servfail"])
def test_dns_trouble_is_no_verdict(published, dns_server, resolver, fault):
    raw = our_seal(MESSAGE, published["rsa"], resolver)
    dns_server.set_fault("arc-r._domainkey.relay.example", fault)
    res = check_arc(Message.from_bytes(raw), resolver)
    assert res.result is Result.NONE and res.reason.startswith("temporary DNS failure")


def test_missing_key_is_fail(dns_server, resolver, keys):
    res = check_arc(Message.from_bytes(our_seal(MESSAGE, keys["rsa"], resolver)), resolver)
    assert res.result is Result.FAIL and "no key" in res.reason


def test_no_arc_headers_is_none_and_reads_no_dns(dns_server, resolver):
    assert check_arc(Message.from_bytes(MESSAGE), resolver).result is Result.NONE
    assert not dns_server.queries
