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
import sys
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
    from authmilter.model import Message, Session
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

    with bench.started_world() as s:
        extra = bench.sealing_side_conf(s.work) if args.seal else ""
        if args.seal and args.kind == "inbound":
            extra += "seal_inbound = true\n"
        runtime = Runtime.load(load_settings(bench.authmilter_conf(s, s.work / "unused.sock", 1, extra=extra)))
        raws, client, env = bench.pipeline_messages(args.kind, s, 2, 2048)
        if args.kind == "sign" and args.seal:
            raws = [bench.resubmitted(r) for r in raws]
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
