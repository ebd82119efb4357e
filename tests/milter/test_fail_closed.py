"""Fail closed by construction (hardening issue, defects 2 and 7), over the real socket.

Whatever the MTA passes, a callback that fails or never runs ends in the configured
``on_internal_error`` answer at end-of-message with one log line: never local submission
(no checks, eligible for signing), never a hang, never a retry loop on our own bug.
"""
from __future__ import annotations

import re

import pytest
from milterclient import MilterClient
from miltertest import constants as C

MSG = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: test\r\n"
       b"Message-ID: <1@example.org>\r\n\r\nHello.\r\n")
NOT_UTF8 = b"\xff\xfe".decode("utf-8", "surrogateescape")   # the client sends the raw bytes


def _session(c: MilterClient, qid: str, **kw):  # type: ignore[no-untyped-def]
    return c.session(ip=kw.pop("ip", "192.0.2.10"), mail_from=kw.pop("mail_from", "alice@example.org"),
                     rcpts=["bob@example.net"], message=kw.pop("message", MSG),
                     macros={"i": qid, "j": "mx.test"}, **kw)


def _one_line(daemon, qid: str) -> str:  # type: ignore[no-untyped-def]
    assert daemon.wait_log(rf"\] {qid}: action=")
    lines = [line for line in daemon.log().splitlines() if f"] {qid}: action=" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("case,kw", [
    ("hostname", {"hostname": f"h{NOT_UTF8}.example"}),
    ("helo", {"helo": f"h{NOT_UTF8}.example"}),
    ("mail_from", {"mail_from": f"a{NOT_UTF8}@example.org"}),
    ("header_name", {"message": f"X-N{NOT_UTF8}: v\r\n".encode("utf-8", "surrogateescape") + MSG}),
])
def test_undecodable_input_tempfails_never_local_submission(milterd, case, kw):
    daemon = milterd(workers=1, signing={"enabled": False})
    qid = f"4UNDEC{case.upper().replace('_', '')}"
    with MilterClient(daemon.address, timeout=20) as c:
        r = _session(c, qid, **kw)
    assert r.action == "tempfail", (case, r.action, r.reply)
    assert r.reply and r.reply.startswith("451 4.3.0"), r.reply
    assert not r.inserted and not r.changed            # nothing checked, nothing signed
    line = _one_line(daemon, qid)
    assert "action=tempfail" in line and "dir=outbound" not in line and "internal error" in line
    assert "Traceback" not in daemon.log()


def test_undecodable_input_accepts_when_configured_but_never_signs(milterd):
    daemon = milterd(workers=1, policy={"on_internal_error": "accept"})
    with MilterClient(daemon.address, timeout=20) as c:
        r = _session(c, "4UNDECACC", hostname=f"h{NOT_UTF8}.example")
    assert r.action == "accept" and not r.inserted and not r.changed
    assert "dir=outbound" not in _one_line(daemon, "4UNDECACC")


def test_the_next_session_on_the_worker_is_unaffected(milterd):
    daemon = milterd(workers=1)
    with MilterClient(daemon.address, timeout=20) as c:
        bad = _session(c, "4UNDECA", hostname=f"h{NOT_UTF8}.example")
    with MilterClient(daemon.address, timeout=20) as c:
        good = _session(c, "4UNDECB")
    assert bad.action == "tempfail"
    assert good.action == "accept" and good.headers_named("Authentication-Results")


def test_mail_before_connect_is_answered_tempfail_with_one_log_line(milterd):
    daemon = milterd(workers=1)
    with MilterClient(daemon.address, timeout=20) as c:
        c.negotiate()
        c.mail("alice@example.org", macros={"i": "4NOCONN"})
        for name, value in (("From", " alice@example.org"), ("Subject", " x")):
            c.header(name, value)
        c.body(b"Hello.\r\n")
        r = c.eom(macros={"i": "4NOCONN"})
    assert r.action == "tempfail" and r.reply.startswith("451 4.3.0")
    line = _one_line(daemon, "4NOCONN")
    assert "dir=outbound" not in line and "no connect information" in line
    assert "Traceback" not in daemon.log()


def test_reply_never_shows_python_errors(milterd):
    daemon = milterd(workers=1, env={"AUTHMILTER_TEST_FAULT": "X-Test-Fault"})
    with MilterClient(daemon.address, timeout=20) as c:
        r = _session(c, "4FAULTTXT", message=b"X-Test-Fault: yes\r\n" + MSG)
    assert r.action == "tempfail"
    assert not re.search(r"Error|Exception|Traceback|fault injected", r.reply), r.reply
    assert "RuntimeError" in _one_line(daemon, "4FAULTTXT")


def test_negotiated_steps_unchanged(milterd):
    daemon = milterd(workers=1)
    with MilterClient(daemon.address) as c:
        neg = c.negotiate()
    assert neg.protocol & C.SMFIP_NR_HDR and neg.protocol & C.SMFIP_NR_CONN
