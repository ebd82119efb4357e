"""Greylisting and DNS lists over the real milter socket (issue 13).

The real ``authmilter run`` with an SQLite store, and a loopback DNS server serving the
senders' SPF records, a blocklist zone (bl.test) and an allowlist zone (wl.test). The
client speaks the milter protocol as Postfix does; RCPT answers are read as the MTA
reads them (greylisting needs a reply at RCPT: no SMFIP_NR_RCPT).

``delay_s`` is 1 second: a test that expects a retry to pass sleeps past it first, so no
assertion depends on timing (a slow host only makes the wait longer than needed).
"""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import milterclient as mc
from milterd import Daemon

DELAY_S = 1

POOL_A, POOL_B = "198.51.100.7", "203.0.113.9"       # two networks of one SPF-pass sender


def message(sender_domain: str, n: int) -> bytes:
    return (f"From: Alice <alice@{sender_domain}>\r\nTo: bob@mx.test\r\nSubject: greylist {n}\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{n}.{time.time()}@{sender_domain}>\r\n"
            "\r\nHello.\r\n").encode()


def deliver(daemon: Daemon, ip: str, mail_from: str, rcpt: str = "bob@mx.test", n: int = 0) -> tuple[str, str]:
    """One SMTP transaction as the MTA presents it: ("accept" | "tempfail" | "reject", reply text)."""
    with daemon.client() as c:
        domain = mail_from.rpartition("@")[2]
        r = c.session(ip=ip, hostname=f"[{ip}]", helo=f"mail.{domain}", mail_from=mail_from, rcpts=[rcpt],
                      message=message(domain, n), macros={"i": f"Q{n}", "j": "mx.test"})
    if r.early == "rcpt":
        cmd, args = r.raw[0]
        assert cmd == mc.C.SMFIR_REPLYCODE, (cmd, args)
        code = args["smtpcode"]
        return {"4": "tempfail", "5": "reject"}[code[0]], f"{code} {args['text']}"
    assert r.early is None
    return str(r.action), r.reply or ""


@pytest.fixture
def greylisting(milterd: Callable[..., Daemon], dns_server: Any, tmp_path: Path) -> Daemon:
    dns_server.add_txt("pool.example", "v=spf1 ip4:198.51.100.0/24 ip4:203.0.113.0/24 -all")
    # plain.example publishes no SPF: its mail is greylisted by client network.
    dns_server.add("66.2.0.192.bl.test", "A", "127.0.0.2")           # listed
    dns_server.add("66.2.0.192.bl.test", "TXT", "listed for testing")
    dns_server.add("77.2.0.192.bl.test", "A", "127.255.255.254")     # "query refused"
    dns_server.add("88.2.0.192.wl.test", "A", "127.0.0.2")           # allowlisted
    return milterd(workers=1, store={"url": f"sqlite://{tmp_path}/state.db"},
                   greylist={"enabled": True, "delay_s": DELAY_S, "auto_allow_after": 0},
                   dnsbl={"zones": ["bl.test=127.0.0.[2..11]"], "action": "reject"},
                   dnswl={"zones": ["wl.test"]})


def test_rcpt_is_negotiated_with_a_reply_when_greylisting(greylisting: Daemon) -> None:
    with greylisting.client() as c:
        neg = c.negotiate()
    assert not neg.skips(mc.C.SMFIC_RCPT)
    assert not neg.no_reply(mc.C.SMFIC_RCPT)


def test_first_delivery_is_deferred_and_the_retry_after_delay_passes(greylisting: Daemon) -> None:
    action, reply = deliver(greylisting, "192.0.2.30", "alice@plain.example", n=1)
    assert action == "tempfail"
    assert reply.startswith("451 4.7.1 ") and "try again in" in reply, reply
    # An early retry is deferred again (the first attempt's clock keeps running).
    assert deliver(greylisting, "192.0.2.30", "alice@plain.example", n=2)[0] == "tempfail"
    time.sleep(DELAY_S + 0.5)
    assert deliver(greylisting, "192.0.2.30", "alice@plain.example", n=3)[0] == "accept"
    # Known now: no delay for the next message of the same triplet.
    assert deliver(greylisting, "192.0.2.30", "alice@plain.example", n=4)[0] == "accept"
    greylisting.wait_log(r"action=tempfail stage=rcpt .*greylist=defer:net:192\.0\.2\.0/24:new")
    greylisting.wait_log(r'action=accept dir=inbound .*greylist="pass:net:192\.0\.2\.0/24:retried after')


