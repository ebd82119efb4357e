"""Shared fixtures: a loopback DNS server and resolvers pointed at it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from dnsserver import DNSServer
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
