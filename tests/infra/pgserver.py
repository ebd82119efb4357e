"""A throw-away PostgreSQL server for tests: initdb + pg_ctl in a private directory.

The server listens on a unix socket inside that directory only (``listen_addresses``
empty: no TCP at all), runs with fsync off, and is stopped and deleted by `stop()`.
initdb refuses to run as root, so under root (CI) every server command runs as the
``postgres`` system user via runuser(1), with the directory handed to that user.

    with PgServer() as pg:
        url = pg.create_database("t1")     # postgresql://authmilter@/t1?host=...&port=...
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "authmilter"
RUN_AS = "postgres"


def find_bindir() -> Path | None:
    """Debian's /usr/lib/postgresql/N/bin (newest), else initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing_reason() -> str:
    """Why a server cannot be started here ("" if it can)."""
    if find_bindir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root and there is no {RUN_AS!r} user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root and runuser(1) is missing"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg not installed"
    return ""


class PgServer:
    def __init__(self) -> None:
        bindir = find_bindir()
        assert bindir is not None, missing_reason()
        self.bindir = bindir
        # Not under pytest's tmp_path: its parents are mode 0700 root-owned, and the
        # postgres user must reach the socket and data directories.
        self.dir = Path(tempfile.mkdtemp(prefix="authmilter-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        with socket.socket() as s:          # any unused number: it only names the socket file
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.running = False

    def _cmd(self, *argv: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", RUN_AS, "--", *argv]
        return list(argv)

    def _run(self, *argv: str, timeout: float = 120) -> None:
        out = subprocess.run(self._cmd(*argv), capture_output=True, text=True, timeout=timeout,
                             cwd=self.dir, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout}{out.stderr}\n"
                               f"{self.log.read_text() if self.log.exists() else ''}")

    def start(self) -> PgServer:
        if os.geteuid() == 0:
            pw = pwd.getpwnam(RUN_AS)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        options = (f"-c listen_addresses='' -k {self.dir} -p {self.port} -F "
                   "-c max_connections=50 -c shared_buffers=16MB")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")
        self.running = True
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.dir}&port={self.port}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if self.running:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
                self.running = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
