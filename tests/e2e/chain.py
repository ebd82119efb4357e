"""The forwarding world of issue 12: authmilters chained through real Postfix instances.

Every host is its own Postfix on loopback ports (names under *.test); all of them and one
knotd are started by the module fixture ``chain`` (``chain_world``; a test module imports it):

- ``mx.author.test``: the author's domain (author.test: SPF for the remote sender address,
  DMARC p=reject, DKIM key). A Postfix without milter that only receives into its Maildir,
  standing for the author's mailbox, where bounces must come back.
- ``lists.list.test``: a list / forwarding host. Its authmilter signs (DKIM list.test),
  seals re-submitted mail (ARC list.test) and does SRS in the milter (domain
  ``srs.list.test``, local_domains list.test and inbox.test, where its Maildir is). It relays final.test and author.test over
  SMTP. srs.list.test is one of its virtual mailbox domains: a bounce whose SRS recipient
  the milter did not replace would land in its own Maildir. Its SRS line for main.cf
  (internal_mail_filter_classes) is the one ``authmilter check-config`` prints.
- ``mx.final.test``: the final MX, authmilter verifying only (list.test a trusted sealer).
  ``gone@final.test`` is accepted, then its delivery fails (a pipe exiting EX_NOUSER), so
  Postfix sends a DSN to the envelope sender; the SRS domains are relayed back to their
  forwarders.
- ``mx.fwd.test``: forwards through ``virtual_alias_maps`` (alias@fwd.test and
  bounce-me@fwd.test to final.test). Postfix expands aliases after the milters, so here SRS
  comes from Postfix's canonical maps querying authmilter's socketmap; the main.cf lines
  are the ones ``authmilter check-config`` prints for this Postfix. This Postfix has no
  milter, so every rewrite seen on its mail is the socketmap's.
"""
from __future__ import annotations

import os
import pwd
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from infra.procs import stop_all
from support import require

from authmilter.authresults import parse_authres
from authmilter.srs import SrsCodec

from .conftest import SENDER_IP, _authmilter_exe
from .harness import (
    KNOTD,
    POSTCONF,
    POSTFIX,
    Authmilter,
    Knot,
    Postfix,
    TestKey,
    Zone,
    dkim_sign,
    generate_key,
    header_values,
    make_message,
    run,
    write_private,
)

AUTHOR_ID = "mx.author.test"
LIST_ID = "lists.list.test"
FINAL_ID = "mx.final.test"
FWD_ID = "mx.fwd.test"
FINAL_RCPT = "u@final.test"
GONE_RCPT = "gone@final.test"          # accepted by the final MX, then bounced
REFUSED_RCPT = "refused@final.test"    # refused by the final MX at RCPT (the sender's host bounces)
HELO = "mail.author.test"
LIST_SRS = "srs.list.test"
FWD_SRS = "srs.fwd.test"
LIST_SECRET = "list host srs secret"
FWD_SECRET = "fwd host srs secret"


class ChainPostfix(Postfix):
    """The harness Postfix with its own host name and a few main.cf/master.cf additions
    (later lines win in main.cf)."""

    SMTP_CLIENT = "smtp      unix  -       -       n       -       -       smtp\n"

    def __init__(self, base: Path, milter: str, hostname: str, main: str = "", master: str = "") -> None:
        super().__init__(base, milter)
        self.hostname, self.extra_main, self.extra_master = hostname, main, master

    def _write(self) -> None:
        super()._write()
        with open(self.config_dir / "main.cf", "a") as fh:
            fh.write(f"myhostname = {self.hostname}\n{self.extra_main}")
        with open(self.config_dir / "master.cf", "a") as fh:
            fh.write(self.extra_master)

    def relay(self, routes: dict[str, ChainPostfix], local: str = "") -> None:
        """Relay each domain (or address) to another host's SMTP port; *local* extra
        transport_maps entries (e.g. an ``error:`` one) go first."""
        entries = [local] if local else []
        entries += [f"{dest}=smtp:[127.0.0.1]:{host.smtp_port}" for dest, host in routes.items()]
        self.extra_main += f"transport_maps = inline:{{ {', '.join(entries)} }}\n"
        self.extra_master = self.SMTP_CLIENT

    def postconf(self, *lines: str) -> None:
        """`postconf -e` then `postfix reload`, as an admin pastes lines into main.cf."""
        run([POSTCONF, "-c", str(self.config_dir), "-e", *lines])
        run([POSTFIX, "-c", str(self.config_dir), "reload"])


