"""Greylisting through a real Postfix (issue 13): the SMTP client sees Postfix answer
RCPT with authmilter's 451 4.7.1 on the first delivery of a new triplet, and the retry
after ``delay_s`` (1 second here) is delivered.

The session's authmilter is restarted with greylisting on (an SQLite store of its own)
and restarted with the session's configuration afterwards, whatever happened.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from .conftest import SENDER_IP
from .harness import make_message

pytestmark = pytest.mark.e2e

HELO = "mail.example.org"
DELAY_S = 1


def test_the_smtp_client_sees_451_first_and_the_retry_is_delivered(e2e, tmp_path: Path) -> None:
    e2e.milter.write_config({"store": {"url": f"sqlite://{tmp_path}/greylist.db"},
                             "greylist": {"enabled": True, "delay_s": DELAY_S}})
    e2e.restart_milter()
    try:
        token = f"grey-{uuid.uuid4().hex[:8]}"
        raw = make_message(token, from_="Alice <alice@spfpass.test>")
        first = e2e.postfix.smtp(raw, mail_from="alice@spfpass.test", helo=HELO, client_name=HELO,
                                 client_ip=SENDER_IP)
        assert first.stage == "rcpt" and first.code == 451, first
        assert first.text.startswith("4.7.1 ") and "try again in" in first.text, first
        assert e2e.postfix.deliveries(token) == []
        time.sleep(DELAY_S + 0.5)
        retry = e2e.postfix.smtp(raw, mail_from="alice@spfpass.test", helo=HELO, client_name=HELO,
                                 client_ip=SENDER_IP)
        assert retry.accepted, retry
        delivered = e2e.postfix.wait_delivered(token)
        assert b"spf=pass" in delivered
        assert "greylist=defer:spf:spfpass.test:new" in e2e.milter.log_tail(200000)
    finally:
        e2e.milter.write_config()
        e2e.restart_milter()
