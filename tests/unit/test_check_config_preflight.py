"""check-config checks what `run` checks, as the configured user (issue 10, item 3), and
`run` refuses the same configs before it opens its socket. Both through the console script."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support import require

AUTHMILTER = str(Path(sys.executable).with_name("authmilter"))


@pytest.fixture
def site():
    """A signing setup whose key only root can read (key dir 0700 root, key 0600), in a
    0755 directory of its own (pytest's tmp tree is 0700: nobody could read anything)."""
    d = Path(tempfile.mkdtemp(prefix="authmilter-preflight-"))
    yield from _site(d)
    shutil.rmtree(d, ignore_errors=True)


def _site(d: Path):  # type: ignore[no-untyped-def]
    keys = d / "keys"
    keys.mkdir(parents=True)
    keys.chmod(0o700)
    subprocess.run([AUTHMILTER, "genkey", "-d", "example.com", "-s", "s1", "-D", str(keys)],
                   check=True, capture_output=True)
    (d / "KeyTable").write_text(f"s1._domainkey.example.com example.com:s1:{keys}/s1.private\n")
    (d / "SigningTable").write_text("*@example.com s1._domainkey.example.com\n")
    (d / "run").mkdir()
    d.chmod(0o755)
    yield d


def write(site: Path, extra: str = "", *, user: str = "", socket: str = "") -> Path:
    cfg = site / "authmilter.toml"
    cfg.write_text(f'socket = "{socket or "unix:" + str(site / "run" / "a.sock")}"\nuser = "{user}"\nworkers = 1\n'
                   f'[signing]\nkey_table = "{site}/KeyTable"\nsigning_table = "refile:{site}/SigningTable"\n'
                   + extra)
    return cfg


def check_config(cfg: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AUTHMILTER, "check-config", "-c", str(cfg)], capture_output=True, text=True,
                          timeout=120, env=env)


def run_daemon(cfg: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`authmilter run` on a config it must refuse: it exits by itself (a timeout here means
    it started serving, which is the failure)."""
    return subprocess.run([AUTHMILTER, "run", "-c", str(cfg)], capture_output=True, text=True,
                          timeout=120, env=env)


def shim_env(tmp_path: Path, module: str) -> dict[str, str]:
    """An environment in which importing *module* fails as if it were not installed."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / f"{module}.py").write_text(f"raise ImportError('{module} hidden by the test')\n")
    return {**os.environ, "PYTHONPATH": str(shim)}


def test_keys_are_checked_as_the_configured_user_and_run_refuses_before_binding(site):
    require(os.geteuid() == 0, "checking as another user needs root")
    cfg = write(site, user="nobody")
    out = check_config(cfg)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "s1.private" in out.stderr and "(as user nobody)" in out.stderr
    daemon = run_daemon(cfg)
    assert daemon.returncode != 0
    assert "s1.private" in daemon.stderr and "(as user nobody)" in daemon.stderr
    assert not (site / "run" / "a.sock").exists()        # the socket never opened
    # The same config run as root: the user is what made the difference.
    ok = check_config(write(site, user=""))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "signing domains: example.com" in ok.stdout


def test_readable_keys_pass_as_the_configured_user(site):
    require(os.geteuid() == 0, "checking as another user needs root")
    nobody = 65534
    for p in (site / "keys", site / "keys" / "s1.private"):
        os.chown(p, nobody, -1)
    out = check_config(write(site, user="nobody"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK (checked as user nobody)" in out.stdout


def test_missing_socket_directory(site):
    cfg = write(site, socket=f"unix:{site}/missing/a.sock")
    out = check_config(cfg)
    assert out.returncode == 1
    assert f"socket: socket directory {site}/missing does not exist" in out.stderr
    assert run_daemon(cfg).returncode != 0


def test_unknown_user(site):
    out = check_config(write(site, user="no-such-user-authmilter"))
    assert out.returncode == 1
    assert "user 'no-such-user-authmilter' does not exist" in out.stderr


def test_metrics_listen_without_prometheus_client(site, tmp_path):
    cfg = write(site, '[metrics]\nlisten = "127.0.0.1:9"\n')
    env = shim_env(tmp_path, "prometheus_client")
    out = check_config(cfg, env)
    assert out.returncode == 1
    assert "metrics.listen: needs prometheus-client" in out.stderr
    daemon = run_daemon(cfg, env)
    assert daemon.returncode != 0 and "metrics.listen: needs prometheus-client" in daemon.stderr
    assert check_config(cfg).returncode == 0          # with the library installed it passes


def test_postgresql_store_without_psycopg(site, tmp_path):
    cfg = write(site, '[store]\nenabled = true\nurl = "postgresql://authmilter@127.0.0.1/authmilter"\n')
    out = check_config(cfg, shim_env(tmp_path, "psycopg"))
    assert out.returncode == 1
    assert "store.url: PostgreSQL needs psycopg" in out.stderr


def test_signing_without_a_key_table_is_warned_about(tmp_path):
    cfg = tmp_path / "a.toml"
    cfg.write_text('socket = "inet:8891@127.0.0.1"\n')
    out = check_config(cfg)
    assert out.returncode == 0, out.stderr
    assert "signing.enabled is true but signing.key_table is empty" in out.stderr