def test_an_spf_pass_domain_is_greylisted_by_domain_not_by_address(greylisting: Daemon) -> None:
    assert deliver(greylisting, POOL_A, "news@pool.example", n=1)[0] == "tempfail"
    time.sleep(DELAY_S + 0.5)
    # The retry comes from another network of the sender's pool: same triplet (the
    # SPF-authenticated domain replaces the address), so it passes.
    assert deliver(greylisting, POOL_B, "news@pool.example", n=2)[0] == "accept"
    # Another address of the same domain to the same recipient passes at once.
    assert deliver(greylisting, "198.51.100.200", "other@pool.example", n=3)[0] == "accept"
    greylisting.wait_log(r"greylist=defer:spf:pool\.example:new")
    greylisting.wait_log(r'greylist="pass:spf:pool\.example:known domain and recipient"')


def test_an_unauthenticated_sender_from_a_new_network_is_deferred_again(greylisting: Daemon) -> None:
    assert deliver(greylisting, "192.0.2.40", "bob@plain.example", n=1)[0] == "tempfail"
    time.sleep(DELAY_S + 0.5)
    # No SPF pass: the triplet holds the client network, and 10.9.8.0/24 is new.
    assert deliver(greylisting, "10.9.8.7", "bob@plain.example", n=2)[0] == "tempfail"
    assert deliver(greylisting, "192.0.2.40", "bob@plain.example", n=3)[0] == "accept"


def test_a_listed_client_is_rejected_naming_the_list(greylisting: Daemon) -> None:
    action, reply = deliver(greylisting, "192.0.2.66", "carol@plain.example")
    assert action == "reject"
    assert reply.startswith("554 5.7.1 ") and "bl.test" in reply, reply
    greylisting.wait_log(r"action=reject stage=rcpt ip=192\.0\.2\.66 .*dnsbl=bl\.test\(127\.0\.0\.2\)")


def test_a_query_refused_answer_is_logged_as_an_error_and_not_a_listing(greylisting: Daemon) -> None:
    action, reply = deliver(greylisting, "192.0.2.77", "dave@plain.example")
    # Greylisted like any unknown client, not rejected as listed.
    assert action == "tempfail" and reply.startswith("451 4.7.1 ") and "bl.test" not in reply, reply
    greylisting.wait_log(r"ERROR \[\d+\] dnsbl zone bl\.test answered 127\.255\.255\.254: query refused")
    greylisting.wait_log(r"dnsbl=-;refused=bl\.test\(127\.255\.255\.254\)")


def test_an_allowlisted_client_skips_greylisting(greylisting: Daemon) -> None:
    assert deliver(greylisting, "192.0.2.88", "erin@plain.example")[0] == "accept"
    greylisting.wait_log(r"greylist=skip:dnswl")


def test_authenticated_and_outbound_mail_is_never_greylisted(greylisting: Daemon) -> None:
    with greylisting.client() as c:
        r = c.session(ip="192.0.2.50", hostname="[192.0.2.50]", helo="laptop", mail_from="me@plain.example",
                      rcpts=["friend@elsewhere.example"], message=message("plain.example", 9),
                      macros={"i": "QS", "j": "mx.test", "{auth_type}": "PLAIN", "{auth_authen}": "me"})
    assert r.early is None and r.action == "accept"


def test_greylisting_state_outlives_a_restart(greylisting: Daemon) -> None:
    assert deliver(greylisting, "192.0.2.60", "frank@plain.example", n=1)[0] == "tempfail"
    assert greylisting.stop() == 0
    greylisting.start()
    time.sleep(DELAY_S + 0.5)
    assert deliver(greylisting, "192.0.2.60", "frank@plain.example", n=2)[0] == "accept"


def test_dnsbl_header_action_marks_instead_of_rejecting(milterd: Callable[..., Daemon], dns_server: Any) -> None:
    dns_server.add("66.2.0.192.bl.test", "A", "127.0.0.4")
    daemon = milterd(workers=1, dnsbl={"zones": ["bl.test=127.0.0.[2..11]*2"], "action": "header", "threshold": 2})
    with daemon.client() as c:
        neg = c.negotiate()
        assert neg.skips(mc.C.SMFIC_RCPT)     # nothing to answer at RCPT: not even sent
        r = c.session(ip="192.0.2.66", hostname="[192.0.2.66]", helo="x.example", mail_from="a@plain.example",
                      rcpts=["bob@mx.test"], message=message("plain.example", 1), macros={"i": "QH", "j": "mx.test"})
    assert r.action == "accept"
    values = [v for _, n, v in r.inserted if n == "X-DNSBL"]
    assert len(values) == 1 and "192.0.2.66 listed in bl.test(127.0.0.4)*2" in values[0], r.inserted
    auth = [v for _, n, v in r.inserted if n == "Authentication-Results"]
    assert auth and "bl.test" not in auth[0] and "dnsbl" not in auth[0]
    assert re.search(r"dnsbl=bl\.test\(127\.0\.0\.4\)\*2;score=2", daemon.log())


