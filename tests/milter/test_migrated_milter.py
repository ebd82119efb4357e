"""Imported settings take effect in the running milter: the [policy]/[verify] sections that
import-opendmarc and import-policyd-spf wrote, loaded by `authmilter run`, answered over
its real socket, with DNS from the loopback server.

* OpenDMARC's default (RejectFailures false): a p=reject failure is delivered, labelled;
  the same file with RejectFailures true rejects it.
* policyd-spf's default (HELO_reject = Fail, Mail_From_reject = Fail): a failing HELO or
  MAIL FROM identity is refused with 550 5.7.23; TestOnly = 0 refuses nothing.
"""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from milterclient import MilterClient

AUTHMILTER = str(Path(sys.executable).with_name("authmilter"))
DATA = Path(__file__).resolve().parents[1] / "data" / "migrate"
AUTHSERV = "mx.test"


def imported(tmp_path: Path, command: str, text: str) -> dict[str, Any]:
    """The [policy] and [verify] sections *command* writes for a config file holding *text*."""
    src = tmp_path / f"{command}.conf"
    src.write_text(text)
    out = tmp_path / f"{command}.toml"
    r = subprocess.run([AUTHMILTER, command, str(src), "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    data = tomllib.loads(out.read_text())
    return {k: data[k] for k in ("policy", "verify") if k in data}


def start(milterd, tmp_path: Path, name: str, settings: dict[str, Any]):  # type: ignore[no-untyped-def]
    """A daemon of its own (directory and socket) running on *settings*."""
    d = tmp_path / name
    d.mkdir()
    return milterd(workers=1, directory=d, socket=f"unix:{d}/m.sock", **settings)


def message(domain: str) -> bytes:
    return (f"From: A <alice@{domain}>\r\nTo: bob@mx.test\r\nSubject: migrated\r\n"
            f"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m@{domain}>\r\n\r\nHello.\r\n").encode()


def send(daemon, domain: str, qid: str, *, helo: str = "mail.sender.example", mail_from: str = ""):  # type: ignore[no-untyped-def]
    with MilterClient(daemon.address, timeout=30) as c:
        return c.session(ip="192.0.2.10", hostname="client.example", helo=helo,
                         mail_from=mail_from or f"bounce@{domain}", rcpts=["bob@mx.test"], message=message(domain),
                         macros={"i": qid, "j": AUTHSERV})


def answer(result) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """(stage, SMTP reply) as the MTA would give it: "rcpt" when RCPT was refused, else "eom"."""
    if result.early == "rcpt":
        cmd, args = result.raw[0]
        assert cmd == "y", (cmd, args)         # SMFIR_REPLYCODE
        return "rcpt", f"{args['smtpcode']} {args['text']}"
    return "eom", result.reply or ""


def ar_of(result) -> str:  # type: ignore[no-untyped-def]
    (value,) = result.headers_named("Authentication-Results")
    return value


def _dmarc_conf(tmp_path: Path, extra: str = "") -> str:
    psl = tmp_path / "psl.dat"
    psl.write_text("com\norg\nexample\n")
    return (DATA / "opendmarc.conf").read_text().replace("/usr/share/publicsuffix/public_suffix_list.dat",
                                                         str(psl)) + extra


def test_opendmarc_default_delivers_a_p_reject_failure_and_reject_failures_rejects_it(milterd, dns_server, tmp_path):
    d = "migrated-dmarc.example.org"
    dns_server.add_txt(d, "v=spf1 -all")
    dns_server.add_txt(f"_dmarc.{d}", "v=DMARC1; p=reject")
    dns_server.add_txt("mail.sender.example", "v=spf1 +all")

    default = imported(tmp_path, "import-opendmarc", _dmarc_conf(tmp_path))
    assert default["policy"]["on_dmarc_reject"] == "accept"
    daemon = start(milterd, tmp_path, "default", default)
    r = send(daemon, d, "4DEFAULT")
    assert r.action == "accept", r.reply
    assert "dmarc=fail" in ar_of(r) and f"header.from={d}" in ar_of(r)
    assert daemon.wait_log(r"4DEFAULT: action=accept .*dmarc=fail:p=reject")

    rejecting = imported(tmp_path, "import-opendmarc", _dmarc_conf(tmp_path, "RejectFailures true\n"))
    daemon = start(milterd, tmp_path, "rejecting", rejecting)
    r = send(daemon, d, "4REJECT")
    assert r.action in ("reject", "reply") and r.reply is not None and r.reply.startswith("550 5.7.1"), r.reply
    assert d in r.reply


def test_policyd_spf_default_rejects_helo_and_mail_from_fail(milterd, dns_server, tmp_path):
    d = "migrated-spf.example.org"            # no DMARC record: SPF alone decides
    dns_server.add_txt(d, "v=spf1 -all")
    dns_server.add_txt("ok.example.org", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add_txt("mail.sender.example", "v=spf1 +all")
    dns_server.add_txt("bad-helo.example.org", "v=spf1 -all")

    settings = imported(tmp_path, "import-policyd-spf", (DATA / "policyd-spf.conf").read_text())
    assert settings["policy"]["spf_reject_stage"] == "rcpt"
    daemon = start(milterd, tmp_path, "spf", settings)
    # MAIL FROM fails, HELO passes: refused at RCPT TO, before the message, as policyd-spf did
    stage, reply = answer(send(daemon, d, "4MFROM"))
    assert stage == "rcpt" and reply.startswith("550 5.7.23"), reply
    assert daemon.wait_log(rf"4MFROM: action=reject stage=rcpt .*spf fail for MAIL FROM {d}")
    # HELO fails, MAIL FROM passes
    stage, reply = answer(send(daemon, "ok.example.org", "4HELO", helo="bad-helo.example.org"))
    assert stage == "rcpt" and reply.startswith("550 5.7.23"), reply
    assert daemon.wait_log(r"4HELO: action=reject stage=rcpt .*spf fail for HELO bad-helo.example.org")

    # the same rules at end-of-message (spf_reject_stage = "data")
    settings["policy"]["spf_reject_stage"] = "data"
    eom = start(milterd, tmp_path, "spf-data", settings)
    stage, reply = answer(send(eom, d, "4EOM"))
    assert stage == "eom" and reply.startswith("550 5.7.23"), reply

    r = send(daemon, "ok.example.org", "4PASS")
    assert r.action == "accept", r.reply
    assert r.headers_named("Received-SPF")                           # Header_Type = SPF carried

    testing = imported(tmp_path, "import-policyd-spf", (DATA / "policyd-spf.conf").read_text()
                       .replace("TestOnly = 1", "TestOnly = 0"))
    daemon = start(milterd, tmp_path, "testonly", testing)
    r = send(daemon, d, "4TESTONLY")
    assert r.action == "accept", r.reply
    assert "spf=fail" in ar_of(r)
