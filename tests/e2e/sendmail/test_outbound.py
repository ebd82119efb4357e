"""Outbound signing through a real Sendmail 8.17 (issue 16 item 2).

Our users' mail reaches authmilter from Sendmail in two ways, and each must leave with a
DKIM-Signature that dkimpy verifies against the key knot publishes:

* SMTP AUTH on the MSA port (``DAEMON_OPTIONS(... Name=MSA, M=Ea)``): Sendmail passes the
  authenticated user as ``{auth_authen}`` (PLAIN/LOGIN, checked by Cyrus SASL through
  saslauthd_path; mta.SaslAuthd);
* the ``sendmail`` command: the MSP (submit.cf) relays it over SMTP to the MTA on
  127.0.0.1, so authmilter sees a connection from an internal host (``internal_hosts``).
"""
from __future__ import annotations

import pytest

from ..harness import dkim_verify_all, header_values, make_message, wait_for
from .conftest import USERS
from .mta import queue_id_of

pytestmark = pytest.mark.e2e

EXTERNAL_IP = "127.0.0.20"   # neither internal nor in anybody's SPF record


def _h_tags(sig_fields: dict[bytes, bytes]) -> list[str]:
    return [h.strip().lower() for h in sig_fields[b"h"].decode().split(":")]


def _assert_signed(sm, delivered: bytes, domain: str, algorithms: set[str]) -> None:
    results = dkim_verify_all(delivered, sm.knot)
    ours = [(ok, f) for ok, f in results if f.get(b"d", b"").decode().lower() == domain]
    assert ours, f"no DKIM-Signature with d={domain}: {header_values(delivered, 'DKIM-Signature')}"
    assert {f[b"a"].decode() for _, f in ours} == algorithms
    for ok, fields in ours:
        assert ok, f"signature s={fields[b's'].decode()} does not verify against knot's record"
        assert b"l" not in fields
        assert _h_tags(fields).count("from") >= 2


def _log_line(sm, qid: str) -> str:
    return wait_for(lambda: next((ln for ln in sm.milter.log_tail(400_000).splitlines()
                                  if f"{qid}: action=" in ln), None), f"authmilter's log line for {qid}")


def _login(user: str) -> tuple[str, str]:
    return user, USERS[user]


def test_smtp_auth_on_the_msa_port_signs(sm, token):
    """{auth_authen} from Sendmail's SMTP AUTH makes the mail outbound and picks the key."""
    raw = make_message(token, from_="Alice <alice@example.com>", subject="via MSA + AUTH")
    reply = sm.sendmail.smtp(raw, mail_from="alice@example.com", client_ip=EXTERNAL_IP, helo="laptop",
                             login=_login("alice@example.com"), msa=True)
    assert reply.accepted, reply
    _assert_signed(sm, sm.sendmail.wait_delivered(token), "example.com", {"rsa-sha256"})
    assert "via=authenticated" in _log_line(sm, queue_id_of(reply))
    assert ("alice@example.com", "smtp", "example.com") in sm.sendmail.saslauthd.seen


def test_smtp_auth_on_the_mta_port_signs_too(sm, token):
    """AUTH is what counts, not the port."""
    raw = make_message(token, from_="alice@example.com", subject="via MTA + AUTH")
    reply = sm.sendmail.smtp(raw, mail_from="alice@example.com", client_ip=EXTERNAL_IP, helo="laptop",
                             login=_login("alice@example.com"))
    assert reply.accepted, reply
    _assert_signed(sm, sm.sendmail.wait_delivered(token), "example.com", {"rsa-sha256"})


def test_msa_port_refuses_mail_without_auth(sm, token):
    """M=a: the MSA port takes no mail from an unauthenticated client, which is what makes
    {daemon_name} = MSA a safe reason to sign (see test_daemon_name_msa_signs)."""
    raw = make_message(token, from_="alice@example.com", subject="MSA without AUTH")
    reply = sm.sendmail.smtp(raw, mail_from="alice@example.com", client_ip=EXTERNAL_IP, helo="laptop", msa=True)
    assert reply.stage == "mail" and reply.code == 530, reply


def test_sendmail_command_through_the_msp_signs(sm, token):
    """sendmail -C submit.cf -> clientmqueue -> SMTP to the MTA from 127.0.0.1 (internal)."""
    raw = make_message(token, from_="alice@example.com", subject="via the sendmail command")
    sm.sendmail.sendmail(raw, "alice@example.com")
    delivered = sm.sendmail.wait_delivered(token)
    _assert_signed(sm, delivered, "example.com", {"rsa-sha256"})
    received = header_values(delivered, "Received")
    assert any("localhost [127.0.0.1]" in r for r in received), received
    assert header_values(delivered, "Authentication-Results") == [], "outbound mail is signed, not checked"


def test_sendmail_command_dual_rsa_and_ed25519(sm, token):
    raw = make_message(token, from_="bob@example.net", subject="dual via MSP")
    sm.sendmail.sendmail(raw, "bob@example.net")
    _assert_signed(sm, sm.sendmail.wait_delivered(token), "example.net", {"rsa-sha256", "ed25519-sha256"})


def test_unauthenticated_external_mail_is_not_signed(sm, token):
    raw = make_message(token, from_="carol@spfpass.test", subject="inbound")
    reply = sm.sendmail.smtp(raw, mail_from="carol@spfpass.test")
    assert reply.accepted, reply
    delivered = sm.sendmail.wait_delivered(token)
    assert header_values(delivered, "DKIM-Signature") == []
    assert header_values(delivered, "Authentication-Results")


def test_authenticated_is_not_authorised(sm, token):
    """mallory may relay after AUTH, but gets no example.com signature (authenticated_must_match)."""
    raw = make_message(token, from_="ceo@example.com", subject="not yours")
    reply = sm.sendmail.smtp(raw, mail_from="mallory@spfpass.test", client_ip=EXTERNAL_IP, helo="laptop",
                             login=_login("mallory@spfpass.test"), msa=True)
    assert reply.accepted, reply
    assert header_values(sm.sendmail.wait_delivered(token), "DKIM-Signature") == []
    assert "signed=no" in _log_line(sm, queue_id_of(reply)).replace('"', "")


def test_wrong_password_is_refused_by_sendmail(sm, token):
    raw = make_message(token, from_="alice@example.com", subject="bad password")
    reply = sm.sendmail.smtp(raw, mail_from="alice@example.com", client_ip=EXTERNAL_IP, helo="laptop",
                             login=("alice@example.com", "wrong"), msa=True)
    assert reply.stage == "auth" and reply.code == 535, reply


def test_daemon_name_msa_signs(sm, token):
    """sign_daemon_names = ["MSA"], ignore_authenticated = false: the {daemon_name} Sendmail
    sends for the DAEMON_OPTIONS Name=MSA port is the reason (via=daemon MSA)."""
    sm.milter.reload({"signing": {"sign_daemon_names": ["MSA"]}, "policy": {"ignore_authenticated": False}})
    try:
        raw = make_message(token, from_="alice@example.com", subject="daemon_name MSA")
        reply = sm.sendmail.smtp(raw, mail_from="alice@example.com", client_ip=EXTERNAL_IP, helo="laptop",
                                 login=_login("alice@example.com"), msa=True)
        assert reply.accepted, reply
        _assert_signed(sm, sm.sendmail.wait_delivered(token), "example.com", {"rsa-sha256"})
        assert "via=daemon MSA" in _log_line(sm, queue_id_of(reply)).replace('"', "")
    finally:
        sm.milter.reload()
