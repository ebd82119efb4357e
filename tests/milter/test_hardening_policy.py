"""Hardening issue, defects 6, 11 and 12, over the real milter socket with loopback DNS.

Reply texts fit the protocol and say what failed in plain words without our resolver's
internals; unsigned mail says dkim=none; an underscore From domain is evaluated; a
verify-only deployment checks its internal hosts' mail; a temperror that cannot change
the verdict does not turn a reject into a tempfail.
"""
from __future__ import annotations

import re

from milterclient import MilterClient

AUTHSERV = "mx.test"


def message(domain: str, extra: str = "", local: str = "alice") -> bytes:
    return (f"{extra}From: A <{local}@{domain}>\r\nTo: bob@mx.test\r\nSubject: t\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <t@{domain}>\r\n\r\nHello.\r\n").encode()


def send(daemon, raw: bytes, *, mail_from: str, qid: str, ip: str = "192.0.2.10", hostname: str = "client.example"):  # type: ignore[no-untyped-def]
    with MilterClient(daemon.address, timeout=30) as c:
        return c.session(ip=ip, hostname=hostname, helo="mail.sender.example", mail_from=mail_from,
                         rcpts=["bob@mx.test"], message=raw, macros={"i": qid, "j": AUTHSERV})


def ar_of(result) -> str:  # type: ignore[no-untyped-def]
    (value,) = [v for _, name, v in result.inserted if name == "Authentication-Results"]
    return value


def no_internals(reply: str) -> None:
    assert not re.search(r"127\.0\.0\.1|Do53|@\d{2,5}|answered|Server |Error|Exception", reply), reply


def test_eight_dkim_keys_failing_for_a_p_reject_domain_give_a_readable_451(milterd, dns_server):
    """Defect 6: eight SERVFAILing keys made a reply too long for smfi_setreply, and the
    client saw '451 4.3.0 internal error' instead of 4.7.0 with the reason."""
    d = "eightkeys-with-a-rather-long-name-to-fill-the-reply.example.org"
    dns_server.add_txt(d, "v=spf1 -all")
    dns_server.add_txt(f"_dmarc.{d}", "v=DMARC1; p=reject")
    sigs = ""
    for i in range(8):
        dns_server.set_fault(f"selector{i}._domainkey.{d}", "servfail")
        sigs += (f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={d}; s=selector{i};\r\n"
                 f"\th=from:to:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=QUFB{i}A==\r\n")
    daemon = milterd(workers=1, dns={"message_budget_s": 8.0})
    r = send(daemon, message(d, extra=sigs), mail_from=f"bounce@{d}", qid="4EIGHT")
    assert r.action in ("tempfail", "reply") and r.reply.startswith("451 4.7.0"), r.reply
    assert "DKIM key" in r.reply and d in r.reply and len(r.reply) < 512
    no_internals(r.reply)


def test_dns_failure_reply_names_the_record_not_our_resolver(milterd, dns_server):
    """Defect 11: '451 ... Server Do53:127.0.0.1@53327 answered SERVFAIL' went to clients."""
    d = "spfservfail.example.org"
    dns_server.set_fault(d, "servfail")
    dns_server.add_txt(f"_dmarc.{d}", "v=DMARC1; p=reject")
    daemon = milterd(workers=1)
    r = send(daemon, message(d), mail_from=f"bounce@{d}", qid="4SPFSF")
    assert r.reply and r.reply.startswith("451 4.7.24"), r.reply
    assert f"SPF record of {d}" in r.reply
    no_internals(r.reply)
    assert daemon.wait_log(r"4SPFSF: action=tempfail .*reason=")


def test_unsigned_mail_reports_dkim_none(milterd, dns_server):
    """Defect 11 (RFC 8601 §2.7.1): unsigned inbound mail says dkim=none."""
    d = "unsigned.example.org"
    dns_server.add_txt(d, "v=spf1 ip4:192.0.2.0/24 -all")
    daemon = milterd(workers=1)
    r = send(daemon, message(d), mail_from=f"bounce@{d}", qid="4UNSIGNED")
    assert r.action == "accept" and re.search(r"\bdkim=none\b", ar_of(r)), ar_of(r)


def test_underscore_from_domain_is_evaluated_not_rejected_as_bad_from(milterd, dns_server):
    """Defect 11: foo@zero_pct.example (valid in RFC 5322 and DNS) was a 550 bad From."""
    d = "zero_pct.example.org"
    dns_server.add_txt(d, "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add_txt(f"_dmarc.{d}", "v=DMARC1; p=reject")
    daemon = milterd(workers=1)
    r = send(daemon, message(d, local="foo"), mail_from=f"foo@{d}", qid="4UNDERSCORE")
    assert r.action == "accept", r.reply
    assert "dmarc=pass" in ar_of(r) and f"header.from={d}" in ar_of(r)


def test_verify_only_checks_mail_from_internal_hosts(milterd, dns_server):
    """Defect 11: with signing disabled (OpenDKIM Mode v) mail from internal_hosts was
    treated as outbound and got no checks at all."""
    d = "spoofed-from-inside.example.org"
    dns_server.add_txt(d, "v=spf1 -all")
    dns_server.add_txt(f"_dmarc.{d}", "v=DMARC1; p=reject")
    daemon = milterd(workers=1, signing={"enabled": False, "internal_hosts": ["10.0.0.0/8"],
                                         "sign_daemon_names": ["ORIGINATING"]})
    r = send(daemon, message(d), mail_from=f"bounce@{d}", qid="4MODEV", ip="10.1.1.1")
    assert r.reply and r.reply.startswith("550 5.7.1"), r.reply
    assert daemon.wait_log(r"4MODEV: action=reject dir=inbound")


def test_spf_temperror_that_cannot_align_does_not_save_an_own_domain_spoof(milterd, dns_server):
    """Defect 12: the envelope domain's SPF temperror cannot make the From domain aligned,
    so the own-domain-spoof rule rejects instead of tempfailing."""
    other = "unrelated-bounces.example.net"
    dns_server.set_fault(other, "servfail")
    daemon = milterd(workers=1, policy={"own_domains": ["ours.example"]})
    r = send(daemon, message("ours.example"), mail_from=f"bounce@{other}", qid="4OWNSPOOF")
    assert r.reply and r.reply.startswith("550"), r.reply


def test_spf_temperror_that_could_align_still_tempfails(milterd, dns_server):
    dns_server.set_fault("mail.ours.example", "servfail")
    daemon = milterd(workers=1, policy={"own_domains": ["ours.example"]})
    r = send(daemon, message("ours.example"), mail_from="bounce@mail.ours.example", qid="4OWNTEMP")
    assert r.reply and r.reply.startswith("451"), r.reply
