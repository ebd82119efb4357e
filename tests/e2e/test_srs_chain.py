"""SRS through real Postfix instances (issue 12 item 3 and its tests): the forward path, the
bounce path back to the original sender, forged bounces, and Postfix's canonical maps on
authmilter's socketmap. The hosts are chain.py's (the same world as test_arc_chain.py).

Which combination the milter tests cover, and why: the list host here *forwards*: its
software re-submits the author's message with the author's envelope sender kept
(``sendmail -f bounce@author.test``), so one authmilter pass on that re-submission does
all three things the issue orders: SRS (smfi_chgfrom to an SRS0 address at
srs.list.test), then DKIM signing (list.test), then ARC sealing (i=1). A list that
re-distributes under its own bounce address (test_arc_chain.py) has a local envelope
sender, which SRS leaves alone. Mail the list host receives over SMTP and relays as it
came is the Sendmail suite's SRS case (tests/e2e/sendmail/test_envelope.py); a relay is
not a signer, so it cannot show the order.

The bounce path: the final MX accepts mail for gone@final.test and then fails to deliver
it, so Postfix sends a DSN to the SRS address; the list host's authmilter restores the
recipient (smfi_delrcpt + smfi_addrcpt) and the DSN reaches the author's own host
(mx.author.test), not the list host's Maildir where an unreplaced SRS recipient would go.
"""
from __future__ import annotations

import re
import time
import uuid

import dkim
import pytest

from authmilter.srs import Reversal

from .chain import (  # noqa: F401 (chain_world: the fixture `chain`)
    FINAL_RCPT,
    FWD_SRS,
    GONE_RCPT,
    HELO,
    LIST_SRS,
    REFUSED_RCPT,
    chain_world,
    final_results,
    through_the_list,
)
from .harness import dkim_sign, header_values, make_message, wait_for

pytestmark = pytest.mark.e2e

AUTHOR_BOUNCES = "bounce@author.test"


def _return_path(delivered: bytes) -> str:
    (rp,) = header_values(delivered, "Return-Path")
    return rp.strip("<>")


def _spf_mailfrom(res: dict[str, list]) -> tuple[str, str]:
    """(result, smtp.mailfrom) of the final MX's SPF check of the envelope sender."""
    (spf,) = [r for r in res["spf"] if r.prop("smtp.mailfrom")]
    return spf.result, spf.prop("smtp.mailfrom")


def _dsns_to(postfix, token: str, rcpt: str) -> list[bytes]:  # type: ignore[no-untyped-def]
    """Delivery status notifications about the message *token* delivered for *rcpt*."""
    return [m for m in postfix.messages()
            if f"<{token}@e2e.test>".encode() in m and b"report-type=delivery-status" in m
            and f"Delivered-To: {rcpt}".encode() in m.split(b"\n\n", 1)[0]]


def _assert_dsn_names_the_original(dsn: bytes, token: str, failed_rcpt: str) -> None:
    head = dsn.split(b"\n\n", 1)[0]
    assert b"\nReturn-Path: <>\n" in b"\n" + head + b"\n", head      # from the mailer-daemon
    assert header_values(dsn, "Subject") == ["Undelivered Mail Returned to Sender"]
    assert f"Final-Recipient: rfc822; {failed_rcpt}".encode() in dsn
    assert b"Action: failed" in dsn and b"Status: 5.1.1" in dsn
    assert f"Message-ID: <{token}@e2e.test>".encode() in dsn          # the original's headers


# -- the milter path: a forwarding list host --------------------------------------------


