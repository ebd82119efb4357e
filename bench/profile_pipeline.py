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
import sys
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
    ap.add_argument("--stages", action="store_true",
                    help="inbound: time each check on its own (no profiler overhead) instead of cProfile")
    args = ap.parse_args(argv)

    from authmilter.config.schema import load_settings
    from authmilter.model import Message, Session
    from authmilter.pipeline import process
    from authmilter.runtime import Runtime

    with bench.started_world() as s:
        runtime = Runtime.load(load_settings(bench.authmilter_conf(s, s.work / "unused.sock", 1)))
        raws, client, env = bench.pipeline_messages(args.kind, s, 16, args.size)
        sessions = [Session(client=client, envelope=env, message=Message.from_bytes(r),
                            macros=MappingProxyType({"j": bench.AUTHSERV_ID, "i": "4BENCH0QID"}),
                            queue_id="4BENCH0QID") for r in raws]
        for sess in sessions:                   # warm the DNS cache
            out = process(sess, runtime)
        print(f"outcome: {out.action} deleted {[(e.name, e.index) for e in out.deletions]} "
              f"inserted {[(e.name, e.value[:60]) for e in out.insertions]}")
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(args.count):
            process(sessions[i % len(sessions)], runtime)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{args.kind} {args.size} B: {1e3 * cpu / args.count:.3f} ms CPU/msg, "
              f"{args.count / wall:.0f} msg/s on one core (no milter transport)")
        if args.stages and args.kind == "inbound":
            time_stages(sessions, runtime, args.count)
            return 0
        prof = cProfile.Profile()
        prof.enable()
        for i in range(args.count):
            process(sessions[i % len(sessions)], runtime)
        prof.disable()
        pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)
    return 0


def time_stages(sessions: list, runtime: object, count: int) -> None:
    """CPU per call of each inbound step, measured alone on warm caches."""
    from authmilter import authresults
    from authmilter.checks import arc, dkim, dmarc, fromhdr, spf
    from authmilter.ops.logsafe import log_line
    from authmilter.pipeline import classify, process

    rt = runtime
    v = rt.settings.verify  # type: ignore[attr-defined]
    sess = sessions[0]
    res = rt.resolver.budget(5.0)  # type: ignore[attr-defined]
    ip, helo, mfrom = sess.client.ip, sess.client.helo, sess.envelope.mail_from
    from_ = fromhdr.parse_from(sess.message)
    spf_r = spf.check_spf(ip, mfrom, helo, res, receiver=bench.AUTHSERV_ID)
    dk = dkim.verify_dkim(sess.message, res)
    dm = dmarc.check_dmarc(from_, spf_r, dk, res, mode=v.dmarc_mode, psl=rt.psl)  # type: ignore[attr-defined]
    infos = [spf_r.resinfo(), *(d.resinfo() for d in dk), dm.resinfo()]
    out = process(sess, rt)  # type: ignore[arg-type]
    stages = {
        "whole pipeline.process": lambda: process(sess, rt),  # type: ignore[arg-type]
        "resolver.budget": lambda: rt.resolver.budget(5.0),  # type: ignore[attr-defined]
        "fromhdr.parse_from": lambda: fromhdr.parse_from(sess.message),
        "spf.check_spf (MAIL FROM)": lambda: spf.check_spf(ip, mfrom, helo, res, receiver=bench.AUTHSERV_ID),
        "spf.check_helo": lambda: spf.check_helo(ip, helo, res, receiver=bench.AUTHSERV_ID),
        "dkim.verify_dkim": lambda: dkim.verify_dkim(sess.message, res),
        "dmarc.check_dmarc": lambda: dmarc.check_dmarc(from_, spf_r, dk, res, mode=v.dmarc_mode,
                                                       psl=rt.psl),  # type: ignore[attr-defined]
        "arc.check_arc": lambda: arc.check_arc(sess.message, res),
        "pipeline.classify": lambda: classify(sess, rt),  # type: ignore[arg-type]
        "authresults.forged_indices": lambda: authresults.forged_indices(sess.message.headers, bench.AUTHSERV_ID),
        "trusted_relays.contains_ip": lambda: rt.trusted_relays.contains_ip(ip),  # type: ignore[attr-defined]
        "forwarders.contains": lambda: rt.forwarders.contains(ip, sess.client.hostname),  # type: ignore[attr-defined]
        "authresults.render": lambda: authresults.render(bench.AUTHSERV_ID, infos),
        "log_line": lambda: log_line("4BENCH0QID", out.log),
    }
    for name, fn in stages.items():
        fn()
        c0 = time.process_time()
        for _ in range(count):
            fn()
        print(f"{name:32s} {1e3 * (time.process_time() - c0) / count:7.3f} ms CPU/call")


if __name__ == "__main__":
    sys.exit(main())
