"""The benchmark: authmilter against OpenDKIM (signing) and OpenDKIM+OpenDMARC (inbound).

Everything runs on this machine, in a private temporary directory:

* a Knot DNS server on a spare loopback address, port 53, serving the SPF, DKIM and
  DMARC records (port 53 because OpenDMARC and libspf2 use the system resolver, which
  takes no port; OpenDMARC alone gets a private mount namespace in which
  /etc/resolv.conf points at that address — the machine's own file is never touched);
* authmilter (``authmilter run -c``), OpenDKIM in signing mode, OpenDKIM in verifying
  mode and OpenDMARC, on unix sockets, all with configs generated here and the SAME
  RSA-2048 key and KeyTable/SigningTable;
* the load client (bench/client.py) in this process.

knotd and the processes are started by the test suite's harness (tests/infra/), authmilter
from the installation beside this interpreter (``python -m authmilter`` when there is no
console script), so the bench runs from any venv.

Signing: concurrency 1, 8, 32 x 2 KB and 100 KB messages, authmilter vs OpenDKIM.
Inbound (SPF+DKIM+DMARC): concurrency 1, 8, 32 with 2 KB messages pre-signed once,
authmilter vs the chain OpenDKIM (verify) then OpenDMARC (SPFSelfValidate), each
message passing through both as Postfix's cleanup presents it to two milters.
The two sides alternate within each cell, every cell is repeated, medians are reported.

Results: a table on stdout, bench/results/latest.md and bench/results/latest.json.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import email.utils
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))   # tests/infra/: knotd and processes, shared with the tests

import client as mc
from infra.knot import Knot, Zone, knotd_path
from infra.procs import Process, authmilter_command, tree_cpu_s  # noqa: F401  (tree_cpu_s: bench's API)

OUT_DOMAIN = "example.com"      # our domain: outbound mail is signed for it
IN_DOMAIN = "example.net"       # a sender on the internet: inbound mail comes from it
SELECTOR = "bench"
AUTHSERV_ID = "mx.bench.test"
DNSBL_ZONE = "bl.bench.test"    # --antispam: a blocklist on the bench's knotd; INBOUND_IP is not listed
INBOUND_IP = "192.0.2.10"       # TEST-NET-1: not internal for any milter
OUTBOUND_IP = "127.0.0.1"       # internal for every milter (InternalHosts / internal_hosts)


# -- helpers ------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _clk() -> int:
    return os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat), to spot foreign load."""
    with open("/proc/stat") as fh:
        vals = [int(x) for x in fh.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / _clk()


def wait_idle(max_wait_s: float, threshold_pct: float = 25.0) -> float:
    """Wait (up to max_wait_s) until the machine is nearly idle; return the busy % seen last.

    Two shared cores: a test suite someone else starts would skew a run, so each run
    begins only once the machine has been quiet for half a second.
    """
    end = time.monotonic() + max_wait_s
    while True:
        b0, t0 = machine_busy_s(), time.monotonic()
        time.sleep(0.5)
        pct = 100.0 * (machine_busy_s() - b0) / (time.monotonic() - t0)
        if pct < threshold_pct or time.monotonic() > end:
            return pct
        time.sleep(1.0)


def pick_dns_address() -> tuple[str, int]:
    """A loopback address with port 53 free (root), else 127.0.0.1 and a free port."""
    if os.geteuid() == 0:
        for host in ("127.77.53.1", "127.77.53.2", "127.77.53.3"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    u.bind((host, 53))
                    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    t.bind((host, 53))
                    return host, 53
                except OSError:
                    continue
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        return "127.0.0.1", u.getsockname()[1]


Proc = Process    # a server process: own session, log in WORK/NAME.log, cpu_s(), stop()


def start(name: str, argv: Sequence[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    return Process(name, argv, workdir / f"{name}.log", env=env, cwd=workdir).start()


def wait_milter(proc: Proc, address: str, timeout_s: float = 30.0) -> mc.Negotiated:
    end = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < end:
        if not proc.running:
            break
        try:
            return mc.negotiate(address, timeout=5.0)
        except (OSError, mc.ProtocolError) as exc:
            last = exc
            time.sleep(0.2)
    raise RuntimeError(f"{proc.name} did not come up on {address}: {last}\n--- {proc.log}:\n{proc.log_tail()}")


# -- keys, DNS data, messages -------------------------------------------------------------


def make_key(keydir: Path) -> tuple[Path, str]:
    """A fresh RSA-2048 key (PKCS#1 PEM, mode 0600) and its DKIM p= value."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    keydir.mkdir(mode=0o700)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = keydir / f"{SELECTOR}.private"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption()))
    pub = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, base64.b64encode(pub).decode()


def zones(dns_ip: str, pubkey: str) -> list[Zone]:
    """The zones knotd serves. The inbound sender's SPF takes a few lookups, as real records do."""
    dkim = f"v=DKIM1; k=rsa; p={pubkey}"
    out = Zone(OUT_DOMAIN, ttl=3600, negative_ttl=300, ns_ip=dns_ip)
    out.txt(OUT_DOMAIN, "v=spf1 ip4:127.0.0.0/8 -all")
    out.txt(f"{SELECTOR}._domainkey.{OUT_DOMAIN}", dkim)
    out.txt(f"_dmarc.{OUT_DOMAIN}", "v=DMARC1; p=reject")
    inb = Zone(IN_DOMAIN, ttl=3600, negative_ttl=300, ns_ip=dns_ip)
    inb.txt(IN_DOMAIN, f"v=spf1 mx include:_spf.{IN_DOMAIN} -all")
    inb.add(IN_DOMAIN, "MX", f"10 mx.{IN_DOMAIN}.")
    inb.add(f"mx.{IN_DOMAIN}", "A", "198.51.100.25")
    inb.txt(f"_spf.{IN_DOMAIN}", "v=spf1 ip4:198.51.100.0/24 ip4:192.0.2.0/24 -all")
    inb.add(f"mail.{IN_DOMAIN}", "A", "192.0.2.10")
    inb.txt(f"mail.{IN_DOMAIN}", "v=spf1 a -all")
    inb.txt(f"{SELECTOR}._domainkey.{IN_DOMAIN}", dkim)
    inb.txt(f"_dmarc.{IN_DOMAIN}", f"v=DMARC1; p=reject; rua=mailto:dmarc@{IN_DOMAIN}")
    bl = Zone(DNSBL_ZONE, ttl=300, negative_ttl=300, ns_ip=dns_ip)
    bl.add(f"2.0.0.127.{DNSBL_ZONE}", "A", "127.0.0.2")     # the conventional test entry, nothing else
    return [out, inb, bl]


def make_message(i: int, size: int, direction: str) -> bytes:
    """A plain-text message of about `size` bytes; `i` varies Message-ID and text."""
    if direction == "out":
        frm, to, rcvd = f"Alice <alice@{OUT_DOMAIN}>", "bob@example.org", (
            f"Received: from client.{OUT_DOMAIN} (client.{OUT_DOMAIN} [127.0.0.1])\n"
            f"\tby mx.bench.test (Postfix) with ESMTPSA id 4BENCH{i:04d}\n\tfor <bob@example.org>; "
            f"{email.utils.formatdate(1767225600 + i)}\n")
    else:
        frm, to, rcvd = f"Sender <sender@{IN_DOMAIN}>", f"user@{OUT_DOMAIN}", (
            f"Received: from mail.{IN_DOMAIN} (mail.{IN_DOMAIN} [{INBOUND_IP}])\n"
            f"\tby mx.bench.test (Postfix) with ESMTPS id 4BENCH{i:04d}\n\tfor <user@{OUT_DOMAIN}>; "
            f"{email.utils.formatdate(1767225600 + i)}\n")
    head = (rcvd +
            f"From: {frm}\nTo: {to}\nSubject: benchmark message {i}\n"
            f"Date: {email.utils.formatdate(1767225600 + i)}\n"
            f"Message-ID: <bench.{direction}.{size}.{i}@bench.test>\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n")
    return with_text(head, i, size)


_WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
          "incididunt ut labore et dolore magna aliqua").split()


def with_text(head: str, i: int, size: int) -> bytes:
    """*head* (header lines and the blank line, LF-separated) followed by lines of words,
    starting at word *i*, until about `size` bytes; CRLF line ends."""
    lines, n, k = [], len(head), i
    while n < size:
        line = " ".join(_WORDS[(k + j) % len(_WORDS)] for j in range(11))
        lines.append(line)
        n += len(line) + 1
        k += 1
    return (head + "\n".join(lines) + "\n").replace("\n", "\r\n").encode()


def resubmitted(raw: bytes) -> bytes:
    """An outbound message as list software re-submits it after our inbound pass: it carries
    an Authentication-Results with our authserv-id, so authmilter signs it and then seals it."""
    return (f"Authentication-Results: {AUTHSERV_ID}; spf=pass smtp.mailfrom={OUT_DOMAIN}; "
            f"dkim=pass header.d={OUT_DOMAIN}; dmarc=pass header.from={OUT_DOMAIN}\r\n").encode() + raw


def presign(raw: bytes, keyfile: Path) -> bytes:
    """Sign an inbound message once with the shared key (dkimpy, relaxed/relaxed)."""
    import dkim

    sig = dkim.sign(raw, SELECTOR.encode(), IN_DOMAIN.encode(), keyfile.read_bytes(),
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id",
                                     b"mime-version", b"content-type"])
    return sig + raw


# -- configs ------------------------------------------------------------------------------


@dataclasses.dataclass
class Setup:
    work: Path
    dns_ip: str
    dns_port: int
    keyfile: Path
    pubkey: str


def write_tables(s: Setup) -> tuple[Path, Path]:
    kt = s.work / "KeyTable"
    st = s.work / "SigningTable"
    kt.write_text(f"{SELECTOR}._domainkey.{OUT_DOMAIN} {OUT_DOMAIN}:{SELECTOR}:{s.keyfile}\n")
    st.write_text(f"*@{OUT_DOMAIN} {SELECTOR}._domainkey.{OUT_DOMAIN}\n")
    return kt, st


def opendkim_conf(s: Setup, mode: str, sock: Path) -> Path:
    """OpenDKIM 2.11 as Debian ships it, minus chroot/user, plus our key and DNS.

    Its resolver is libunbound: ``Nameservers`` makes it forward to our DNS server
    (port 53, hence the spare loopback address), and unbound keeps its own cache.
    No TrustAnchorFile: the bench zones are unsigned, and DNSSEC validation through a
    forwarder would only add work the other side does not do.
    """
    kt, st = s.work / "KeyTable", s.work / "SigningTable"
    conf = s.work / f"opendkim-{mode}.conf"
    lines = [
        f"Mode {mode}", f"Socket local:{sock}", "Background no", f"PidFile {s.work}/opendkim-{mode}.pid",
        "Syslog yes", "UMask 007", "Canonicalization relaxed/relaxed",
        "OversignHeaders From,To,Subject,Date,Reply-To,Cc",
        f"InternalHosts {OUTBOUND_IP},::1", f"AuthservID {AUTHSERV_ID}",
    ]
    if s.dns_port == 53:
        lines.append(f"Nameservers {s.dns_ip}")
    else:
        unbound = s.work / "unbound.conf"
        unbound.write_text("server:\n    do-not-query-localhost: no\n"
                           f'forward-zone:\n    name: "."\n    forward-addr: {s.dns_ip}@{s.dns_port}\n')
        lines.append(f"ResolverConfiguration {unbound}")
    if mode == "s":
        lines += [f"KeyTable file:{kt}", f"SigningTable refile:{st}"]
    conf.write_text("\n".join(lines) + "\n")
    return conf


def opendmarc_conf(s: Setup, sock: Path) -> Path:
    conf = s.work / "opendmarc.conf"
    psl = "/usr/share/publicsuffix/public_suffix_list.dat"
    conf.write_text("\n".join([
        f"Socket local:{sock}", f"PidFile {s.work}/opendmarc.pid", "Syslog true", "UMask 0002",
        f"AuthservID {AUTHSERV_ID}", f"TrustedAuthservIDs {AUTHSERV_ID}",
        "SPFSelfValidate true", "SPFIgnoreResults true", "RejectFailures true",
        "IgnoreAuthenticatedClients true", "FailureReports false",
        *( [f"PublicSuffixList {psl}"] if os.path.exists(psl) else []),
    ]) + "\n")
    return conf


def authmilter_conf(s: Setup, sock: Path, workers: int, *, name: str = "authmilter.toml",
                    dns_extra: str = "", extra: str = "") -> Path:
    conf = s.work / name
    conf.write_text(
        f'socket = "unix:{sock}"\n'
        'socket_mode = "0660"\n'
        f'authserv_id = "{AUTHSERV_ID}"\n'
        f"workers = {workers}\n"
        'log_level = "info"\n'
        "[dns]\n"
        f'servers = ["{s.dns_ip}:{s.dns_port}"]\n'
        "timeout_s = 5.0\n"
        f"{dns_extra}"
        "[signing]\n"
        f'key_table = "{s.work}/KeyTable"\n'
        f'signing_table = "refile:{s.work}/SigningTable"\n'
        f'internal_hosts = ["{OUTBOUND_IP}", "::1"]\n'
        "[policy]\n"
        f'own_domains = ["{OUT_DOMAIN}"]\n'
        f"{extra}")
    return conf


_CLEANUP: list[Callable[[], None]] = []   # servers that are not a Proc (PostgreSQL for --store)


def store_side_conf(kind: str, work: Path) -> str:
    """[reports] on (every inbound DMARC evaluation leaves a record) over *kind*'s store."""
    if kind == "sqlite":
        url = f"sqlite://{work}/state.db"
    elif kind == "postgresql":
        sys.path.insert(0, str(REPO / "tests"))
        from pgserver import PgServer, missing_reason

        if missing_reason():
            raise RuntimeError(f"--store postgresql: {missing_reason()}")
        pg = PgServer().start()
        _CLEANUP.append(pg.stop)
        url = pg.create_database("bench")
    else:
        raise SystemExit(f"--store: unknown kind {kind!r} (sqlite, postgresql)")
    return ("[store]\n"
            f'url = "{url}"\n'
            f'journal_dir = "{work}/journal-{kind}"\n'
            "[reports]\n"
            "enabled = true\n"
            f'from_address = "dmarc-reports@{OUT_DOMAIN}"\n')


def antispam_side_conf(work: Path) -> str:
    """Greylisting and a DNSBL on, in their steady state for a sender seen before.

    The bench's one (SPF-pass domain, sender, recipient) triplet is deferred once, retried
    after ``delay_s`` = 1 s (`Side.prime`) and from then on passes as "known domain and
    recipient": one store read and one write (refreshing the pair's age) per message.
    ``auto_allow_after = 0`` keeps it on that path; with auto-allow the domain would pass on
    a single counter read. SPF is evaluated at RCPT (and reused at end-of-message); the
    DNSBL query for the client IP goes out at connect and is answered NXDOMAIN (cached by
    the resolver for the zone's negative TTL, as a local caching resolver would).
    """
    return ("[store]\n"
            f'url = "sqlite://{work}/antispam.db"\n'
            "[greylist]\n"
            "enabled = true\n"
            "delay_s = 1\n"
            "auto_allow_after = 0\n"
            "[dnsbl]\n"
            f'zones = ["{DNSBL_ZONE}=127.0.0.[2..11]"]\n')


def sealing_side_conf(work: Path) -> str:
    """ARC sealing of re-submitted mail (``seal_resubmitted``, on by default) with the signing key."""
    table = work / "SealingTable"
    table.write_text(f"* {SELECTOR}._domainkey.{OUT_DOMAIN}\n")
    return f'[arc]\nsealing_table = "refile:{table}"\n'


# -- checks of what each milter answered --------------------------------------------------


def check_signed(r: mc.SessionResult) -> bool:
    return r.action in ("c", "a") and any(n.lower() == "dkim-signature" for n, _ in r.headers_added())


def check_sealed(r: mc.SessionResult) -> bool:
    names = {n.lower() for n, _ in r.headers_added()}
    return check_signed(r) and {"arc-seal", "arc-message-signature", "arc-authentication-results"} <= names


def _ar_values(r: mc.SessionResult) -> str:
    return " ".join(v.lower() for n, v in r.headers_added() if n.lower() == "authentication-results")


def check_inbound(r: mc.SessionResult) -> bool:
    ar = _ar_values(r)
    return r.action in ("c", "a") and all(k in ar for k in ("spf=pass", "dkim=pass", "dmarc=pass"))


def verify_sample(raw: bytes, r: mc.SessionResult, pubkey: str) -> bool:
    """dkimpy-verify the message as the MTA would deliver it, with the added signature."""
    import dkim

    sigs = [f"{n}:{v}" for n, v in r.headers_added() if n.lower() == "dkim-signature"]
    if not sigs:
        return False
    record = f"v=DKIM1; k=rsa; p={pubkey}".encode()
    ok = True
    for sig in sigs:
        # the MTA re-folds LF inside a value as CRLF when writing the message
        msg = sig.replace("\r\n", "\n").replace("\n", "\r\n").encode() + b"\r\n" + raw
        ok &= dkim.verify(msg, dnsfunc=lambda name, timeout=5: record)
    return ok


# -- the matrix -----------------------------------------------------------------------------


@dataclasses.dataclass
class Side:
    label: str
    hops: list[str]                   # milter addresses, in order
    procs: list[Proc]                 # whose CPU counts for this side
    # optional: this side's own messages per size (else the cell's), check and priming
    msgs: dict[int, list[bytes]] | None = None
    check: Callable[[mc.SessionResult], bool] | None = None
    prime: Callable[[list[mc.Prepared]], None] | None = None


@dataclasses.dataclass
class Cell:
    kind: str                         # "sign" or "inbound"
    size: int
    concurrency: int


def measure(side: Side, preps: list[mc.Prepared], cell: Cell, count: int, duration_s: float,
            check: Callable[[mc.SessionResult], bool], client_procs: int, dns: Proc) -> dict:
    cpu0 = [p.cpu_s() for p in side.procs]
    dns0 = dns.cpu_s()
    busy0 = machine_busy_s()
    res = mc.run_load_procs(preps, cell.concurrency, count, duration_s, procs=client_procs, check=check)
    busy = machine_busy_s() - busy0
    summary = res.summary()
    milter_cpu = sum(p.cpu_s() for p in side.procs) - sum(cpu0)
    dns_cpu = dns.cpu_s() - dns0
    # whatever else ran on the machine meanwhile (other users' jobs): a noisy-run flag
    foreign = max(0.0, busy - milter_cpu - dns_cpu - res.client_cpu_s)
    summary["foreign_cpu_pct"] = round(100.0 * foreign / res.wall_s, 1) if res.wall_s else 0.0
    summary["milter_cpu_pct"] = round(100.0 * milter_cpu / res.wall_s, 1) if res.wall_s else 0.0
    summary["milter_cpu_ms_per_msg"] = round(1e3 * milter_cpu / res.completed, 3) if res.completed else None
    summary["dns_cpu_pct"] = round(100.0 * dns_cpu / res.wall_s, 1) if res.wall_s else 0.0
    summary["samples"] = res.samples
    return summary


def median(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def run_matrix(args: argparse.Namespace) -> dict:
    # Not under /tmp: OpenDKIM refuses keys below a group/world-writable directory
    # (RequireSafeKeys walks the whole path), and so should authmilter.
    base = HERE / "results"
    base.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=base))
    os.chmod(work, 0o700)
    procs: list[Proc] = []
    try:
        return _run_matrix(args, work, procs)
    finally:
        for p in reversed(procs):
            p.stop()
        while _CLEANUP:
            _CLEANUP.pop()()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def prepare(work: Path) -> tuple[Setup, Knot]:
    """The signing key, our tables and a knotd (not yet started) serving the bench zones
    on a free loopback address: what every bench script sets up first."""
    dns_ip, dns_port = pick_dns_address()
    keyfile, pubkey = make_key(work / "keys")
    s = Setup(work, dns_ip, dns_port, keyfile, pubkey)
    write_tables(s)
    # knotd's own thread defaults (one per CPU), as OpenDMARC's uncached lookups meet it
    knot = Knot(work, zones(dns_ip, pubkey), dns_port, host=dns_ip, workers=None, log_level="warning",
                semantic_checks=False)
    return s, knot


@contextmanager
def started_world() -> Iterator[Setup]:
    """`prepare` in a fresh work directory under results/, with knotd started; knotd is
    stopped and the directory removed at exit. The in-process scripts (count_ops.py,
    profile_pipeline.py) run the pipeline against it."""
    base = HERE / "results"
    base.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=base))
    knot: Knot | None = None
    try:
        s, knot = prepare(work)
        knot.start()
        yield s
    finally:
        if knot is not None:
            knot.process.stop()
        shutil.rmtree(work, ignore_errors=True)