def test_stage_data_counts_an_aligned_verifying_dkim_signature_as_the_identity(
        milterd: Callable[..., Daemon], dns_server: Any, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from authmilter import keys
    from authmilter.dkim.sign import SigningKey, sign
    from authmilter.model import Message

    d = "signed.example"
    dns_server.add_txt(d, "v=spf1 -all")   # SPF fails everywhere: only DKIM can authenticate
    key = SigningKey(d, "ed", "ed25519-sha256", ed25519.Ed25519PrivateKey.generate(), 256, "mem")
    dns_server.add_txt(f"ed._domainkey.{d}", keys.dns_record(key.private_key))
    daemon = milterd(workers=1, store={"url": f"sqlite://{tmp_path}/state.db"},
                     greylist={"enabled": True, "delay_s": DELAY_S, "stage": "data"})
    with daemon.client() as c:
        assert not c.negotiate().skips(mc.C.SMFIC_RCPT)   # recipients are read, answered at eom

    def send(ip: str, n: int, signed: bool = True) -> mc.MilterResult:
        raw = message(d, n)
        if signed:
            raw = b"DKIM-Signature:" + sign(Message.from_bytes(raw), key,
                                            sign_headers=("From", "To", "Subject", "Date")).encode() + b"\r\n" + raw
        with daemon.client() as c:
            return c.session(ip=ip, hostname=f"[{ip}]", helo=f"mail.{d}", mail_from=f"news@{d}",
                             rcpts=["bob@mx.test"], message=raw, macros={"i": f"D{n}", "j": "mx.test"})

    first = send("198.51.100.7", 1)
    assert first.early is None and first.action == "tempfail" and first.reply.startswith("451 4.7.1 "), first.reply
    time.sleep(DELAY_S + 0.5)
    # The retry comes from another network: the DKIM domain is the identity, so it passes.
    assert send("203.0.113.9", 2).action == "accept"
    daemon.wait_log(r"greylist=defer:dkim:signed\.example:new")
    # Unsigned, the same sender from a new network is a new triplet.
    assert send("192.0.2.200", 3, signed=False).action == "tempfail"


def test_internal_hosts_are_not_greylisted_even_when_signing_is_off(milterd: Callable[..., Daemon],
                                                                     tmp_path: Path) -> None:
    daemon = milterd(workers=1, store={"url": f"sqlite://{tmp_path}/state.db"},
                     signing={"enabled": False, "internal_hosts": ["10.20.0.0/16"]},
                     greylist={"enabled": True, "delay_s": DELAY_S})
    assert deliver(daemon, "10.20.1.2", "app@plain.example")[0] == "accept"
    daemon.wait_log(r"greylist=skip:internal-host")
    assert deliver(daemon, "10.21.1.2", "app@plain.example")[0] == "tempfail"


def test_sender_id_is_reported_for_spf2_pra_domains_and_never_decides(milterd: Callable[..., Daemon],
                                                                       dns_server: Any) -> None:
    dns_server.add_txt("sid.example", "spf2.0/pra ip4:192.0.2.0/24 -all")
    dns_server.add_txt("nosid.example", "v=spf1 ip4:192.0.2.0/24 -all")
    daemon = milterd(workers=1, verify={"sender_id": True})

    def ar(domain: str, ip: str) -> tuple[str, str]:
        with daemon.client() as c:
            r = c.session(ip=ip, hostname=f"[{ip}]", helo=f"mail.{domain}", mail_from=f"a@{domain}",
                          rcpts=["bob@mx.test"], message=message(domain, 1), macros={"i": "S1", "j": "mx.test"})
        return str(r.action), " ".join(next(v for _, n, v in r.inserted if n == "Authentication-Results").split())

    action, header = ar("sid.example", "192.0.2.9")
    assert action == "accept" and "sender-id=pass header.from=alice@sid.example" in header, header
    action, header = ar("sid.example", "198.51.100.9")
    assert action == "accept" and re.search(r"sender-id=fail (reason=\"[^\"]*\" )?header\.from=alice@sid\.example",
                                            header), header
    action, header = ar("nosid.example", "192.0.2.9")
    assert action == "accept" and "sender-id" not in header, header
