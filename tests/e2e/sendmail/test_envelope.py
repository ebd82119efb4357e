"""The envelope features through Sendmail 8.17 (issue 16 item 4): SRS with smfi_chgfrom and
smfi_delrcpt/addrcpt, and greylisting answered at RCPT.

Sendmail expands aliases and .forward files after the milters, so what the milter can
rewrite is mail Sendmail relays as it came (here: to forward.test) and bounces to our SRS
domain (srs.inbox.test); both are RELAY_DOMAINs of the test Sendmail (mta.py), and the sink
records the envelope each message leaves with.

authmilter is restarted with the feature on, and with the session's configuration after.
"""
from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from authmilter.srs import SrsCodec

from ..harness import make_message
from .conftest import SENDER_IP
from .mta import queue_id_of

pytestmark = pytest.mark.e2e

HELO = "mail.example.org"
SRS_DOMAIN = "srs.inbox.test"
SECRET = "sendmail e2e secret"


@contextlib.contextmanager
def _milter_with(sm, overrides: dict) -> Iterator[None]:
    sm.milter.write_config(overrides)
    sm.milter.stop()
    sm.milter.start()
    try:
        yield
    finally:
        sm.milter.write_config()
        sm.milter.stop()
        sm.milter.start()


def _srs(tmp_path: Path) -> dict:
    secret = tmp_path / "srs.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    return {"srs": {"enabled": True, "domain": SRS_DOMAIN, "secret_file": str(secret),
                    "local_domains": ["inbox.test"]}}


def test_srs_rewrites_the_sender_of_relayed_mail_and_restores_bounces(sm, tmp_path):
    codec = SrsCodec(SRS_DOMAIN, (SECRET.encode(),))
    with _milter_with(sm, _srs(tmp_path)):
        # Forward path: relayed out of our domains -> smfi_chgfrom to an SRS0 address.
        token = f"srs-{uuid.uuid4().hex[:8]}"
        before = time.time()
        reply = sm.sendmail.smtp(make_message(token, from_="Bob <bob@spfpass.test>", to="fwd@forward.test"),
                                 mail_from="bob@spfpass.test", rcpts=["fwd@forward.test"], helo=HELO,
                                 client_ip=SENDER_IP)
        after = time.time()
        assert reply.accepted, reply
        sm.sendmail.wait_delivered(token)
        [(sender, rcpts)] = sm.sendmail.sink.envelopes_of(token)
        assert sender in {codec.forward("bob@spfpass.test", before), codec.forward("bob@spfpass.test", after)}
        assert rcpts == ("fwd@forward.test",)
        assert f"{queue_id_of(reply)}: Milter (authmilter) chgfrom: {sender}" in sm.sendmail.log_text()

        # Reverse path: a bounce to that SRS0 address reaches bob again (delrcpt + addrcpt).
        token2 = f"bounce-{uuid.uuid4().hex[:8]}"
        bounce = make_message(token2, from_="MAILER-DAEMON@forward.test", to=sender, subject="Undelivered")
        reply = sm.sendmail.smtp(bounce, mail_from="", rcpts=[sender], helo=HELO, client_ip=SENDER_IP)
        assert reply.accepted, reply
        sm.sendmail.wait_delivered(token2)
        assert sm.sendmail.sink.envelopes_of(token2) == [("", ("bob@spfpass.test",))]

        # A forged SRS address is refused with 550 at end of DATA.
        forged = sender.replace("SRS0=", "SRS0=x")
        token3 = f"forged-{uuid.uuid4().hex[:8]}"
        reply = sm.sendmail.smtp(make_message(token3, from_="MAILER-DAEMON@forward.test", to=forged),
                                 mail_from="", rcpts=[forged], helo=HELO, client_ip=SENDER_IP)
        assert reply.code == 550, reply
        assert sm.sendmail.deliveries(token3) == []


def test_greylisting_answers_451_at_rcpt_and_the_retry_is_delivered(sm, tmp_path):
    delay_s = 1
    with _milter_with(sm, {"store": {"url": f"sqlite://{tmp_path}/greylist.db"},
                           "greylist": {"enabled": True, "delay_s": delay_s}}):
        token = f"grey-{uuid.uuid4().hex[:8]}"
        raw = make_message(token, from_="Alice <alice@spfpass.test>")
        first = sm.sendmail.smtp(raw, mail_from="alice@spfpass.test", helo=HELO, client_ip=SENDER_IP)
        assert first.stage == "rcpt" and first.code == 451, first
        assert first.text.startswith("4.7.1 ") and "try again in" in first.text, first
        time.sleep(delay_s + 0.5)
        retry = sm.sendmail.smtp(raw, mail_from="alice@spfpass.test", helo=HELO, client_ip=SENDER_IP)
        assert retry.accepted, retry
        assert b"spf=pass" in sm.sendmail.wait_delivered(token)
        assert "greylist=defer:spf:spfpass.test:new" in sm.milter.log_tail(400_000)
