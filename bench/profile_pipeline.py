"""Where authmilter's CPU goes per message, without the milter transport.

Starts the bench DNS server (knotd, as bench/run.py does), loads one Runtime from the
bench config, and runs ``pipeline.process`` on the bench messages in a loop under
cProfile: the pure per-message cost of signing or of SPF+DKIM+DMARC, for comparison
with the "cpu ms/msg" column of the benchmark (which adds libmilter, pymilter and the
worker processes).

    .venv/bin/python bench/profile_pipeline.py --kind inbound -n 500 --top 25
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=("sign", "inbound"), default="inbound")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("-n", "--count", type=int, default=500)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--sort", default="cumulative", help="pstats sort key (cumulative, tottime)")
    args = ap.parse_args(argv)

    from authmilter.config.schema import load_settings
    from authmilter.model import Client, Envelope, Message, Session
    from authmilter.pipeline import process
    from authmilter.runtime import Runtime

    base = HERE / "results"
    base.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=base))
    dns = None
    try:
        ip, port = bench.pick_dns_address()
        keyfile, pub = bench.make_key(work / "keys")
        s = bench.Setup(work, ip, port, keyfile, pub)
        bench.write_tables(s)
        dns = bench.start("knotd", ["knotd", "-c", str(bench.knot_conf(s))], work)
        bench._wait_dns(s, dns)
        runtime = Runtime.load(load_settings(bench.authmilter_conf(s, work / "unused.sock", 1)))
        if args.kind == "sign":
            raws = [bench.make_message(i, args.size, "out") for i in range(16)]
            client = Client(ip=bench.OUTBOUND_IP, hostname="client", helo="client", port=40000)
            env = Envelope(mail_from=f"alice@{bench.OUT_DOMAIN}", rcpts=("bob@example.org",))
        else:
            raws = [bench.presign(bench.make_message(i, args.size, "in"), keyfile) for i in range(16)]
            client = Client(ip=bench.INBOUND_IP, hostname=f"mail.{bench.IN_DOMAIN}",
                            helo=f"mail.{bench.IN_DOMAIN}", port=40000)
            env = Envelope(mail_from=f"sender@{bench.IN_DOMAIN}", rcpts=(f"user@{bench.OUT_DOMAIN}",))
        sessions = [Session(client=client, envelope=env, message=Message.from_bytes(r),
                            macros=MappingProxyType({"j": bench.AUTHSERV_ID, "i": "4BENCH0QID"}),
                            queue_id="4BENCH0QID") for r in raws]
        for sess in sessions:                   # warm the DNS cache
            out = process(sess, runtime)
        print(f"outcome: {out.action} {[(e.op, e.name, e.value[:60]) for e in out.edits]}")
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(args.count):
            process(sessions[i % len(sessions)], runtime)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{args.kind} {args.size} B: {1e3 * cpu / args.count:.3f} ms CPU/msg, "
              f"{args.count / wall:.0f} msg/s on one core (no milter transport)")
        prof = cProfile.Profile()
        prof.enable()
        for i in range(args.count):
            process(sessions[i % len(sessions)], runtime)
        prof.disable()
        pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)
    finally:
        if dns is not None:
            dns.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