def test_forwarded_mail_gets_srs_then_dkim_then_arc_and_spf_passes_for_the_srs_domain(chain):
    c = chain
    token = uuid.uuid4().hex[:20]
    offset = c.list_milter.log_size()
    through_the_list(c, token, resend_from=AUTHOR_BOUNCES)
    delivered = c.final.wait_delivered(token)

    # The envelope sender the final MX got: an SRS0 address at the list host's SRS
    # domain that stands for the original sender.
    srs_sender = _return_path(delivered)
    assert srs_sender.startswith("SRS0=") and srs_sender.endswith(f"@{LIST_SRS}"), srs_sender
    back = c.list_codec.reverse(srs_sender)
    assert (back.status, back.address) == (Reversal.RESTORED, AUTHOR_BOUNCES)

    res = final_results(delivered)
    assert _spf_mailfrom(res) == ("pass", srs_sender)       # its domain: LIST_SRS
    assert {r.prop("header.d"): r.result for r in res["dkim"]} == {"author.test": "fail", "list.test": "pass"}
    (dmarc,) = res["dmarc"]       # SPF passes for the SRS domain, which is not aligned
    assert dmarc.result == "fail" and dmarc.prop("policy.dmarc") == "none"
    assert "arc=pass sealed by list.test" in dmarc.reason
    assert [r.result for r in res["arc"]] == ["pass"]

    # Signed, then sealed: the ARC-Message-Signature covers the list's DKIM-Signature, and
    # both verify with dkimpy.
    (ams,) = header_values(delivered, "ARC-Message-Signature")
    signed = re.search(r"\bh=([^;]+)", ams)
    assert signed and "dkim-signature" in signed.group(1).replace(" ", "").lower().split(":"), ams
    crlf = delivered.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    cv, _, reason = dkim.arc_verify(crlf, dnsfunc=c.knot.dkim_dnsfunc())
    assert cv == b"pass", reason
    assert len(header_values(delivered, "DKIM-Signature")) == 2     # the author's and the list's
    ok = dkim.DKIM(crlf)
    assert ok.verify(idx=0, dnsfunc=c.knot.dkim_dnsfunc()) and ok.domain == b"list.test"

    # The list host did all three in one pass over the re-submission.
    line = [ln for ln in c.list_milter.log_since(offset).splitlines() if f"srs_from={srs_sender}" in ln]
    assert len(line) == 1, line      # not the inbound pass: inbox.test is one of its local_domains
    assert "dir=outbound" in line[0] and "signed=d=list.test/s=dkim" in line[0]
    assert "sealed=i=1/d=list.test/s=arc/cv=none" in line[0]


def test_a_bounce_from_the_final_mx_reaches_the_original_sender(chain):
    c = chain
    token = uuid.uuid4().hex[:20]
    offset = c.list_milter.log_size()
    through_the_list(c, token, resend_from=AUTHOR_BOUNCES, rcpt=GONE_RCPT)
    (dsn,) = wait_for(lambda: _dsns_to(c.sink, token, AUTHOR_BOUNCES), "the DSN at the author's host")
    _assert_dsn_names_the_original(dsn, token, GONE_RCPT)

    # The final MX sent it to the SRS address; the list host's authmilter replaced that
    # recipient (delrcpt + addrcpt) and Postfix relayed it to author.test only.
    logged = re.findall(rf"srs_rcpt=(SRS0=\S+@{re.escape(LIST_SRS)})->{AUTHOR_BOUNCES}", c.list_milter.log_since(offset))
    assert len(logged) == 1 and c.list_codec.reverse(logged[0]).address == AUTHOR_BOUNCES
    sent = re.search(rf"to=<{re.escape(logged[0])}>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:{c.lists.smtp_port},"
                     r".*status=sent \(250 2\.0\.0 Ok: queued as (\w+)\)", c.final.log_text())
    assert sent, c.final.log_text()[-3000:]
    qid = sent.group(1)             # the DSN's queue id at the list host
    wait_for(lambda: f"{qid}: removed" in c.lists.log_text(), "the list host to finish with the DSN")
    deliveries = re.findall(rf"{qid}: to=<([^>]+)>, relay=([^,]+),.*status=(\w+)", c.lists.log_text())
    assert deliveries == [(AUTHOR_BOUNCES, f"127.0.0.1[127.0.0.1]:{c.sink.smtp_port}", "sent")], deliveries


