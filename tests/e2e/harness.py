"""Process management for the end-to-end suite: a private Postfix, a knot DNS server and
authmilter, all on loopback with ports picked at run time, all under one temporary
directory, all stopped afterwards.

Nothing here touches the machine's own Postfix: every command gets ``-c DIR`` (``-C DIR``
for sendmail(1)), the queue and data directories live under the temporary directory, and
the only listeners are 127.0.0.1 ports chosen when the suite starts. knotd, process
start/stop and port picking are the shared tests/infra/ pieces (bench/ uses them too).

What Postfix presents to ``non_smtpd_milters`` for mail injected with sendmail(1)
(observed with Postfix 3.7 and a recording milter, and written down because the pipeline
must classify it as outbound): a connect event with host name ``localhost``, family
AF_INET, address 127.0.0.1 and port 0; HELO ``localhost``; macros ``j`` ($myhostname),
``_`` = ``localhost [127.0.0.1]``, ``{daemon_name}`` = $milter_macro_daemon_name
(default $myhostname, *not* ORIGINATING), ``{daemon_addr}`` 127.0.0.1; no ``{auth_*}``
macros. So it is the client address 127.0.0.1 (in ``internal_hosts``) that makes such
mail outbound.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from infra.knot import KNOTD, Knot, Zone, txt_strings  # noqa: F401  (re-exported for the e2e tests)
from infra.procs import Process, accepts, free_port, process_group, scan_proc, wait_for

from authmilter.config import tomlwrite
from authmilter.config.sockets import SocketSpec, parse_socket

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
POSTQUEUE = "/usr/sbin/postqueue"
POSTSUPER = "/usr/sbin/postsuper"
SENDMAIL = "/usr/sbin/sendmail"

MX_NAME = "mx.inbox.test"          # Postfix's $myhostname and authmilter's authserv_id
RCPT = "u@inbox.test"              # every test message goes to this one virtual mailbox
TOKEN_HEADER = "X-E2E-Id"          # each message carries a unique token to find it again
WAIT_S = 30.0                      # upper bound for any poll; never an assertion on speed


def pid_alive(pid: int) -> bool:
    """True while *pid* runs; a zombie counts as dead (our PID 1 may reap late)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state not in (b"Z", b"X")


