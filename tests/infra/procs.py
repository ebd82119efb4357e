"""Processes for tests and bench/: start one in its own session, stop it within a bound.

Daemons are started from the interpreter that runs the tests or the bench, never from a
fixed venv path: `authmilter_command()` is the console script beside ``sys.executable``
when installed there, else ``python -m authmilter``. So ``pytest`` works from any venv.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Self, TypeVar

T = TypeVar("T")

WAIT_S = 30.0      # upper bound for a poll; a safety net against hangs, never a speed assertion
STOP_S = 15.0      # SIGTERM, then SIGKILL for whatever is left after this long


def authmilter_command() -> list[str]:
    """argv[0:] that runs authmilter with the running interpreter's installation."""
    script = Path(sys.executable).with_name("authmilter")
    return [str(script)] if script.exists() else [sys.executable, "-m", "authmilter"]


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody uses right now, for TCP and UDP, below the kernel's ephemeral range
    and not handed out before by this process. A port the kernel picks for a bind to port
    0 comes from the ephemeral range, where any outgoing connection or UDP query may take
    it before the server that was to listen on it binds (Postfix once failed to start in
    CI with "Address already in use"); below that range only another deliberate bind can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    high = _ephemeral_low() - 1
    for _ in range(200):
        port = random.randint(max(1024, high - 12000), high)
        if port in _HANDED_OUT:
            continue
        try:
            with socket.socket(family, socket.SOCK_STREAM) as t, socket.socket(family, socket.SOCK_DGRAM) as u:
                t.bind((host, port))
                u.bind((host, port))
        except OSError:
            continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(family, socket.SOCK_STREAM) as s:     # a crowded range: the kernel's choice
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], T], what: str, timeout_s: float = WAIT_S, interval_s: float = 0.05) -> T:
    """Poll until *predicate* returns something truthy; bounded, so a hang is a failure."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def accepts(address: str | tuple[str, int], timeout_s: float = 1.0) -> bool:
    """True when a stream socket (unix path or (host, port)) accepts a connection now."""
    family = socket.AF_UNIX if isinstance(address, str) else (
        socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(address)
            return True
        except OSError:
            return False


def scan_proc(name: str) -> Iterator[tuple[int, bytes]]:
    """(pid, contents of /proc/PID/*name*) for every process readable now."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/{name}", "rb") as fh:
                    yield int(entry), fh.read()
            except OSError:
                continue


def _stat_fields(stat: bytes) -> list[bytes]:
    """/proc/PID/stat after "(comm)", which may itself hold spaces: state, ppid, pgrp, ..."""
    return stat.rsplit(b")", 1)[1].split()


def process_group(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group *pgid*."""
    pids = []
    for pid, stat in scan_proc("stat"):
        fields = _stat_fields(stat)
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            pids.append(pid)
    return pids


def tree_cpu_s(pid: int) -> float:
    """user+system CPU seconds of a process and all its descendants (from /proc)."""
    clk = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for p, stat in scan_proc("stat"):
        rest = _stat_fields(stat)
        # fields after "(comm)": state ppid ... utime(14) stime(15) counted from 1
        stats[p] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / clk)
    children: dict[int, list[int]] = {}
    for p, (pp, _) in stats.items():
        children.setdefault(pp, []).append(p)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
        todo.extend(children.get(p, ()))
    return total


def stop_all(parts: Sequence[object]) -> None:
    """Call every part's stop(), in order, even when one of them fails (a Postfix that
    will not stop must not leave the authmilter and knot behind it running); then raise
    the first failure."""
    first: BaseException | None = None
    for part in parts:
        try:
            part.stop()  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - raised below, after the others stopped
            first = first or exc
    if first is not None:
        raise first


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = STOP_S, *, sweep: bool = True) -> bool:
    """SIGTERM a process started with start_new_session=True and wait up to *timeout_s*;
    then SIGKILL its process group (always with *sweep*, else only if it did not exit).
    Returns True when it exited on SIGTERM."""
    if proc is None or proc.poll() is not None:
        return True
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
        clean = True
    except subprocess.TimeoutExpired:
        clean = False
    if sweep or not clean:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.wait(timeout=timeout_s)
    return clean


class Process:
    """One server process in its own session (so a stop reaches its children), with its
    output appended to *log*."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = env
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=self.env, cwd=self.cwd, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} not started"
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def cpu_s(self) -> float:
        """CPU seconds used so far by the process and its children (workers)."""
        return tree_cpu_s(self.pid)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = STOP_S, *, sweep: bool = True) -> bool:
        """SIGTERM, SIGKILL after *timeout_s*; True when it exited on SIGTERM."""
        return stop_process(self.popen, timeout_s, sweep=sweep)
