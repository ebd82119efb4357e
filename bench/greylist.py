"""RCPT-stage latency added by greylisting (SQLite, PostgreSQL) and by a DNSBL lookup
(issue 13 figures), measured against the real daemon over its socket.

    .venv/bin/python bench/greylist.py [-n 300] [--no-postgresql]

Each sample is one milter connection (unix socket): connect, HELO, MAIL (no reply
asked), then RCPT timed from send to reply. Scenarios, all with greylisting at RCPT:

- baseline: the client is allow-listed (whitelist_clients): RCPT is answered after the
  exemption rules, no SPF, no store - the cost of asking at RCPT at all;
- greylist new triplet / known triplet on SQLite and on PostgreSQL (a sender whose SPF
  passes, warm DNS cache: SPF at RCPT, two or three store reads, one write);
- DNSBL (greylisting off, action = reject): cold (a new client IP each time, so the
  query goes to the loopback DNS server) and warm (the same IP: cache hit). The queries
  start at connect; RCPT follows immediately, so this is the worst case of a list that
  answers within the connect-to-RCPT gap.

DNS is the loopback server of the tests (tests/dnsserver.py), PostgreSQL a private
server (tests/pgserver.py): figures are about authmilter's own cost, not the network's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from dnsserver import DNSServer
from milterd import Daemon
from pgserver import PgServer, missing_reason

from authmilter.config.schema import StoreSettings


def timed_rcpt(daemon: Daemon, ip: str, sender: str, rcpt: str) -> tuple[float, str]:
    with daemon.client() as c:
        c.negotiate()
        c.connect(hostname=f"[{ip}]", ip=ip)
        c.helo("mail.pool.example")
        c.mail(sender, macros={"i": "B1"})
        started = time.perf_counter()
        reply = c.rcpt(rcpt)
        elapsed = time.perf_counter() - started
        c.abort()
        c.quit()
    if reply is None:
        return elapsed, "no reply"
    return elapsed, str(reply[1].get("smtpcode", "")) if reply[1] else {"c": "continue"}.get(reply[0], reply[0])


def series(n: int, sample: Callable[[int], tuple[float, str]]) -> tuple[list[float], set[str]]:
    times, answers = [], set()
    for i in range(n):
        t, a = sample(i)
        times.append(t * 1000)
        answers.add(a)
    return times, answers


def fmt(name: str, times: list[float], answers: set[str]) -> str:
    q = statistics.quantiles(times, n=10)
    return (f"| {name} | {statistics.median(times):.2f} | {q[8]:.2f} | {len(times)} | "
            f"{','.join(sorted(answers))} |")


def greylist_rows(d: Daemon, label: str, n: int, baseline: bool) -> list[str]:
    rows = []
    if baseline:
        rows.append(fmt("baseline: RCPT answered, client allow-listed (no SPF, no store)",
                        *series(n, lambda i: timed_rcpt(d, "198.51.100.1", "a@pool.example", f"b{i}@mx.bench"))))
    timed_rcpt(d, "198.51.100.2", "a@pool.example", "warm@mx.bench")   # warm the SPF cache
    for what in ("new triplet (deferred)", "retry after delay (passes; 3 writes)",
                 "known domain and recipient (passes)"):
        if what.startswith("retry"):
            time.sleep(1.5)   # past delay_s: the same triplets now pass
        rows.append(fmt(f"greylist {label}: {what}",
                        *series(n, lambda i: timed_rcpt(d, "198.51.100.2", "a@pool.example", f"new{i}@mx.bench"))))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=300, help="samples per scenario")
    ap.add_argument("--no-postgresql", action="store_true")
    args = ap.parse_args()
    rows = ["| scenario | median ms | p90 ms | samples | RCPT answers |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp, DNSServer() as dns:
        base = Path(tmp)
        dns.add_txt("pool.example", "v=spf1 ip4:198.51.100.0/24 ip4:10.0.0.0/8 -all")
        allow = base / "clients"
        allow.write_text("198.51.100.1\n")
        common: dict[str, Any] = {"authserv_id": "mx.bench", "workers": 1, "log_level": "info",
                                  "dns": {"servers": [f"127.0.0.1:{dns.port}"], "timeout_s": 2.0},
                                  "signing": {"enabled": False}}

        def start(name: str, **config: Any) -> Daemon:
            d = base / name
            d.mkdir()
            return Daemon(d, {**common, "socket": f"unix:{d}/m.sock", **config}).start()

        stores: list[tuple[str, str, None]] = [("SQLite", f"sqlite://{base}/state.db", None)]
        pg = None
        if not args.no_postgresql and not missing_reason():
            pg = PgServer().start()
            stores.append(("PostgreSQL", pg.create_database("bench_greylist"), None))
        try:
            for label, url, _ in stores:
                store: dict[str, Any] = {"url": url}
                if "journal_dir" in StoreSettings.__dataclass_fields__:   # where this tree has the record journal
                    store["journal_dir"] = str(base / f"journal-{label}")
                d = start(f"gl-{label}", store=store,
                          greylist={"enabled": True, "delay_s": 1, "auto_allow_after": 0,
                                    "whitelist_clients": [str(allow)]})
                rows.extend(greylist_rows(d, label, args.n, baseline=label == "SQLite"))
                d.stop()
            for i in range(args.n + 1):
                dns.add(f"{i % 250 + 1}.{i // 250}.0.10.bl.bench", "A", "127.0.0.2")
            d = start("dnsbl", dnsbl={"zones": ["bl.bench=127.0.0.[2..11]"], "action": "reject"})
            rows.append(fmt("DNSBL cold (new client IP: query to DNS)",
                            *series(args.n, lambda i: timed_rcpt(d, f"10.0.{i // 250}.{i % 250 + 1}",
                                                                 "a@pool.example", "b@mx.bench"))))
            rows.append(fmt("DNSBL warm (same client IP: cache hit)",
                            *series(args.n, lambda i: timed_rcpt(d, "10.0.0.1", "a@pool.example", "b@mx.bench"))))
            d.stop()
        finally:
            if pg is not None:
                pg.stop()
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
