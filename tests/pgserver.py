"""A throw-away PostgreSQL server: now tests/infra/pgserver.py (shared with bench/)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra.pgserver import PgServer, find_bindir, missing_reason  # noqa: F401  (re-exports)
