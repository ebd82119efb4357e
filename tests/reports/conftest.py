"""Fixtures for the report tests: a real PostgreSQL for the session (as tests/store)."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgserver import PgServer, missing_reason
from support import require


@pytest.fixture(scope="session")
def reports_pg() -> Iterator[PgServer]:
    reason = missing_reason()
    require(not reason, reason)
    with PgServer() as server:
        yield server
