"""`authmilter verify`: the exit status says the decision (0 accept, 3 quarantine,
4 reject, 5 tempfail, 2 error), and an offline run never opens the store."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from authmilter.config import tomlwrite

AUTHMILTER = Path(sys.executable).with_name("authmilter")


def _config(tmp_path: Path, dns_server, **extra) -> Path:  # type: ignore[no-untyped-def]
    data = {"authserv_id": "mx.test", "signing": {"enabled": False},
            "dns": {"servers": [dns_server.address], "timeout_s": 0.5, "message_budget_s": 2.0}}
    data.update(extra)
    path = tmp_path / "authmilter.toml"
    path.write_text(tomlwrite.dumps(data))
    return path


def _verify(config: Path, domain: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    msg = tmp_path / "m.eml"
    msg.write_bytes(f"From: A <a@{domain}>\r\nTo: b@mx.test\r\nSubject: t\r\n\r\nhi\r\n".encode())
    return subprocess.run([str(AUTHMILTER), "verify", str(msg), "--client-ip", "192.0.2.10", "--helo",
                           "mail.example", "--mail-from", f"a@{domain}", "-c", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("policy,spf,fault,status", [
    ("none", "v=spf1 ip4:192.0.2.0/24 -all", None, 0),
    ("quarantine", "v=spf1 -all", None, 3),
    ("reject", "v=spf1 -all", None, 4),
    ("reject", None, "servfail", 5),
])
def test_exit_status_says_the_decision(tmp_path, dns_server, policy, spf, fault, status):
    domain = f"{policy}-{status}.verify.example"
    if spf:
        dns_server.add_txt(domain, spf)
    if fault:
        dns_server.set_fault(domain, fault)
    dns_server.add_txt(f"_dmarc.{domain}", f"v=DMARC1; p={policy}")
    out = _verify(_config(tmp_path, dns_server, policy={"on_dmarc_reject": "reject"}), domain, tmp_path)
    assert out.returncode == status, out.stdout + out.stderr
    assert out.stdout.startswith("Authentication-Results:") and "decision: " in out.stdout


def test_offline_run_never_opens_the_store(tmp_path, dns_server):
    """A store the config enables (here one whose directory does not exist, which stops
    `authmilter run`) is neither opened nor created by verify."""
    missing = tmp_path / "no-such-dir" / "state.db"
    config = _config(tmp_path, dns_server, store={"enabled": True, "url": f"sqlite://{missing}"})
    out = _verify(config, "nostore.verify.example", tmp_path)
    assert out.returncode == 0, out.stderr
    assert not missing.parent.exists()


def test_unreadable_message_is_exit_2(tmp_path, dns_server):
    out = subprocess.run([str(AUTHMILTER), "verify", str(tmp_path / "missing.eml"),
                          "-c", str(_config(tmp_path, dns_server))],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and "cannot read" in out.stderr