@dataclass
class Chain:
    base: Path
    knot: Knot
    author: TestKey                    # author.test's DKIM key (the test signs as the author)
    sink: ChainPostfix                 # mx.author.test
    lists: ChainPostfix
    list_milter: Authmilter
    final: ChainPostfix
    final_milter: Authmilter
    fwd: ChainPostfix
    fwd_milter: Authmilter
    list_srs_lines: list[str]          # the SRS lines check-config printed for lists.list.test
    fwd_srs_lines: list[str]           # ... and for mx.fwd.test

    list_codec = SrsCodec(LIST_SRS, (LIST_SECRET.encode(),))
    fwd_codec = SrsCodec(FWD_SRS, (FWD_SECRET.encode(),))


def _srs_secret(path: Path, secret: str, owner: int = -1) -> str:
    path.write_text(secret + "\n")
    path.chmod(0o600)
    os.chown(path, owner, -1)
    return str(path)


def _host_dir(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o755)
    return path


SRS_MAIN_CF = ("sender_canonical_", "recipient_canonical_", "internal_mail_filter_classes")


def check_config_srs_lines(milter: Authmilter, postfix: Postfix) -> list[str]:
    """The main.cf lines for SRS that `authmilter check-config` prints for *postfix* (the
    milter lines themselves are the harness's)."""
    out = run([milter.exe, "check-config", "-c", str(milter.config), "--postfix-config", str(postfix.config_dir)])
    return [ln for ln in out.stdout.decode().splitlines() if ln.startswith(SRS_MAIN_CF)]


@pytest.fixture(scope="module", name="chain")
def chain_world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    require(sys.platform.startswith("linux") and os.geteuid() == 0, "needs root on Linux (Postfix)")
    for tool in (POSTFIX, POSTCONF, KNOTD):
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
    # The forwarders reach the final MX from 127.0.0.1: their own and their SRS domains
    # authorise it.
    for domain in ("list.test", LIST_SRS, "fwd.test", FWD_SRS):
        test.txt(domain, "v=spf1 ip4:127.0.0.1 -all")
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
    for sub in ("list", "final", "author", "fwd"):
        _host_dir(base / sub)
    list_milter = Authmilter(base / "list", exe, {
        "authserv_id": LIST_ID, "workers": 1, "dns": dns,
        "signing": {"key_table": str(etc / "KeyTable"), "signing_table": f"refile:{etc / 'SigningTable'}"},
        "arc": {"sealing_table": f"file:{etc / 'SealingTable'}"},
        "srs": {"enabled": True, "domain": LIST_SRS, "local_domains": ["list.test", "inbox.test"],
                "secret_file": _srs_secret(etc / "list-srs.secret", LIST_SECRET)},
    })
    final_milter = Authmilter(base / "final", exe, {
        "authserv_id": FINAL_ID, "workers": 1, "dns": dns, "signing": {"enabled": False},
        "arc": {"trusted_sealers": ["list.test"]},
    })
    # mx.fwd.test's authmilter serves only the socketmap; cleanup(8) runs as postfix, so
    # the socket is the postfix group's (the daemon drops to nobody:postfix), in a
    # directory the daemon owns (it removes the socket at stop).
    nobody = pwd.getpwnam("nobody").pw_uid
    fwd_run = _host_dir(base / "fwd" / "run")
    os.chown(fwd_run, nobody, -1)
    fwd_milter = Authmilter(base / "fwd", exe, {
        "authserv_id": FWD_ID, "workers": 1, "dns": dns, "signing": {"enabled": False},
        "user": "nobody", "group": "postfix",
        "srs": {"enabled": True, "domain": FWD_SRS, "local_domains": ["fwd.test"],
                "secret_file": _srs_secret(fwd_run / "srs.secret", FWD_SECRET, nobody),
                "socketmap": f"unix:{fwd_run / 'srs.sock'}"},
    })
    sink = ChainPostfix(base / "author", "", AUTHOR_ID, main="virtual_mailbox_domains = author.test\n")
    final = ChainPostfix(base / "final", final_milter.postfix_socket, FINAL_ID,
                         main="virtual_mailbox_domains = inbox.test final.test\n")
    lists = ChainPostfix(base / "list", list_milter.postfix_socket, LIST_ID,
                         main=f"virtual_mailbox_domains = inbox.test {LIST_SRS}\n")
    fwd = ChainPostfix(base / "fwd", "", FWD_ID, main=(
        f"virtual_mailbox_domains = inbox.test {FWD_SRS}\n"
        "virtual_alias_domains = fwd.test\n"
        f"virtual_alias_maps = inline:{{ alias@fwd.test={FINAL_RCPT}, bounce-me@fwd.test={GONE_RCPT} }}\n"))
    # gone@final.test: a pipe that exits EX_NOUSER, so Postfix accepts the mail (an error:
    # transport would be refused at RCPT already) and bounces it with 5.1.1.
    nouser = base / "final" / "nouser"
    nouser.write_text("#!/bin/sh\nexit 67\n")
    nouser.chmod(0o755)
    final.relay({LIST_SRS: lists, FWD_SRS: fwd}, local=f"{GONE_RCPT}=nouser:, {{{REFUSED_RCPT}=error:5.1.1 mailbox disabled}}")
    final.extra_master += f"nouser    unix  -       n       n       -       -       pipe\n  flags= user=nobody argv={nouser}\n"
    lists.relay({"final.test": final, "author.test": sink})
    fwd.relay({"final.test": final, "author.test": sink})
    started: list = []
    try:
        for part in (knot, list_milter, final_milter, fwd_milter, sink, final, lists, fwd):
            started.insert(0, part)
            part.start()
        srs_lines = {}
        for host, milter in ((lists, list_milter), (fwd, fwd_milter)):
            srs_lines[host] = check_config_srs_lines(milter, host)
            host.postconf(*srs_lines[host])
        yield Chain(base, knot, author, sink, lists, list_milter, final, final_milter, fwd, fwd_milter,
                    srs_lines[lists], srs_lines[fwd])
    finally:
        stop_all(started)
        logs = tmp_path_factory.mktemp("arc-chain-logs")
        for sub in ("list", "final", "author", "fwd"):
            for name in ("maillog", "authmilter.log", "authmilter.toml"):
                if (base / sub / name).is_file():
                    shutil.copy(base / sub / name, logs / f"{sub}-{name}")
        shutil.rmtree(base, ignore_errors=True)


