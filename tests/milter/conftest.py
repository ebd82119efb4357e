"""Fixtures: the real `authmilter run` as a subprocess on a socket in tmp_path.

`milterd(**config)` starts a daemon with `base_config` merged with *config* and returns
a `milterd.Daemon`; every daemon is stopped with SIGTERM at the end of the test, and the
test fails if one does not exit cleanly.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from milterd import Daemon, merge


@pytest.fixture
def base_config(tmp_path: Path, dns_server) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A unix-socket config with signing off and DNS from the loopback server."""
    return {
        "socket": f"unix:{tmp_path}/m.sock",
        "socket_mode": "0660",
        "authserv_id": "mx.test",
        "workers": 2,
        "log_level": "info",
        "dns": {"servers": [f"127.0.0.1:{dns_server.port}"], "timeout_s": 2.0},
        "signing": {"enabled": False},
    }


@pytest.fixture
def milterd(tmp_path: Path, base_config: dict[str, Any]) -> Iterator[Callable[..., Daemon]]:
    """Start authmilter daemons: ``milterd(workers=1, policy={...}, env={...})``."""
    daemons: list[Daemon] = []

    def start(*, env: dict[str, str] | None = None, wait: bool = True, directory: Path | None = None,
              args: tuple[str, ...] = (), **config: Any) -> Daemon:
        d = directory or tmp_path / f"d{len(daemons)}"
        d.mkdir(exist_ok=True)
        daemon = Daemon(d, merge(base_config, config), env=env, args=args)
        daemons.append(daemon)
        return daemon.start(wait=wait)

    yield start
    problems = []
    for daemon in daemons:
        if daemon.proc is None:
            continue
        code = daemon.stop()
        if code != 0:
            problems.append(f"exit status {code}:\n{daemon.log()}")
    assert not problems, "\n".join(problems)
