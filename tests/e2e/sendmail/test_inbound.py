"""Inbound checks and policy through a real Sendmail 8.17 (issue 16 item 2): the scenarios
of tests/e2e/test_inbound.py, with Sendmail's own ways of doing things where they differ:
the 550 at end of DATA, Sendmail's quarantine (``mailq -qQ``), its header indexes when
forged Authentication-Results are deleted, its queue id and ``j`` macro, and headers and
body handed to the milter while the client is still sending them.

Remote senders connect from 127.0.0.10 (``mail.example.org``) or ::1; the zones
authorise those addresses (conftest.py).
"""
from __future__ import annotations

import re
import smtplib
import time

import pytest

from ..harness import (
    MX_NAME,
    RCPT,
    auth_results,
    dkim_sign,
    header_values,
    headers_of,
    make_message,
    results,
    wait_for,
)
from .conftest import SENDER_IP6
from .mta import queue_id_of

pytestmark = pytest.mark.e2e

HELO = "mail.example.org"


def _send(sm, raw: bytes, mail_from: str, **kw):
    return sm.sendmail.smtp(raw, mail_from=mail_from, helo=HELO, **kw)


def _deliver(sm, token: str, raw: bytes, mail_from: str, **kw) -> bytes:
    reply = _send(sm, raw, mail_from, **kw)
    assert reply.accepted, reply
    return sm.sendmail.wait_delivered(token)


def _assert_rejected(sm, token: str, reply, domain: str | None = None) -> None:
    """550 at end of DATA (the milter decides at end-of-message), nothing delivered."""
    assert (reply.stage, reply.code) == ("data", 550), reply
    if domain is not None:
        assert domain in reply.text, f"the reply should name {domain}: {reply}"
    assert sm.sendmail.deliveries(token) == []


def _mailfrom_spf(delivered: bytes) -> list[str]:
    return [r for r, props in results(delivered, "spf") if "smtp.mailfrom" in props]


# -- SPF (RFC 7208) --------------------------------------------------------------------


@pytest.mark.parametrize("domain,expected", [
    ("spfpass.test", "pass"), ("spffail.test", "fail"), ("spfsoft.test", "softfail")])
def test_spf_result_for_mail_from(sm, token, domain, expected):
    raw = make_message(token, from_=f"bob@{domain}", subject=f"spf {expected}")
    delivered = _deliver(sm, token, raw, f"bob@{domain}")
    assert _mailfrom_spf(delivered) == [expected]
    props = next(p for _, p in results(delivered, "spf") if "smtp.mailfrom" in p)
    assert props["smtp.mailfrom"].endswith(domain)


def test_helo_identity_is_the_clients_ehlo(sm, token):
    raw = make_message(token, from_="bob@spfpass.test", subject="helo")
    delivered = _deliver(sm, token, raw, "bob@spfpass.test")
    helo = [(r, p) for r, p in results(delivered, "spf") if "smtp.helo" in p]
    assert helo == [("pass", {"smtp.helo": HELO})]


# -- DKIM (RFC 6376, RFC 8463) ---------------------------------------------------------


def test_dkim_pass(sm, token):
    raw = dkim_sign(make_message(token, from_="bob@dkim.test", subject="dkim pass"), sm.keys["rsa"],
                    domain="dkim.test")
    delivered = _deliver(sm, token, raw, "bob@dkim.test")
    dkim = results(delivered, "dkim")
    assert [r for r, _ in dkim] == ["pass"]
    assert dkim[0][1]["header.d"] == "dkim.test"
    assert dkim[0][1].get("header.s") == "s1"


def test_dkim_body_altered_fails(sm, token):
    raw = dkim_sign(make_message(token, from_="bob@dkim.test", subject="altered"), sm.keys["rsa"],
                    domain="dkim.test")
    raw = raw.replace(b"Hello from the e2e suite.", b"Hello from a man in the middle.")
    delivered = _deliver(sm, token, raw, "bob@dkim.test")
    assert [r for r, _ in results(delivered, "dkim")] == ["fail"]


