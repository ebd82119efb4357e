"""Helpers shared by the test suites, under a name no other module has.

(Several directories have a conftest.py; importing "conftest" from a test picks
whichever pytest loaded last, so shared helpers live here instead.)
"""
from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing — except under CI, where it is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing under CI: {reason}")
    pytest.skip(reason)
