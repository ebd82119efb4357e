"""The Debian package, installed on this machine (issue 10 item 7).

Builds the .deb as `make deb` does (lintian: no errors), installs it with ``dpkg -i``,
starts the daemon as its systemd unit would (no systemd here: the unit's ExecStartPre and
ExecStart lines, as root, after postinst's user/group and systemd-tmpfiles steps), points
the **system** Postfix (Debian's stock master.cf, smtpd and cleanup chrooted; loopback only)
at it with the lines ExecStartPre's ``check-config`` printed, and sends one inbound message
over SMTP on 127.0.0.1:25 (checked with knot's zones through ``[dns] servers``) and one
outbound message with sendmail(1) (DKIM-signed with a key made by the installed
``authmilter genkey``, verified with dkimpy). Then everything is stopped, the package
purged, the Postfix configuration restored, and the test checks the machine is as it was.

It changes the machine (a package, a system user, /etc/postfix/main.cf, the system Postfix
running for a while), so it only runs where that is safe: root on Debian 12, the system
Postfix stopped and unconfigured-or-restorable with an empty queue, authmilter not
installed. Elsewhere it skips (under CI=true it fails: CI is a disposable Debian 12 machine).
"""
from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
import uuid
from pathlib import Path

import pytest
from infra.procs import Process, accepts, scan_proc, wait_for
from support import require

from authmilter.config import tomlwrite

