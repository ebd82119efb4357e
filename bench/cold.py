"""Cold caches, real DNS latency, a real client's pace: authmilter against the OpenDKIM →
OpenDMARC chain and rspamd (issue 15 parts 2–4).

What runs (all on loopback, in a fresh bench/results/work-* directory, stopped at the end):

* knotd serving one zone, ``example.``, with thousands of sender domains ``dNNNNN.example``, each
  a registered domain of its own: SPF ``v=spf1 include:_spf.D -all`` (the include lists
  the client's network), a DKIM key ``bench._domainkey.D``, DMARC ``v=DMARC1; p=reject``
  and ``mail.D`` (the HELO name: an A record, no SPF);
* a delaying DNS proxy (tests/infra/dnsproxy.py) in front of knotd on 127.77.53.1:53 (UDP
  and TCP, every answer held ``--dns-latency-ms``, no cache): the only DNS server every side
  knows — authmilter's ``[dns] servers``, OpenDKIM's ``Nameservers``, OpenDMARC/libspf2
  through a private /etc/resolv.conf (``unshare -m``, port 53 because resolv.conf takes
  no port), rspamd's ``dns { nameserver }``;
* the sides: authmilter (``--authmilter BIN``, default the install beside this Python),
  optionally a second build (``--baseline BIN``), OpenDKIM (verify) → OpenDMARC as Postfix
  chains them, and rspamd 3.4 (``rspamd_proxy`` with ``milter = yes``, ``self_scan``, only
  the DKIM, SPF, DMARC and ARC checks, plus ``milter_headers`` for its
  Authentication-Results; no Redis);
* the client (bench/client.py ``run_paced``) in this process.

Every message comes from a domain the side has not seen: the sides walk the same list of
domains, each with its own cursor, so every side gets the same messages and no side ever
sees a domain twice (warm-up uses its own domains). Messages are DKIM-signed by their
domain beforehand (dkimpy). Sessions are paced like an SMTP client talking to Postfix:
one client round trip (``--client-rtt-ms``) between connect, EHLO, MAIL, RCPT and DATA,
and one more before the content, which the milters get only after the end-of-data.

``--sign``: signing next to OpenDKIM (sign mode) and rspamd's ``dkim_signing`` (a second
rspamd with only that module), same key and messages, unpaced as bench/run.py does it.
``--rss``: authmilter's RSS with 200 idle sessions held open mid-transaction, and while a
50 MB message is in flight compared with a 2 KB one.

Results: a table on stdout, ``-o`` PATH.md and PATH.json (default bench/results/cold).
"""
from __future__ import annotations

import argparse
import datetime
import email.utils
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

import client as mc
from infra import dnsproxy
from infra.knot import Knot, Zone, knotd_path
from infra.milter import MilterClient
from infra.procs import authmilter_command, free_port, scan_proc, wait_for

import run as rb  # bench/run.py: keys, tables, OpenDKIM/OpenDMARC configs, helpers

SELECTOR = rb.SELECTOR
AUTHSERV_ID = rb.AUTHSERV_ID
CLIENT_IP = "192.0.2.10"
RCPT_DOMAIN = rb.OUT_DOMAIN

log = rb.log


# -- domains, zone, messages ------------------------------------------------------------------


# Not .test: libunbound (OpenDKIM's resolver) answers names under the RFC 6761 special-use
# TLDs (test., invalid., ...) itself, NXDOMAIN, without asking the forwarder.
TLD = "example"


def domain(i: int, prefix: str = "d") -> str:
    return f"{prefix}{i:05d}.{TLD}"


def cold_zone(domains: Sequence[str], pubkey: str, ns_ip: str) -> Zone:
    """One zone with every sender domain; each a registered domain (``example`` is not in
    the PSL, so the default rule makes ``dNNNNN.example`` the organizational domain)."""
    z = Zone(TLD, ttl=3600, negative_ttl=300, ns_ip=ns_ip)
    dkim = f"v=DKIM1; k=rsa; p={pubkey}"
    for d in domains:
        z.txt(d, f"v=spf1 include:_spf.{d} -all")
        z.txt(f"_spf.{d}", "v=spf1 ip4:192.0.2.0/24 -all")
        z.add(f"mail.{d}", "A", CLIENT_IP)
        z.txt(f"{SELECTOR}._domainkey.{d}", dkim)
        z.txt(f"_dmarc.{d}", "v=DMARC1; p=reject")
    return z


def make_message(i: int, dom: str, size: int) -> bytes:
    head = (f"Received: from mail.{dom} (mail.{dom} [{CLIENT_IP}])\n"
            f"\tby {AUTHSERV_ID} (Postfix) with ESMTPS id 4COLD{i:05d}\n\tfor <user@{RCPT_DOMAIN}>; "
            f"{email.utils.formatdate(1767225600 + i)}\n"
            f"From: Sender <sender@{dom}>\nTo: user@{RCPT_DOMAIN}\nSubject: cold message {i}\n"
            f"Date: {email.utils.formatdate(1767225600 + i)}\n"
            f"Message-ID: <cold.{i}@{dom}>\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n")
    return rb.with_text(head, i, size)


def _sign_one(job: tuple[int, str, int, bytes]) -> bytes:
    import dkim

    i, dom, size, key = job
    raw = make_message(i, dom, size)
    return dkim.sign(raw, SELECTOR.encode(), dom.encode(), key, canonicalize=(b"relaxed", b"relaxed"),
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id",
                                      b"mime-version", b"content-type"]) + raw


def signed_messages(domains: Sequence[str], keyfile: Path, size: int, offset: int = 0) -> list[bytes]:
    """One message per domain, DKIM-signed by it (dkimpy, relaxed/relaxed), on every CPU."""
    key = keyfile.read_bytes()
    jobs = [(offset + i, d, size, key) for i, d in enumerate(domains)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 2) as pool:
        return pool.map(_sign_one, jobs, chunksize=64)


def envelope(dom: str) -> mc.Envelope:
    return mc.default_envelope(CLIENT_IP, f"<sender@{dom}>", (f"<user@{RCPT_DOMAIN}>",), helo=f"mail.{dom}")


