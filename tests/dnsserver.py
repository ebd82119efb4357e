"""The suite's loopback DNS server: now tests/infra/dnsserver.py (shared with bench/)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra.dnsserver import DNSServer, txt_rdata  # noqa: F401  (re-exports)
