"""authmilter behind a real Sendmail next to behind a real Postfix (issue 16 figures).

    .venv/bin/python bench/mta.py [-n 300] [-c 1,8] [-r 3] [--kinds sign,inbound]

Everything on this machine, in one run, under one directory bench/results/work-mta-* (removed
at the end; not under /tmp, where Sendmail refuses a milter socket), as root:

* knotd serving ``example.com`` (our signing domain: its DKIM key) and ``bench.test`` (a
  remote sender: SPF for its two client addresses, a DKIM key, DMARC ``p=reject``);
* one authmilter (``workers = 0``: two per CPU) that both MTAs use;
* four MTAs, each relaying what it accepts to one SMTP sink on 127.0.0.25 (the same
  delivery work for both kinds): Postfix and Sendmail each with authmilter
  (``smtpd_milters`` / the ``INPUT_MAIL_FILTER`` lines ``check-config`` prints) and each
  without a milter — the baseline the added latency is measured against. Postfix is the
  e2e suite's private instance (tests/e2e/harness.py), Sendmail the Sendmail suite's
  (tests/e2e/sendmail/mta.py: Debian's 8.17, unpacked under run/sendmail);
* an SMTP load client in a child process (threads; one connection per message, as MTAs
  deliver): ``sign`` = a 2 KB message from alice@example.com sent from 127.0.0.1 (an
  internal host: outbound, signed); ``inbound`` = a 2 KB message DKIM-signed by
  bench.test, presented from a remote address (Postfix: XCLIENT ADDR=192.0.2.10;
  Sendmail: a connection from 127.0.0.10), checked SPF + DKIM + DMARC, all pass.

A message's latency is the SMTP transaction as the client sees it: connect to the 250
after the final dot (the milter work sits before that 250 in both MTAs). For each MTA,
kind and concurrency, the table gives messages/s and the p50 latency with authmilter,
without it, and the difference — the latency authmilter adds to one SMTP transaction —
plus authmilter's CPU per message. Rounds interleave every configuration; medians.
"""
from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import random
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from e2e.harness import Authmilter, Knot, Postfix, TestKey, Zone, dkim_sign, generate_key, wait_for
from e2e.sendmail import dist
from e2e.sendmail.mta import Sendmail, SmtpSink
from infra.procs import authmilter_command, tree_cpu_s

from authmilter.config.schema import load_settings
from authmilter.config.sendmail import mc_lines

RCPT = "u@inbox.test"
POSTFIX_REMOTE = "192.0.2.10"      # presented with XCLIENT
SENDMAIL_REMOTE = "127.0.0.10"     # a real connection from this loopback address
BODY_BYTES = 2048


# -- the world ---------------------------------------------------------------------------


def zones(out_key: TestKey, in_key: TestKey) -> list[Zone]:
    com = Zone("example.com")
    com.txt("example.com", "v=spf1 ip4:203.0.113.0/24 -all")
    com.txt(out_key.name, out_key.record)
    test = Zone("test")
    test.txt("bench.test", f"v=spf1 ip4:{POSTFIX_REMOTE} ip4:{SENDMAIL_REMOTE} -all")
    test.txt(in_key.name, in_key.record)
    test.txt("_dmarc.bench.test", "v=DMARC1; p=reject")
    test.add("mail.bench.test", "A", POSTFIX_REMOTE)
    test.txt("mail.bench.test", f"v=spf1 ip4:{POSTFIX_REMOTE} ip4:{SENDMAIL_REMOTE} -all")
    return [Zone("."), com, test]


