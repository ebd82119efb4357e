"""The test suite's milter client: now tests/infra/milter.py, shared with bench/.

Kept as a module so ``from milterclient import MilterClient, MilterResult, ...`` keeps
working; new code may import from ``infra.milter`` directly.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra.milter import (  # noqa: F401  (re-exports)
    STAGE_NAMES,
    MilterClient,
    MilterProtocolError,
    MilterResult,
    Negotiated,
    split_message,
)
from miltertest import constants as C  # noqa: F401  (tests read `mc.C.SMFIR_REPLYCODE`)