def pipeline_messages(kind: str, s: Setup, count: int, size: int) -> tuple[list[bytes], object, object]:
    """*count* messages of *size* bytes for an in-process pipeline run, with the client
    and envelope they arrive with: outbound ones to sign, or inbound ones signed once
    beforehand with the bench key."""
    from authmilter.model import Client, Envelope

    if kind == "sign":
        return ([make_message(i, size, "out") for i in range(count)],
                Client(ip=OUTBOUND_IP, hostname="client", helo="client", port=40000),
                Envelope(mail_from=f"alice@{OUT_DOMAIN}", rcpts=("bob@example.org",)))
    return ([presign(make_message(i, size, "in"), s.keyfile) for i in range(count)],
            Client(ip=INBOUND_IP, hostname=f"mail.{IN_DOMAIN}", helo=f"mail.{IN_DOMAIN}", port=40000),
            Envelope(mail_from=f"sender@{IN_DOMAIN}", rcpts=(f"user@{OUT_DOMAIN}",)))


def _run_matrix(args: argparse.Namespace, work: Path, procs: list[Proc]) -> dict:
    # the code measured is what the trees hold now, not when the run ends (shared trees)
    revs = {"authmilter": _git_rev()}
    if args.baseline:
        revs["baseline"] = f"{args.baseline} at {_git_rev(_checkout_of(Path(args.baseline)))}"
    s, knot = prepare(work)
    dns_ip, dns_port, keyfile = s.dns_ip, s.dns_port, s.keyfile
    dns = knot.process
    procs.append(dns)
    knot.start()
    log(f"knotd serving on {dns_ip}:{dns_port}")

    sides_sign: list[Side] = []
    sides_in: list[Side] = []
    # messages
    nvar = args.variants
    out_msgs = {size: [make_message(i, size, "out") for i in range(nvar)] for size in args.sizes}
    in_msgs = {size: [presign(make_message(i, size, "in"), keyfile) for i in range(nvar)]
               for size in args.inbound_sizes}
    notes: list[str] = []

    # authmilter (if `authmilter run` exists yet)
    am_sock = work / "authmilter.sock"
    am_cmd = authmilter_command()     # the install beside this interpreter, else python -m authmilter

    def extra_side(tag: str, cmd: Sequence[str] = am_cmd, **conf: str) -> tuple[Proc, str, mc.Negotiated]:
        """Another authmilter daemon with its own config (the base config plus *conf*'s
        extras) on its own socket, started and negotiated with: a side of its own."""
        sock = work / f"authmilter-{tag}.sock"
        path = authmilter_conf(s, sock, args.workers, name=f"authmilter-{tag}.toml", **conf)
        proc = start(f"authmilter-{tag}", [*cmd, "run", "-c", str(path)], work)
        procs.append(proc)
        return proc, f"unix:{sock}", wait_milter(proc, f"unix:{sock}")
    if not args.skip_authmilter:
        try:
            am = start("authmilter", [*am_cmd, "run", "-c", str(authmilter_conf(s, am_sock, args.workers))],
                       work)
            procs.append(am)
            neg = wait_milter(am, f"unix:{am_sock}")
            log(f"authmilter up: protocol={neg.protocol:#x} actions={neg.actions:#x}")
            sides_sign.append(Side("authmilter", [f"unix:{am_sock}"], [am]))
            sides_in.append(Side("authmilter", [f"unix:{am_sock}"], [am]))
        except RuntimeError as exc:
            notes.append(f"authmilter did not start: {str(exc).splitlines()[0]}")
            log(str(exc))
        if "inbound" in args.kinds and args.spf_cache_off_side and sides_in:
            # The same code with the SPF result cache off: what SPF costs when every
            # message comes from an (IP, domain) pair not seen within the records' TTLs.
            am2, addr2, _ = extra_side("nocache", dns_extra="result_cache_entries = 0\n")
            sides_in.append(Side("authmilter (SPF cache off)", [addr2], [am2]))
        for kind in args.store if "inbound" in args.kinds and sides_in else ():
            # Reports on: every inbound message leaves a record (journal + batched writes).
            am4, addr4, _ = extra_side(kind, extra=store_side_conf(kind, work))
            sides_in.append(Side(f"authmilter (reports on, {kind})", [addr4], [am4]))
            notes.append(f"authmilter (reports on, {kind}): [reports] enabled, records in {kind}"
                         + (" (the PostgreSQL server's CPU is not counted in the side's CPU)"
                            if kind == "postgresql" else ""))
        if args.antispam and "inbound" in args.kinds and sides_in:
            am5, addr5, _ = extra_side("antispam", extra=antispam_side_conf(work))

            def prime_greylist(preps: list[mc.Prepared]) -> None:
                first = mc.run_one(preps[0])           # the new triplet: deferred at RCPT
                time.sleep(1.2)                        # delay_s = 1
                log(f"antispam side primed: first attempt action={first.action}, retry after 1.2 s")

            sides_in.append(Side("authmilter (greylist + DNSBL)", [addr5], [am5],
                                 prime=prime_greylist))
            notes.append("authmilter (greylist + DNSBL): [greylist] enabled, delay_s = 1, auto_allow_after = 0, "
                         f"SQLite store; [dnsbl] zones = {DNSBL_ZONE} (client not listed). The triplet is deferred "
                         "once before the warm-up; every measured message then passes as 'known domain and "
                         "recipient' (SPF at RCPT, one store read + one write, the DNSBL query at connect)")
        if args.seal and "sign" in args.kinds and sides_sign:
            am6, addr6, _ = extra_side("seal", extra=sealing_side_conf(work))
            sides_sign.append(Side("authmilter (sign + ARC seal)", [addr6], [am6],
                                   msgs={size: [resubmitted(m) for m in ms] for size, ms in out_msgs.items()},
                                   check=check_sealed))
            notes.append("authmilter (sign + ARC seal): [arc] sealing_table = '* -> the signing key', "
                         "seal_resubmitted (default); its messages are the signing messages plus an "
                         f"Authentication-Results: {AUTHSERV_ID} header (re-submitted after our inbound pass): "
                         "DKIM-signed, then sealed (ARC-Seal i=1 cv=none, ARC-Message-Signature, AAR)")
    if args.baseline:
        # Another build of authmilter (e.g. an install of the previous round's commit), with
        # the same config file contents, messages and client: before/after in one run.
        # The config written by authmilter_conf uses only keys both versions know.
        base_bin = Path(args.baseline).expanduser()
        try:
            am3, addr3, neg3 = extra_side("baseline", [str(base_bin)])
        except (OSError, RuntimeError) as exc:
            raise SystemExit(f"baseline {base_bin} did not start: {exc}") from exc
        log(f"authmilter (baseline) up: {revs['baseline']}, "
            f"protocol={neg3.protocol:#x} actions={neg3.actions:#x}")
        sides_sign.append(Side("authmilter (baseline)", [addr3], [am3]))
        sides_in.append(Side("authmilter (baseline)", [addr3], [am3]))

    opendkim = shutil.which("opendkim") or "/usr/sbin/opendkim"
    ods_sock, odv_sock, odm_sock = work / "opendkim-s.sock", work / "opendkim-v.sock", work / "opendmarc.sock"
    ods = start("opendkim-sign", [opendkim, "-f", "-x", str(opendkim_conf(s, "s", ods_sock))], work)
    procs.append(ods)
    wait_milter(ods, f"unix:{ods_sock}")
    sides_sign.append(Side("opendkim", [f"unix:{ods_sock}"], [ods]))

    odv = start("opendkim-verify", [opendkim, "-f", "-x", str(opendkim_conf(s, "v", odv_sock))], work)
    procs.append(odv)
    wait_milter(odv, f"unix:{odv_sock}")
    chain = [f"unix:{odv_sock}"]
    chain_procs = [odv]
    dmarc_conf = opendmarc_conf(s, odm_sock)
    opendmarc = shutil.which("opendmarc") or "/usr/sbin/opendmarc"
    if dns_port == 53 and shutil.which("unshare"):
        # a private mount namespace whose /etc/resolv.conf names our DNS server
        resolv = work / "resolv.conf"
        resolv.write_text(f"nameserver {dns_ip}\noptions timeout:5 attempts:1\n")
        argv = ["unshare", "-m", "sh", "-c",
                f'mount --bind "{resolv}" /etc/resolv.conf && exec "{opendmarc}" -f -c "{dmarc_conf}"']
        odm = start("opendmarc", argv, work)
        procs.append(odm)
        wait_milter(odm, f"unix:{odm_sock}")
        chain.append(f"unix:{odm_sock}")
        chain_procs.append(odm)
        sides_in.append(Side("opendkim+opendmarc", chain, chain_procs))
    else:
        notes.append("OpenDMARC not run: it needs a DNS server on port 53 (run as root)")
        sides_in.append(Side("opendkim(verify only)", chain, chain_procs))

    env_out = mc.default_envelope(OUTBOUND_IP, f"<alice@{OUT_DOMAIN}>", ("<bob@example.org>",),
                                  helo=f"client.{OUT_DOMAIN}")
    env_in = mc.default_envelope(INBOUND_IP, f"<sender@{IN_DOMAIN}>", (f"<user@{OUT_DOMAIN}>",),
                                 helo=f"mail.{IN_DOMAIN}")

    def prepared(side: Side, msgs: list[bytes], env: mc.Envelope) -> list[mc.Prepared]:
        return mc.prepare(side.hops, msgs, env)

    cells: list[dict] = []
    plan: list[tuple[str, list[Side], dict[int, list[bytes]], mc.Envelope, Callable]] = []
    if "sign" in args.kinds:
        plan.append(("sign", sides_sign, out_msgs, env_out, check_signed))
    if "inbound" in args.kinds:
        plan.append(("inbound", sides_in, in_msgs, env_in, check_inbound))

    if args.floor:
        nm_sock = work / "null.sock"
        nm = start("null-milter", [sys.executable, str(HERE / "null_milter.py"), f"unix:{nm_sock}"], work)
        procs.append(nm)
        wait_milter(nm, f"unix:{nm_sock}")
        sides_floor = [Side("pymilter null milter", [f"unix:{nm_sock}"], [nm])]
        plan.append(("floor", sides_floor, {2048: out_msgs.get(2048) or [make_message(i, 2048, "out")
                                                                           for i in range(nvar)]},
                     env_out, lambda r: r.action in ("c", "a")))

    negotiation: dict[str, str] = {}
    for kind, sides, msgs_by_size, env, check in plan:
        for size, msgs in msgs_by_size.items():
            preps = {sd.label: prepared(sd, (sd.msgs or {}).get(size, msgs), env) for sd in sides}
            for sd in sides:
                hop_flags = ", ".join(f"{h.address.rsplit('/', 1)[-1]}: protocol={h.neg.protocol:#x}"
                                      for h in preps[sd.label][0].hops)
                negotiation[sd.label + "/" + kind] = hop_flags
                # correctness first: one message, blocking, and a full dkimpy check when signing
                if sd.prime:
                    sd.prime(preps[sd.label])
                one = mc.run_one(preps[sd.label][0])
                ok = (sd.check or check)(one)
                if kind == "sign" and ok:
                    ok = verify_sample((sd.msgs or {}).get(size, msgs)[0], one, s.pubkey)
                added = [f"{n}: {v[:90]}" for n, v in one.headers_added()]
                log(f"{kind} {size}B {sd.label}: action={one.action} ok={ok} added={added}")
                if not ok:
                    notes.append(f"{kind} {size}B {sd.label}: sample check FAILED "
                                 f"(action={one.action}, added={added})")
                # warm-up: fills DNS caches on every side, spins up workers/threads
                mc.run_load_procs(preps[sd.label], 8, args.warmup, 30.0, procs=1)
            for conc in args.concurrency:
                cell = Cell(kind, size, conc)
                runs: dict[str, list[dict]] = {sd.label: [] for sd in sides}
                for rnd in range(args.rounds if kind != "floor" else 1):
                    order = sides if rnd % 2 == 0 else list(reversed(sides))
                    for sd in order:
                        idle = wait_idle(args.wait_idle) if args.wait_idle else float("nan")
                        r = measure(sd, preps[sd.label], cell, args.count, args.duration, sd.check or check,
                                    args.client_procs, dns)
                        r.pop("samples")
                        r["busy_before_pct"] = round(idle, 1)
                        runs[sd.label].append(r)
                        log(f"{kind} {size}B c={conc} {sd.label} round {rnd + 1}: {r['msg_per_s']} msg/s "
                            f"p50={r['p50_ms']}ms p99={r['p99_ms']}ms errors={r['errors']} "
                            f"bad={r['check_failures']} client_cpu={r['client_cpu_pct']}% "
                            f"milter_cpu={r['milter_cpu_pct']}% dns_cpu={r['dns_cpu_pct']}% "
                            f"foreign_cpu={r['foreign_cpu_pct']}%")
                entry = {"kind": kind, "size": size, "concurrency": conc, "sides": {}}
                for label, rs in runs.items():
                    entry["sides"][label] = {
                        "msg_per_s": median([r["msg_per_s"] for r in rs]),
                        "p50_ms": median([r["p50_ms"] for r in rs]),
                        "p90_ms": median([r["p90_ms"] for r in rs]),
                        "p99_ms": median([r["p99_ms"] for r in rs]),
                        "client_cpu_pct": median([r["client_cpu_pct"] for r in rs]),
                        "milter_cpu_pct": median([r["milter_cpu_pct"] for r in rs]),
                        "milter_cpu_ms_per_msg": median([r["milter_cpu_ms_per_msg"] or float("nan") for r in rs]),
                        "dns_cpu_pct": median([r["dns_cpu_pct"] for r in rs]),
                        "client_sys_pct": median([r["client_sys_pct"] for r in rs]),
                        "foreign_cpu_pct": median([r["foreign_cpu_pct"] for r in rs]),
                        "errors": sum(r["errors"] for r in rs),
                        "check_failures": sum(r["check_failures"] for r in rs),
                        "completed": sum(r["completed"] for r in rs),
                        "rounds": rs,
                    }
                cells.append(entry)
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "opendkim": _version([opendkim, "-V"]), "opendmarc": _version([opendmarc, "-V"]),
                    "knotd": _version([knotd_path(), "-V"]), **revs},
        "settings": {"count": args.count, "duration_s": args.duration, "rounds": args.rounds,
                     "warmup": args.warmup, "wait_idle_s": args.wait_idle, "variants": args.variants, "client_procs": args.client_procs,
                     "authmilter_workers": args.workers, "dns": f"knotd {dns_ip}:{dns_port}"},
        "negotiation": negotiation,
        "notes": notes,
        "cells": cells,
    }


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def _git_rev(repo: Path = REPO) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "--",
                                "src"], capture_output=True, text=True, timeout=30, check=False).stdout.strip()
        return f"{rev}{' (+ uncommitted changes in src/)' if dirty else ''}" if rev else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def _checkout_of(console_script: Path) -> Path:
    """The source tree an `authmilter` console script runs: <tree>/.venv/bin/authmilter -> <tree>."""
    p = console_script.resolve()
    return p.parents[2] if len(p.parents) > 2 else p.parent


