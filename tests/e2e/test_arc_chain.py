"""Two authmilters chained through two real Postfix instances (issue 12, tests).

A p=reject author (author.test) sends a signed message to a mailing list host
(lists.list.test: Postfix + authmilter, seal_resubmitted on). Its inbound pass records
spf/dkim/dmarc=pass. The "list software" (this test) adds a footer and List-Id and
re-injects the message with sendmail(1) for u@final.test: authmilter DKIM-signs it for
list.test, then seals ARC i=1 with the inbound Authentication-Results as AAR, and the list
Postfix relays it to the final MX (mx.final.test: Postfix + authmilter). There the
author's signature fails (the footer), DMARC fails, ARC passes, and:

* list.test is a trusted sealer: delivered, dmarc=fail with policy.dmarc=none;
* no trust, on_dmarc_reject = "evidence" (default): held (quarantine);
* no trust, on_dmarc_reject = "reject": refused with 550 5.7.1 at the final MX.

Own knot, Postfixes and authmilters (the session's e2e world is left alone). SRS and
the bounce path are not part of this file (issue 12 item 3 is tested with SRS).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import dkim
import pytest
from support import require

from authmilter.authresults import parse_authres

from .conftest import SENDER_IP, _authmilter_exe
from .harness import (
    KNOTD,
    POSTFIX,
    Authmilter,
    Knot,
    Postfix,
    Zone,
    dkim_sign,
    generate_key,
    header_values,
    make_message,
    wait_for,
    write_private,
)

pytestmark = pytest.mark.e2e

LIST_ID = "lists.list.test"
FINAL_ID = "mx.final.test"
FINAL_RCPT = "u@final.test"
HELO = "mail.author.test"


class ChainPostfix(Postfix):
    """The harness Postfix with its own host name and a few main.cf/master.cf additions."""

    def __init__(self, base: Path, milter: str, hostname: str, main: str = "", master: str = "") -> None:
        super().__init__(base, milter)
        self.hostname, self.extra_main, self.extra_master = hostname, main, master

    def _write(self) -> None:
        super()._write()
        with open(self.config_dir / "main.cf", "a") as fh:      # later lines win in main.cf
            fh.write(f"myhostname = {self.hostname}\n{self.extra_main}")
        with open(self.config_dir / "master.cf", "a") as fh:
            fh.write(self.extra_master)


class Chain:
    def __init__(self, base: Path, knot: Knot, lists: ChainPostfix, list_milter: Authmilter,
                 final: ChainPostfix, final_milter: Authmilter) -> None:
        self.base, self.knot = base, knot
        self.lists, self.list_milter, self.final, self.final_milter = lists, list_milter, final, final_milter


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    require(sys.platform.startswith("linux") and os.geteuid() == 0, "needs root on Linux (Postfix)")
    for tool in (POSTFIX, KNOTD):
        require(os.access(tool, os.X_OK), f"{tool} missing (make test-deps installs postfix knot)")
    exe = _authmilter_exe()
    require(bool(exe), "the authmilter console script is not installed (make deps)")
    base = Path(tempfile.mkdtemp(prefix="authmilter-arc-"))
    base.chmod(0o755)
    author = generate_key("author.test", "s1")
    list_dkim, list_arc = generate_key("list.test", "dkim"), generate_key("list.test", "arc")
    keydir = base / "keys"
    keydir.mkdir(mode=0o700)
    for k in (list_dkim, list_arc):
        write_private(keydir / f"{k.selector}.private", k.private)
    test = Zone("test")
    test.txt("author.test", f"v=spf1 ip4:{SENDER_IP} -all")
    test.txt("_dmarc.author.test", "v=DMARC1; p=reject")
    test.txt("list.test", "v=spf1 ip4:127.0.0.1 -all")
    for k in (author, list_dkim, list_arc):
        test.txt(k.name, k.record)
    test.add("mail.author.test", "A", SENDER_IP)
    knot = Knot(base, [Zone("."), test])
    etc = base / "etc"
    etc.mkdir()
    (etc / "KeyTable").write_text(f"dkim list.test:dkim:{keydir / 'dkim.private'}\n"
                                  f"arc list.test:arc:{keydir / 'arc.private'}\n")
    (etc / "SigningTable").write_text("* dkim\n")
    (etc / "SealingTable").write_text("* arc\n")
    dns = {"servers": [f"127.0.0.1:{knot.port}"], "timeout_s": 1.0, "message_budget_s": 4.0}
    (base / "list").mkdir()
    (base / "final").mkdir()
    for sub in ("list", "final"):
        (base / sub).chmod(0o755)
    list_milter = Authmilter(base / "list", exe, {
        "authserv_id": LIST_ID, "workers": 1, "dns": dns,
        "signing": {"key_table": str(etc / "KeyTable"), "signing_table": f"refile:{etc / 'SigningTable'}"},
        "arc": {"sealing_table": f"file:{etc / 'SealingTable'}"},
    })
    final_milter = Authmilter(base / "final", exe, {
        "authserv_id": FINAL_ID, "workers": 1, "dns": dns, "signing": {"enabled": False},
        "arc": {"trusted_sealers": ["list.test"]},
    })
    final = ChainPostfix(base / "final", final_milter.postfix_socket, FINAL_ID,
                         main="virtual_mailbox_domains = inbox.test final.test\n")
    lists = ChainPostfix(base / "list", list_milter.postfix_socket, LIST_ID,
                         main=f"transport_maps = inline:{{ final.test=smtp:[127.0.0.1]:{final.smtp_port} }}\n",
                         master="smtp      unix  -       -       n       -       -       smtp\n")
    started: list = []
    try:
        for part in (knot, list_milter, final_milter, final, lists):
            started.insert(0, part)
            part.start()
        yield Chain(base, knot, lists, list_milter, final, final_milter), author
    finally:
        for part in started:
            part.stop()
        logs = tmp_path_factory.mktemp("arc-chain-logs")
        for sub in ("list", "final"):
            for name in ("maillog", "authmilter.log", "authmilter.toml"):
                if (base / sub / name).is_file():
                    shutil.copy(base / sub / name, logs / f"{sub}-{name}")
        shutil.rmtree(base, ignore_errors=True)


def _through_the_list(chain: Chain, author, token: str) -> None:  # type: ignore[no-untyped-def]
    """The author's mail reaches the list host; the list software re-injects it."""
    raw = dkim_sign(make_message(token, from_="news@author.test", to="members@list.test",
                                 subject="monthly statement"), author)
    reply = chain.lists.smtp(raw, mail_from="bounce@author.test", helo=HELO, client_name=HELO)
    assert reply.accepted, reply
    received = chain.lists.wait_delivered(token)
    ours = [parse_authres(v) for v in header_values(received, "Authentication-Results")]
    (ar,) = [p for p in ours if p.authserv_id == LIST_ID]
    assert {r.method: r.result for r in ar.results}["dmarc"] == "pass"
    # The list software: drop delivery headers, add List-Id and a footer, send it on.
    head, _, body = received.replace(b"\r\n", b"\n").partition(b"\n\n")
    lines = [ln for ln in head.split(b"\n") if not ln.lower().startswith((b"return-path:", b"delivered-to:"))]
    resent = b"\n".join(lines + [b"List-Id: <members.list.test>"]) + b"\n\n" + body + b"--\nmembers list footer\n"
    chain.lists.sendmail(resent, "members-bounces@list.test", [FINAL_RCPT])
    chain.lists.flush()


