"""The shipped timer and service for ``authmilter reports send`` are valid units."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support import require

EX = Path(__file__).resolve().parents[2] / "examples" / "systemd"


def test_reports_timer_and_service_verify(tmp_path: Path) -> None:
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze not installed")
    venv_bin = Path(sys.executable).with_name("authmilter")
    for name in ("authmilter-reports.service", "authmilter-reports.timer"):
        text = (EX / name).read_text().replace("/usr/local/bin/authmilter", str(venv_bin))
        # the example names the daemon's user; this machine may not have it
        (tmp_path / name).write_text(text.replace("User=authmilter", "User=root").replace("Group=authmilter",
                                                                                           "Group=root"))
    out = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "authmilter-reports.timer")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    service = (EX / "authmilter-reports.service").read_text()
    assert "ExecStart=/usr/local/bin/authmilter reports send -c /etc/authmilter/authmilter.toml" in service
    assert "OnCalendar=" in (EX / "authmilter-reports.timer").read_text()