# -- rspamd ----------------------------------------------------------------------------------

RSPAMD_PLUGINS = Path("/usr/share/rspamd/plugins")
RSPAMD_C_MODULES = ("chartable", "dkim", "fuzzy_check", "regexp")


def rspamd_conf(work: Path, name: str, sock: Path, dns: str, *, enable: Sequence[str], workers: int,
                extra: str = "", local_addrs: str = "[]") -> Path:
    """A minimal rspamd config of our own: one ``rspamd_proxy`` worker process per CPU in
    milter mode scanning by itself (``self_scan``), the modules in *enable* and nothing
    else (every other C module and Lua plugin disabled by name), no Redis, no rules file,
    logs and state in *work*. rspamd has no DNS cache of its own: it queries *dns* for
    every lookup, as it would a local caching resolver."""
    d = work / name
    d.mkdir(exist_ok=True)
    plugins = sorted(p.stem for p in RSPAMD_PLUGINS.glob("*.lua")) if RSPAMD_PLUGINS.is_dir() else []
    off = [m for m in (*RSPAMD_C_MODULES, *plugins) if m not in enable]
    c_on = ",".join(m for m in RSPAMD_C_MODULES if m in enable)
    sections = "\n".join(f"{m} {{ enabled = false; }}" for m in off)
    conf = d / "rspamd.conf"
    conf.write_text(f"""\
options {{
    pidfile = "{d}/rspamd.pid";
    filters = "{c_on}";
    dns {{
        nameserver = ["{dns}"];
        timeout = 5s;
        retransmits = 1;
        sockets = 16;
    }}
    local_addrs = {local_addrs};
    tempdir = "{d}";
    cache_file = "{d}/symbols.cache";
    hs_cache_dir = "{d}/";
    url_tld = "/usr/share/rspamd/effective_tld_names.dat";
    task_timeout = 30s;
    check_all_filters = false;
    explicit_modules = [];
}}
logging {{
    type = "file";
    filename = "{d}/rspamd.log";
    level = "info";
}}
actions {{
    reject = 15;
    add_header = 6;
}}
worker "rspamd_proxy" {{
    bind_socket = "{sock} mode=0666";
    milter = yes;
    self_scan = yes;
    count = {workers};
    timeout = 120s;
    upstream "local" {{
        default = yes;
        self_scan = yes;
    }}
}}
modules {{
    path = "{RSPAMD_PLUGINS}";
}}
{sections}
{extra}
""")
    return conf


RSPAMD_VERIFY_EXTRA = """\
dkim { }
spf { }
dmarc { }
arc { }
milter_headers {
    use = ["authentication-results", "x-spamd-result"];
    authenticated_headers = ["authentication-results"];
}
"""


def rspamd_sign_extra(keyfile: Path) -> str:
    # dkim_signing signs through the DKIM C module, which must be loaded (it verifies
    # nothing here: outbound messages carry no signature yet)
    return f"""\
dkim {{ }}
dkim_signing {{
    sign_local = true;
    sign_authenticated = true;
    sign_inbound = false;
    use_domain = "header";
    allow_username_mismatch = true;
    use_esld = true;
    domain {{
        {rb.OUT_DOMAIN} {{
            path = "{keyfile}";
            selector = "{SELECTOR}";
        }}
    }}
}}
"""


# -- the measurement ---------------------------------------------------------------------------


@dataclass
class Side:
    label: str
    hops: list[str]
    procs: list[rb.Proc]
    cursor: int = 0                     # the next fresh domain of the pool
    hop_objs: tuple[mc.Hop, ...] = ()
    runs: dict[int, list[dict]] = field(default_factory=dict)
    check: Callable[[mc.SessionResult], bool] = field(default=lambda r: check_inbound(r))


def tree_pids(root: int) -> list[int]:
    parent: dict[int, int] = {}
    for pid, stat in scan_proc("stat"):
        try:
            parent[pid] = int(stat.rsplit(b")", 1)[1].split()[1])
        except (IndexError, ValueError):
            continue
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return out


