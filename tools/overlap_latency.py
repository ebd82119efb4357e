# ruff: noqa: B023  (the closures run and finish within their loop iteration)
"""End-of-message latency with DNS prefetch on and off, at a delaying loopback DNS server.

Not a benchmark of record (bench/ is): a quick check for issue 15. For each side, 50
messages from distinct cold domains (SPF with one include, a DKIM key, DMARC), one at
a time. The client plays Postfix: MAIL and RCPT reach the milter as the SMTP client
sends them, headers and body only after the client's end-of-data (here *gap_ms* after
MAIL). Latency = from the first header packet (Postfix's end-of-data) to the final reply.

    .venv/bin/python tools/overlap_latency.py [--delay-ms 20] [--gap-ms 60] [-n 50]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from infra.dnsserver import DNSServer  # noqa: E402
from infra.milter import split_message  # noqa: E402
from milterd import Daemon  # noqa: E402

from authmilter import keys  # noqa: E402
from authmilter.dkim.sign import SigningKey, sign  # noqa: E402
from authmilter.model import Message  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--gap-ms", type=float, default=60.0, help="MAIL FROM to end-of-data")
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--sides", default="off,on", help="prefetch settings to run, in order; "
                    '"base" runs the code under --base-src (e.g. an export of main) without the setting')
    ap.add_argument("--base-src", default="", help="a src/ directory for the side \"base\"")
    ap.add_argument("--dns-process", action="store_true",
                    help="serve DNS from a separate process (at high concurrency the client's threads "
                         "would otherwise delay the answers)")
    args = ap.parse_args()
    pk = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with (_RemoteDNS(args.delay_ms / 1000) if args.dns_process else DNSServer()) as dns, \
            tempfile.TemporaryDirectory() as tmp:
        dns.delay_s = args.delay_ms / 1000
        out = {}
        for side in args.sides.split(","):
            flag = side == "on"
            msgs = []
            for i in range(args.n):
                d = f"s{i}-{side}-w{args.workers}-c{args.concurrency}.cold.example"
                dns.add_txt(d, f"v=spf1 include:_spf.{d} -all")
                dns.add_txt(f"_spf.{d}", "v=spf1 ip4:192.0.2.0/24 -all")
                dns.add_txt(f"_dmarc.{d}", "v=DMARC1; p=none")
                key = SigningKey(d, "sel", "rsa-sha256", pk, 2048, "mem")
                dns.add_txt(f"sel._domainkey.{d}", keys.dns_record(pk))
                raw = (f"From: A <a@{d}>\r\nTo: b@mx.test\r\nSubject: t\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
                       f"Message-ID: <{i}@{d}>\r\n\r\n" + "Hello.\r\n" * 40).encode()
                sig = sign(Message.from_bytes(raw), key, sign_headers=("From", "To", "Subject", "Date"))
                msgs.append((d, b"DKIM-Signature:" + sig.encode() + b"\r\n" + raw))
            directory = Path(tmp) / side
            directory.mkdir()
            dns_config: dict[str, object] = {"servers": [dns.address], "timeout_s": 3.0}
            env = None
            if side == "base":
                env = {"PYTHONPATH": args.base_src}
            else:
                dns_config["prefetch"] = flag
            daemon = Daemon(directory, {
                "socket": f"unix:{directory}/m.sock", "authserv_id": "mx.test", "workers": args.workers,
                "log_level": "info", "dns": dns_config, "signing": {"enabled": False}}, env=env).start()
            lat: list[float] = []
            errors: list[BaseException] = []

            def one(i: int, d: str, raw: bytes) -> None:
                with daemon.client() as c:
                    c.negotiate()
                    c.connect(hostname=f"mail.{d}", ip="192.0.2.10", macros={"j": "mx.test"})
                    c.helo(f"mail.{d}")
                    c.mail(f"b@{d}", macros={"i": f"Q{i}"})
                    c.rcpt("b@mx.test")
                    time.sleep(args.gap_ms / 1000)          # the SMTP client's DATA and content
                    headers, body = split_message(raw)
                    t0 = time.perf_counter()
                    for name, value in headers:
                        c.header(name, value)
                    c.eoh()
                    c.body(body)
                    r = c.eom(macros={"i": f"Q{i}"})
                    lat.append((time.perf_counter() - t0) * 1000)
                    ar = r.headers_named("Authentication-Results")[0]
                    assert "spf=pass" in ar and "dkim=pass" in ar and "dmarc=pass" in ar, ar

            def runner(k: int) -> None:
                try:
                    for i in range(k, len(msgs), args.concurrency):
                        one(i, *msgs[i])
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            started = time.perf_counter()
            try:
                threads = [threading.Thread(target=runner, args=(k,)) for k in range(args.concurrency)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            finally:
                inside = sorted(float(m) for m in re.findall(r" ms=([0-9.]+)", daemon.log()))
                daemon.stop()
            wall = time.perf_counter() - started
            if errors:
                raise errors[0]
            lat.sort()
            out[side] = lat
            print(f"prefetch {side:3}: n={len(lat)} C={args.concurrency} workers={args.workers} "
                  f"eom p50 {statistics.median(lat):.1f} ms  p90 {lat[int(len(lat) * 0.9)]:.1f} ms  "
                  f"p99 {lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.1f} ms  max {lat[-1]:.1f} ms  "
                  f"{len(lat) / wall:.0f} msg/s (DNS delay {args.delay_ms:g} ms, MAIL->end-of-data {args.gap_ms:g} ms)",
                  flush=True)
            if inside:
                print(f"    inside the pipeline (log ms=): p50 {statistics.median(inside):.0f} ms  "
                      f"p99 {inside[min(len(inside) - 1, int(len(inside) * 0.99))]:.0f} ms", flush=True)


class _RemoteDNS:
    """tests/infra/dnsserver.py in a child process: TXT records are sent to it as lines."""

    def __init__(self, delay_s: float) -> None:
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from infra.dnsserver import DNSServer\n"
                "s = DNSServer().start(); s.delay_s = float(sys.argv[2]); print(s.port, flush=True)\n"
                "for line in sys.stdin:\n"
                "    name, _, value = line.rstrip('\\n').partition(' '); s.add_txt(name, value); print('ok', flush=True)\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT / "tests"), str(delay_s)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.address = f"127.0.0.1:{self.port}"
        self.delay_s = delay_s

    def add_txt(self, name: str, value: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{name} {value}\n")
        self.proc.stdin.flush()
        self.proc.stdout.readline()

    def __enter__(self) -> _RemoteDNS:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


if __name__ == "__main__":
    main()
