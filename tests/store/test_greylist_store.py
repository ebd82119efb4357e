"""Greylisting state shared by two MX hosts: two real ``authmilter run`` daemons on one
real PostgreSQL (issue 13). The first attempt lands on one host and is deferred; the
retry lands on the other and passes, because the triplet lives in the shared store."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import milterclient as mc
from milterd import Daemon

from authmilter.config.schema import StoreSettings

DELAY_S = 1


def store_section(url: str, directory: Path) -> dict[str, Any]:
    section: dict[str, Any] = {"url": url}
    if "journal_dir" in StoreSettings.__dataclass_fields__:   # the record journal, where this tree has one
        section["journal_dir"] = str(directory / "journal")
    return section


def rcpt_answer(daemon: Daemon, ip: str, sender: str, n: int) -> str:
    domain = sender.rpartition("@")[2]
    msg = (f"From: <{sender}>\r\nTo: bob@mx.test\r\nSubject: {n}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
           f"Message-ID: <{n}@{domain}>\r\n\r\nHi.\r\n").encode()
    with daemon.client() as c:
        r = c.session(ip=ip, hostname=f"[{ip}]", helo=f"mail.{domain}", mail_from=sender, rcpts=["bob@mx.test"],
                      message=msg, macros={"i": f"G{n}", "j": daemon.config["authserv_id"]})
    if r.early == "rcpt":
        cmd, args = r.raw[0]
        assert cmd == mc.C.SMFIR_REPLYCODE
        return str(args["smtpcode"])
    return str(r.action)


@pytest.mark.parametrize("authenticated", [False, True])
def test_a_retry_landing_on_the_other_mx_passes(tmp_path: Path, dns_server: Any, pg_url: str, daemons: list,
                                                authenticated: bool) -> None:
    dns_server.add_txt("pool.example", "v=spf1 ip4:198.51.100.0/24 ip4:203.0.113.0/24 -all")
    mx = []
    for name in ("mx1.test", "mx2.test"):
        d = tmp_path / name
        d.mkdir()
        daemon = Daemon(d, {
            "socket": f"unix:{d}/m.sock", "authserv_id": name, "workers": 2,
            "dns": {"servers": [dns_server.address], "timeout_s": 1.0, "message_budget_s": 4.0},
            "signing": {"enabled": False},
            "store": store_section(pg_url, d),
            "greylist": {"enabled": True, "delay_s": DELAY_S},
        })
        daemons.append(daemon)
        mx.append(daemon.start())
    if authenticated:   # SPF passes: the retry may even come from another network of the pool
        first, retry, sender = "198.51.100.7", "203.0.113.9", "news@pool.example"
    else:
        first, retry, sender = "192.0.2.30", "192.0.2.31", "alice@plain.example"
    assert rcpt_answer(mx[0], first, sender, 1) == "451"
    assert rcpt_answer(mx[1], first, sender, 2) == "451"    # the other host knows the triplet is too young
    time.sleep(DELAY_S + 0.5)
    assert rcpt_answer(mx[1], retry, sender, 3) == "accept"
    assert rcpt_answer(mx[0], retry, sender, 4) == "accept"
    mx[1].wait_log(r"greylist=\"?pass:")
    for d in mx:
        assert d.stop() == 0, d.log()