def run(cmd: list[str], *, input: bytes | None = None, env: dict[str, str] | None = None,
        check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(cmd, input=input, capture_output=True, env=env, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace')}{proc.stdout.decode(errors='replace')}")
    return proc


# ---------------------------------------------------------------------------------------
# Postfix


@dataclass(frozen=True)
class SmtpReply:
    """The reply that decided a transaction: the final DATA reply, or the first refusal."""

    stage: str        # "mail", "rcpt", "data", "xclient" or "connect"
    code: int
    text: str

    @property
    def queue_id(self) -> str:
        m = re.search(r"queued as ([0-9A-Za-z]+)", self.text)
        return m.group(1) if m else ""

    @property
    def accepted(self) -> bool:
        return self.stage == "data" and self.code == 250


class Postfix:
    """A private Postfix: own config directory, queue under *base*, loopback ports only."""

    def __init__(self, base: Path, milter: str) -> None:
        self.base = base
        self.config_dir = base / "postfix"
        self.queue_dir = base / "spool"
        self.data_dir = base / "data"
        self.mail_base = base / "mail"
        self.maildir = self.mail_base / "inbox"
        self.maillog = base / "maillog"
        self.milter = milter                  # Postfix spelling: inet:127.0.0.1:PORT
        self.smtp_port = free_port()          # inbound MX
        self.submission_port = free_port()    # -o milter_macro_daemon_name=ORIGINATING
        self.env = {**os.environ, "MAIL_CONFIG": str(self.config_dir)}

    def _write(self) -> None:
        import grp
        import pwd

        nobody = pwd.getpwnam("nobody")
        postfix_uid = pwd.getpwnam("postfix").pw_uid
        grp.getgrnam("postdrop")  # the setgid group must exist (Debian package creates it)
        self.config_dir.mkdir(parents=True)
        self.queue_dir.mkdir()      # `postfix start` creates the queue subdirectories
        self.data_dir.mkdir()
        os.chown(self.data_dir, postfix_uid, -1)   # master.lock lives here
        self.mail_base.mkdir()
        os.chown(self.mail_base, nobody.pw_uid, nobody.pw_gid)  # virtual(8) writes as nobody
        (self.config_dir / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {self.maillog}
maillog_file_prefixes = {self.base}
myhostname = {MX_NAME}
mydomain = inbox.test
myorigin = $myhostname
mydestination =
local_transport = error:no local delivery in tests
alias_maps =
alias_database =
# Loopback only; IPv6 enabled so XCLIENT may present IPv6 client addresses.
inet_interfaces = 127.0.0.1
inet_protocols = all
mynetworks = 127.0.0.0/8
# Postfix itself never uses DNS in the test; nothing leaves the machine.
smtp_dns_support_level = disabled
disable_dns_lookups = yes
smtpd_peername_lookup = no
# The real TCP peer is 127.0.0.1: without this, Postfix would treat XCLIENT'd remote
# clients as local and complete their headers (e.g. add a missing From from the envelope).
local_header_rewrite_clients =
default_transport = error:no external delivery in tests
relay_transport = error:no external delivery in tests
# The test presents realistic client addresses, names and HELO through XCLIENT.
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_relay_restrictions = permit_auth_destination, reject
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_recipient_restrictions =
# Every message ends in one Maildir: {self.maildir}/
virtual_mailbox_domains = inbox.test
virtual_mailbox_base = {self.mail_base}
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
# authmilter for SMTP and for sendmail(1) (pickup -> cleanup); fail closed.
smtpd_milters = {self.milter}
non_smtpd_milters = {self.milter}
milter_default_action = tempfail
milter_protocol = 6
milter_connect_timeout = 10s
milter_command_timeout = 30s
milter_content_timeout = 60s
""")
        smtpd = "inet  n       -       n       -       -       smtpd"
        (self.config_dir / "master.cf").write_text(f"""\
# chroot = n everywhere: the test instance lives in a temporary directory.
127.0.0.1:{self.smtp_port} {smtpd}
127.0.0.1:{self.submission_port} {smtpd}
  -o syslog_name=postfix/submission
  -o milter_macro_daemon_name=ORIGINATING
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
""")

    def start(self) -> None:
        self._write()
        proc = run([POSTFIX, "-c", str(self.config_dir), "start"], check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"postfix start failed ({proc.returncode}): {self.log_text()[-3000:]}")
        wait_for(lambda: self._listening(self.smtp_port) and self._listening(self.submission_port),
                 "Postfix to listen")

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(1)  # the 220 banner: smtpd is really there
                s.sendall(b"QUIT\r\n")
            return True
        except OSError:
            return False

    def set_milter(self, milter: str) -> None:
        """Point smtpd_milters and non_smtpd_milters at *milter* (Postfix spelling) and
        reload; smtpd processes still in a session finish it with the old setting."""
        self.milter = milter
        run([POSTCONF, "-c", str(self.config_dir), "-e",
             f"smtpd_milters = {milter}", f"non_smtpd_milters = {milter}"])
        run([POSTFIX, "-c", str(self.config_dir), "reload"])

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _our_pids(self) -> list[int]:
        """Processes of this instance: Postfix daemons inherit MAIL_CONFIG=our config dir."""
        marker = f"MAIL_CONFIG={self.config_dir}".encode()
        pids = [pid for pid, environ in scan_proc("environ") if marker in environ.split(b"\0")]
        return [p for p in pids if p != os.getpid() and pid_alive(p)]

    def stop(self) -> None:
        if not self.config_dir.exists():
            return
        master = self.master_pid()
        run([POSTFIX, "-c", str(self.config_dir), "stop"], check=False)
        if master is not None:
            try:
                wait_for(lambda: not pid_alive(master), "Postfix master to exit", timeout_s=15)
            except AssertionError:
                run([POSTFIX, "-c", str(self.config_dir), "abort"], check=False)
        # Leftovers (a daemon that outlived its master) are killed by PID.
        for pid in self._our_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""

    # -- queue -----------------------------------------------------------------------

    def queue(self) -> list[dict]:
        """`postqueue -j`: one JSON object per queued message (maildrop, hold, deferred...)."""
        out = run([POSTQUEUE, "-c", str(self.config_dir), "-j"]).stdout.decode()
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def queued(self, queue_id: str) -> dict | None:
        return next((m for m in self.queue() if m["queue_id"] == queue_id), None)

    def flush(self) -> None:
        """`postqueue -f`: retry deferred mail and wake pickup for the maildrop."""
        run([POSTQUEUE, "-c", str(self.config_dir), "-f"])

    def delete(self, queue_id: str) -> None:
        run([POSTSUPER, "-c", str(self.config_dir), "-d", queue_id], check=False)

    # -- sending -----------------------------------------------------------------------

    def sendmail(self, raw: bytes, sender: str, rcpts: Iterable[str] = (RCPT,)) -> None:
        """Inject with sendmail(1) into this instance (-C DIR), as root does from a cron job."""
        run([SENDMAIL, "-C", str(self.config_dir), "-i", "-f", sender, "--", *rcpts],
            input=raw.replace(b"\r\n", b"\n"), env=self.env)

    def smtp(self, raw: bytes, *, mail_from: str, rcpts: Iterable[str] = (RCPT,),
             client_ip: str = "192.0.2.10", client_name: str = "mail.example.org",
             helo: str = "mail.example.org", login: str | None = None, submission: bool = False) -> SmtpReply:
        """One SMTP transaction presenting *client_ip*/*client_name*/*helo* via XCLIENT."""
        port = self.submission_port if submission else self.smtp_port
        session = SmtpSession(port)
        try:
            reply = session.xclient(client_ip, client_name, helo, login)
            if reply is not None:
                return reply
            return session.transaction(raw, mail_from, rcpts)
        finally:
            session.close()

    # -- the Maildir -------------------------------------------------------------------

    def messages(self) -> list[bytes]:
        """Every message delivered to the Maildir so far."""
        found = []
        for sub in ("new", "cur"):
            d = self.maildir / sub
            if d.is_dir():
                found += [f.read_bytes() for f in d.iterdir()]
        return found

    def deliveries(self, token: str) -> list[bytes]:
        """Every delivered message carrying ``X-E2E-Id: token`` (in its own header)."""
        needle = f"\n{TOKEN_HEADER}: {token}\n".encode()
        return [data for data in self.messages() if needle in data.split(b"\n\n", 1)[0] + b"\n"]

    def wait_delivered(self, token: str, timeout_s: float = WAIT_S) -> bytes:
        msgs = wait_for(lambda: self.deliveries(token), f"delivery of {token}", timeout_s)
        return msgs[0]


class SmtpSession:
    """smtplib with XCLIENT, reporting replies instead of raising them."""

    def __init__(self, port: int) -> None:
        self.smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="e2e.inbox.test", timeout=120)
        self.smtp.ehlo()

    def xclient(self, ip: str, name: str, helo: str, login: str | None = None) -> SmtpReply | None:
        addr = f"IPV6:{ip}" if ":" in ip else ip
        args = f"ADDR={addr} NAME={name} HELO={helo}"
        if login:
            args += f" LOGIN={login}"   # sets Postfix's SASL login -> milter macro {auth_authen}
        code, text = self.smtp.docmd("XCLIENT", args)
        if code != 220:
            return SmtpReply("xclient", code, text.decode(errors="replace"))
        # XCLIENT resets the session; the EHLO that follows is the client's HELO name.
        self.smtp.ehlo(helo)
        return None

    def mail_rcpt(self, mail_from: str, rcpts: Iterable[str]) -> SmtpReply | None:
        code, text = self.smtp.mail(mail_from)
        if code != 250:
            return SmtpReply("mail", code, text.decode(errors="replace"))
        for rcpt in rcpts:
            code, text = self.smtp.rcpt(rcpt)
            if code not in (250, 251):
                return SmtpReply("rcpt", code, text.decode(errors="replace"))
        return None

    def data(self, raw: bytes) -> SmtpReply:
        try:
            code, text = self.smtp.data(raw)
        except smtplib.SMTPDataError as exc:   # DATA itself refused (no 354)
            return SmtpReply("data", exc.smtp_code, exc.smtp_error.decode(errors="replace"))
        return SmtpReply("data", code, text.decode(errors="replace"))

    def transaction(self, raw: bytes, mail_from: str, rcpts: Iterable[str]) -> SmtpReply:
        refused = self.mail_rcpt(mail_from, rcpts)
        if refused is not None:
            return refused
        return self.data(raw)

    def close(self) -> None:
        try:
            self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            self.smtp.close()


# ---------------------------------------------------------------------------------------
# authmilter


class Authmilter:
    """`authmilter run -c CONFIG` in its own process group, on inet:PORT@127.0.0.1.

    *settings* is the config as nested dicts (sections are dicts); `write_config` renders
    it, with per-scenario overrides merged in, to TOML.
    """

    def __init__(self, base: Path, exe: str, settings: dict) -> None:
        self.base = base
        self.exe = exe
        self.port = free_port()
        self.config = base / "authmilter.toml"
        self.log = base / "authmilter.log"
        self.settings = {"socket": f"inet:{self.port}@127.0.0.1", **settings}
        self.process = Process("authmilter", [exe, "run", "-c", str(self.config)], self.log)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.popen

    @property
    def socket_spec(self) -> SocketSpec:
        return parse_socket(self.settings["socket"])

    @property
    def postfix_socket(self) -> str:
        return self.socket_spec.postfix()

    def use_socket(self, spec: str | None) -> None:
        """Listen on *spec* (libmilter spelling) from the next start; None: the default
        inet:PORT@127.0.0.1."""
        self.settings["socket"] = spec or f"inet:{self.port}@127.0.0.1"
        self.write_config()

    def write_config(self, overrides: dict | None = None) -> None:
        self.config.write_text(tomlwrite.dumps(tomlwrite.merge(self.settings, overrides or {})))

    def start(self) -> None:
        if not self.config.exists():
            self.write_config()
        self.process.start()
        wait_for(self._ready, "authmilter to accept milter connections")

    def _ready(self) -> bool:
        if not self.process.running:
            raise AssertionError(f"authmilter exited: {self.log_tail()}")
        return _listening(self.socket_spec)

    def log_tail(self, n: int = 4000) -> str:
        return self.process.log_tail(n)

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        with open(self.log, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")

    def reload(self, overrides: dict | None = None) -> None:
        """Rewrite the config and send SIGUSR1 to the master; return once every worker has
        logged that it swapped its runtime (so the next connection gets the new rules)."""
        assert self.proc is not None
        offset = self.log_size()
        self.write_config(overrides)
        os.kill(self.proc.pid, signal.SIGUSR1)
        workers = int(self.settings.get("workers") or 1)

        def done() -> bool:
            text = self.log_since(offset)
            if "reload failed" in text:
                raise AssertionError(f"authmilter refused the new config: {text[-2000:]}")
            return len(re.findall(r"worker pid=\d+ reloaded", text)) >= workers
        wait_for(done, "every authmilter worker to log its reload")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (master and workers): a crash, not a shutdown."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=15)
        wait_for(lambda: not _listening(self.socket_spec), "the milter socket to close")

    def worker_pids(self) -> list[int]:
        """The master's live child processes (workers; the metrics exporter if enabled)."""
        if self.proc is None:
            return []
        return [pid for pid in process_group(self.proc.pid) if pid != self.proc.pid]

    def kill_master(self) -> None:
        """SIGKILL the master alone, as an OOM killer might; its workers notice within a
        second, finish what they hold and exit. Returns once the last of them is gone."""
        if self.proc is None:
            return
        group = self.proc.pid
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=15)
        wait_for(lambda: not process_group(group), "authmilter's orphaned workers to exit", timeout_s=90)

    def stop(self) -> None:
        self.process.stop()


def _listening(spec: SocketSpec) -> bool:
    return accepts(spec.path if spec.family == "unix" else ("127.0.0.1", spec.port))


# ---------------------------------------------------------------------------------------
# keys


@dataclass(frozen=True)
class TestKey:
    """A DKIM key pair generated for this run."""

    __test__ = False      # not a pytest test class

    domain: str
    selector: str
    algorithm: str        # "rsa" or "ed25519"
    private: bytes        # PEM (rsa) or dkimpy's base64 seed (ed25519), for dkim.sign()
    record: str           # the TXT value to publish

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def generate_key(domain: str, selector: str, algorithm: str = "rsa", bits: int = 2048) -> TestKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        return TestKey(domain, selector, "rsa", pem, f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}")
    ed = ed25519.Ed25519PrivateKey.generate()
    seed = ed.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    pub = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return TestKey(domain, selector, "ed25519", base64.b64encode(seed),
                   f"v=DKIM1; k=ed25519; p={base64.b64encode(pub).decode()}")


def write_private(path: Path, data: bytes) -> None:
    """Create a key file with mode 0600 from the start (never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def copy_logs(paths: Iterable[Path], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for p in paths:
        if p.is_file():
            shutil.copy(p, dest / p.name)


# ---------------------------------------------------------------------------------------
# messages


def make_message(token: str, *, from_: str | list[str] | None, to: str = RCPT, subject: str = "e2e",
                 headers: Iterable[tuple[str, str]] = (), body: str = "Hello from the e2e suite.\r\n") -> bytes:
    """A small RFC 5322 message with CRLF line ends; *from_* None leaves From out, a list
    writes one From header per entry."""
    froms = [] if from_ is None else [from_] if isinstance(from_, str) else list(from_)
    lines = [f"From: {f}" for f in froms]
    lines += [f"To: {to}", f"Subject: {subject}", "Date: Mon, 23 Nov 2026 10:00:00 +0000",
              f"Message-ID: <{token}@e2e.test>", f"{TOKEN_HEADER}: {token}", "MIME-Version: 1.0",
              "Content-Type: text/plain; charset=us-ascii"]
    lines += [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def dkim_sign(raw: bytes, key: TestKey, *, domain: str | None = None) -> bytes:
    """*raw* with a DKIM-Signature by *key* on top (dkimpy, relaxed/relaxed)."""
    import dkim

    algo = b"ed25519-sha256" if key.algorithm == "ed25519" else b"rsa-sha256"
    sig = dkim.sign(raw, key.selector.encode(), (domain or key.domain).encode(), key.private,
                    canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=algo,
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"], linesep=b"\r\n")
    return sig + raw


def headers_of(raw: bytes) -> list[tuple[str, str]]:
    """(name, unfolded value) pairs in order, from a delivered (LF) or CRLF message."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    out: list[tuple[str, str]] = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
        elif ":" in line:
            name, value = line.split(":", 1)
            out.append((name, value.strip()))
    return out


def header_values(raw: bytes, name: str) -> list[str]:
    return [v for n, v in headers_of(raw) if n.lower() == name.lower()]


def auth_results(raw: bytes, authserv_id: str = MX_NAME) -> list:
    """The Authentication-Results headers claiming *authserv_id*, parsed with authres."""
    import authres

    out = []
    for value in header_values(raw, "Authentication-Results"):
        parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + value)
        if str(parsed.authserv_id).lower() == authserv_id.lower():
            out.append(parsed)
    return out


def results(raw: bytes, method: str) -> list[tuple[str, dict[str, str]]]:
    """(result, {ptype.prop: value}) for each *method* resinfo in our one A-R header."""
    ours = auth_results(raw)
    assert len(ours) == 1, f"expected exactly one Authentication-Results by {MX_NAME}, got {len(ours)}"
    return [(r.result, {f"{p.type}.{p.name}": p.value for p in r.properties})
            for r in ours[0].results if r.method == method]


def dkim_verify_all(raw: bytes, knot: Knot) -> list[tuple[bool, dict[bytes, bytes]]]:
    """Verify every DKIM-Signature in *raw* with dkimpy against the keys knot serves."""
    import dkim

    data = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    count = len([1 for n, _ in headers_of(raw) if n.lower() == "dkim-signature"])
    out = []
    for idx in range(count):
        d = dkim.DKIM(data)
        ok = d.verify(idx=idx, dnsfunc=knot.dkim_dnsfunc())
        out.append((bool(ok), dict(d.signature_fields)))
    return out