def test_a_bounce_from_the_forwarders_own_postfix_reaches_the_original_sender(chain):
    """The final MX refuses the recipient at RCPT: the list host's own Postfix writes the
    DSN to the SRS sender. Postfix-made bounces reach non_smtpd_milters only with
    internal_mail_filter_classes = bounce, which check-config prints for SRS without the
    socketmap (without it, this DSN went to the SRS address in the list host's Maildir)."""
    c = chain
    token = uuid.uuid4().hex[:20]
    offset = c.list_milter.log_size()
    through_the_list(c, token, resend_from=AUTHOR_BOUNCES, rcpt=REFUSED_RCPT)
    (dsn,) = wait_for(lambda: _dsns_to(c.sink, token, AUTHOR_BOUNCES), "the DSN at the author's host")
    assert f"Final-Recipient: rfc822; {REFUSED_RCPT}".encode() in dsn
    assert f"Message-ID: <{token}@e2e.test>".encode() in dsn
    logged = re.findall(rf"(\w+): action=accept .*srs_rcpt=(SRS0=\S+@{re.escape(LIST_SRS)})->{AUTHOR_BOUNCES}",
                        c.list_milter.log_since(offset))
    assert len(logged) == 1, logged
    qid = logged[0][0]
    wait_for(lambda: f"{qid}: removed" in c.lists.log_text(), "the list host to finish with the DSN")
    deliveries = re.findall(rf"{qid}: to=<([^>]+)>, relay=([^,]+),.*status=(\w+)", c.lists.log_text())
    assert deliveries == [(AUTHOR_BOUNCES, f"127.0.0.1[127.0.0.1]:{c.sink.smtp_port}", "sent")], deliveries


def test_a_forged_or_expired_srs_bounce_is_refused_550_5_1_1_at_the_forwarder(chain):
    c = chain
    good = c.list_codec.forward(AUTHOR_BOUNCES)
    tag, hash_, rest = good.split("=", 2)
    forged = f"{tag}={'AAAA' if hash_ != 'AAAA' else 'BBBB'}={rest}"
    expired = c.list_codec.forward(AUTHOR_BOUNCES, time.time() - 30 * 86400)
    for rcpt in (forged, expired):
        token = uuid.uuid4().hex[:20]
        dsn = make_message(token, from_="MAILER-DAEMON@mx.final.test", to=rcpt, subject="Undelivered Mail")
        reply = c.lists.smtp(dsn, mail_from="", rcpts=[rcpt], client_ip="127.0.0.1",
                             client_name="mx.final.test", helo="mx.final.test")
        assert (reply.stage, reply.code) == ("data", 550), (rcpt, reply)
        assert reply.text.startswith("5.1.1 "), reply
        assert not c.lists.deliveries(token) and not c.sink.deliveries(token)


# -- the socketmap path: Postfix virtual_alias_maps + canonical maps -----------------------


def _author_mail_via_fwd(c, rcpt: str) -> str:  # type: ignore[no-untyped-def]
    """news@author.test's DKIM-signed mail to *rcpt* at the forwarder, envelope sender
    bob@author.test, sent from the author's host and accepted; returns its token."""
    token = uuid.uuid4().hex[:20]
    raw = dkim_sign(make_message(token, from_="news@author.test", to=rcpt), c.author)
    reply = c.fwd.smtp(raw, mail_from="bob@author.test", rcpts=[rcpt], helo=HELO, client_name=HELO)
    assert reply.accepted, reply
    return token


def test_check_config_gives_the_canonical_map_lines_on_the_socketmap(chain):
    """What both hosts' Postfix were configured with (chain.py applies these lines)."""
    assert chain.list_srs_lines == ["internal_mail_filter_classes = bounce"]
    sock = chain.fwd_milter.settings["srs"]["socketmap"]
    assert chain.fwd_srs_lines == [
        f"sender_canonical_maps = socketmap:{sock}:forward",
        "sender_canonical_classes = envelope_sender",
        f"recipient_canonical_maps = socketmap:{sock}:reverse",
        "recipient_canonical_classes = envelope_recipient, header_recipient",
    ]


