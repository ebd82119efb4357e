"""A private Sendmail 8.17 (Debian's packages, unpacked by dist.py) for the e2e suite.

Nothing here touches the machine's own mail system:

* the binary runs from ``run/sendmail/root`` with ``-C`` naming a ``sendmail.cf`` (the MTA)
  or ``submit.cf`` (the MSP) that m4 generated in the temporary directory from a ``.mc``
  built here; queue, quarantine, client queue, pid and status files live there too;
* every invocation goes through a wrapper (``bin/sendmail``) that runs it in private UTS
  and mount namespaces (``unshare``), where
  - the host name is ``mx.inbox.test`` and ``/etc/hosts`` + ``/etc/nsswitch.conf`` are
    this directory's (``hosts: files``), so no name is ever looked up in the DNS and
    sendmail does not sleep a minute trying to qualify an unqualified host name;
  - ``/dev`` is a small tmpfs with the usual devices and ``/dev/log`` pointing at a socket
    here, so sendmail's syslog lines land in ``maillog`` (the machine may have no syslog);
  - Cyrus SASL's plugin directory holds PLAIN and LOGIN and a ``Sendmail.conf`` that
    checks passwords through ``saslauthd_path`` = a socket here (`SaslAuthd`), which is how
    sendmail's SMTP AUTH works without /etc/sasl2 or a sasldb;
* the MTA listens on 127.0.0.1 only, on ports picked at run time: ``MTA`` (inbound) and
  ``MSA`` (``M=Ea``: AUTH required), and relays everything it accepts to `SmtpSink`, a
  small SMTP server on 127.0.0.1 whose files the tests read.

Remote clients are presented by connecting *from* another loopback address (127.0.0.10,
named ``mail.example.org`` in the private /etc/hosts): Sendmail has no XCLIENT, and the
whole of 127.0.0.0/8 is local on Linux.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import smtplib
import socket
import socketserver
import struct
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.procs import Process, free_port, wait_for

from ..harness import MX_NAME, RCPT, TOKEN_HEADER, WAIT_S, SmtpReply, run
from .dist import Dist

SINK_NAME = "sink.inbox.test"
# The sink's own loopback address: Sendmail drops a smart host that is one of its own
# names/addresses ($=w, which holds [127.0.0.1]) and would route by DNS instead.
SINK_IP = "127.0.0.25"


# ---------------------------------------------------------------------------------------
# the SMTP sink Sendmail relays to


class SmtpSink:
    """An SMTP server on 127.0.0.1 that stores every message as a file (``N.eml``, the
    bytes received after dot-unstuffing, CRLF line ends) and counts deliveries."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.host = SINK_IP
        self.port = free_port(SINK_IP)
        self.count = 0
        self.envelopes: dict[int, tuple[str, tuple[str, ...]]] = {}   # N -> (MAIL FROM, RCPT TOs)
        self._cond = threading.Condition()
        self._server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                sink._session(self.rfile, self.wfile)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="smtp-sink", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _session(self, rfile, wfile) -> None:  # type: ignore[no-untyped-def]
        def say(line: str) -> None:
            wfile.write(line.encode() + b"\r\n")
            wfile.flush()

        say(f"220 {SINK_NAME} ESMTP sink")
        mail_from, rcpts = "", []
        while True:
            line = rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                say(f"250-{SINK_NAME}")
                say("250-8BITMIME")
                say("250 SIZE 0")
            elif verb == b"MAIL":
                mail_from, rcpts = _path(line), []
                say("250 2.0.0 ok")
            elif verb == b"RCPT":
                rcpts.append(_path(line))
                say("250 2.0.0 ok")
            elif verb in (b"HELO", b"RSET", b"NOOP"):
                say("250 2.0.0 ok")
            elif verb == b"DATA":
                say("354 go ahead")
                data = bytearray()
                while True:
                    chunk = rfile.readline()
                    if not chunk or chunk in (b".\r\n", b".\n"):
                        break
                    data += chunk[1:] if chunk.startswith(b".") else chunk
                self._store(bytes(data), mail_from, rcpts)
                say("250 2.0.0 stored")
            elif verb == b"QUIT":
                say("221 2.0.0 bye")
                return
            else:
                say("502 5.5.2 not implemented")

    def _store(self, data: bytes, mail_from: str, rcpts: list[str]) -> None:
        with self._cond:
            self.count += 1
            n = self.count
            self.envelopes[n] = (mail_from, tuple(rcpts))
            self._cond.notify_all()
        tmp = self.dir / f".{n}.tmp"
        tmp.write_bytes(data)
        tmp.rename(self.dir / f"{n}.eml")

    def wait_count(self, n: int, timeout_s: float) -> bool:
        """Block until *n* messages have arrived in total (bench)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.count >= n, timeout_s)

    def deliveries(self, token: str) -> list[bytes]:
        """Every stored message carrying ``X-E2E-Id: token`` in its header."""
        return [data for _, data in self._matching(token)]

    def envelopes_of(self, token: str) -> list[tuple[str, tuple[str, ...]]]:
        """(MAIL FROM, RCPT TOs) of every stored message carrying *token*."""
        return [self.envelopes[n] for n, _ in self._matching(token)]

    def _matching(self, token: str) -> list[tuple[int, bytes]]:
        needle = f"\n{TOKEN_HEADER}: {token}\n".encode()
        found = []
        for f in sorted(self.dir.glob("*.eml"), key=lambda f: int(f.stem)):
            data = f.read_bytes()
            head = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0] + b"\n"
            if needle in head:
                found.append((int(f.stem), data))
        return found


def _path(line: bytes) -> str:
    """The address of ``MAIL FROM:<a@b> ...`` / ``RCPT TO:<a@b> ...``."""
    text = line.decode(errors="replace")
    start, end = text.find("<"), text.find(">")
    return text[start + 1:end] if 0 <= start < end else text.split(":", 1)[-1].strip()


# ---------------------------------------------------------------------------------------
# SASL: the saslauthd protocol, answered from a dict


class SaslAuthd:
    """A saslauthd stand-in on a unix socket: four counted strings in (login, password,
    service, realm: 2-byte big-endian length each), one counted string out ("OK" or
    "NO ..."). Cyrus SASL's ``pwcheck_method: saslauthd`` speaks this, so sendmail's PLAIN
    and LOGIN are checked against *users* (``user@domain`` -> password). ``seen`` lists the
    (name, service, realm) of every check."""

    def __init__(self, path: Path, users: dict[str, str]) -> None:
        self.path = path
        self.users = dict(users)
        self.seen: list[tuple[str, str, str]] = []     # (login, service, realm) asked about
        self._sock: socket.socket | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o666)
        sock.listen(16)
        self._sock = sock
        threading.Thread(target=self._serve, name="saslauthd", daemon=True).start()

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                try:
                    login, password, service, realm = (self._counted(conn) for _ in range(4))
                except (OSError, struct.error, ValueError):
                    continue
                # Cyrus SASL splits "user@domain" into login "user" and realm "domain".
                name = f"{login}@{realm}" if realm else login
                self.seen.append((name, service, realm))
                ok = name in self.users and self.users[name] == password
                answer = b"OK" if ok else b"NO authentication failed"
                conn.sendall(struct.pack(">H", len(answer)) + answer)

    @staticmethod
    def _counted(conn: socket.socket) -> str:
        size = struct.unpack(">H", conn.recv(2, socket.MSG_WAITALL))[0]
        return conn.recv(size, socket.MSG_WAITALL).decode() if size else ""

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# ---------------------------------------------------------------------------------------
# syslog


class Syslog:
    """/dev/log for the namespaced sendmail: datagrams appended to *log* as lines."""

    def __init__(self, path: Path, log: Path) -> None:
        self.path = path
        self.log = log
        self._sock: socket.socket | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o666)
        self._sock = sock
        threading.Thread(target=self._serve, name="syslog", daemon=True).start()

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        with open(self.log, "ab", buffering=0) as out:
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                out.write(re.sub(rb"^<\d+>", b"", data).rstrip(b"\0\n") + b"\n")

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# ---------------------------------------------------------------------------------------
# Sendmail


def sasl_plugin_dir() -> Path | None:
    """The directory Cyrus SASL loads plugins (and reads <app>.conf) from, with PLAIN."""
    found = sorted(glob.glob("/usr/lib/*/sasl2/libplain.so*")) + sorted(glob.glob("/usr/lib/sasl2/libplain.so*"))
    return Path(found[0]).parent if found else None


@dataclass(frozen=True)
class Quarantined:
    """One entry of ``mailq -qQ``."""

    queue_id: str
    sender: str
    reason: str
    recipients: tuple[str, ...]


def parse_mailq(text: str) -> list[Quarantined]:
    """Sendmail's ``mailq -qQ`` listing (8.17)::

        -----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------
        5B5KqwVx000123      312 Sat Dec  5 08:02 <bob@quarantine.test>
             QUARANTINE: DMARC policy of quarantine.test is quarantine
                                                 <u@inbox.test>
    """
    out: list[Quarantined] = []
    entry: dict | None = None
    for line in text.splitlines():
        m = re.match(r"^([0-9A-Za-z]{8,})\*?\s+\d+\s+\w{3} \w{3}\s+\d+ \d\d:\d\d\s+(\S+)", line)
        if m:
            if entry:
                out.append(Quarantined(**entry))
            entry = {"queue_id": m.group(1), "sender": m.group(2).strip("<>"), "reason": "", "recipients": ()}
            continue
        if entry is None:
            continue
        stripped = line.strip()
        if stripped.startswith("QUARANTINE:"):
            entry["reason"] = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("<") and stripped.endswith(">"):
            entry["recipients"] = (*entry["recipients"], stripped.strip("<>"))
    if entry:
        out.append(Quarantined(**entry))
    return out


def queue_id_of(reply: SmtpReply) -> str:
    """Sendmail's final DATA reply: ``250 2.0.0 5B5KqwVx000123 Message accepted for delivery``."""
    m = re.search(r"\b([0-9A-Za-z]{14}) Message accepted", reply.text)
    return m.group(1) if m else ""


