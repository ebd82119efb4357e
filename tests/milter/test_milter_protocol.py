"""The milter conversation over the real socket: negotiation, one message, errors."""
from __future__ import annotations

from milterclient import MilterClient
from miltertest import constants as C

MSG = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: test\r\n"
       b"Message-ID: <1@example.org>\r\n\r\nHello.\r\n")


def session(c: MilterClient, qid: str, message: bytes = MSG, ip: str | None = "192.0.2.10", **macros: str):  # type: ignore[no-untyped-def]
    return c.session(ip=ip, mail_from="alice@example.org", rcpts=["bob@example.net"], message=message,
                     macros={"i": qid, "j": "mx.mta.test", **macros})


def log_lines(daemon, qid: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [line for line in daemon.log().splitlines() if f"] {qid}: " in line]


def test_negotiation_asks_only_for_what_it_uses(milterd):
    daemon = milterd(workers=1)
    with daemon.client() as c:
        neg = c.negotiate()
    # Recording steps need no answer: the MTA must not wait for one (halves round trips).
    for bit in (C.SMFIP_NR_CONN, C.SMFIP_NR_HELO, C.SMFIP_NR_MAIL, C.SMFIP_NR_HDR, C.SMFIP_NR_BODY):
        assert neg.protocol & bit, f"no-reply bit {bit:#x} missing in {neg.protocol:#x}"
    # Steps we never look at are not sent at all (no check uses the recipients: skipping
    # RCPT saves the MTA two packets per recipient, the command and its macros).
    for bit in (C.SMFIP_NORCPT, C.SMFIP_NODATA, C.SMFIP_NOUNKNOWN, C.SMFIP_NOEOH):
        assert neg.protocol & bit, f"skip bit {bit:#x} missing in {neg.protocol:#x}"
    # Headers exactly as received, leading whitespace included.
    assert neg.protocol & C.SMFIP_HDR_LEADSPC
    assert not neg.protocol & (C.SMFIP_NOCONNECT | C.SMFIP_NOHELO | C.SMFIP_NOMAIL | C.SMFIP_NOHDRS | C.SMFIP_NOBODY)
    assert neg.actions == C.SMFIF_ADDHDRS | C.SMFIF_CHGHDRS | C.SMFIF_QUARANTINE | C.SMFIF_SETSYMLIST
    assert {"j", "{daemon_name}"} <= set(neg.symlists["connect"])
    assert {"i", "{auth_type}", "{auth_authen}"} <= set(neg.symlists["envfrom"])
    assert "i" in neg.symlists["eom"]


def test_message_gets_authentication_results_and_one_log_line(milterd):
    daemon = milterd(workers=1)
    with daemon.client() as c:
        result = session(c, "4ABCDEF12")
    assert result.action == "accept"
    assert result.early is None
    index, name, value = result.inserted[0]
    assert (index, name) == (0, "Authentication-Results")
    assert value.startswith(" mx.test;"), value
    assert daemon.wait_log(r"\] 4ABCDEF12: ")
    lines = log_lines(daemon, "4ABCDEF12")
    assert len(lines) == 1, lines
    assert "action=accept" in lines[0] and " INFO " in lines[0]


def test_several_messages_on_one_connection(milterd):
    daemon = milterd(workers=1)
    with daemon.client() as c:
        first = session(c, "4FIRST")
        c.helo("client.example")
        second = c.message(mail_from="carol@example.org", rcpts=["dave@example.net"], message=MSG,
                           macros={"i": "4SECOND"})
    assert first.action == second.action == "accept"
    assert second.headers_named("Authentication-Results")
    assert daemon.wait_log(r"\] 4SECOND: ")
    assert len(log_lines(daemon, "4FIRST")) == len(log_lines(daemon, "4SECOND")) == 1


def test_queue_id_read_at_eom_when_mail_stage_had_none(milterd):
    daemon = milterd(workers=1)
    with daemon.client() as c:
        c.negotiate()
        c.connect(ip="192.0.2.10")
        c.helo("client.example")
        result = c.message(mail_from="alice@example.org", rcpts=["bob@example.net"], message=MSG)
        c.helo("client.example")
        c.mail("alice@example.org")
        c.rcpt("bob@example.net")
        c.header("From", " alice@example.org")
        c.eoh()
        c.body(b"x\r\n")
        late = c.eom(macros={"i": "4EOMONLY"})
    assert result.action == late.action == "accept"
    assert daemon.wait_log(r"\] 4EOMONLY: action=")
    assert daemon.wait_log(r"\] NOQUEUE: action=")


def test_forged_authentication_results_deleted_from_the_highest_index(milterd):
    forged = b"".join(f"Authentication-Results: mx.test; spf=pass (forged {n})\r\n".encode() for n in range(1, 4))
    message = forged + b"Authentication-Results: other.example; dkim=pass\r\n" + MSG
    daemon = milterd(workers=1)
    with daemon.client() as c:
        result = session(c, "4FORGED", message=message)
    deletions = [(i, n, v) for i, n, v in result.changed if n.lower() == "authentication-results"]
    # CVE-2022-48521: forward order under Postfix skips every second header.
    assert [i for i, _, _ in deletions] == [3, 2, 1]
    assert all(v == "" for _, _, v in deletions)
    headers = [(n.decode(), v.decode()) for n, v in
               [line.split(b":", 1) for line in message.split(b"\r\n\r\n")[0].split(b"\r\n")]]
    after = result.apply(headers)
    kept = [v for n, v in after if n.lower() == "authentication-results"]
    assert any("other.example" in v for v in kept)
    assert not any("forged" in v for v in kept)


def test_internal_error_tempfails_and_the_worker_survives(milterd):
    daemon = milterd(workers=1, env={"AUTHMILTER_TEST_FAULT": "X-Test-Fault"})
    with daemon.client() as c:
        bad = session(c, "4FAULT1", message=b"X-Test-Fault: yes\r\n" + MSG)
        c.helo("client.example")
        good = c.message(mail_from="alice@example.org", rcpts=["bob@example.net"], message=MSG,
                         macros={"i": "4AFTERFAULT"})
    assert bad.action == "tempfail"
    assert bad.reply is not None and bad.reply.startswith("451 4.3.0")
    assert not bad.inserted and not bad.changed
    assert good.action == "accept" and good.headers_named("Authentication-Results")
    # one log line for the message: the verdict and where the fault was
    assert daemon.wait_log(r"ERROR \[\d+\] 4FAULT1: action=tempfail dir=unknown reason=\"internal error in eom: RuntimeError")
    assert len([line for line in daemon.log().splitlines() if "] 4FAULT1: " in line]) == 1
    assert "killed by signal" not in daemon.log()


def test_internal_error_accepts_when_configured(milterd):
    daemon = milterd(workers=1, policy={"on_internal_error": "accept"}, env={"AUTHMILTER_TEST_FAULT": "X-Test-Fault"})
    with daemon.client() as c:
        result = session(c, "4FAULT2", message=b"X-Test-Fault: yes\r\n" + MSG)
    assert result.action == "accept"
    assert result.reply is None
    assert daemon.wait_log(r"\] 4FAULT2: action=accept dir=unknown reason=\"internal error in eom")


def test_non_smtp_submission_without_client_address_is_outbound(milterd):
    """sendmail(1) via non_smtpd_milters: no client IP; RCPT is never answered (it is
    not even asked for), since non-SMTP mail must not fail at RCPT."""
    daemon = milterd(workers=1)
    with daemon.client() as c:
        neg = c.negotiate()
        assert neg.protocol & C.SMFIP_NORCPT
        result = session(c, "4LOCAL", ip=None, hostname="localhost")
    assert result.action == "accept"
    assert daemon.wait_log(r"\] 4LOCAL: action=accept dir=outbound")
    assert not result.headers_named("Authentication-Results")


def test_daemon_name_macro_reaches_the_pipeline(milterd):
    """With signing on, the submission daemon's mail is outbound (signed: covered in
    test_signing_milter); verify-only, a daemon name is no reason to skip the checks."""
    daemon = milterd(workers=1)
    with daemon.client() as c:
        session(c, "4SUBMIT", **{"{daemon_name}": "ORIGINATING"})
    assert daemon.wait_log(r"\] 4SUBMIT: action=accept dir=inbound ")


def test_sasl_authenticated_client_is_outbound(milterd):
    daemon = milterd(workers=1)
    with daemon.client() as c:
        session(c, "4AUTH", **{"{auth_type}": "PLAIN", "{auth_authen}": "alice@example.org"})
    assert daemon.wait_log(r"\] 4AUTH: action=accept dir=outbound via=authenticated")


def test_mta_without_leading_space_support(milterd):
    """An MTA that cannot send header leading space still gets a proper header back."""
    daemon = milterd(workers=1)
    with daemon.client() as c:
        neg = c.negotiate(protocol=C.SMFI_V6_PROT & ~C.SMFIP_HDR_LEADSPC)
        assert not neg.protocol & C.SMFIP_HDR_LEADSPC
        result = session(c, "4NOLEAD")
    value = result.headers_named("Authentication-Results")[0]
    assert value.startswith("mx.test;"), "without LEADSPC the MTA adds the space itself"


def test_ipv6_and_mapped_ipv4_clients(milterd):
    daemon = milterd(workers=1)
    with daemon.client() as c:
        six = session(c, "4V6", ip="2001:db8::25")
    with daemon.client() as c:
        mapped = session(c, "4MAPPED", ip="::ffff:192.0.2.77")
    assert six.action == mapped.action == "accept"
    assert daemon.wait_log(r"\] 4V6: .*ip=2001:db8::25")
    assert daemon.wait_log(r"\] 4MAPPED: .*ip=192\.0\.2\.77")