def _final_results(delivered: bytes) -> dict[str, list]:
    (ar,) = [p for p in (parse_authres(v) for v in header_values(delivered, "Authentication-Results"))
             if p.authserv_id == FINAL_ID]
    out: dict[str, list] = {}
    for r in ar.results:
        out.setdefault(r.method, []).append(r)
    return out


def test_a_trusted_list_host_gets_a_forwarded_p_reject_message_delivered(chain):
    c, author = chain
    token = uuid.uuid4().hex[:20]
    _through_the_list(c, author, token)
    delivered = c.final.wait_delivered(token)
    res = _final_results(delivered)
    dkim_by = {r.prop("header.d"): r.result for r in res["dkim"]}
    assert dkim_by == {"author.test": "fail", "list.test": "pass"}, res["dkim"]
    (dmarc,) = res["dmarc"]
    assert dmarc.result == "fail" and dmarc.prop("policy.dmarc") == "none"
    assert "arc=pass sealed by list.test" in dmarc.reason
    assert [r.result for r in res["arc"]] == ["pass"]
    # The set the list host added: i=1, cv=none, its AAR is its inbound verdict, and
    # dkimpy agrees the chain holds.
    (seal,) = header_values(delivered, "ARC-Seal")
    assert "i=1" in seal and "cv=none" in seal and "d=list.test" in seal
    (aar,) = header_values(delivered, "ARC-Authentication-Results")
    assert aar.startswith(f"i=1; {LIST_ID};") and "dmarc=pass" in aar
    cv, _, reason = dkim.arc_verify(delivered.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
                                    dnsfunc=c.knot.dkim_dnsfunc())
    assert cv == b"pass", reason
    assert "override=\"trusted_forwarder:arc=pass sealed by list.test\"" in c.final_milter.log_tail()


def test_without_trust_evidence_holds_it_and_reject_refuses_it(chain):
    c, author = chain
    c.final_milter.reload({"arc": {"trusted_sealers": []}})
    try:
        token = uuid.uuid4().hex[:20]
        _through_the_list(c, author, token)
        held = wait_for(lambda: [m for m in c.final.queue() if m.get("queue_name") == "hold"], "a held message")
        assert held and not c.final.deliveries(token)
        assert "override=\"local_policy:indirect flow: ARC chain (1 set), List-Id header" in c.final_milter.log_tail()
        for m in held:
            c.final.delete(m["queue_id"])

        c.final_milter.reload({"arc": {"trusted_sealers": []}, "policy": {"on_dmarc_reject": "reject"}})
        token = uuid.uuid4().hex[:20]
        _through_the_list(c, author, token)
        wait_for(lambda: "550 5.7.1" in c.lists.log_text() and "author.test" in c.lists.log_text(),
                 "the final MX's 550 in the list host's log")
        assert not c.final.deliveries(token)
    finally:
        c.final_milter.reload()
