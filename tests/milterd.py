"""Run the real ``authmilter run`` as a subprocess for tests (and bench/).

`Daemon(directory, config)` writes the config as TOML, starts ``authmilter run -c CONFIG``
(the console script beside the running Python, else ``python -m authmilter``) with its
log in a file, waits until the socket accepts connections, and offers the milter client,
log polling and signals. Process start/stop and ports are the shared tests/infra/procs.py.
The pytest fixtures that use it live in tests/milter/conftest.py.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

from infra.milter import MilterClient
from infra.procs import Process, authmilter_command, free_port  # noqa: F401  (free_port re-exported)
from support import require  # noqa: F401  (skip locally, fail under CI=true)

from authmilter.config import tomlwrite

AUTHMILTER = Path(sys.executable).with_name("authmilter")   # the venv pytest runs from
WAIT_S = 60.0   # safety net against hangs, never an assertion about speed


# Config files are written with the package's own TOML writer; merge() overlays tables.
toml = tomlwrite.dumps
merge = tomlwrite.merge


class Daemon:
    """One `authmilter run` process and what a test needs to talk to it."""

    def __init__(self, directory: Path, config: dict[str, Any], env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.dir = directory
        self.config = config
        self.config_path = directory / "authmilter.toml"
        self.log_path = directory / "authmilter.log"
        self.env = {**os.environ, **(env or {})}
        for var in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "INVOCATION_ID"):
            if env is None or var not in env:
                self.env.pop(var, None)
        self.args = args
        self.process: Process | None = None
        spec = config["socket"]
        if spec.startswith(("unix:", "local:")):
            self.address: str | tuple[str, int] = spec.split(":", 1)[1]
        else:
            port, _, host = spec.split(":", 1)[1].partition("@")
            self.address = (host.strip("[]"), int(port))

    def write_config(self, config: dict[str, Any] | None = None) -> None:
        if config is not None:
            self.config = config
        self.config_path.write_text(toml(self.config))

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.popen if self.process is not None else None

    def start(self, wait: bool = True) -> Daemon:
        self.write_config()
        argv = [*authmilter_command(), "run", "-c", str(self.config_path), *self.args]
        self.process = Process("authmilter", argv, self.log_path, env=self.env).start()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"authmilter exited with {self.proc.returncode}:\n{self.log()}")
            if self.wait_log(r"listening on ", timeout=0) and self._connectable():
                return
            time.sleep(0.05)
        raise AssertionError(f"authmilter did not start:\n{self.log()}")

    def _connectable(self) -> bool:
        try:
            with MilterClient(self.address, timeout=5):
                return True
        except OSError:
            return False

    def client(self) -> MilterClient:
        return MilterClient(self.address)

    # -- logs ------------------------------------------------------------------------------
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, count: int = 1, timeout: float = WAIT_S) -> list[re.Match[str]]:
        """Poll the log until *pattern* matched *count* times; [] on timeout."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = list(rx.finditer(self.log()))
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                return []
            time.sleep(0.05)

    def worker_pids(self) -> set[int]:
        """Workers started and not yet reported dead, from the master's log lines."""
        text = self.log()
        started = {int(m) for m in re.findall(r"worker \d+ started pid=(\d+)", text)}
        gone = {int(m) for m in re.findall(r"worker \d+ pid=(\d+) (?:killed|exited)", text)}
        return started - gone

    # -- lifecycle ----------------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = WAIT_S) -> int:
        """Wait for a daemon that is expected to exit on its own; returns the status."""
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        self.process = None
        return code

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.process is None or self.proc is None:
            return 0
        # no sweep of the process group after a clean exit: tests look for orphans themselves
        clean = self.process.stop(WAIT_S, sweep=False)
        code = self.proc.returncode
        self.process = None
        if not clean:
            raise AssertionError(f"authmilter did not stop on SIGTERM:\n{self.log()}")
        return code


# -- Prometheus scraping (metrics tests) ---------------------------------------------------


def scrape(port: int) -> str:
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                return resp.read().decode()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', metric))
        if metric.split("{", 1)[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


def wait_sample(port: int, name: str, at_least: float, **labels: str) -> str:
    deadline = time.monotonic() + WAIT_S
    while True:
        text = scrape(port)
        value = sample(text, name, **labels)
        if value is not None and value >= at_least:
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} never reached {at_least}:\n{text}")
        time.sleep(0.1)