def message(from_: str, subject: str) -> bytes:
    head = (f"From: {from_}\r\nTo: {RCPT}\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@bench.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n")
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    body = (line * (BODY_BYTES // len(line) + 1))[:BODY_BYTES]
    return (head + body.rsplit("\r\n", 1)[0] + "\r\n").encode()


class SinkPostfix(Postfix):
    """The e2e Postfix, relaying inbox.test to the sink instead of a Maildir."""

    def __init__(self, base: Path, milter: str, sink: SmtpSink) -> None:
        super().__init__(base, milter)
        self.sink = sink

    def _write(self) -> None:
        super()._write()
        with open(self.config_dir / "main.cf", "a") as fh:
            fh.write(f"virtual_transport = smtp:[{self.sink.host}]:{self.sink.port}\n"
                     "smtp_dns_support_level = disabled\nsmtp_tls_security_level = none\n")
        with open(self.config_dir / "master.cf", "a") as fh:
            fh.write("smtp      unix  -       -       n       -       -       smtp\n")


@dataclass
class Target:
    name: str                # "postfix" / "sendmail"
    milter: bool
    port: int
    remote: dict             # kind -> (source address, XCLIENT args or None)
    mta: object = None


# -- the load client (a child process) -----------------------------------------------------


def _client(port: int, source: str, xclient: str | None, raw: bytes, mail_from: str, count: int,
            concurrency: int, out: multiprocessing.Queue) -> None:
    todo = list(range(count))
    lock = threading.Lock()
    lat: list[float] = []
    errors: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            t0 = time.perf_counter()
            try:
                with smtplib.SMTP("127.0.0.1", port, local_hostname="mail.bench.test", timeout=60,
                                  source_address=(source, 0)) as s:
                    s.ehlo()
                    if xclient:
                        code, text = s.docmd("XCLIENT", xclient)
                        if code != 220:
                            raise RuntimeError(f"XCLIENT {code} {text!r}")
                        s.ehlo("mail.bench.test")
                    s.sendmail(mail_from, [RCPT], raw)
                    elapsed = time.perf_counter() - t0
            except (smtplib.SMTPException, OSError, RuntimeError) as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                lat.append(elapsed)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put({"wall_s": time.perf_counter() - start, "lat": lat, "errors": errors[:5], "n_errors": len(errors)})


def drive(target: Target, kind: str, raw: bytes, mail_from: str, count: int, concurrency: int) -> dict:
    source, xclient = target.remote[kind]
    q: multiprocessing.Queue = multiprocessing.Queue()
    p = multiprocessing.Process(target=_client, args=(target.port, source, xclient, raw, mail_from, count,
                                                      concurrency, q))
    p.start()
    result = q.get(timeout=600)
    p.join(30)
    return result


# -- the run ------------------------------------------------------------------------------


@dataclass
class Cell:
    mta: str
    kind: str
    concurrency: int
    with_rate: list[float] = field(default_factory=list)
    with_p50: list[float] = field(default_factory=list)
    without_rate: list[float] = field(default_factory=list)
    without_p50: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    errors: int = 0


def _p50_ms(lat: list[float]) -> float:
    return statistics.median(lat) * 1000 if lat else float("nan")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--count", type=int, default=300, help="messages per run")
    ap.add_argument("-c", "--concurrency", default="1,8", help="client connections at once, comma-separated")
    ap.add_argument("-r", "--rounds", type=int, default=3)
    ap.add_argument("--kinds", default="sign,inbound")
    ap.add_argument("--warmup", type=int, default=30, help="messages per target and kind before measuring")
    ap.add_argument("--workers", type=int, default=0, help="authmilter workers (0: two per CPU)")
    ap.add_argument("--socket", choices=("unix", "inet"), default="unix",
                    help="authmilter's socket: unix (the example config's) or inet:PORT@127.0.0.1")
    ap.add_argument("--null-milter", action="store_true",
                    help="run bench/null_milter.py (pymilter doing nothing) instead of authmilter: the floor")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    ap.add_argument("--out", default="", help="writes OUT.md and OUT.json (default results/mta-SOCKET)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/mta.py needs root (Postfix, Sendmail's namespaces)")
    kinds = args.kinds.split(",")
    args.out = args.out or str(HERE / "results" / f"mta-{args.socket}")
    conc = [int(c) for c in args.concurrency.split(",")]

    d = dist.ensure()
    trouble = dist.problems(d)
    if trouble:
        raise SystemExit("sendmail: " + "; ".join(trouble))
    # Not under /tmp: Sendmail refuses a milter socket below a world-writable directory.
    (HERE / "results").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-mta-", dir=HERE / "results"))
    work.chmod(0o755)
    stops: list = []
    try:
        out_key = generate_key("example.com", "bench", "rsa")
        in_key = generate_key("bench.test", "s1", "rsa")
        keydir = work / "keys"
        keydir.mkdir(mode=0o700)
        key_path = keydir / "example.com.private"
        key_path.write_bytes(out_key.private)
        key_path.chmod(0o600)
        (work / "KeyTable").write_text(f"{out_key.name} example.com:bench:{key_path}\n")
        (work / "SigningTable").write_text(f"*@example.com {out_key.name}\n")

        knot = Knot(work, zones(out_key, in_key), workers=None, log_level="warning")
        knot.start()
        stops.append(knot.stop)
        cmd = authmilter_command()    # the install beside this interpreter
        am = Authmilter(work, cmd[0], {
            "workers": args.workers, "log_level": "info",
            "dns": {"servers": [f"127.0.0.1:{knot.port}"]},
            "signing": {"key_table": str(work / "KeyTable"), "signing_table": f"refile:{work / 'SigningTable'}",
                        "internal_hosts": ["127.0.0.1"]},
        })
        am.process.argv = [*cmd, "run", "-c", str(am.config)]
        if args.socket == "unix":
            am.settings["socket_mode"] = "0666"      # Postfix's smtpd connects as user postfix
            am.use_socket(f"unix:{work}/authmilter.sock")
        if args.null_milter:
            am.process.argv = [sys.executable, str(HERE / "null_milter.py"), am.settings["socket"]]
        am.start()
        stops.append(am.stop)
        if args.null_milter and args.socket == "unix":
            os.chmod(am.socket_spec.path, 0o666)

        sink = SmtpSink(work / "sink")
        sink.start()
        stops.append(sink.stop)

        targets: list[Target] = []
        for with_milter in (True, False):
            pf = SinkPostfix(work / f"postfix-{'milter' if with_milter else 'plain'}",
                             am.postfix_socket if with_milter else "", sink)
            pf.base.mkdir()
            pf.base.chmod(0o755)
            pf.start()
            stops.append(pf.stop)
            targets.append(Target("postfix", with_milter, pf.smtp_port, {
                "sign": ("127.0.0.1", None),
                "inbound": ("127.0.0.1", f"ADDR={POSTFIX_REMOTE} NAME=mail.bench.test HELO=mail.bench.test")}, pf))
            lines = mc_lines(load_settings(str(am.config))) if with_milter else []
            sm_base = work / f"sendmail-{'milter' if with_milter else 'plain'}"
            sm_base.mkdir()
            sm_base.chmod(0o755)
            sm = Sendmail(sm_base, d, lines, trace=False, log_level=9, sink=sink)   # one sink for all four
            sm.start()
            stops.append(sm.stop)
            targets.append(Target("sendmail", with_milter, sm.mta_port, {
                "sign": ("127.0.0.1", None), "inbound": (SENDMAIL_REMOTE, None)}, sm))
        log("knotd, authmilter, 2 Postfix, 2 Sendmail and the sink are up")

        raws = {"sign": (message("Alice <alice@example.com>", "bench sign"), "alice@example.com"),
                "inbound": (dkim_sign(message("Bob <bob@bench.test>", "bench inbound"), in_key), "bob@bench.test")}

        # Every configuration must do what it is measured for, checked once on a delivery.
        for t in targets:
            for kind in kinds:
                before = sink.count
                res = drive(t, kind, *raws[kind], count=args.warmup, concurrency=2)
                if res["n_errors"]:
                    raise SystemExit(f"{t.name} {kind}: {res['errors']}")
                wait_for(lambda b=before: sink.count >= b + args.warmup, "warm-up deliveries", 120)
                last = sorted(sink.dir.glob("*.eml"), key=lambda f: int(f.stem))[-1].read_bytes()
                if args.null_milter:
                    continue
                if t.milter and kind == "sign":
                    assert b"DKIM-Signature:" in last, f"{t.name}: not signed"
                if t.milter and kind == "inbound":
                    head = last.split(b"\r\n\r\n", 1)[0]
                    assert b"dmarc=pass" in head and b"dkim=pass" in head and b"spf=pass" in head, \
                        f"{t.name}: {head[:600]!r}"
                if not t.milter:
                    assert b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com" not in last
        log("warm-up done; every target signs / checks as it should")

        cells: dict[tuple[str, str, int], Cell] = {}
        configs = [(t, k, c) for t in targets for k in kinds for c in conc]
        for rnd in range(args.rounds):
            order = configs[:]
            random.Random(rnd).shuffle(order)
            for t, kind, c in order:
                cell = cells.setdefault((t.name, kind, c), Cell(t.name, kind, c))
                cpu0 = tree_cpu_s(am.process.pid)
                res = drive(t, kind, *raws[kind], count=args.count, concurrency=c)
                cpu = tree_cpu_s(am.process.pid) - cpu0
                n = len(res["lat"])
                rate = n / res["wall_s"] if res["wall_s"] else 0.0
                cell.errors += res["n_errors"]
                if t.milter:
                    cell.with_rate.append(rate)
                    cell.with_p50.append(_p50_ms(res["lat"]))
                    cell.cpu_ms.append(cpu * 1000 / max(n, 1))
                else:
                    cell.without_rate.append(rate)
                    cell.without_p50.append(_p50_ms(res["lat"]))
                log(f"round {rnd + 1}: {t.name:8} {'+authmilter' if t.milter else 'plain      '} {kind:7} C={c}: "
                    f"{rate:6.1f} msg/s p50 {_p50_ms(res['lat']):6.1f} ms errors {res['n_errors']}")
        report(cells, args, d.version(), work)
    finally:
        for stop in reversed(stops):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                log(f"stop: {exc}")
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def report(cells: dict, args: argparse.Namespace, sm_version: str, work: Path) -> None:
    med = statistics.median
    rows = []
    for (mta, kind, c), cell in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        rows.append({
            "mta": mta, "kind": kind, "concurrency": c,
            "with_msg_s": med(cell.with_rate), "without_msg_s": med(cell.without_rate),
            "with_p50_ms": med(cell.with_p50), "without_p50_ms": med(cell.without_p50),
            "added_p50_ms": med(cell.with_p50) - med(cell.without_p50),
            "authmilter_cpu_ms_per_msg": med(cell.cpu_ms), "errors": cell.errors,
            "rounds": {"with_msg_s": cell.with_rate, "without_msg_s": cell.without_rate,
                       "with_p50_ms": cell.with_p50, "without_p50_ms": cell.without_p50, "cpu_ms": cell.cpu_ms},
        })
    pf_version = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True,
                                check=False).stdout.strip()
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=False).stdout.strip()
    milter = "bench/null_milter.py (the floor)" if args.null_milter else f"authmilter {rev}"
    head = (f"{milter} ({args.socket} socket) behind Postfix {pf_version} and Sendmail {sm_version}; "
            f"{os.cpu_count()} CPUs, {platform.platform()}; {args.count} messages per run, "
            f"{args.rounds} rounds, medians; 2 KB messages; load average at the end "
            f"{os.getloadavg()[0]:.2f}")
    lines = [f"# authmilter behind Postfix and Sendmail ({datetime.date.today()})", "", head, "",
             "| kind | C | MTA | msg/s with authmilter | msg/s without | p50 ms with | p50 ms without "
             "| added ms/msg | authmilter CPU ms/msg | errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['concurrency']} | {r['mta']} | {r['with_msg_s']:.0f} | "
                     f"{r['without_msg_s']:.0f} | {r['with_p50_ms']:.1f} | {r['without_p50_ms']:.1f} | "
                     f"{r['added_p50_ms']:+.1f} | {r['authmilter_cpu_ms_per_msg']:.2f} | {r['errors']} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"header": head, "rows": rows}, indent=1))
    log(f"wrote {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    sys.exit(main())