def _status_kb(pid: int, key: bytes, file: str = "status") -> int:
    try:
        with open(f"/proc/{pid}/{file}", "rb") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Peak of the summed RSS of every process of the given daemons (all workers), sampled
    from the client's loop (and of the summed PSS: shared pages divided among the processes
    sharing them, so forked workers are not counted twice); and the sum of each process's own peak (VmHWM, reset before the
    run through /proc/PID/clear_refs when allowed): an upper bound that no sample misses."""

    def __init__(self, procs: Sequence[rb.Proc], pss: bool = True) -> None:
        self.pids = [p for pr in procs for p in tree_pids(pr.pid)]
        self.peak_kb = 0
        self.peak_pss_kb = 0
        self.pss = pss
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as fh:
                    fh.write("5")
            except OSError:
                pass
        self.sample()

    def sample(self) -> None:
        self.peak_kb = max(self.peak_kb, sum(_status_kb(p, b"VmRSS:") for p in self.pids))
        if self.pss:
            self.peak_pss_kb = max(self.peak_pss_kb, sum(_status_kb(p, b"Pss:", "smaps_rollup") for p in self.pids))

    def hwm_kb(self) -> int:
        return sum(_status_kb(p, b"VmHWM:") for p in self.pids)


NULL_LABEL = "pymilter null milter (floor)"


def check_inbound(r: mc.SessionResult) -> bool:
    return rb.check_inbound(r)


def check_accepted(r: mc.SessionResult) -> bool:
    """The null milter checks nothing: its answer only has to be an accept."""
    return r.action == "a"


def measure(side: Side, msgs: list[mc.PacedMessage], conc: int, duration: float, rtt_s: float,
            dns_procs: Sequence[rb.Proc], check: Callable[[mc.SessionResult], bool]) -> dict:
    cpu0 = sum(p.cpu_s() for p in side.procs)
    dns0 = [p.cpu_s() for p in dns_procs]
    busy0 = rb.machine_busy_s()
    rss = RssSampler(side.procs)
    res = mc.run_paced(msgs, conc, duration, rtt_s, check=check, tick=rss.sample)
    rss.sample()
    busy = rb.machine_busy_s() - busy0
    cpu = sum(p.cpu_s() for p in side.procs) - cpu0
    dns_cpu = [p.cpu_s() - c for p, c in zip(dns_procs, dns0, strict=True)]
    out = res.summary()
    w = res.wall_s or float("nan")
    out.update({
        "used_domains": res.sent,
        "milter_cpu_pct": round(100 * cpu / w, 1),
        "milter_cpu_ms_per_msg": round(1e3 * cpu / res.completed, 2) if res.completed else None,
        "peak_rss_mb": round(rss.peak_kb / 1024, 1),
        "peak_pss_mb": round(rss.peak_pss_kb / 1024, 1),
        "sum_hwm_mb": round(rss.hwm_kb() / 1024, 1),
        "proxy_cpu_pct": round(100 * dns_cpu[0] / w, 1),
        "knot_cpu_pct": round(100 * dns_cpu[1] / w, 1),
        "foreign_cpu_pct": round(100 * max(0.0, busy - cpu - sum(dns_cpu) - res.client_cpu_s) / w, 1),
        "samples": res.samples,
    })
    return out


def start_side_milter(name: str, argv: list[str], work: Path, address: str, procs: list[rb.Proc]) -> rb.Proc:
    p = rb.start(name, argv, work)
    procs.append(p)
    rb.wait_milter(p, address, timeout_s=60.0)
    return p


def run_all(args: argparse.Namespace, work: Path, procs: list[rb.Proc]) -> dict:
    notes: list[str] = []
    revs = {"authmilter": f"{args.authmilter or 'beside this Python'} at "
                          f"{rb._git_rev(rb._checkout_of(Path(args.authmilter)) if args.authmilter else REPO)}"}
    if args.baseline:
        revs["baseline"] = f"{args.baseline} at {rb._git_rev(rb._checkout_of(Path(args.baseline)))}"
    keyfile, pubkey = rb.make_key(work / "keys")
    proxy_ip, proxy_port = rb.pick_dns_address()
    s = rb.Setup(work, proxy_ip, proxy_port, keyfile, pubkey)
    rb.write_tables(s)

    # domains: the measured pool (every side walks it once) and the warm-up domains
    pool = [domain(i) for i in range(args.domains)]
    warm = [domain(i, "w") for i in range(args.warmup)]
    log(f"zone: {len(pool)} + {len(warm)} sender domains; signing their messages")
    t0 = time.monotonic()
    pool_msgs = signed_messages(pool, keyfile, args.size)
    warm_msgs = signed_messages(warm, keyfile, args.size, offset=len(pool))
    log(f"signed {len(pool_msgs) + len(warm_msgs)} messages in {time.monotonic() - t0:.0f} s")

    knot_port = free_port("127.0.0.1")
    out_zone = Zone(rb.OUT_DOMAIN, ttl=3600, negative_ttl=300, ns_ip="127.0.0.1")
    out_zone.txt(f"{SELECTOR}._domainkey.{rb.OUT_DOMAIN}", f"v=DKIM1; k=rsa; p={pubkey}")
    knot = Knot(work, [cold_zone(pool + warm, pubkey, "127.0.0.1"), out_zone], knot_port, host="127.0.0.1",
                workers=None, log_level="warning", semantic_checks=False)
    procs.append(knot.process)
    knot.start()
    proxy = rb.start("dnsproxy", dnsproxy.command((proxy_ip, proxy_port), ("127.0.0.1", knot_port),
                                                  args.dns_latency_ms), work)
    procs.append(proxy)
    wait_for(lambda: "ready udp+tcp" in proxy.log_tail() or not proxy.running, "the DNS proxy")
    if not proxy.running:
        raise SystemExit(f"dnsproxy: {proxy.log_tail()}")
    log(f"knotd on 127.0.0.1:{knot_port}, delaying proxy ({args.dns_latency_ms} ms) on {proxy_ip}:{proxy_port}")
    dns_procs = [proxy, knot.process]

    # -- the inbound sides ----------------------------------------------------------------
    sides: list[Side] = []
    am_cmd = [args.authmilter] if args.authmilter else authmilter_command()
    base_workers = args.workers if args.baseline_workers is None else args.baseline_workers
    base_label = "authmilter (baseline)" if base_workers == args.workers else \
        f"authmilter (baseline, workers={base_workers})"
    for label, cmd, name, workers in (("authmilter", am_cmd, "authmilter", args.workers),
                                      *(((base_label, [args.baseline], "authmilter-baseline", base_workers),)
                                        if args.baseline else ())):
        sock = work / f"{name}.sock"
        conf = rb.authmilter_conf(s, sock, workers, name=f"{name}.toml")
        p = start_side_milter(name, [*cmd, "run", "-c", str(conf)], work, f"unix:{sock}", procs)
        sides.append(Side(label, [f"unix:{sock}"], [p]))

    opendkim = shutil.which("opendkim") or "/usr/sbin/opendkim"
    opendmarc = shutil.which("opendmarc") or "/usr/sbin/opendmarc"
    odv_sock, odm_sock = work / "opendkim-v.sock", work / "opendmarc.sock"
    odv = start_side_milter("opendkim-verify", [opendkim, "-f", "-x", str(rb.opendkim_conf(s, "v", odv_sock))],
                            work, f"unix:{odv_sock}", procs)
    if proxy_port == 53 and shutil.which("unshare"):
        resolv = work / "resolv.conf"
        resolv.write_text(f"nameserver {proxy_ip}\noptions timeout:5 attempts:1\n")
        dmarc_conf = rb.opendmarc_conf(s, odm_sock)
        argv = ["unshare", "-m", "sh", "-c",
                f'mount --bind "{resolv}" /etc/resolv.conf && exec "{opendmarc}" -f -c "{dmarc_conf}"']
        odm = start_side_milter("opendmarc", argv, work, f"unix:{odm_sock}", procs)
        sides.append(Side("opendkim+opendmarc", [f"unix:{odv_sock}", f"unix:{odm_sock}"], [odv, odm]))
    else:
        notes.append("OpenDMARC not run: it needs the DNS proxy on port 53 (run as root)")
        sides.append(Side("opendkim (verify only)", [f"unix:{odv_sock}"], [odv]))

    rspamd = shutil.which("rspamd")
    rsp_workers = args.rspamd_workers or (os.cpu_count() or 1)
    if rspamd and not args.no_rspamd:
        rsock = work / "rspamd-verify.sock"
        rconf = rspamd_conf(work, "rspamd-verify", rsock, f"{proxy_ip}:{proxy_port}",
                            enable=("dkim", "spf", "dmarc", "arc", "milter_headers"), workers=rsp_workers,
                            extra=RSPAMD_VERIFY_EXTRA)
        rp = start_side_milter("rspamd-verify", [rspamd, "-f", "-i", "-c", str(rconf)], work, f"unix:{rsock}",
                               procs)
        sides.append(Side("rspamd", [f"unix:{rsock}"], [rp]))
    elif not args.no_rspamd:
        notes.append("rspamd not run: not installed (make bench installs it)")

    if args.null_floor:
        nsock = work / "null-milter.sock"
        np_ = start_side_milter("null-milter", [sys.executable, str(HERE / "null_milter.py"), f"unix:{nsock}"],
                                work, f"unix:{nsock}", procs)
        sides.append(Side(NULL_LABEL, [f"unix:{nsock}"], [np_], check=check_accepted))

    for sd in sides:
        sd.hop_objs = tuple(mc.Hop(a, mc.negotiate(a)) for a in sd.hops)

    def paced(sd: Side, raws: Sequence[bytes], doms: Sequence[str]) -> list[mc.PacedMessage]:
        return [mc.paced_message(sd.hop_objs, envelope(d), raw, tag=d) for raw, d in zip(raws, doms, strict=True)]

    rtt = args.client_rtt_ms / 1e3
    samples: dict[str, dict] = {}
    # correctness first, then warm-up: the warm-up domains, never measured
    for sd in sides:
        msgs = paced(sd, warm_msgs, warm)
        one = mc.run_paced(msgs[:1], 1, 60.0, rtt, check=sd.check)
        r = one.samples[0] if one.samples else None
        added = [f"{n}: {v}" for n, v in r.headers_added()] if r else []
        ok = bool(r) and sd.check(r)
        samples[sd.label] = {"ok": ok, "action": r.action if r else None, "added": added,
                             "errors": one.error_texts}
        log(f"sample {sd.label}: ok={ok} action={r.action if r else None} added={[a[:100] for a in added]}")
        if not ok:
            notes.append(f"{sd.label}: sample check FAILED ({samples[sd.label]})")
        rest = mc.run_paced(msgs[1:], 16, 120.0, rtt, check=sd.check)
        log(f"warm-up {sd.label}: {rest.completed} messages, {rest.errors} errors, bad={rest.check_failures}")

    # -- the cells: sides interleaved within each round, order reversed every other round ----
    per_run = args.count
    cells: list[dict] = []
    for conc in args.concurrency:
        runs: dict[str, list[dict]] = {sd.label: [] for sd in sides}
        for rnd in range(args.rounds):
            order = sides if rnd % 2 == 0 else list(reversed(sides))
            for sd in order:
                n = min(per_run, len(pool) - sd.cursor)
                if n <= 0:
                    notes.append(f"{sd.label}: domain pool exhausted at C={conc} round {rnd + 1} (raise --domains)")
                    continue
                sl = slice(sd.cursor, sd.cursor + n)
                msgs = paced(sd, pool_msgs[sl], pool[sl])
                if args.wait_idle:
                    rb.wait_idle(args.wait_idle)
                r = measure(sd, msgs, conc, args.duration, rtt, dns_procs, sd.check)
                sd.cursor += r["used_domains"]
                r.pop("samples")
                runs[sd.label].append(r)
                log(f"C={conc} {sd.label} round {rnd + 1}: {r['msg_per_s']} msg/s eom p50={r.get('eom_p50_ms')} "
                    f"p99={r.get('eom_p99_ms')} whole p50={r['p50_ms']} p99={r['p99_ms']} "
                    f"cpu/msg={r['milter_cpu_ms_per_msg']} ms rss={r['peak_rss_mb']} MB errors={r['errors']} "
                    f"bad={r['check_failures']} proxy={r['proxy_cpu_pct']}% foreign={r['foreign_cpu_pct']}%")
        cells.append({"kind": "cold-inbound", "concurrency": conc,
                      "sides": {lb: summarize(rs) for lb, rs in runs.items()}})

    result = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "opendkim": rb._version([opendkim, "-V"]), "opendmarc": rb._version([opendmarc, "-V"]),
                    "rspamd": rb._version([rspamd, "--version"]) if rspamd else "-",
                    "knotd": rb._version([knotd_path(), "-V"]), **revs},
        "settings": {"domains": args.domains, "warmup": args.warmup, "per_run": per_run,
                     "duration_s": args.duration, "rounds": args.rounds, "size": args.size,
                     "dns_latency_ms": args.dns_latency_ms, "client_rtt_ms": args.client_rtt_ms,
                     "authmilter_workers": args.workers, "rspamd_workers": rsp_workers,
                     "dns": f"proxy {proxy_ip}:{proxy_port} -> knotd 127.0.0.1:{knot_port}"},
        "samples": samples, "notes": notes, "cells": cells,
    }
    if args.sign and args.sign_concurrency:
        result["sign"] = sign_cells(args, s, work, procs, am_cmd, rspamd, rsp_workers, notes)
    if args.rss:
        result["rss"] = rss_probe(args, s, work, procs, am_cmd)
    return result


def summarize(rs: list[dict]) -> dict:
    def med(key: str) -> float:
        return rb.median([r[key] for r in rs if r.get(key) is not None])

    if not rs:
        return {}
    return {
        "msg_per_s": med("msg_per_s"), "eom_p50_ms": med("eom_p50_ms"), "eom_p99_ms": med("eom_p99_ms"),
        "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"), "milter_cpu_ms_per_msg": med("milter_cpu_ms_per_msg"),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "peak_pss_mb": max(r["peak_pss_mb"] for r in rs),
        "sum_hwm_mb": max(r["sum_hwm_mb"] for r in rs),
        "proxy_cpu_pct": med("proxy_cpu_pct"), "client_cpu_pct": med("client_cpu_pct"),
        "foreign_cpu_pct": med("foreign_cpu_pct"),
        "completed": sum(r["completed"] for r in rs), "errors": sum(r["errors"] for r in rs),
        "check_failures": sum(r["check_failures"] for r in rs), "rounds": rs,
    }


# -- signing: authmilter, OpenDKIM, rspamd dkim_signing --------------------------------------------


def check_rspamd_or_signed(r: mc.SessionResult) -> bool:
    return rb.check_signed(r)


def sign_cells(args: argparse.Namespace, s: rb.Setup, work: Path, procs: list[rb.Proc], am_cmd: list[str],
               rspamd: str | None, rsp_workers: int, notes: list[str]) -> list[dict]:
    sides: list[rb.Side] = []
    sock = work / "authmilter-sign.sock"
    conf = rb.authmilter_conf(s, sock, args.workers, name="authmilter-sign.toml")
    p = start_side_milter("authmilter-sign", [*am_cmd, "run", "-c", str(conf)], work, f"unix:{sock}", procs)
    sides.append(rb.Side("authmilter", [f"unix:{sock}"], [p]))
    if rspamd and not args.no_rspamd:
        rsock = work / "rspamd-sign.sock"
        rconf = rspamd_conf(work, "rspamd-sign", rsock, f"{s.dns_ip}:{s.dns_port}", enable=("dkim", "dkim_signing"),
                            workers=rsp_workers, extra=rspamd_sign_extra(s.keyfile),
                            local_addrs='["127.0.0.0/8", "::1"]')
        rp = start_side_milter("rspamd-sign", [rspamd, "-f", "-i", "-c", str(rconf)], work, f"unix:{rsock}", procs)
        sides.append(rb.Side("rspamd", [f"unix:{rsock}"], [rp]))
    if args.null_floor:
        nsock = work / "null-milter-sign.sock"
        np_ = start_side_milter("null-milter-sign", [sys.executable, str(HERE / "null_milter.py"), f"unix:{nsock}"],
                                work, f"unix:{nsock}", procs)
        sides.append(rb.Side(NULL_LABEL, [f"unix:{nsock}"], [np_]))
    opendkim = shutil.which("opendkim") or "/usr/sbin/opendkim"
    ods_sock = work / "opendkim-s.sock"
    ods = start_side_milter("opendkim-sign", [opendkim, "-f", "-x", str(rb.opendkim_conf(s, "s", ods_sock))], work,
                            f"unix:{ods_sock}", procs)
    sides.append(rb.Side("opendkim", [f"unix:{ods_sock}"], [ods]))
    msgs = [rb.make_message(i, args.sign_size, "out") for i in range(16)]
    env = mc.default_envelope(rb.OUTBOUND_IP, f"<alice@{rb.OUT_DOMAIN}>", ("<bob@example.org>",),
                              helo=f"client.{rb.OUT_DOMAIN}")
    preps = {sd.label: mc.prepare(sd.hops, msgs, env) for sd in sides}
    for sd in sides:
        one = mc.run_one(preps[sd.label][0])
        ok = (check_accepted(one) if sd.label == NULL_LABEL
              else rb.check_signed(one) and rb.verify_sample(msgs[0], one, s.pubkey))
        sig = [v for n, v in one.headers_added() if n.lower() == "dkim-signature"]
        log(f"sign sample {sd.label}: ok={ok} (dkimpy-verified) signature={sig[0][:90] if sig else None}")
        if not ok:
            notes.append(f"sign {sd.label}: sample check FAILED (action={one.action}, added={one.headers_added()})")
        mc.run_load_procs(preps[sd.label], 8, args.warmup_sign, 30.0)
    out = []
    for conc in args.sign_concurrency:
        runs: dict[str, list[dict]] = {sd.label: [] for sd in sides}
        for rnd in range(args.rounds):
            for sd in (sides if rnd % 2 == 0 else list(reversed(sides))):
                if args.wait_idle:
                    rb.wait_idle(args.wait_idle)
                cell = rb.Cell("sign", args.sign_size, conc)
                rss = RssSampler(sd.procs)
                check = check_accepted if sd.label == NULL_LABEL else rb.check_signed
                r = rb.measure(sd, preps[sd.label], cell, args.sign_count, args.sign_duration, check, 1,
                               _DnsStub())
                rss.sample()
                r.pop("samples")
                r["sum_hwm_mb"] = round(rss.hwm_kb() / 1024, 1)
                runs[sd.label].append(r)
                log(f"sign C={conc} {sd.label} round {rnd + 1}: {r['msg_per_s']} msg/s p50={r['p50_ms']} "
                    f"p99={r['p99_ms']} cpu/msg={r['milter_cpu_ms_per_msg']} errors={r['errors']} "
                    f"bad={r['check_failures']}")
        out.append({"kind": "sign", "concurrency": conc, "size": args.sign_size, "sides": {
            lb: {"msg_per_s": rb.median([r["msg_per_s"] for r in rs]),
                 "p50_ms": rb.median([r["p50_ms"] for r in rs]), "p99_ms": rb.median([r["p99_ms"] for r in rs]),
                 "milter_cpu_ms_per_msg": rb.median([r["milter_cpu_ms_per_msg"] or float("nan") for r in rs]),
                 "sum_hwm_mb": max(r["sum_hwm_mb"] for r in rs),
                 "errors": sum(r["errors"] for r in rs), "check_failures": sum(r["check_failures"] for r in rs),
                 "rounds": rs} for lb, rs in runs.items()}})
    return out


class _DnsStub:
    """bench/run.py's measure() reports a DNS server's CPU; signing asks no DNS."""

    def cpu_s(self) -> float:
        return 0.0


# -- RSS: 200 sessions, a 50 MB message ---------------------------------------------------------


def rss_probe(args: argparse.Namespace, s: rb.Setup, work: Path, procs: list[rb.Proc],
              am_cmd: list[str]) -> dict:
    """authmilter's whole-daemon RSS (every worker) at rest, with 200 sessions open at once
    (each stopped after its headers, before end-of-data, as when 200 SMTP clients are
    sending), and at the peak of one message of 2 KB and one of 50 MB (body spooled)."""
    def side(name: str, workers: int) -> tuple[rb.Proc, str, mc.Hop]:
        sock = work / f"{name}.sock"
        conf = rb.authmilter_conf(s, sock, workers, name=f"{name}.toml")
        proc = start_side_milter(name, [*am_cmd, "run", "-c", str(conf)], work, f"unix:{sock}", procs)
        addr = f"unix:{sock}"
        hop = mc.Hop(addr, mc.negotiate(addr))
        # every worker up and past its first message (first-use allocations are not the
        # state being measured): a few rounds of small messages, as many at once as workers
        procs_ = workers or 2 * (os.cpu_count() or 1)
        warm = mc.paced_message((hop,), envelope(dom), _sign_one((9, dom, 2048, key)))
        mc.run_paced([warm] * (4 * procs_), 2 * procs_, 30.0, 0.0)
        return proc, addr, hop

    dom = domain(0, "w")            # a warm-up domain of the zone: SPF, DKIM and DMARC pass
    key = s.keyfile.read_bytes()
    p, addr, hop = side("authmilter-rss", args.workers)

    def one(raw: bytes) -> tuple[float, float, bool]:
        """(peak sampled RSS MB, sum of per-process peaks MB, ok) while *raw* goes through
        (RSS only: sampling PSS every 20 ms would slow the daemon it measures). Runs on
        the one-worker side, so the run that touches every code path and the measured
        run land in the same process."""
        msg = mc.paced_message((one_hop,), envelope(dom), raw)
        mc.run_paced([msg], 1, 5.0, 0.0)                   # touch every code path once
        sampler = RssSampler([one_p], pss=False)
        res = mc.run_paced([msg], 1, 600.0, 0.0, tick=sampler.sample, tick_s=0.02)
        sampler.sample()
        ok = res.completed == 1 and not res.errors and check_inbound(res.samples[0])
        if not ok:
            log(f"rss: the {len(raw)} B message FAILED: {res.summary()} "
                f"{res.samples[0].headers_added() if res.samples else ''}")
        return round(sampler.peak_kb / 1024, 1), round(sampler.hwm_kb() / 1024, 1), ok

    base = RssSampler([p])
    idle_mb, idle_pss = round(base.peak_kb / 1024, 1), round(base.peak_pss_kb / 1024, 1)
    # Growth with message size: one worker, so that nothing but the message differs.
    one_p, _, one_hop = side("authmilter-rss-one", 1)
    small = one(_sign_one((1, dom, 2048, key)))
    t0 = time.monotonic()
    big_raw = _sign_one((2, dom, args.big_mb * 1024 * 1024, key))
    log(f"rss: signed the {args.big_mb} MB message in {time.monotonic() - t0:.0f} s")
    big = one(big_raw)
    del big_raw
    one_p.stop()
    # 200 sessions at once, held open after DATA (the milter holds state for each)
    held = []
    for _ in range(args.sessions):
        c = MilterClient(addr, timeout=30.0)
        c.negotiate()
        c.connect(hostname=f"mail.{dom}", ip=CLIENT_IP)
        c.helo(f"mail.{dom}")
        c.mail(f"sender@{dom}")
        c.rcpt(f"user@{RCPT_DOMAIN}")
        for n, v in mc.split_message(make_message(3, dom, 2048))[0]:
            c.header(n, v)
        held.append(c)
    time.sleep(1.0)
    many = RssSampler([p])
    many_mb, many_pss = round(many.peak_kb / 1024, 1), round(many.peak_pss_kb / 1024, 1)
    for c in held:
        c.abort()
        c.quit()
        c.close()
    out = {"workers": args.workers, "idle_mb": idle_mb, "idle_pss_mb": idle_pss, "sessions": args.sessions,
           "sessions_mb": many_mb, "sessions_pss_mb": many_pss,
           "small": {"size": 2048, "peak_mb": small[0], "sum_hwm_mb": small[1], "ok": small[2]},
           "big": {"size": args.big_mb * 1024 * 1024, "peak_mb": big[0], "sum_hwm_mb": big[1], "ok": big[2]}}
    log(f"rss: {out}")
    return out


# -- report ------------------------------------------------------------------------------------


def render(result: dict) -> str:
    m, st = result["machine"], result["settings"]
    lines = [f"# authmilter cold-cache benchmark — {result['when']}", "",
             f"- machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}",
             f"- authmilter: {m['authmilter']}" + (f"; baseline: {m['baseline']}" if m.get("baseline") else ""),
             f"- {m['opendkim']}; {m['opendmarc']}; {m['rspamd']}; {m['knotd']}",
             f"- {st['domains']} sender domains per side (each message from a domain the side never saw), "
             f"up to {st['per_run']} messages or {st['duration_s']} s per run, {st['rounds']} round(s) per cell, "
             f"sides interleaved (order reversed every other round), medians shown; {st['size']} B messages",
             f"- DNS: every answer held {st['dns_latency_ms']} ms ({st['dns']}, no cache); "
             f"client round trip {st['client_rtt_ms']} ms between SMTP commands; "
             f"authmilter workers={st['authmilter_workers']} (0 = two per CPU), rspamd proxy processes="
             f"{st['rspamd_workers']}", ""]
    rows = result["cells"]
    if rows:
        labels = list(rows[0]["sides"])
        lines += ["## Cold-cache inbound (SPF with one include, DKIM, DMARC p=reject)", "",
                  "| C | side | msg/s | EOM p50 ms | EOM p99 ms | whole p50 ms | whole p99 ms | CPU ms/msg "
                  "| peak RSS MB | peak PSS MB | msgs | errors/bad | proxy CPU % | foreign CPU % |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in rows:
            for lb in labels:
                sd = c["sides"].get(lb) or {}
                if not sd:
                    continue
                lines.append(f"| {c['concurrency']} | {lb} | {sd['msg_per_s']:.0f} | {sd['eom_p50_ms']:.1f} | "
                             f"{sd['eom_p99_ms']:.1f} | {sd['p50_ms']:.1f} | {sd['p99_ms']:.1f} | "
                             f"{sd['milter_cpu_ms_per_msg']:.2f} | {sd['peak_rss_mb']:.0f} | {sd['peak_pss_mb']:.0f} | "
                             f"{sd['completed']} | "
                             f"{sd['errors']}/{sd['check_failures']} | {sd['proxy_cpu_pct']:.0f} | "
                             f"{sd['foreign_cpu_pct']:.0f} |")
        lines.append("")
        peer = [lb for lb in labels if lb.startswith("opendkim")]
        if peer:
            lines += [f"Ratios against {peer[0]} (msg/s: higher is better; EOM p50: lower is better):", ""]
            for c in rows:
                p = c["sides"].get(peer[0]) or {}
                parts = []
                for lb in labels:
                    sd = c["sides"].get(lb) or {}
                    if lb == peer[0] or not sd or not p:
                        continue
                    parts.append(f"{lb} {sd['msg_per_s'] / p['msg_per_s']:.2f}x msg/s, "
                                 f"{sd['eom_p50_ms'] / p['eom_p50_ms']:.2f}x EOM p50")
                lines.append(f"- C={c['concurrency']}: " + "; ".join(parts))
            lines.append("")
    if result.get("sign"):
        labels = list(result["sign"][0]["sides"])
        lines += [f"## Signing (RSA-2048, relaxed/relaxed, {result['sign'][0]['size']} B, unpaced)", "",
                  "| C | side | msg/s | p50 ms | p99 ms | CPU ms/msg | ratio vs opendkim | errors/bad |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in result["sign"]:
            ref = c["sides"].get("opendkim", {}).get("msg_per_s") or float("nan")
            for lb in labels:
                sd = c["sides"][lb]
                lines.append(f"| {c['concurrency']} | {lb} | {sd['msg_per_s']:.0f} | {sd['p50_ms']:.1f} | "
                             f"{sd['p99_ms']:.1f} | {sd['milter_cpu_ms_per_msg']:.2f} | "
                             f"{sd['msg_per_s'] / ref:.2f}x | {sd['errors']}/{sd['check_failures']} |")
        lines.append("")
    if result.get("rss"):
        r = result["rss"]
        lines += ["## authmilter RSS (whole daemon: every process)", "",
                  "| state | RSS MB (sum over processes) | PSS MB | sum of per-process peak RSS MB |",
                  "|---|---|---|---|",
                  f"| idle | {r['idle_mb']} | {r['idle_pss_mb']} | - |",
                  f"| {r['sessions']} sessions open (after the headers) | {r['sessions_mb']} | "
                  f"{r['sessions_pss_mb']} | - |",
                  f"| one 2 KB message (a one-worker daemon) | {r['small']['peak_mb']} | - | "
                  f"{r['small']['sum_hwm_mb']} |",
                  f"| one {r['big']['size'] // (1024 * 1024)} MB message (a one-worker daemon) | "
                  f"{r['big']['peak_mb']} | - | {r['big']['sum_hwm_mb']} |", "",
                  f"A {r['big']['size'] // (1024 * 1024)} MB message adds "
                  f"{r['big']['sum_hwm_mb'] - r['small']['sum_hwm_mb']:.1f} MB over a 2 KB one (per-process peaks, "
                  "same worker)"
                  + ("" if r["big"]["ok"] and r["small"]["ok"] else " — a message FAILED"), ""]
    lines += targets(result)
    if result["samples"]:
        lines += ["## What each side answered (the first warm-up message)", ""]
        for lb, smp in result["samples"].items():
            lines.append(f"- {lb}: ok={smp['ok']} action={smp['action']}")
            lines += [f"  - `{a[:300]}`" for a in smp["added"]]
        lines.append("")
    if result["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(lines)


def targets(result: dict) -> list[str]:
    """Issue 15's targets, each checked against this run's medians (met / MISSED / n/a)."""
    out: list[str] = []

    def line(ok: bool | None, text: str) -> None:
        out.append(f"- {'n/a' if ok is None else 'met' if ok else '**MISSED**'}: {text}")

    cells = {c["concurrency"]: c["sides"] for c in result["cells"]}
    chain = next((lb for c in cells.values() for lb in c if lb.startswith("opendkim")), None)
    for conc in (1, 32):
        sd = cells.get(conc, {})
        a, p, r = sd.get("authmilter"), sd.get(chain or ""), sd.get("rspamd")
        if a and p:
            line(a["eom_p50_ms"] <= 0.5 * p["eom_p50_ms"] and (not r or a["eom_p50_ms"] <= r["eom_p50_ms"]),
                 f"C={conc} EOM p50 at most 0.5x the chain's and at most rspamd's: authmilter "
                 f"{a['eom_p50_ms']:.1f} ms, chain {p['eom_p50_ms']:.1f} ms"
                 + (f", rspamd {r['eom_p50_ms']:.1f} ms" if r else ""))
    for conc in (32, 200):
        sd = cells.get(conc, {})
        a, p, r = sd.get("authmilter"), sd.get(chain or ""), sd.get("rspamd")
        if a and p:
            line(a["msg_per_s"] >= 2 * p["msg_per_s"] and (not r or a["msg_per_s"] > r["msg_per_s"]),
                 f"C={conc} throughput at least 2x the chain's and above rspamd's: authmilter "
                 f"{a['msg_per_s']:.0f} msg/s, chain {p['msg_per_s']:.0f}" + (f", rspamd {r['msg_per_s']:.0f}" if r else ""))
    sd = cells.get(32, {})
    a = sd.get("authmilter")
    peers = [(lb, sd[lb]) for lb in sd if not lb.startswith("authmilter") and lb != NULL_LABEL]   # the floor is no peer
    if a and peers:
        line(all(a["eom_p99_ms"] <= x["eom_p99_ms"] for _, x in peers),
             f"C=32 EOM p99 no worse than either peer's: authmilter {a['eom_p99_ms']:.1f} ms, "
             + ", ".join(f"{lb} {x['eom_p99_ms']:.1f} ms" for lb, x in peers))
    for c in result.get("sign") or []:
        sd = c["sides"]
        a, o, r = sd.get("authmilter"), sd.get("opendkim"), sd.get("rspamd")
        if a and o:
            line(a["msg_per_s"] >= 2 * o["msg_per_s"] and (not r or a["msg_per_s"] > r["msg_per_s"]),
                 f"signing C={c['concurrency']} at least 2x OpenDKIM and above rspamd: authmilter "
                 f"{a['msg_per_s']:.0f} msg/s, OpenDKIM {o['msg_per_s']:.0f}" + (f", rspamd {r['msg_per_s']:.0f}" if r else ""))
    rss = result.get("rss")
    if rss:
        line(rss["sessions_mb"] < 150,
             f"RSS below 150 MB at {rss['sessions']} sessions: {rss['sessions_mb']} MB summed over processes "
             f"(PSS {rss['sessions_pss_mb']} MB)")
        added = rss["big"]["sum_hwm_mb"] - rss["small"]["sum_hwm_mb"]
        line(added < 10 and rss["big"]["ok"],
             f"a {rss['big']['size'] // (1024 * 1024)} MB message adds less than 10 MB: {added:.1f} MB")
    return (["## Issue 15's targets, against this run", ""] + out + [""]) if out else []


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--authmilter", default="", metavar="BIN",
                    help="the authmilter console script to measure (default: the one beside this Python)")
    ap.add_argument("--baseline", default="", metavar="BIN", help="another authmilter build as one more side")
    ap.add_argument("--baseline-workers", type=int, default=None, metavar="N",
                    help="the baseline side's workers (default: --workers); with --baseline naming the same "
                         "build, this compares worker counts in one run")
    ap.add_argument("--domains", type=int, default=4000, help="sender domains each side walks through")
    ap.add_argument("--warmup", type=int, default=50, help="warm-up messages (own domains) per side")
    ap.add_argument("--concurrency", default="1,8,32,200", help="inbound cells (\"\" = none)")
    ap.add_argument("-r", "--rounds", type=int, default=2)
    ap.add_argument("-n", "--count", type=int, default=500,
                    help="messages per run, upper bound (each side's runs draw from its --domains)")
    ap.add_argument("-t", "--duration", type=float, default=20.0, help="seconds per run (upper bound)")
    ap.add_argument("--size", type=int, default=2048, help="inbound message size, bytes")
    ap.add_argument("--dns-latency-ms", type=float, default=20.0)
    ap.add_argument("--client-rtt-ms", type=float, default=20.0,
                    help="the SMTP client's round trip between its commands (0 = back to back)")
    ap.add_argument("--workers", type=int, default=0, help="authmilter workers (0 = two per CPU)")
    ap.add_argument("--rspamd-workers", type=int, default=0, help="rspamd proxy processes (0 = one per CPU)")
    ap.add_argument("--no-rspamd", action="store_true")
    ap.add_argument("--null-floor", action="store_true",
                    help="one more inbound side: bench/null_milter.py, pymilter doing nothing (the floor of any "
                         "pymilter milter on this machine: its CPU per message and the clients' own pace)")
    ap.add_argument("--no-sign", dest="sign", action="store_false",
                    help="leave out signing (authmilter, OpenDKIM, rspamd dkim_signing at --sign-concurrency)")
    ap.add_argument("--sign-concurrency", default="8,32")
    ap.add_argument("--sign-size", type=int, default=2048)
    ap.add_argument("--sign-count", type=int, default=3000)
    ap.add_argument("--sign-duration", type=float, default=8.0)
    ap.add_argument("--warmup-sign", type=int, default=200)
    ap.add_argument("--no-rss", dest="rss", action="store_false",
                    help="leave out authmilter's RSS probe (--sessions open at once, a --big-mb message)")
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--big-mb", type=int, default=50)
    ap.add_argument("--wait-idle", type=float, default=20.0,
                    help="before each run wait up to this long for the machine to be idle (0 = no)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (< 3 min): 300 domains, C=1,32, 1 round, 6 s runs, signing and RSS small")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    ap.add_argument("-o", "--output", default=str(HERE / "results" / "cold"), help="results path, no suffix")
    ap.add_argument("--render", metavar="JSON", help="only print the report of an earlier run's .json")
    a = ap.parse_args(argv)
    if a.render:
        print(render(json.loads(Path(a.render).read_text())))
        return 0
    if a.quick:
        a.domains, a.warmup, a.concurrency, a.rounds, a.duration, a.count = 300, 10, "1,32", 1, 6.0, 150
        a.sign_count, a.sign_duration, a.warmup_sign, a.sign_concurrency = 300, 3.0, 50, "8"
        a.sessions, a.big_mb, a.wait_idle = 50, 10, 2.0
    a.concurrency = [int(x) for x in a.concurrency.split(",") if x]          # "" = no inbound cells
    a.sign_concurrency = [int(x) for x in a.sign_concurrency.split(",") if x]
    base = HERE / "results"
    base.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-cold-", dir=base))
    os.chmod(work, 0o700)
    procs: list[rb.Proc] = []
    try:
        result = run_all(a, work, procs)
    finally:
        for p in reversed(procs):
            p.stop()
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    rb.write_report(a.output, render(result), result)
    bad = [c for c in result["cells"] + result.get("sign", [])
           if any(sd.get("errors") or sd.get("check_failures") for sd in c["sides"].values())]
    return 1 if bad or any("FAILED" in n for n in result["notes"]) else 0


if __name__ == "__main__":
    sys.exit(main())