from .conftest import SENDER_IP, build_zones
from .harness import (
    KNOTD,
    MX_NAME,
    RCPT,
    Knot,
    Postfix,
    SmtpSession,
    copy_logs,
    dkim_sign,
    dkim_verify_all,
    generate_key,
    header_values,
    make_message,
    pid_alive,
    results,
    run,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "authmilter"
# What dpkg -i does not install: the package's Depends (make test-deps installs them).
DEPENDS = ("python3-milter", "python3-spf", "python3-authres", "python3-cryptography", "adduser")
ETC = Path("/etc/authmilter")
CONF = ETC / "authmilter.toml"
UNIT = Path("/lib/systemd/system/authmilter.service")
MAIN_CF = Path("/etc/postfix/main.cf")
MASTER_CF = Path("/etc/postfix/master.cf")
STOCK_MASTER_CF = Path("/usr/share/postfix/master.cf.dist")
SPOOL = Path("/var/spool/postfix")
POSTFIX_DATA = Path("/var/lib/postfix")
SPOOL_SOCKET = SPOOL / "authmilter" / "authmilter.sock"
WANTS = Path("/etc/systemd/system/multi-user.target.wants/authmilter.service")
# Directories where Postfix's start leaves files (pid, lock, sockets, queue directories it
# creates); what was not there before is removed afterwards.
WATCHED = (SPOOL, SPOOL / "pid", SPOOL / "private", SPOOL / "public", POSTFIX_DATA)
QUEUES = ("maildrop", "incoming", "active", "deferred", "defer", "bounce", "hold", "corrupt", "flush", "saved")


def installed(package: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
    return out.returncode == 0 and out.stdout.endswith(" installed")


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def groups_of(user: str) -> set[str]:
    return set(run(["id", "-Gn", user]).stdout.decode().split())


def system_master_pid() -> int | None:
    try:
        pid = int((SPOOL / "pid" / "master.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def queued_files() -> list[str]:
    return [str(p) for q in QUEUES if (SPOOL / q).is_dir() for p in (SPOOL / q).rglob("*") if p.is_file()]


def chroot_column(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) >= 8 and not line[:1].isspace() and not line.startswith("#"):
            out[f"{f[0]}/{f[1]}"] = f[4]
    return out


def unit_commands(unit: str, key: str) -> list[list[str]]:
    """The argv of each KEY= line of a unit (no systemd specifiers or prefixes in ours)."""
    return [line.split("=", 1)[1].split() for line in unit.splitlines() if line.startswith(f"{key}=")]


class MachineState:
    """What the test may change, recorded before and compared after."""

    def __init__(self) -> None:
        self.main_cf = MAIN_CF.read_bytes() if MAIN_CF.exists() else None
        self.master_cf = MASTER_CF.read_bytes()
        self.user = user_exists(PACKAGE)
        self.group = group_exists(PACKAGE)
        self.postfix_groups = groups_of("postfix")
        self.entries = {str(d): sorted(p.name for p in d.iterdir()) if d.is_dir() else None for d in WATCHED}

    def differences(self) -> list[str]:
        now = MachineState()
        diffs = []
        for attr in ("main_cf", "master_cf", "user", "group", "postfix_groups", "entries"):
            if getattr(self, attr) != getattr(now, attr):
                diffs.append(f"{attr}: before {getattr(self, attr)!r:.300}, after {getattr(now, attr)!r:.300}")
        if installed(PACKAGE):
            diffs.append("the package is still installed")
        for path in (ETC, Path("/var/lib/authmilter"), Path("/usr/lib/authmilter"), SPOOL / "authmilter", WANTS):
            if path.exists() or path.is_symlink():
                diffs.append(f"{path} is left behind")
        if system_master_pid() is not None or accepts(("127.0.0.1", 25)):
            diffs.append("the system Postfix still runs")
        return diffs


def require_safe_machine() -> None:
    require(sys.platform.startswith("linux") and os.geteuid() == 0, "installs a package: needs root on Linux")
    release = Path("/etc/debian_version")
    require(release.exists() and release.read_text().startswith("12"), "the package targets Debian 12")
    for tool in ("dpkg-deb", "lintian", "systemd-tmpfiles", "man", "/usr/sbin/postfix", "/usr/sbin/sendmail"):
        require(shutil.which(tool) is not None, f"{tool} missing (make test-deps installs it)")
    require(os.access(KNOTD, os.X_OK), f"{KNOTD} missing (make test-deps installs knot)")
    missing = [p for p in DEPENDS if not installed(p)]
    require(not missing, f"the package's dependencies are not installed: {missing} (make test-deps)")
    require(not installed(PACKAGE) and not ETC.exists(), "authmilter is installed or configured on this machine")
    require(system_master_pid() is None and not accepts(("127.0.0.1", 25)),
            "the system Postfix (or something else) runs on port 25: not touching it")
    require(not queued_files(), f"the system Postfix queue holds mail: {queued_files()[:3]}")
    require(STOCK_MASTER_CF.exists() and chroot_column(MASTER_CF) == chroot_column(STOCK_MASTER_CF),
            "/etc/postfix/master.cf is not Debian's stock one")
    require(user_exists("postfix") and user_exists("nobody"), "users postfix and nobody")


def build_deb(outdir: Path) -> Path:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1764892800"}
    out = run([sys.executable, str(REPO / "packaging" / "build_deb.py"), "--outdir", str(outdir)], env=env,
              timeout=300)
    deb = Path(out.stdout.decode().strip().splitlines()[-1])
    assert deb.is_file() and deb.name.startswith("authmilter_") and deb.suffix == ".deb", deb
    return deb


def system_main_cf(base: Path, box: Postfix) -> str:
    """main.cf for the system Postfix: loopback only, every message into one Maildir under
    *base*, no DNS, XCLIENT from loopback (to present a remote client), fail closed."""
    nobody = pwd.getpwnam("nobody")
    return f"""\
# written by tests/e2e/test_deb.py; the original is restored after the test
compatibility_level = 3.6
myhostname = {MX_NAME}
mydomain = inbox.test
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {base / "maillog"}
maillog_file_prefixes = /var, /dev/stdout, {base}
alias_maps =
alias_database =
local_transport = error:no local delivery in tests
default_transport = error:no external delivery in tests
relay_transport = error:no external delivery in tests
smtp_dns_support_level = disabled
disable_dns_lookups = yes
smtpd_peername_lookup = no
local_header_rewrite_clients =
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_relay_restrictions = permit_auth_destination, reject
virtual_mailbox_domains = inbox.test
virtual_mailbox_base = {box.mail_base}
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
milter_default_action = tempfail
milter_protocol = 6
"""


def stop_system_postfix(problems: list[str]) -> None:
    master = system_master_pid()
    run(["/usr/sbin/postfix", "stop"], check=False)
    if master is not None:
        try:
            wait_for(lambda: not pid_alive(master), "the system Postfix master to exit", timeout_s=30)
        except AssertionError:
            run(["/usr/sbin/postfix", "abort"], check=False)
            problems.append("the system Postfix did not stop on `postfix stop`; aborted")
    # Daemons of the system instance that outlived the master (other tests' private
    # instances carry MAIL_CONFIG=their own directory and are left alone).
    marker = f"MAIL_CONFIG={MAIN_CF.parent}".encode()
    for pid, environ in scan_proc("environ"):
        if marker in environ.split(b"\0") and pid != os.getpid() and pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
                problems.append(f"killed a leftover system Postfix process {pid}")
            except ProcessLookupError:
                pass


def test_deb_installs_and_carries_mail_through_the_system_postfix(tmp_path_factory) -> None:
    require_safe_machine()
    before = MachineState()
    base = Path(tempfile.mkdtemp(prefix="authmilter-deb-"))
    base.chmod(0o755)
    box = Postfix(base, milter="")        # only its Maildir helpers: the system Postfix delivers there
    box.mail_base.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(box.mail_base, nobody.pw_uid, nobody.pw_gid)
    knot: Knot | None = None
    daemon: Process | None = None
    postfix_started = False
    problems: list[str] = []
    try:
        deb = build_deb(base / "build")
        lint = run(["lintian", "--fail-on", "error", str(deb)], check=False, timeout=300)
        assert lint.returncode == 0, "lintian: " + lint.stdout.decode() + lint.stderr.decode()
        assert not re.search(r"^E: ", lint.stdout.decode(), re.M), lint.stdout.decode()

        run(["dpkg", "-i", str(deb)], timeout=300)
        # postinst: the user and group, postfix in the group, state directory, tmpfiles.d
        assert user_exists(PACKAGE) and group_exists(PACKAGE)
        assert PACKAGE in groups_of("postfix")
        state = Path("/var/lib/authmilter").stat()
        assert pwd.getpwuid(state.st_uid).pw_name == PACKAGE and state.st_mode & 0o777 == 0o750
        spool_dir = (SPOOL / "authmilter").stat()
        assert pwd.getpwuid(spool_dir.st_uid).pw_name == PACKAGE and grp.getgrgid(spool_dir.st_gid).gr_name == "postfix"
        # Debian's python3 runs it with Debian's modules, and the two bundled ones from /usr/lib/authmilter.
        probe = ("import sys; sys.path.insert(0, '/usr/lib/authmilter'); import importlib; "
                 "print(*(importlib.import_module(m).__file__ for m in sys.argv[1:]))")
        modules = ("dns", "publicsuffixlist", "cryptography", "milter", "spf", "authres", "authmilter")
        found = dict(zip(modules, run(["/usr/bin/python3", "-c", probe, *modules]).stdout.decode().split(), strict=True))
        assert {m for m, f in found.items() if f.startswith("/usr/lib/authmilter/")} == \
            {"dns", "publicsuffixlist", "authmilter"}, found
        conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", PACKAGE]).stdout.decode()
        assert str(CONF) in conffiles
        # the man pages and every Documentation= of the unit exist
        unit = UNIT.read_text()
        docs = next(line for line in unit.splitlines() if line.startswith("Documentation=")).split("=", 1)[1].split()
        for doc in docs:
            if doc.startswith("man:"):
                name, section = re.fullmatch(r"man:([\w.-]+)\((\d)\)", doc).groups()  # type: ignore[union-attr]
                assert run(["man", "-w", section, name]).stdout.decode().startswith("/usr/share/man/"), doc
            else:
                assert Path(doc.removeprefix("file:")).is_file(), doc
        assert "man:authmilter.toml(5)" in docs
        page = run(["man", "5", "authmilter.toml"], env={**os.environ, "MANWIDTH": "100"}).stdout.decode()
        assert "[signing]" in page and "key_table" in page
        if shutil.which("systemd-analyze"):
            analyzed = run(["systemd-analyze", "verify", str(UNIT)], check=False)
            assert analyzed.returncode == 0, analyzed.stderr.decode()

        # The shipped configuration is accepted as it stands, for the system Postfix's chroot.
        stock = run(["/usr/bin/authmilter", "check-config"], check=False)
        assert stock.returncode == 0, stock.stdout.decode() + stock.stderr.decode()
        assert "smtpd_milters = unix:authmilter/authmilter.sock" in stock.stdout.decode()

        # The world: knot with the senders' zones and our outbound key, made by the package.
        keys = {"rsa": generate_key("any.test", "s1", "rsa"), "ed25519": generate_key("any.test", "ed1", "ed25519")}
        zones = build_zones(keys)
        run(["/usr/bin/authmilter", "genkey", "-d", "example.com", "-s", "deb", "-D", str(ETC / "keys")])
        shutil.chown(ETC / "keys" / "deb.private", PACKAGE, PACKAGE)
        zones["com"].raw((ETC / "keys" / "deb.txt").read_text())
        (ETC / "KeyTable").write_text(f"deb._domainkey.example.com example.com:deb:{ETC / 'keys' / 'deb.private'}\n")
        (ETC / "SigningTable").write_text("*@example.com deb._domainkey.example.com\n")
        knot = Knot(base, zones.values())
        knot.start()

        settings = tomllib.loads(CONF.read_text())
        CONF.write_text(tomlwrite.dumps(tomlwrite.merge(settings, {
            "authserv_id": MX_NAME, "workers": 2, "log_level": "debug",
            "dns": {"servers": [f"127.0.0.1:{knot.port}"], "timeout_s": 1.0, "message_budget_s": 4.0},
            "signing": {"key_table": str(ETC / "KeyTable"), "signing_table": f"refile:{ETC / 'SigningTable'}"},
            "store": {"enabled": True},      # the default SQLite file in the package's state directory
        })))
        MAIN_CF.write_text(system_main_cf(base, box))

        # As the unit starts it: ExecStartPre (check-config, whose lines go into main.cf), ExecStart.
        assert not unit_commands(unit, "User"), "the unit starts as root and the daemon drops to its user"
        (pre,) = unit_commands(unit, "ExecStartPre")
        (start,) = unit_commands(unit, "ExecStart")
        checked = run(pre, check=False)
        printed = [ln for ln in checked.stdout.decode().splitlines() if re.match(r"(non_)?smtpd_milters = ", ln)]
        assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
        assert printed == ["smtpd_milters = unix:authmilter/authmilter.sock",
                           "non_smtpd_milters = unix:authmilter/authmilter.sock"], printed
        run(["/usr/sbin/postconf", "-e", *printed])
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "MAIL_CONFIG")}
        daemon = Process("authmilter", start, base / "authmilter.log", env=env, cwd=Path("/"))
        daemon.start()
        wait_for(lambda: (daemon.running or _raise(f"authmilter exited: {daemon.log_tail()}"))
                 and accepts(str(SPOOL_SOCKET)), "the packaged authmilter to listen in the spool")
        owner = os.stat(SPOOL_SOCKET)
        assert grp.getgrgid(owner.st_gid).gr_name == PACKAGE and owner.st_mode & 0o777 == 0o660
        workers = wait_for(lambda: [pid for pid, status in scan_proc("status")
                                    if f"PPid:\t{daemon.pid}\n".encode() in status], "authmilter's workers")
        uid = pwd.getpwnam(PACKAGE).pw_uid
        assert all(_uid(pid) == uid for pid in [daemon.pid, *workers]), "authmilter does not run as its user"

        postfix_started = True
        run(["/usr/sbin/postfix", "start"], env=env)
        wait_for(lambda: Postfix._listening(25), "the system Postfix to listen on 127.0.0.1:25")

        # Inbound over SMTP: a remote client (XCLIENT), Ed25519-signed From domain, SPF pass envelope.
        token = f"deb-in-{uuid.uuid4().hex[:8]}"
        raw = dkim_sign(make_message(token, from_="Alice <alice@ed.test>"), keys["ed25519"], domain="ed.test")
        session = SmtpSession(25)
        try:
            assert session.xclient(SENDER_IP, "mail.example.org", "mail.example.org") is None
            reply = session.transaction(raw, "alice@spfpass.test", [RCPT])
        finally:
            session.close()
        assert reply.accepted, f"{reply} {_tail(base / 'maillog')}"
        delivered = box.wait_delivered(token)
        assert results(delivered, "spf")[0][0] == "pass", delivered[:1500]
        assert results(delivered, "dkim")[0][0] == "pass", delivered[:1500]
        assert results(delivered, "dmarc")[0][0] == "pass", delivered[:1500]

        # Outbound with sendmail(1): pickup and cleanup chrooted, signed by the package's key.
        token = f"deb-out-{uuid.uuid4().hex[:8]}"
        run(["/usr/sbin/sendmail", "-i", "-f", "root@example.com", "--", RCPT],
            input=make_message(token, from_="Cron <root@example.com>").replace(b"\r\n", b"\n"), env=env)
        run(["/usr/sbin/postqueue", "-f"], env=env)
        delivered = box.wait_delivered(token)
        verified = dkim_verify_all(delivered, knot)
        assert any(ok and fields.get(b"d") == b"example.com" and fields.get(b"s") == b"deb"
                   for ok, fields in verified), (verified, header_values(delivered, "DKIM-Signature"))
        log = daemon.log.read_text(errors="replace")
        assert len(re.findall(r"action=accept", log)) >= 2, log[-3000:]
        db = Path("/var/lib/authmilter/state.db")
        assert db.is_file() and pwd.getpwuid(db.stat().st_uid).pw_name == PACKAGE, "no store in /var/lib/authmilter"
    finally:
        if postfix_started:
            stop_system_postfix(problems)
        if daemon is not None and not daemon.stop():
            problems.append("authmilter did not stop on SIGTERM")
        if knot is not None:
            knot.stop()
        copy_logs([base / "maillog", base / "authmilter.log", base / "knot" / "knotd.log", CONF, MAIN_CF],
                  tmp_path_factory.mktemp("deb-logs"))
        _restore(before, problems)
        shutil.rmtree(base, ignore_errors=True)
    diffs = before.differences()
    assert not problems and not diffs, f"the machine is not as it was: {problems + diffs}"


def _restore(before: MachineState, problems: list[str]) -> None:
    """Undo the test: the queue (if a message stayed), the files it added, the package, the
    user and group, main.cf, the files Postfix created."""
    if queued_files():
        problems.append(f"mail stayed in the system queue: {queued_files()[:3]}")
        run(["/usr/sbin/postsuper", "-d", "ALL"], check=False)
    for added in (ETC / "KeyTable", ETC / "SigningTable", ETC / "keys" / "deb.private", ETC / "keys" / "deb.txt"):
        added.unlink(missing_ok=True)
    if installed(PACKAGE) or Path("/var/lib/dpkg/info/authmilter.list").exists():
        purged = run(["dpkg", "--purge", PACKAGE], check=False, timeout=300)
        if purged.returncode != 0:
            problems.append("dpkg --purge failed: " + purged.stderr.decode())
    if not before.user and user_exists(PACKAGE):
        run(["deluser", "--quiet", "--system", PACKAGE], check=False)
    if not before.group and group_exists(PACKAGE):
        run(["delgroup", "--quiet", PACKAGE], check=False)
    if before.main_cf is None:
        MAIN_CF.unlink(missing_ok=True)
    else:
        MAIN_CF.write_bytes(before.main_cf)
    for directory in reversed(WATCHED):
        names = before.entries[str(directory)]
        if names is None or not directory.is_dir():
            continue
        for p in directory.iterdir():
            if p.name in names:
                continue
            if p.is_dir() and not p.is_symlink():
                try:
                    p.rmdir()           # a queue directory `postfix start` created, empty again
                except OSError:
                    problems.append(f"{p} is not empty")
            else:
                p.unlink()


def _uid(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^Uid:\s+(\d+)", status, re.M)
    return int(m.group(1)) if m else None


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _raise(message: str) -> bool:
    raise AssertionError(message)