# -- report --------------------------------------------------------------------------------


def render(result: dict) -> str:
    lines = [f"# authmilter benchmark — {result['when']}", ""]
    m = result["machine"]
    st = result["settings"]
    lines += [f"- machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}",
              f"- {m['opendkim']}; {m['opendmarc']}; {m['knotd']}; authmilter at {m['authmilter']}"
              + (f"; authmilter (baseline): {m['baseline']}" if m.get("baseline") else ""),
              (f"- per cell: {st['rounds']} rounds per side (alternating order), each up to {st['count']} messages "
              f"or {st['duration_s']} s; medians shown; {st['variants']} message variants; "
              f"client processes: {st['client_procs']}; DNS: {st['dns']}"), ""]
    for kind, title in (("sign", "Signing (RSA-2048, relaxed/relaxed)"),
                        ("inbound", "Inbound SPF + DKIM + DMARC"),
                        ("floor", "Transport floor: a pymilter milter that does nothing (one process, one round)")):
        rows = [c for c in result["cells"] if c["kind"] == kind]
        if not rows:
            continue
        labels = list(rows[0]["sides"])
        lines += [f"## {title}", ""]
        hdr = ["size", "C"]
        for lb in labels:
            hdr += [f"{lb} msg/s", "p50 ms", "p99 ms", "cpu ms/msg"]
        # every side against the last one (the peer: OpenDKIM, or OpenDKIM+OpenDMARC)
        hdr += [f"ratio {lb}/{labels[-1]}" for lb in labels[:-1]]
        hdr += ["client CPU % (sys)", "DNS CPU %", "foreign CPU %", "errors/bad"]
        lines.append("| " + " | ".join(hdr) + " |")
        lines.append("|" + "---|" * len(hdr))
        for c in rows:
            row = [_size(c["size"]), str(c["concurrency"])]
            for lb in labels:
                sd = c["sides"][lb]
                row += [f"{sd['msg_per_s']:.0f}", f"{sd['p50_ms']:.1f}", f"{sd['p99_ms']:.1f}",
                        f"{sd['milter_cpu_ms_per_msg']:.2f}"]
            peer = c["sides"][labels[-1]]["msg_per_s"]
            for lb in labels[:-1]:
                row.append(f"{c['sides'][lb]['msg_per_s'] / peer:.2f}x" if peer else "-")
            row.append(" / ".join(f"{c['sides'][lb]['client_cpu_pct']:.0f} ({c['sides'][lb]['client_sys_pct']:.0f})"
                                  for lb in labels))
            row.append(" / ".join(f"{c['sides'][lb]['dns_cpu_pct']:.0f}" for lb in labels))
            row.append(" / ".join(f"{c['sides'][lb]['foreign_cpu_pct']:.0f}" for lb in labels))
            row.append(" / ".join(f"{c['sides'][lb]['errors']}/{c['sides'][lb]['check_failures']}"
                                  for lb in labels))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if result["negotiation"]:
        lines += ["## Negotiated protocol flags", ""]
        lines += [f"- {k}: {v}" for k, v in result["negotiation"].items()]
        lines.append("")
    if result["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n // 1024} KB" if n >= 1024 else f"{n} B"


def write_report(output: str, text: str, result: dict) -> None:
    """Print *text* and write it to OUTPUT.md, *result* to OUTPUT.json."""
    print(text)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    log(f"wrote {out.with_suffix('.md')} and .json")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="authmilter vs OpenDKIM/OpenDMARC benchmark")
    ap.add_argument("--kinds", default="sign,inbound", help="sign,inbound")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--sizes", default="2048,102400", help="signing message sizes, bytes")
    ap.add_argument("--inbound-sizes", default="2048,102400", help="inbound message sizes, bytes")
    ap.add_argument("-n", "--count", type=int, default=5000, help="messages per run (upper bound)")
    ap.add_argument("-t", "--duration", type=float, default=10.0, help="seconds per run (upper bound)")
    ap.add_argument("-r", "--rounds", type=int, default=3, help="runs per side per cell")
    ap.add_argument("--warmup", type=int, default=200, help="warm-up messages per side per message set")
    ap.add_argument("--variants", type=int, default=16, help="distinct messages cycled through")
    ap.add_argument("-P", "--client-procs", type=int, default=1, help="load-client processes")
    ap.add_argument("--workers", type=int, default=0, help="authmilter workers (0 = two per CPU)")
    ap.add_argument("--wait-idle", type=float, default=60.0,
                    help="before each run wait up to this many seconds for the machine to be idle (0 = no)")
    ap.add_argument("--no-spf-cache-side", dest="spf_cache_off_side", action="store_false",
                    help="inbound: leave out the second authmilter run with [dns] result_cache_entries = 0")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="skip the pymilter null-milter reference runs")
    ap.add_argument("--skip-authmilter", action="store_true", help="only the OpenDKIM/OpenDMARC side")
    ap.add_argument("--baseline", metavar="BIN", default="",
                    help="another authmilter console script (e.g. an older commit's install): one more side, "
                         "'authmilter (baseline)', same config, messages and client, rounds interleaved")
    ap.add_argument("--store", default="",
                    help="extra inbound authmilter sides with [reports] on, records in: sqlite,postgresql")
    ap.add_argument("--antispam", action="store_true",
                    help="one more inbound authmilter side with greylisting (SQLite) and a DNSBL on")
    ap.add_argument("--seal", action="store_true",
                    help="one more signing authmilter side sealing re-submitted mail with ARC after signing")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 round, 300 messages, 3 s")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    ap.add_argument("-o", "--output", default=str(HERE / "results" / "latest"), help="results path, no suffix")
    args = ap.parse_args(argv)
    args.kinds = args.kinds.split(",")
    args.store = [k for k in args.store.split(",") if k]
    args.concurrency = [int(x) for x in args.concurrency.split(",")]
    args.sizes = [int(x) for x in args.sizes.split(",")]
    args.inbound_sizes = [int(x) for x in args.inbound_sizes.split(",")]
    if args.quick:
        args.rounds, args.count, args.duration, args.warmup = 1, 300, 3.0, 50
    result = run_matrix(args)
    write_report(args.output, render(result), result)
    bad = [c for c in result["cells"] if any(sd["errors"] or sd["check_failures"] for sd in c["sides"].values())]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