def through_the_list(chain: Chain, token: str, *, resend_from: str = "members-bounces@list.test",
                     rcpt: str = FINAL_RCPT) -> None:
    """The author's signed mail (MAIL FROM bounce@author.test) reaches the list host; the
    list software adds List-Id and a footer and re-injects it with sendmail(1) for *rcpt*,
    as envelope sender *resend_from* (a list's own bounce address, or the original sender
    when the host forwards rather than re-distributes)."""
    raw = dkim_sign(make_message(token, from_="news@author.test", to="members@list.test",
                                 subject="monthly statement"), chain.author)
    reply = chain.lists.smtp(raw, mail_from="bounce@author.test", helo=HELO, client_name=HELO)
    assert reply.accepted, reply
    received = chain.lists.wait_delivered(token)
    ours = [parse_authres(v) for v in header_values(received, "Authentication-Results")]
    (ar,) = [p for p in ours if p.authserv_id == LIST_ID]
    assert {r.method: r.result for r in ar.results}["dmarc"] == "pass"
    head, _, body = received.replace(b"\r\n", b"\n").partition(b"\n\n")
    lines = [ln for ln in head.split(b"\n") if not ln.lower().startswith((b"return-path:", b"delivered-to:"))]
    resent = b"\n".join(lines + [b"List-Id: <members.list.test>"]) + b"\n\n" + body + b"--\nmembers list footer\n"
    chain.lists.sendmail(resent, resend_from, [rcpt])
    chain.lists.flush()


def final_results(delivered: bytes) -> dict[str, list]:
    """The final MX's Authentication-Results, resinfos by method."""
    (ar,) = [p for p in (parse_authres(v) for v in header_values(delivered, "Authentication-Results"))
             if p.authserv_id == FINAL_ID]
    out: dict[str, list] = {}
    for r in ar.results:
        out.setdefault(r.method, []).append(r)
    return out
