"""Shared fixtures: a loopback DNS server, resolvers pointed at it, the daemons a test started."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from infra.dnsserver import DNSServer
from milterd import Daemon
from support import IN_CI, require  # noqa: F401  (re-exported for old imports)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def _shared_dns_server():
    with DNSServer() as server:
        yield server


@pytest.fixture
def dns_server(_shared_dns_server):
    """An authoritative DNS server on 127.0.0.1 (free port), emptied for each test.

    One server serves the whole session (starting one per test costs ~0.2 s); a test
    that needs to stop its server should start its own `DNSServer()`.
    """
    _shared_dns_server.clear()
    yield _shared_dns_server
    _shared_dns_server.clear()


@pytest.fixture
def resolver(dns_server):
    """The production Resolver pointed at the test DNS server, cache off."""
    from authmilter.resolver import Resolver

    return Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=1.0, cache_entries=0)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Append each `milterd.Daemon` a test starts; at the end every one must stop on
    SIGTERM with exit status 0."""
    started: list[Daemon] = []
    yield started
    problems = [f"exit {code}:\n{d.log()}" for d in started if d.proc is not None and (code := d.stop()) != 0]
    assert not problems, "\n".join(problems)