class Sendmail:
    """A private Sendmail MTA (+ MSP for the ``sendmail`` command) under *base*/sendmail.

    *milter_lines* are the .mc lines that hook authmilter in (``INPUT_MAIL_FILTER`` and the
    macro defines, as ``authmilter check-config`` prints them); *users* are the SMTP AUTH
    accounts (name -> password).
    """

    def __init__(self, base: Path, dist: Dist, milter_lines: Sequence[str], *,
                 users: dict[str, str] | None = None, hosts: dict[str, str] | None = None,
                 trace: bool = True, log_level: int = 14, sink: SmtpSink | None = None) -> None:
        self.dist = dist
        self.dir = base / "sendmail"
        self.milter_lines = list(milter_lines)
        self.hostname = MX_NAME
        self.mta_port = free_port()
        self.msa_port = free_port()
        self.queue_dir = self.dir / "mqueue"
        self.client_queue_dir = self.dir / "clientmqueue"
        self.maillog = self.dir / "maillog"
        self.trace = self.dir / "smtp-trace" if trace else None
        self.log_level = log_level              # LogLevel and Milter.LogLevel (14: every milter action)
        self.cf = self.dir / "sendmail.cf"
        self.submit_cf = self.dir / "submit.cf"
        self.wrapper = self.dir / "bin" / "sendmail"
        self.hosts = {"127.0.0.1": "localhost", "127.0.0.10": "mail.example.org", **(hosts or {})}
        self.sink = sink or SmtpSink(self.dir / "sink")     # a sink passed in is started/stopped by its owner
        self._own_sink = sink is None
        self.saslauthd = SaslAuthd(self.dir / "saslauthd" / "mux", users or {})
        self.syslog = Syslog(self.dir / "log.sock", self.maillog)
        self.process: Process | None = None

    # -- configuration ---------------------------------------------------------------

    def mc(self) -> str:
        """The MTA's .mc: loopback-only daemons, private paths, everything relayed to the sink."""
        d = self.dir
        return f"""\
divert(-1)
dnl authmilter e2e: a private Sendmail MTA; every path is under {d}
divert(0)dnl
include(`{self.dist.cf_dir}/m4/cf.m4')dnl
VERSIONID(`authmilter e2e MTA')dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `{self.hostname}')dnl
define(`QUEUE_DIR', `{self.queue_dir}')dnl
define(`confPID_FILE', `{d}/sendmail.pid')dnl
define(`STATUS_FILE', `{d}/sendmail.st')dnl
define(`HELP_FILE', `{d}/helpfile')dnl
define(`confCW_FILE', `-o {d}/local-host-names')dnl
define(`confCR_FILE', `-o {d}/relay-domains')dnl
define(`confSERVICE_SWITCH_FILE', `{d}/service.switch')dnl
define(`confHOSTS_FILE', `/etc/hosts')dnl
define(`confDEAD_LETTER_DROP', `{d}/dead.letter')dnl
define(`confCONTROL_SOCKET_NAME', `')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confTO_IDENT', `0')dnl
dnl A busy test machine must not make Sendmail queue-only or refuse connections.
define(`confQUEUE_LA', `500')dnl
define(`confREFUSE_LA', `500')dnl
define(`confDELAY_LA', `0')dnl
define(`confMILTER_LOG_LEVEL', `{self.log_level}')dnl
define(`confLOG_LEVEL', `{self.log_level}')dnl
define(`confAUTH_MECHANISMS', `PLAIN LOGIN')dnl
TRUST_AUTH_MECH(`PLAIN LOGIN')dnl
undefine(`ALIAS_FILE')dnl
FEATURE(`nocanonify')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`no_default_msa')dnl
dnl Mail for inbox.test (our users), forward.test (where they forward to) and srs.inbox.test
dnl (our SRS domain: bounces to forwarded mail) is accepted from anywhere; all of it, and
dnl whatever SRS restores, is relayed to the sink.
RELAY_DOMAIN(`inbox.test')dnl
RELAY_DOMAIN(`forward.test')dnl
define(`SMART_HOST', `[{self.sink.host}]')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {self.sink.port}')dnl
define(`ESMTP_MAILER_ARGS', `TCP $h {self.sink.port}')dnl
DAEMON_OPTIONS(`Family=inet, Name=MTA, Addr=127.0.0.1, Port={self.mta_port}')dnl
DAEMON_OPTIONS(`Family=inet6, Name=MTA6, Addr=::1, Port={self.mta_port}')dnl
DAEMON_OPTIONS(`Family=inet, Name=MSA, Addr=127.0.0.1, Port={self.msa_port}, M=Ea')dnl
dnl --- authmilter: the lines `authmilter check-config` prints for Sendmail -------------
{chr(10).join(self.milter_lines)}
dnl ---------------------------------------------------------------------------------
MAILER(`smtp')dnl
"""

    def submit_mc(self) -> str:
        """The MSP's .mc (what Debian's submit.mc does, with private paths): the
        ``sendmail`` command queues in clientmqueue and hands the mail to the MTA by SMTP."""
        d = self.dir
        return f"""\
divert(-1)
dnl authmilter e2e: the MSP (sendmail command) of the private Sendmail
divert(0)dnl
include(`{self.dist.cf_dir}/m4/cf.m4')dnl
VERSIONID(`authmilter e2e MSP')dnl
define(`confCF_VERSION', `Submit')dnl
define(`__OSTYPE__',`')dnl
define(`confDOMAIN_NAME', `{self.hostname}')dnl
define(`confTIME_ZONE', `USE_TZ')dnl
define(`confDONT_INIT_GROUPS', `True')dnl
define(`confRUN_AS_USER', `nobody:nogroup')dnl
define(`MSP_QUEUE_DIR', `{self.client_queue_dir}')dnl
define(`confPID_FILE', `{d}/sm-client.pid')dnl
define(`STATUS_FILE', `{d}/sm-client.st')dnl
define(`confSERVICE_SWITCH_FILE', `{d}/service.switch')dnl
define(`confDEAD_LETTER_DROP', `{d}/dead.letter')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {self.mta_port}')dnl
FEATURE(`msp', `[127.0.0.1]')dnl
"""

    def _wrapper_text(self) -> str:
        d = self.dir
        plugins = sasl_plugin_dir()
        sasl = f'mount --bind "{d}/sasl2" "{plugins}"\n' if plugins else ""
        return f"""\
#!/bin/sh
# Sendmail as the authmilter e2e suite runs it: private host name, /etc/hosts,
# nsswitch, SASL config and /dev/log, in namespaces of its own (see tests/e2e/sendmail/mta.py).
exec unshare --uts --mount -- /bin/sh -ec '
hostname "{self.hostname}"
mount --bind "{d}/etc/hosts" /etc/hosts
mount --bind "{d}/etc/nsswitch.conf" /etc/nsswitch.conf
{sasl}mount --bind /dev "{d}/realdev"
mount -t tmpfs -o mode=0755,size=1m authmilter-e2e-dev /dev
for n in null zero full random urandom tty; do
  [ -e "{d}/realdev/$n" ] || continue
  touch "/dev/$n"; mount --bind "{d}/realdev/$n" "/dev/$n"
done
umount -l "{d}/realdev"
ln -s /proc/self/fd /dev/fd
ln -s "{d}/log.sock" /dev/log
exec "$0" "$@"' "{self.dist.sendmail}" "$@"
"""

    def write(self) -> None:
        d = self.dir
        for sub in ("bin", "etc", "realdev", "sasl2"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
        self.queue_dir.mkdir(mode=0o700)
        self.client_queue_dir.mkdir(mode=0o770)
        import grp
        import pwd
        nobody = pwd.getpwnam("nobody").pw_uid
        nogroup = grp.getgrnam("nogroup").gr_gid
        os.chown(self.client_queue_dir, nobody, nogroup)
        (d / "etc" / "hosts").write_text("".join(f"{ip} {name}\n" for ip, name in self.hosts.items())
                                         + f"127.0.0.1 {self.hostname}\n::1 localhost6\n")
        (d / "etc" / "nsswitch.conf").write_text("passwd: files\ngroup: files\nshadow: files\nhosts: files\n"
                                                 "services: files\nprotocols: files\n")
        (d / "service.switch").write_text("hosts files\naliases files\n")
        (d / "local-host-names").write_text("")
        (d / "relay-domains").write_text("")
        (d / "sendmail.st").write_text("")     # statistics: without the file sendmail logs a complaint
        if self.dist.helpfile.exists():
            shutil.copy(self.dist.helpfile, d / "helpfile")
        plugins = sasl_plugin_dir()
        if plugins is not None:
            for pattern in ("libplain.so*", "liblogin.so*"):
                for f in plugins.glob(pattern):
                    shutil.copy(f, d / "sasl2" / f.name, follow_symlinks=True)
        (d / "sasl2" / "Sendmail.conf").write_text(
            f"pwcheck_method: saslauthd\nsaslauthd_path: {self.saslauthd.path}\nmech_list: PLAIN LOGIN\n")
        self.wrapper.write_text(self._wrapper_text())
        self.wrapper.chmod(0o755)
        (d / "sendmail.mc").write_text(self.mc())
        (d / "submit.mc").write_text(self.submit_mc())
        for mc, cf in (("sendmail.mc", self.cf), ("submit.mc", self.submit_cf)):
            out = run(["m4", str(d / mc)])
            cf.write_bytes(out.stdout)
            cf.chmod(0o644)

    # -- process ---------------------------------------------------------------------

    def start(self) -> None:
        self.write()
        self.syslog.start()
        if self._own_sink:
            self.sink.start()
        self.saslauthd.start()
        argv = [str(self.wrapper), "-C", str(self.cf), "-bD"]
        if self.trace is not None:
            argv += ["-X", str(self.trace)]
        self.process = Process("sendmail", argv, self.dir / "sendmail.out").start()
        wait_for(lambda: self._greets(self.mta_port) and self._greets(self.msa_port), "Sendmail to listen")

    def _greets(self, port: int) -> bool:
        assert self.process is not None
        if not self.process.running:
            raise AssertionError(f"sendmail exited: {self.process.log_tail()}\n{self.log_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                banner = s.recv(512)
                s.sendall(b"QUIT\r\n")
            return banner.startswith(b"220 ")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        self.saslauthd.stop()
        if self._own_sink:
            self.sink.stop()
        self.syslog.stop()

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""

    # -- clients ---------------------------------------------------------------------

    def smtp(self, raw: bytes, *, mail_from: str, rcpts: Iterable[str] = (RCPT,), client_ip: str = "127.0.0.10",
             helo: str = "mail.example.org", login: tuple[str, str] | None = None, msa: bool = False) -> SmtpReply:
        """One SMTP transaction from *client_ip* (a loopback address: 127.0.0.0/8 or ::1)."""
        family6 = ":" in client_ip
        host = "::1" if family6 else "127.0.0.1"
        port = self.msa_port if msa else self.mta_port
        try:
            smtp = smtplib.SMTP(host, port, local_hostname=helo, timeout=120, source_address=(client_ip, 0))
        except smtplib.SMTPConnectError as exc:
            return SmtpReply("connect", exc.smtp_code, exc.smtp_error.decode(errors="replace"))
        try:
            smtp.ehlo(helo)
            if login is not None:
                try:
                    smtp.login(*login)
                except smtplib.SMTPAuthenticationError as exc:
                    return SmtpReply("auth", exc.smtp_code, exc.smtp_error.decode(errors="replace"))
            code, text = smtp.mail(mail_from)
            if code != 250:
                return SmtpReply("mail", code, text.decode(errors="replace"))
            for rcpt in rcpts:
                code, text = smtp.rcpt(rcpt)
                if code not in (250, 251):
                    return SmtpReply("rcpt", code, text.decode(errors="replace"))
            try:
                code, text = smtp.data(raw)
            except smtplib.SMTPDataError as exc:
                return SmtpReply("data", exc.smtp_code, exc.smtp_error.decode(errors="replace"))
            return SmtpReply("data", code, text.decode(errors="replace"))
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def sendmail(self, raw: bytes, sender: str, rcpts: Iterable[str] = (RCPT,)) -> subprocess.CompletedProcess[bytes]:
        """The ``sendmail`` command through the MSP (-C submit.cf), as root's cron would."""
        return run([str(self.wrapper), "-C", str(self.submit_cf), "-i", "-f", sender, "--", *rcpts],
                   input=raw.replace(b"\r\n", b"\n"))

    # -- queue -----------------------------------------------------------------------

    def quarantine(self) -> list[Quarantined]:
        """``mailq -qQ``: the quarantined messages, with sendmail's reason."""
        out = run([str(self.wrapper), "-C", str(self.cf), "-bp", "-qQ"], check=False)
        return parse_mailq(out.stdout.decode(errors="replace"))

    def mailq_text(self, quarantined: bool = True) -> str:
        args = ["-bp", "-qQ"] if quarantined else ["-bp"]
        return run([str(self.wrapper), "-C", str(self.cf), *args], check=False).stdout.decode(errors="replace")

    def release(self, queue_id: str) -> None:
        """Take a message out of quarantine (``sendmail -qQ -Q -qIQID``: -Q without a
        reason unquarantines) and run the queue for it (``-qIQID``): it is delivered."""
        run([str(self.wrapper), "-C", str(self.cf), "-qQ", "-Q", f"-qI{queue_id}"])
        run([str(self.wrapper), "-C", str(self.cf), f"-qI{queue_id}"])

    def delete(self, queue_id: str) -> None:
        """Remove a queued or quarantined message (its files in the queue directory)."""
        for prefix in ("qf", "hf", "Qf", "df", "xf", "tf"):
            (self.queue_dir / f"{prefix}{queue_id}").unlink(missing_ok=True)

    # -- deliveries ------------------------------------------------------------------

    def deliveries(self, token: str) -> list[bytes]:
        return self.sink.deliveries(token)

    def wait_delivered(self, token: str, timeout_s: float = WAIT_S) -> bytes:
        return wait_for(lambda: self.sink.deliveries(token), f"delivery of {token} to the sink", timeout_s)[0]
