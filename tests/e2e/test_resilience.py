"""Failure handling with a real Postfix: nothing is lost, nothing is delivered twice.

`milter_default_action = tempfail` plus authmilter's own `on_dns_error = "tempfail"` mean
that while DNS or authmilter is down, SMTP clients get a 4xx (and retry later) and mail
injected with sendmail(1) waits in Postfix's maildrop until `postqueue -f`.
"""
from __future__ import annotations

import time

import pytest

from .conftest import SENDER_IP
from .harness import SmtpSession, header_values, make_message, results, wait_for

pytestmark = pytest.mark.e2e

HELO = "mail.example.org"


def _send(e2e, raw: bytes, mail_from: str):
    return e2e.postfix.smtp(raw, mail_from=mail_from, client_ip=SENDER_IP, client_name=HELO, helo=HELO)


def _settle_and_count(e2e, tokens: list[str], senders: set[str]) -> dict[str, int]:
    """Flush, wait until Postfix holds none of *senders*' mail, then count deliveries."""
    e2e.postfix.flush()
    wait_for(lambda: not [m for m in e2e.postfix.queue() if m["sender"] in senders],
             f"Postfix's queue to drain of mail from {sorted(senders)}")
    return {t: len(e2e.postfix.deliveries(t)) for t in tokens}


def test_dns_outage_tempfails_then_delivers_exactly_once(e2e, token):
    """dnsdown.test publishes p=reject: without DNS the verdict is unknown -> 4xx, not 5xx
    and not a silent pass; once DNS is back the client's retry is delivered once."""
    raw = make_message(token, from_="bob@dnsdown.test", subject="dns outage")
    e2e.knot.stop()
    try:
        reply = _send(e2e, raw, "bob@dnsdown.test")
    finally:
        e2e.knot.start()
    assert reply.stage == "data" and 400 <= reply.code < 500, reply
    assert e2e.postfix.deliveries(token) == []

    # What the SMTP client does after a 4xx: try again later. A worker that took the DNS
    # servers for down during the outage lets one probe through per second and fails the
    # other lookups at once until an answer comes (resolver._ServerHealth), so a retry in
    # the first second may get a 4xx again (never a 5xx, never a pass without the
    # checks); an MTA's own retry comes minutes later.
    for _ in range(5):
        retry = _send(e2e, raw, "bob@dnsdown.test")
        if retry.accepted:
            break
        assert retry.stage == "data" and 400 <= retry.code < 500, retry
        time.sleep(1.5)
    assert retry.accepted, retry
    delivered = e2e.postfix.wait_delivered(token)
    assert [r for r, p in results(delivered, "spf") if "smtp.mailfrom" in p] == ["pass"]
    assert [r for r, _ in results(delivered, "dmarc")] == ["pass"]
    assert _settle_and_count(e2e, [token], {"bob@dnsdown.test"}) == {token: 1}


def test_authmilter_killed_with_mail_in_flight(e2e, token):
    """SIGKILL authmilter (master and workers) while an SMTP transaction is open and more mail
    arrives: Postfix tempfails all of it; after a restart and `postqueue -f` every message is
    delivered exactly once."""
    t_open, t_new, t_cron1, t_cron2 = (token + s for s in ("open", "new", "cron1", "cron2"))
    raw_open = make_message(t_open, from_="bob@crash.test", subject="in flight")
    raw_new = make_message(t_new, from_="bob@crash.test", subject="while down")
    raw_cron = {t: make_message(t, from_="alice@example.com", subject="cron") for t in (t_cron1, t_cron2)}

    # A transaction that authmilter has already seen up to RCPT TO.
    session = SmtpSession(e2e.postfix.smtp_port)
    assert session.xclient(SENDER_IP, HELO, HELO) is None
    assert session.mail_rcpt("bob@crash.test", ["u@inbox.test"]) is None
    local_reject = "milter-reject: CONNECT from localhost[127.0.0.1]"
    log_before = e2e.postfix.log_text().count(local_reject)
    e2e.milter.kill()
    try:
        reply_open = session.data(raw_open)
        session.close()
        reply_new = _send(e2e, raw_new, "bob@crash.test")
        for raw in raw_cron.values():
            e2e.postfix.sendmail(raw, "alice@example.com")
        # pickup hands both to cleanup, which cannot reach the milter: they stay in maildrop.
        wait_for(lambda: e2e.postfix.log_text().count(local_reject) >= log_before + 2,
                 "Postfix to tempfail the sendmail(1) mail")
        in_maildrop = [m for m in e2e.postfix.queue() if m["queue_name"] == "maildrop"]
        assert len(in_maildrop) == 2, in_maildrop
    finally:
        e2e.milter.start()
    assert reply_open.stage == "data" and 400 <= reply_open.code < 500, reply_open
    assert 400 <= reply_new.code < 500, reply_new
    assert all(e2e.postfix.deliveries(t) == [] for t in (t_open, t_new, t_cron1, t_cron2))

    e2e.postfix.flush()                                   # wakes pickup for the maildrop
    for raw, mail_from in ((raw_open, "bob@crash.test"), (raw_new, "bob@crash.test")):
        retry = _send(e2e, raw, mail_from)                # the SMTP clients retry their 4xx
        assert retry.accepted, retry
    for t in (t_open, t_new, t_cron1, t_cron2):
        e2e.postfix.wait_delivered(t)
    counts = _settle_and_count(e2e, [t_open, t_new, t_cron1, t_cron2], {"bob@crash.test", "alice@example.com"})
    assert counts == {t_open: 1, t_new: 1, t_cron1: 1, t_cron2: 1}
    for t in (t_cron1, t_cron2):
        sigs = header_values(e2e.postfix.deliveries(t)[0], "DKIM-Signature")
        assert any("d=example.com" in s.replace(" ", "") for s in sigs), "sendmail(1) mail is signed after retry"