def test_alias_forwarded_mail_gets_an_srs_sender_from_the_socketmap(chain):
    c = chain
    token = _author_mail_via_fwd(c, "alias@fwd.test")
    delivered = c.final.wait_delivered(token)
    srs_sender = _return_path(delivered)
    assert srs_sender.endswith(f"@{FWD_SRS}"), srs_sender
    back = c.fwd_codec.reverse(srs_sender)
    assert (back.status, back.address) == (Reversal.RESTORED, "bob@author.test")
    assert header_values(delivered, "Delivered-To") == [FINAL_RCPT]
    # Only the envelope: the header sender and recipient are as the author wrote them.
    assert header_values(delivered, "From") == ["news@author.test"]
    assert header_values(delivered, "To") == ["alias@fwd.test"]
    res = final_results(delivered)
    assert _spf_mailfrom(res) == ("pass", srs_sender)
    assert [(r.result, r.prop("header.d")) for r in res["dkim"]] == [("pass", "author.test")]
    assert [r.result for r in res["dmarc"]] == ["pass"]


def test_mail_from_a_local_domain_keeps_its_sender_through_the_alias(chain):
    c = chain
    token = uuid.uuid4().hex[:20]
    raw = make_message(token, from_="me@fwd.test", to="alias@fwd.test")
    reply = c.fwd.smtp(raw, mail_from="me@fwd.test", rcpts=["alias@fwd.test"], client_ip="127.0.0.1",
                       client_name="localhost", helo="localhost")
    assert reply.accepted, reply
    delivered = c.final.wait_delivered(token)
    assert _return_path(delivered) == "me@fwd.test"
    assert _spf_mailfrom(final_results(delivered)) == ("pass", "me@fwd.test")


def test_a_bounce_to_the_socketmap_srs_address_is_mapped_back_by_recipient_canonical_maps(chain):
    c = chain
    token = _author_mail_via_fwd(c, "bounce-me@fwd.test")
    (dsn,) = wait_for(lambda: _dsns_to(c.sink, token, "bob@author.test"), "the DSN at the author's host")
    _assert_dsn_names_the_original(dsn, token, GONE_RCPT)
    # mx.fwd.test has no milter: Postfix's recipient_canonical_maps (our socketmap) turned
    # the SRS recipient back into the original sender; Postfix logs the one it replaced.
    m = re.search(rf"to=<bob@author\.test>, orig_to=<(SRS0=[^>]+@{re.escape(FWD_SRS)})>.*status=sent",
                  c.fwd.log_text())
    assert m, c.fwd.log_text()[-3000:]
    assert c.fwd_codec.reverse(m.group(1)).address == "bob@author.test"
    assert not [x for x in c.fwd.messages() if f"<{token}@e2e.test>".encode() in x]



def test_with_the_milter_on_the_same_postfix_srs_is_done_once_each_way(chain):
    """The usual deployment: the same Postfix also has authmilter as its milter. The
    alias-forwarded sender is rewritten once (SRS0, not SRS1 of our own SRS0), and the
    bounce is restored by the milter (delrcpt/addrcpt; recipient_canonical_maps may also
    map it) and delivered to the author exactly once."""
    c = chain
    c.fwd.set_milter(c.fwd_milter.postfix_socket)
    try:
        token = _author_mail_via_fwd(c, "alias@fwd.test")
        srs_sender = _return_path(c.final.wait_delivered(token))
        assert srs_sender.startswith("SRS0=")
        assert c.fwd_codec.reverse(srs_sender).address == "bob@author.test"

        offset = c.fwd_milter.log_size()
        token = _author_mail_via_fwd(c, "bounce-me@fwd.test")
        (dsn,) = wait_for(lambda: _dsns_to(c.sink, token, "bob@author.test"), "the DSN at the author's host")
        _assert_dsn_names_the_original(dsn, token, GONE_RCPT)
        restored = re.findall(rf"(\w+): action=accept .*srs_rcpt=SRS0=\S+@{re.escape(FWD_SRS)}->bob@author\.test",
                              c.fwd_milter.log_since(offset))
        assert len(restored) == 1, restored
        qid = restored[0]
        wait_for(lambda: f"{qid}: removed" in c.fwd.log_text(), "the forwarder to finish with the DSN")
        deliveries = re.findall(rf"{qid}: to=<([^>]+)>,.*status=(\w+)", c.fwd.log_text())
        assert deliveries == [("bob@author.test", "sent")], deliveries
    finally:
        c.fwd.set_milter("")
