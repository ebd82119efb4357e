"""Outbound signing through a real Postfix (issue 2 "How it is checked", issue 4 item 1).

Mail from our own users reaches authmilter three ways — the submission port
(``-o milter_macro_daemon_name=ORIGINATING``), sendmail(1) through ``non_smtpd_milters``,
and a SASL-authenticated session — and each must leave Postfix with a DKIM-Signature that
dkimpy verifies against the key knot publishes (RFC 6376 §6).
"""
from __future__ import annotations

import pytest

from .harness import dkim_verify_all, header_values, make_message

pytestmark = pytest.mark.e2e

EXTERNAL_IP = "198.51.100.20"   # neither internal nor in anybody's SPF record


def _h_tags(sig_fields: dict[bytes, bytes]) -> list[str]:
    return [h.strip().lower() for h in sig_fields[b"h"].decode().split(":")]


def _assert_signed(e2e, delivered: bytes, domain: str, algorithms: set[str]) -> None:
    results = dkim_verify_all(delivered, e2e.knot)
    ours = [(ok, f) for ok, f in results if f.get(b"d", b"").decode().lower() == domain]
    assert ours, f"no DKIM-Signature with d={domain}: {header_values(delivered, 'DKIM-Signature')}"
    assert {f[b"a"].decode() for _, f in ours} == algorithms
    for ok, fields in ours:
        assert ok, f"signature s={fields[b's'].decode()} does not verify against knot's record"
        assert b"l" not in fields, "authmilter must never sign with l="
        # From is oversigned: listed once more than it occurs, so none can be added.
        assert _h_tags(fields).count("from") >= 2


def test_submission_port_signs(e2e, token):
    """ORIGINATING daemon name makes mail outbound even from an external address."""
    raw = make_message(token, from_="Alice <alice@example.com>", subject="via submission")
    reply = e2e.postfix.smtp(raw, mail_from="alice@example.com", client_ip=EXTERNAL_IP,
                             client_name="laptop.example.org", helo="laptop", submission=True)
    assert reply.accepted, reply
    _assert_signed(e2e, e2e.postfix.wait_delivered(token), "example.com", {"rsa-sha256"})


def test_sendmail_signs(e2e, token):
    """sendmail(1) -> pickup -> cleanup -> non_smtpd_milters (client localhost [127.0.0.1])."""
    raw = make_message(token, from_="alice@example.com", subject="via sendmail")
    e2e.postfix.sendmail(raw, "alice@example.com")
    _assert_signed(e2e, e2e.postfix.wait_delivered(token), "example.com", {"rsa-sha256"})


def test_sendmail_dual_rsa_and_ed25519(e2e, token):
    """Two SigningTable entries with multiple_signatures: one RSA and one Ed25519 (RFC 8463)."""
    raw = make_message(token, from_="bob@example.net", subject="dual")
    e2e.postfix.sendmail(raw, "bob@example.net")
    _assert_signed(e2e, e2e.postfix.wait_delivered(token), "example.net", {"rsa-sha256", "ed25519-sha256"})


def test_sasl_authenticated_session_signs(e2e, token):
    """XCLIENT LOGIN= sets Postfix's SASL login, presented as {auth_authen}."""
    raw = make_message(token, from_="alice@example.com", subject="authenticated")
    reply = e2e.postfix.smtp(raw, mail_from="alice@example.com", client_ip=EXTERNAL_IP,
                             client_name="laptop.example.org", helo="laptop", login="alice@example.com")
    assert reply.accepted, reply
    _assert_signed(e2e, e2e.postfix.wait_delivered(token), "example.com", {"rsa-sha256"})


def test_unauthenticated_external_mail_is_not_signed(e2e, token):
    """Inbound mail from the outside gets checked, never signed."""
    raw = make_message(token, from_="carol@spfpass.test", subject="inbound")
    reply = e2e.postfix.smtp(raw, mail_from="carol@spfpass.test")
    assert reply.accepted, reply
    delivered = e2e.postfix.wait_delivered(token)
    assert header_values(delivered, "DKIM-Signature") == []
    assert header_values(delivered, "Authentication-Results"), "inbound mail gets Authentication-Results"


def test_authenticated_is_not_authorised(e2e, token):
    """A SASL user gets signatures only for domains the SigningTable maps its own address
    to (authenticated_must_match, default on): mallory may relay, but not as example.com."""
    raw = make_message(token, from_="ceo@example.com", subject="not yours")
    reply = e2e.postfix.smtp(raw, mail_from="mallory@spfpass.test", client_ip=EXTERNAL_IP,
                             client_name="laptop.example.org", helo="laptop", login="mallory@spfpass.test")
    assert reply.accepted, reply
    assert header_values(e2e.postfix.wait_delivered(token), "DKIM-Signature") == []
