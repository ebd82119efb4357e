"""Fixtures and budgets for the fuzz tests.

Budgets come from the environment so `make fuzz` can run the same tests longer:

* ``AUTHMILTER_FUZZ_SEED`` — the seed of both milter fuzzers (default fixed, so
  `make test` is reproducible);
* ``AUTHMILTER_FUZZ_ITERATIONS`` — content sessions (the protocol fuzzer runs half as
  many malformed conversations);
* ``AUTHMILTER_FUZZ_STALLS`` — connections the protocol fuzzer leaves in the middle of a
  packet while it goes on (default 1);
* ``AUTHMILTER_FUZZ_PROFILE`` — the Hypothesis profile of the property tests: ``ci``
  (derandomised, few examples; the default) or ``fuzz`` (random, many examples).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from milterd import Daemon, merge

settings.register_profile("ci", derandomize=True, max_examples=100, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", derandomize=False, max_examples=3000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("AUTHMILTER_FUZZ_PROFILE", "ci"))


@pytest.fixture
def fuzz_daemon(tmp_path: Path, dns_server) -> Iterator[Callable[..., Daemon]]:  # type: ignore[no-untyped-def]
    """Start `authmilter run` on a unix socket with DNS from the loopback server; the
    daemon is stopped at the end and must exit cleanly."""
    daemons: list[Daemon] = []

    def start(**config: Any) -> Daemon:
        d = tmp_path / f"d{len(daemons)}"
        d.mkdir()
        base = {
            "socket": f"unix:{d}/m.sock", "authserv_id": "mx.test", "workers": 2, "log_level": "info",
            "dns": {"servers": [dns_server.address], "timeout_s": 1.0, "message_budget_s": 4.0},
            "signing": {"enabled": False},
            "verify": {"trusted_relays": ["10.1.2.3"]},
        }
        config = merge(base, config)
        daemon = Daemon(d, config)
        daemons.append(daemon)
        daemon.start()
        # the tests compare worker PIDs before and after: wait until every worker said so
        assert daemon.wait_log(r"worker \d+ started pid=", count=config["workers"]), daemon.log()
        return daemon

    yield start
    problems = []
    for daemon in daemons:
        code = daemon.stop()
        if code != 0:
            problems.append(f"exit status {code}:\n{daemon.log()[-3000:]}")
    assert not problems, "\n".join(problems)
