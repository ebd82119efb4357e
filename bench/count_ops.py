"""DNS lookups and RSA operations one message costs, counted, not timed.

Starts the bench DNS server (knotd, as bench/run.py does), loads a Runtime from the bench
config plus an ``[arc]`` section, and runs ``pipeline.process`` on one bench message with a
cold resolver cache, then on a second message with the cache warm, counting every lookup
that reached the DNS server (``Resolver._lookup``) and every RSA private-key signature
(``dkim.sign.sign_bytes``) and public-key verification (``dkim.verify.check_signature``):

    .venv/bin/python bench/count_ops.py --kind inbound --seal     # seal_inbound = true
    .venv/bin/python bench/count_ops.py --kind sign --seal        # re-submitted mail, signed + sealed
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import MappingProxyType

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=("sign", "inbound"), default="inbound")
    ap.add_argument("--seal", action="store_true", help="[arc] sealing_table; inbound: seal_inbound = true")
    args = ap.parse_args(argv)

    from authmilter import resolver as resolver_mod
    from authmilter.config.schema import load_settings
    from authmilter.dkim import sign as dkim_sign
    from authmilter.dkim import verify as dkim_verify
    from authmilter.model import Client, Envelope, Message, Session
    from authmilter.pipeline import process
    from authmilter.runtime import Runtime

    queries: list[str] = []
    rsa: Counter[str] = Counter()
    orig_lookup, orig_sign, orig_check = (resolver_mod.Resolver._lookup, dkim_sign.sign_bytes,
                                          dkim_verify.check_signature)

    def lookup(self, name, rdtype, lifetime):  # type: ignore[no-untyped-def]
        queries.append(f"{rdtype} {name}")
        return orig_lookup(self, name, rdtype, lifetime)

    def sign_bytes(key, data):  # type: ignore[no-untyped-def]
        rsa[f"sign ({key.algorithm})"] += 1
        return orig_sign(key, data)

    def check_signature(record, hash_name, sig, data):  # type: ignore[no-untyped-def]
        rsa["verify"] += 1
        return orig_check(record, hash_name, sig, data)

    resolver_mod.Resolver._lookup = lookup  # type: ignore[method-assign]
    dkim_sign.sign_bytes = sign_bytes  # type: ignore[assignment]
    dkim_verify.check_signature = check_signature  # type: ignore[assignment]

    base = HERE / "results"
    base.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=base))
    dns = None
    try:
        s, knot = bench.prepare(work)     # as bench/run.py starts it
        dns = knot.process
        knot.start()
        extra = bench.sealing_side_conf(work) if args.seal else ""
        if args.seal and args.kind == "inbound":
            extra += "seal_inbound = true\n"
        runtime = Runtime.load(load_settings(bench.authmilter_conf(s, work / "unused.sock", 1, extra=extra)))
        if args.kind == "sign":
            raws = [bench.make_message(i, 2048, "out") for i in range(2)]
            if args.seal:
                raws = [bench.resubmitted(r) for r in raws]
            client = Client(ip=bench.OUTBOUND_IP, hostname="client", helo="client", port=40000)
            env = Envelope(mail_from=f"alice@{bench.OUT_DOMAIN}", rcpts=("bob@example.org",))
        else:
            raws = [bench.presign(bench.make_message(i, 2048, "in"), s.keyfile) for i in range(2)]
            client = Client(ip=bench.INBOUND_IP, hostname=f"mail.{bench.IN_DOMAIN}",
                            helo=f"mail.{bench.IN_DOMAIN}", port=40000)
            env = Envelope(mail_from=f"sender@{bench.IN_DOMAIN}", rcpts=(f"user@{bench.OUT_DOMAIN}",))
        # the modules that imported the functions by name (dkim.arc), once all are loaded
        for mod in list(sys.modules.values()):
            if getattr(mod, "__name__", "").startswith("authmilter."):
                if getattr(mod, "sign_bytes", None) is orig_sign:
                    mod.sign_bytes = sign_bytes  # type: ignore[attr-defined]
                if getattr(mod, "check_signature", None) is orig_check:
                    mod.check_signature = check_signature  # type: ignore[attr-defined]
        for label, raw in (("cold cache", raws[0]), ("warm cache", raws[1])):
            queries.clear()
            rsa.clear()
            sess = Session(client=client, envelope=env, message=Message.from_bytes(raw),
                           macros=MappingProxyType({"j": bench.AUTHSERV_ID, "i": "4BENCH0QID"}),
                           queue_id="4BENCH0QID")
            out = process(sess, runtime)
            print(f"{args.kind}{' + seal' if args.seal else ''}, {label}: action={out.action.value} "
                  f"inserted={[e.name for e in out.insertions]}")
            print(f"  DNS lookups sent: {len(queries)}" + "".join(f"\n    {q}" for q in queries))
            print(f"  RSA operations: {sum(rsa.values())} {dict(rsa)}")
    finally:
        if dns is not None:
            dns.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
