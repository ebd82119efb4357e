"""DMARC aggregate reports end to end: real ``authmilter run`` daemons record messages
sent over the milter socket, ``authmilter reports send`` builds the reports, and
parsedmarc (an independent parser) reads them back.

How "a re-run never sends a second copy" is tested: ``--dry-run`` records nothing, so it
is the real send (to a loopback SMTP sink through ``[reports] relay``) that is run twice;
the second run must find nothing new and the sink must have received each report once.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from milterd import AUTHMILTER, Daemon
from smtpsink import SmtpSink
from support import require

from authmilter import keys
from authmilter.resolver import Resolver, dkim_dnsfunc
from authmilter.store.reportdb import open_reportdb

try:
    import parsedmarc
except ImportError:  # pragma: no cover - the test extra installs it
    parsedmarc = None

WAIT_S = 60.0
FROM = "dmarc-reports@reports.test"


@pytest.fixture(autouse=True)
def _oracle() -> None:
    require(parsedmarc is not None, "parsedmarc not installed (pip install -e '.[test]')")


def config(tmp: Path, dns: Any, authserv_id: str, url: str, **reports: Any) -> dict[str, Any]:
    return {
        "socket": f"unix:{tmp}/m.sock", "authserv_id": authserv_id, "workers": 2,
        "dns": {"servers": [dns.address], "timeout_s": 1.0, "message_budget_s": 4.0},
        "signing": {"enabled": False},
        "store": {"enabled": False, "url": url, "flush_interval_s": 0.1,   # [reports] alone opens it
                  "journal_dir": f"{tmp}/journal"},
        "reports": {"enabled": True, "from_address": FROM, "org_name": "Reports Test", **reports},
    }


def start(tmp: Path, cfg: dict[str, Any], daemons: list[Daemon]) -> Daemon:
    tmp.mkdir(exist_ok=True)
    d = Daemon(tmp, cfg)
    daemons.append(d)
    return d.start()


def publish(dns: Any, domain: str, policy: str = "p=reject", rua: str = "") -> None:
    dns.add_txt(domain, "v=spf1 ip4:192.0.2.0/24 -all")
    dns.add_txt(f"_dmarc.{domain}", f"v=DMARC1; {policy}; rua={rua or 'mailto:dmarc@' + domain}")


def send(daemon: Daemon, domain: str, ip: str, n: int) -> str:
    qid = f"Q{uuid.uuid4().hex[:10].upper()}"
    raw = (f"From: Alice <alice@{domain}>\r\nTo: bob@mx.test\r\nSubject: test {n}\r\n"
           f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{qid}@{domain}>\r\n\r\nHello.\r\n").encode()
    with daemon.client() as c:
        r = c.session(ip=ip, helo=f"mail.{domain}", mail_from=f"bounce@{domain}", rcpts=["bob@mx.test"],
                      message=raw, macros={"i": qid, "j": daemon.config["authserv_id"]})
    return str(r.action)


def wait_records(cfg_path: Path, count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        out = cli("store", "status", "-c", str(cfg_path))
        if f"{count} message record(s)" in out.stdout:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"records never reached {count}: {out.stdout}")
    # --until now reports whole seconds before now: step past the second of the last record.
    time.sleep(1.0)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(AUTHMILTER), *args], capture_output=True, text=True, timeout=WAIT_S)


def parse_files(outdir: Path, caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """policy domain -> the report parsedmarc read from its .xml.gz (no parser warnings)."""
    out = {}
    with caplog.at_level(logging.WARNING, logger="parsedmarc"):
        for path in sorted(outdir.glob("*.xml.gz")):
            report = parsedmarc.parse_aggregate_report_file(path.read_bytes(), offline=True)
            out[report["policy_published"]["domain"]] = (path, report)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("parsedmarc")] == []
    return out


def counts(report: dict[str, Any]) -> Counter[tuple[str, bool, str]]:
    c: Counter[tuple[str, bool, str]] = Counter()
    for rec in report["records"]:
        key = (rec["source"]["ip_address"], rec["alignment"]["dmarc"], rec["policy_evaluated"]["disposition"])
        c[key] += rec["count"]
    return c


def test_sqlite_dry_run_reports_match_what_was_sent(tmp_path: Path, dns_server: Any, daemons: list,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    publish(dns_server, "alpha.example")
    publish(dns_server, "beta.example", "p=none")
    publish(dns_server, "spam.example", "p=quarantine; t=y", "mailto:harvest@spam.example")
    cfg = config(tmp_path, dns_server, "mx.test", f"sqlite://{tmp_path}/state.db")
    mx = start(tmp_path / "mx", cfg, daemons)
    sent = Counter()
    plan = [("alpha.example", "192.0.2.10", 3), ("alpha.example", "192.0.2.11", 2),
            ("alpha.example", "203.0.113.5", 2), ("beta.example", "192.0.2.20", 2),
            ("spam.example", "203.0.113.9", 2)]
    for domain, ip, n in plan:
        for i in range(n):
            action = send(mx, domain, ip, i)
            passed = ip.startswith("192.0.2.")
            assert action == ("accept" if passed or domain != "alpha.example" else "reject")
            sent[(domain, ip, passed, "none" if passed or domain != "alpha.example" else "reject")] += 1
    wait_records(mx.config_path, 11)
    until = str(int(time.time()))

    outdir = tmp_path / "out"
    run = cli("reports", "send", "-c", str(mx.config_path), "--dry-run", "--outdir", str(outdir), "--until", until)
    assert run.returncode == 0, run.stdout + run.stderr
    reports = parse_files(outdir, caplog)
    assert sorted(reports) == ["alpha.example", "beta.example"]      # spam.example: no message passed
    assert "spam.example" in run.stdout and "none of its 2 message(s) passed DMARC" in run.stdout
    for domain, (path, report) in reports.items():
        expected = Counter({(ip, ok, disp): n for (d, ip, ok, disp), n in sent.items() if d == domain})
        assert counts(report) == expected, domain
        assert report["report_metadata"]["org_name"] == "Reports Test"
        assert report["xml_namespace"] == "urn:ietf:params:xml:ns:dmarc-2.0"
        rid = report["report_metadata"]["report_id"]
        assert path.name.startswith(f"reports.test!{domain}!") and path.name.endswith(f"!{rid}.xml.gz")
        eml = outdir / f"{path.name.removesuffix('.xml.gz')}!dmarc@{domain}.eml"
        parsed = parsedmarc.parse_report_email(eml.read_bytes(), offline=True)
        assert parsed["report"]["report_metadata"]["report_id"] == rid
    # A dry run records nothing: running it again builds the same reports, same ids and bytes.
    again = tmp_path / "again"
    assert cli("reports", "send", "-c", str(mx.config_path), "--dry-run", "--outdir", str(again),
               "--until", until).returncode == 0
    assert {p.name: p.read_bytes() for p in outdir.glob("*.xml.gz")} == \
        {p.name: p.read_bytes() for p in again.glob("*.xml.gz")}
    show = cli("reports", "show", "-c", str(mx.config_path))
    assert show.returncode == 0 and "pending deliveries: 0" in show.stdout
    # The log line names the requested policy and why it was not applied (RFC 9990 types).
    assert mx.wait_log(r"dmarc=fail:p=reject policy\.dmarc=reject from=alpha\.example", timeout=0)
    assert mx.wait_log(r"policy\.dmarc=quarantine override=policy_test_mode:t=y from=spam\.example", timeout=0)


def test_two_mx_hosts_on_postgresql_give_one_report_per_domain(tmp_path: Path, dns_server: Any, reports_pg: Any,
                                                               daemons: list,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    url = reports_pg.create_database(f"r_{uuid.uuid4().hex[:12]}")
    publish(dns_server, "shared.example", "p=quarantine")
    hosts = []
    for name in ("mx1.test", "mx2.test"):
        hosts.append(start(tmp_path / name, config(tmp_path / name, dns_server, name, url), daemons))
    sent: Counter[tuple[str, bool, str]] = Counter()
    for n in range(8):
        ip = ("192.0.2.30", "192.0.2.31", "198.51.100.4")[n % 3]
        passed = ip.startswith("192.0.2.")
        assert send(hosts[n % 2], "shared.example", ip, n) in ("accept", "quarantine")
        sent[(ip, passed, "none" if passed else "quarantine")] += 1
    wait_records(hosts[0].config_path, 8)
    outdir = tmp_path / "out"
    run = cli("reports", "send", "-c", str(hosts[0].config_path), "--dry-run", "--outdir", str(outdir),
              "--until", "now")
    assert run.returncode == 0, run.stdout + run.stderr
    reports = parse_files(outdir, caplog)
    assert list(reports) == ["shared.example"]
    assert counts(reports["shared.example"][1]) == sent

    # Exactly one run works at a time: while another holds the database lock, a run on
    # the other host does nothing and says why.
    holder = open_reportdb(url, 10.0)
    try:
        assert holder.lock() == ""
        busy = cli("reports", "send", "-c", str(hosts[1].config_path), "--until", "now")
        assert busy.returncode == 75 and "holds the lock" in busy.stderr
    finally:
        holder.close()


def genkey(directory: Path, domain: str, selector: str) -> Path:
    directory.mkdir(mode=0o700, exist_ok=True)
    subprocess.run([str(AUTHMILTER), "genkey", "-d", domain, "-s", selector, "-D", str(directory)], check=True,
                   capture_output=True, timeout=WAIT_S)
    return directory / f"{selector}.private"


def signing(tmp: Path, dns: Any) -> dict[str, Any]:
    key = genkey(tmp / "keys", "reports.test", "rep")
    dns.add_txt("rep._domainkey.reports.test", keys.dns_record(keys.read_private_key(str(key))))
    (tmp / "KeyTable").write_text(f"rep reports.test:rep:{key}\n")
    (tmp / "SigningTable").write_text("*@reports.test rep\n")
    return {"enabled": True, "key_table": str(tmp / "KeyTable"), "signing_table": f"refile:{tmp / 'SigningTable'}"}


def test_external_destination_without_authorisation_gets_nothing(tmp_path: Path, dns_server: Any, daemons: list
                                                                ) -> None:
    publish(dns_server, "gamma.example", "p=none", "mailto:agg@collector.example,mailto:agg@authorised.example")
    dns_server.add_txt("gamma.example._report._dmarc.authorised.example", "v=DMARC1")
    with SmtpSink() as sink:
        cfg = config(tmp_path, dns_server, "mx.test", f"sqlite://{tmp_path}/state.db", relay=sink.address)
        mx = start(tmp_path / "mx", cfg, daemons)
        for i in range(2):
            assert send(mx, "gamma.example", "192.0.2.40", i) == "accept"
        wait_records(mx.config_path, 2)
        dry = cli("reports", "send", "-c", str(mx.config_path), "--dry-run", "--outdir", str(tmp_path / "out"),
                  "--until", "now")
        assert dry.returncode == 0, dry.stderr
        assert [p.name.rpartition("!")[2] for p in (tmp_path / "out").glob("*.eml")] == ["agg@authorised.example.eml"]
        why = "no v=DMARC1 TXT record at gamma.example._report._dmarc.collector.example"
        assert why in dry.stdout
        run = cli("reports", "send", "-c", str(mx.config_path), "--until", "now")
        assert run.returncode == 0, run.stdout + run.stderr
        assert why in run.stdout
        assert [m.rcpts for m in sink.state.messages] == [["agg@authorised.example"]]
        show = cli("reports", "show", "-c", str(mx.config_path))
        assert "agg@collector.example: refused: external destination collector.example" in show.stdout


def test_sent_reports_are_dkim_signed_parse_and_are_never_sent_twice(tmp_path: Path, dns_server: Any,
                                                                     daemons: list) -> None:
    import dkim

    publish(dns_server, "delta.example", "p=reject")
    publish(dns_server, "bounce.example", "p=none", "mailto:gone@bounce.example")
    with SmtpSink() as sink:
        sink.state.refuse.add("gone@bounce.example")
        cfg = config(tmp_path, dns_server, "mx.test", f"sqlite://{tmp_path}/state.db", relay=sink.address,
                     max_failures=2)
        cfg["signing"] = signing(tmp_path, dns_server)
        mx = start(tmp_path / "mx", cfg, daemons)
        for i in range(3):
            assert send(mx, "delta.example", "192.0.2.50", i) == "accept"
        assert send(mx, "bounce.example", "192.0.2.51", 0) == "accept"
        wait_records(mx.config_path, 4)
        first = cli("reports", "send", "-c", str(mx.config_path), "--until", "now")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "1 report mail(s) sent, 1 failed" in first.stdout
        assert len(sink.state.messages) == 1
        delivered = sink.state.messages[0]
        assert delivered.mail_from == FROM and delivered.rcpts == ["dmarc@delta.example"]
        resolver = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=2.0, cache_entries=0)
        assert dkim.verify(delivered.data, dnsfunc=dkim_dnsfunc(resolver))
        assert b"d=reports.test" in delivered.data.split(b"\r\n\r\n", 1)[0]
        report = parsedmarc.parse_report_email(delivered.data, offline=True)["report"]
        assert report["policy_published"]["domain"] == "delta.example"
        assert [(r["source"]["ip_address"], r["count"]) for r in report["records"]] == [("192.0.2.50", 3)]

        # The second run finds nothing new to build and nothing pending for delta;
        # the refused destination fails again and is suppressed (max_failures = 2).
        second = cli("reports", "send", "-c", str(mx.config_path), "--until", "now")
        assert second.returncode == 0, second.stderr
        assert "0 report mail(s) sent, 1 failed" in second.stdout and "destination suppressed" in second.stdout
        third = cli("reports", "send", "-c", str(mx.config_path), "--until", "now")
        assert "0 report mail(s) sent, 0 failed" in third.stdout
        assert len(sink.state.messages) == 1
        show = cli("reports", "show", "-c", str(mx.config_path))
        assert "suppressed destinations: 1" in show.stdout and "gone@bounce.example: 2 failure(s)" in show.stdout
        assert "550 5.1.1 no such user" in show.stdout


def test_failure_reports_go_only_where_asked_redacted_and_rate_limited(tmp_path: Path, dns_server: Any,
                                                                        daemons: list) -> None:
    publish(dns_server, "eps.example", "p=reject; ruf=mailto:ruf@eps.example; fo=1")
    publish(dns_server, "quiet.example", "p=reject")                       # no ruf=: no failure report
    with SmtpSink() as sink:
        cfg = config(tmp_path, dns_server, "mx.test", f"sqlite://{tmp_path}/state.db", relay=sink.address,
                     failure_reports=True, failure_max_per_hour=1)
        mx = start(tmp_path / "mx", cfg, daemons)
        for i in range(2):
            assert send(mx, "eps.example", "203.0.113.60", i) == "reject"
        assert send(mx, "quiet.example", "203.0.113.61", 0) == "reject"
        wait_records(mx.config_path, 3)
        dry = cli("reports", "send", "-c", str(mx.config_path), "--dry-run", "--outdir", str(tmp_path / "out"),
                  "--until", "now")
        assert dry.returncode == 0, dry.stderr
        assert len(list((tmp_path / "out").glob("failure!eps.example!*!ruf@eps.example.eml"))) == 2
        run = cli("reports", "send", "-c", str(mx.config_path), "--until", "now")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "1 failure report(s) sent, 1 not sent" in run.stdout and "per hour" in run.stdout
        assert [m.rcpts for m in sink.state.messages] == [["ruf@eps.example"]]
        data = sink.state.messages[0].data
        parsed = parsedmarc.parse_report_email(data, offline=True)
        assert parsed["report_type"] == "failure"
        assert parsed["report"]["source"]["ip_address"] == "203.0.113.60"
        assert b"alice@" not in data and b"bob@" not in data and b"redacted-" in data
        # Samples are deleted once handled: the next run has nothing to send.
        again = cli("reports", "send", "-c", str(mx.config_path), "--until", "now")
        assert "0 failure report(s) sent, 0 not sent" in again.stdout
        assert len(sink.state.messages) == 1


def test_without_a_relay_reports_go_through_the_sendmail_interface(tmp_path: Path, dns_server: Any,
                                                                    daemons: list) -> None:
    """``sendmail -oi -f FROM -- RCPT`` with the mail on stdin. The program here is a
    recorder standing in for /usr/sbin/sendmail (the machine's own MTA is never fed)."""
    publish(dns_server, "zeta.example", "p=none")
    spool = tmp_path / "spool"
    spool.mkdir()
    recorder = tmp_path / "sendmail"
    recorder.write_text(f"#!{sys.executable}\nimport sys, uuid\n"
                        f"open('{spool}/' + uuid.uuid4().hex, 'wb').write("
                        "repr(sys.argv[1:]).encode() + b'\\n' + sys.stdin.buffer.read())\n")
    recorder.chmod(0o755)
    cfg = config(tmp_path, dns_server, "mx.test", f"sqlite://{tmp_path}/state.db", sendmail=str(recorder))
    mx = start(tmp_path / "mx", cfg, daemons)
    assert send(mx, "zeta.example", "192.0.2.70", 0) == "accept"
    wait_records(mx.config_path, 1)
    run = cli("reports", "send", "-c", str(mx.config_path), "--until", "now")
    assert run.returncode == 0 and "1 report mail(s) sent" in run.stdout, run.stdout + run.stderr
    (mailed,) = spool.iterdir()
    argv, _, data = mailed.read_bytes().partition(b"\n")
    assert argv.decode() == repr(["-oi", "-f", FROM, "--", "dmarc@zeta.example"])
    assert parsedmarc.parse_report_email(data, offline=True)["report"]["policy_published"]["domain"] == "zeta.example"
