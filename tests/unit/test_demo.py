"""`make run` = `authmilter demo`: a demo key, tables and config inside the given directory."""
import stat
import subprocess
import sys

from authmilter.config.schema import load_settings
from authmilter.runtime import Runtime


def test_demo_prepares_key_tables_and_config(tmp_path):
    (tmp_path / "keys").mkdir(mode=0o755)  # as in a fresh clone
    out = subprocess.run([sys.executable, "-m", "authmilter.cli", "demo", "--dir", str(tmp_path), "--print-only"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    key = tmp_path / "keys" / "demo.private"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "demo._domainkey" in out.stdout and "v=DKIM1; k=rsa" in out.stdout
    assert f"smtpd_milters = unix:{tmp_path}/run/authmilter.sock" in out.stdout
    settings = load_settings(tmp_path / "run" / "demo.toml")
    runtime = Runtime.load(settings)  # the key passes the permission checks and loads
    assert runtime.signer is not None and runtime.signer.domains == frozenset({"example.com"})
    # A second run reuses the key.
    before = key.read_bytes()
    subprocess.run([sys.executable, "-m", "authmilter.cli", "demo", "--dir", str(tmp_path), "--print-only"],
                   check=True, capture_output=True, timeout=120)
    assert key.read_bytes() == before
