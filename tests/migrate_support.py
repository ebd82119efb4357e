"""Helpers shared by the importer tests (tests/unit/test_migrate*.py): the installed
``authmilter`` command, the per-option mapping and dropped-option checks, and
check-config run on an imported config moved to the test's own directories."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from authmilter.config.schema import settings_from_dict
from authmilter.migrate_common import get_dotted

AUTHMILTER = str(Path(sys.executable).with_name("authmilter"))


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``authmilter`` with *args*, output captured as text."""
    return subprocess.run([AUTHMILTER, *args], check=False, capture_output=True, text=True, timeout=60, cwd=cwd)


def assert_mapping(imp: Any, expected: dict[str, Any]) -> None:
    """Each dotted key of *expected* has its value in the import (None: not written), and
    the imported data is valid settings."""
    for key, value in expected.items():
        assert get_dotted(imp.data, key) == value, key
    settings_from_dict(imp.data)


def dropped_entry(imp: Any, line: str) -> str:
    """The one note on the import's dropped options for *line*'s option."""
    (entry,) = [d for d in imp.dropped if d.startswith(line.split()[0])]
    return entry


def check_config_here(cfg: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """check-config as run would, on *cfg* imported from OpenDKIM's Debian setup, which must
    pass: the process settings moved to *tmp_path* (the opendkim user cannot enter
    pytest's 0700 tree; tests/unit/test_check_config_preflight.py covers checking as
    another user), and a TCP socket, so that the machine's Postfix chroot settings do not
    decide the outcome. *cfg* is rewritten so."""
    text = cfg.read_text()
    for old, new in (('user = "opendkim"', 'user = ""'), ('group = "opendkim"', 'group = ""'),
                     ("/run/opendkim/", f"{tmp_path}/"),
                     (f'"local:{tmp_path}/opendkim.sock"', '"inet:10025@127.0.0.1"')):
        text = text.replace(old, new)
    cfg.write_text(text)
    check = run("check-config", "-c", str(cfg))
    assert check.returncode == 0, check.stdout + check.stderr
    return check