def test_ed25519_signed_message_passes_dkim_and_dmarc(sm, token):
    raw = dkim_sign(make_message(token, from_="bob@ed.test", subject="ed25519"), sm.keys["ed25519"],
                    domain="ed.test")
    delivered = _deliver(sm, token, raw, "bob@ed.test")
    assert [(r, p.get("header.a")) for r, p in results(delivered, "dkim")] == [("pass", "ed25519-sha256")]
    assert [r for r, _ in results(delivered, "dmarc")] == ["pass"]


def test_large_message_sent_slowly_still_verifies(sm, token):
    """Sendmail hands headers and body to the milter while the client is still sending
    (Postfix only after end-of-data): a 1.5 MB signed message, written in pieces with
    pauses, is checked on exactly the bytes that arrived (the body spools to a file
    beyond 1 MB)."""
    line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * (1_500_000 // len(line))
    raw = dkim_sign(make_message(token, from_="bob@dmarcdkim.test", subject="slow and large", body=body),
                    sm.keys["rsa"], domain="dmarcdkim.test")
    smtp = smtplib.SMTP("127.0.0.1", sm.sendmail.mta_port, local_hostname=HELO, timeout=120,
                        source_address=("127.0.0.10", 0))
    try:
        smtp.ehlo(HELO)
        assert smtp.mail("bob@dmarcdkim.test")[0] == 250
        assert smtp.rcpt(RCPT)[0] == 250
        assert smtp.docmd("DATA")[0] == 354
        head, rest = raw.split(b"\r\n\r\n", 1)
        sock = smtp.sock
        assert sock is not None
        for i, h in enumerate(head.split(b"\r\n")):
            sock.sendall(h + b"\r\n")
            if i % 3 == 0:
                time.sleep(0.05)
        sock.sendall(b"\r\n")
        stuffed = re.sub(rb"(?m)^\.", b"..", rest)
        for start in range(0, len(stuffed), 256 * 1024):
            sock.sendall(stuffed[start:start + 256 * 1024])
            time.sleep(0.2)
        sock.sendall(b"\r\n.\r\n")
        code, text = smtp.getreply()
        assert code == 250, text
    finally:
        smtp.quit()
    delivered = sm.sendmail.wait_delivered(token)
    assert [r for r, _ in results(delivered, "dkim")] == ["pass"]
    assert [r for r, _ in results(delivered, "dmarc")] == ["pass"]


# -- DMARC (RFC 9989) ---------------------------------------------------------------------


def test_dmarc_pass_via_spf_only(sm, token):
    raw = make_message(token, from_="bob@dmarcspf.test", subject="dmarc via spf")
    delivered = _deliver(sm, token, raw, "bob@dmarcspf.test")
    assert _mailfrom_spf(delivered) == ["pass"]
    dmarc = results(delivered, "dmarc")
    assert [r for r, _ in dmarc] == ["pass"]
    assert dmarc[0][1].get("header.from") == "dmarcspf.test"


def test_dmarc_pass_via_dkim_only(sm, token):
    raw = dkim_sign(make_message(token, from_="bob@dmarcdkim.test", subject="dmarc via dkim"),
                    sm.keys["rsa"], domain="dmarcdkim.test")
    delivered = _deliver(sm, token, raw, "bob@dmarcdkim.test")
    assert _mailfrom_spf(delivered) == ["fail"]
    assert [r for r, _ in results(delivered, "dkim")] == ["pass"]
    assert [r for r, _ in results(delivered, "dmarc")] == ["pass"]


def test_dmarc_reject_is_550_at_end_of_data(sm, token):
    raw = make_message(token, from_="bob@reject.test", subject="p=reject")
    reply = _send(sm, raw, "bob@reject.test")
    _assert_rejected(sm, token, reply, "reject.test")
    assert reply.text.startswith("5.7.1"), reply


def test_dmarc_quarantine_goes_to_sendmails_quarantine(sm, token):
    """smfi_quarantine: Sendmail keeps the message in its queue as quarantined (hf file),
    never delivers it, and `mailq -qQ` lists it with our reason."""
    raw = make_message(token, from_="bob@quarantine.test", subject="p=quarantine")
    reply = _send(sm, raw, "bob@quarantine.test")
    assert reply.accepted, reply
    qid = queue_id_of(reply)
    assert qid, reply
    try:
        entry = wait_for(lambda: next((q for q in sm.sendmail.quarantine() if q.queue_id == qid), None),
                         f"{qid} in mailq -qQ")
        assert entry.sender == "bob@quarantine.test"
        assert entry.recipients == (RCPT,)
        assert "quarantine.test" in entry.reason and "quarantine" in entry.reason.lower(), entry
        assert (sm.sendmail.queue_dir / f"hf{qid}").exists()
        time.sleep(1)
        assert sm.sendmail.deliveries(token) == [], "a quarantined message must not be delivered"
        assert f"{qid}: milter=authmilter, quarantine=" in sm.sendmail.log_text()
        # The admin's release: the message goes on, with the results authmilter added.
        sm.sendmail.release(qid)
        delivered = sm.sendmail.wait_delivered(token)
        dmarc = results(delivered, "dmarc")
        assert [(r, p.get("policy.dmarc")) for r, p in dmarc] == [("fail", "quarantine")]
    finally:
        sm.sendmail.delete(qid)


def test_sp_applies_to_a_subdomain(sm, token):
    raw = make_message(token, from_="bob@sub.sp.test", subject="sp=reject")
    _assert_rejected(sm, token, _send(sm, raw, "bob@sub.sp.test"), "sub.sp.test")

    token2 = token + "b"
    delivered = _deliver(sm, token2, make_message(token2, from_="bob@sp.test", subject="p=none"), "bob@sp.test")
    dmarc = results(delivered, "dmarc")
    assert [r for r, _ in dmarc] == ["fail"]
    assert dmarc[0][1].get("policy.dmarc") == "none"


def _aligned_only_relaxed(sm, token: str, domain: str) -> bytes:
    raw = make_message(token, from_=f"bob@{domain}", subject=f"alignment {domain}")
    return dkim_sign(raw, sm.keys["rsa"], domain=f"mail.{domain}")


def test_strict_alignment_rejects_subdomain_identifiers(sm, token):
    raw = _aligned_only_relaxed(sm, token, "strict.test")
    _assert_rejected(sm, token, _send(sm, raw, "bounce@mail.strict.test"), "strict.test")


def test_relaxed_alignment_accepts_subdomain_identifiers(sm, token):
    raw = _aligned_only_relaxed(sm, token, "relaxed.test")
    delivered = _deliver(sm, token, raw, "bounce@mail.relaxed.test")
    assert _mailfrom_spf(delivered) == ["pass"]
    assert [r for r, _ in results(delivered, "dmarc")] == ["pass"]


def test_ipv6_client(sm, token):
    """v6.test authorises only ::1/128 here (the zone's IPv6 sender) and publishes p=reject;
    Sendmail's second daemon listens on [::1]."""
    raw = make_message(token, from_="bob@v6.test", subject="ipv6")
    delivered = _deliver(sm, token, raw, "bob@v6.test", client_ip=SENDER_IP6)
    assert _mailfrom_spf(delivered) == ["pass"]
    assert [r for r, _ in results(delivered, "dmarc")] == ["pass"]


# -- From header rules -----------------------------------------------------------------


def test_multiple_from_headers_rejected(sm, token):
    raw = make_message(token, from_=["bob@spfpass.test", "ceo@dmarcspf.test"], subject="two From")
    _assert_rejected(sm, token, _send(sm, raw, "bob@spfpass.test"))


def test_missing_from_header_rejected(sm, token):
    raw = make_message(token, from_=None, subject="no From")
    _assert_rejected(sm, token, _send(sm, raw, "bob@spfpass.test"))


def test_own_domain_spoof_from_outside_rejected(sm, token):
    raw = make_message(token, from_="ceo@example.com", subject="spoof")
    _assert_rejected(sm, token, _send(sm, raw, "ceo@example.com"))


# -- Authentication-Results: Sendmail's header indexes ---------------------------------

FORGED = [
    f"{MX_NAME}; spf=pass smtp.mailfrom=forged.test; dkim=pass header.d=forged.test",
    "MX.INBOX.TEST; dmarc=pass header.from=forged.test",
    "Mx.Inbox.Test 1; dkim=pass header.d=bank.example.net",
    f"{MX_NAME} (checked by the sender, honest); arc=pass",
    f"(a comment first) {MX_NAME}; dkim=pass header.d=forged.test",
    f"{MX_NAME};\r\n\tdkim=pass\r\n\theader.d=forged.test",
]
FOREIGN = "relay.example.net; spf=fail smtp.mailfrom=forged.test"


def test_forged_authentication_results_removed(sm, token):
    """Six forgeries around a foreign header: smfi_chgheader(name, i, NULL) for each, highest
    index first; under Sendmail as under Postfix every one goes and the foreign one stays."""
    headers = [("Authentication-Results", v) for v in FORGED[:3]]
    headers += [("Authentication-Results", FOREIGN)]
    headers += [("Authentication-Results", v) for v in FORGED[3:]]
    raw = make_message(token, from_="bob@forged.test", subject="forged A-R", headers=headers)
    delivered = _deliver(sm, token, raw, "bob@forged.test")
    ours = auth_results(delivered)
    assert len(ours) == 1, header_values(delivered, "Authentication-Results")
    assert _mailfrom_spf(delivered) == ["pass"]
    assert [v for v in header_values(delivered, "Authentication-Results") if v.startswith("relay.example.net")] \
        == [FOREIGN]
    names = [n.lower() for n, _ in headers_of(delivered)]
    assert names.index("authentication-results") < names.index("received"), "ours goes on top"


def test_forged_header_after_a_foreign_one_at_the_end(sm, token):
    """Forged headers interleaved with foreign ones and other fields: indexes count only
    headers of that name, and Sendmail's own Received header does not shift them."""
    headers = [("Authentication-Results", FOREIGN), ("X-Other", "1"),
               ("Authentication-Results", FORGED[0]), ("Authentication-Results", FOREIGN.replace("relay", "relay2")),
               ("X-Other", "2"), ("Authentication-Results", FORGED[1])]
    raw = make_message(token, from_="bob@forged.test", subject="interleaved", headers=headers)
    delivered = _deliver(sm, token, raw, "bob@forged.test")
    values = header_values(delivered, "Authentication-Results")
    assert len(auth_results(delivered)) == 1, values
    assert [v.split(";")[0] for v in values[1:]] == ["relay.example.net", "relay2.example.net"], values
    assert header_values(delivered, "X-Other") == ["1", "2"]


# -- what authmilter takes from Sendmail's macros --------------------------------------


def test_log_line_carries_sendmails_queue_id_and_j_names_us(sm, token):
    """``i`` (queue id) reaches the log line; ``j`` (confDOMAIN_NAME) is the authserv-id,
    since the config leaves authserv_id empty."""
    raw = make_message(token, from_="bob@spfpass.test", subject="macros")
    reply = _send(sm, raw, "bob@spfpass.test")
    assert reply.accepted, reply
    qid = queue_id_of(reply)
    delivered = sm.sendmail.wait_delivered(token)
    assert auth_results(delivered, MX_NAME), "authserv-id from Sendmail's j macro"
    line = wait_for(lambda: next((ln for ln in sm.milter.log_tail(200_000).splitlines()
                                  if f"{qid}: action=" in ln), None), f"authmilter's log line for {qid}")
    assert "dir=inbound" in line and "ip=127.0.0.10" in line, line
