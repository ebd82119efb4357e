"""The daemon as an admin and an MTA meet it: sockets, signals, reload, workers, privileges.

Every test runs the real `authmilter run` and talks the milter protocol over its socket.
"""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from milterd import AUTHMILTER, WAIT_S, Daemon, free_port, merge, require, toml

MSG = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: test\r\n"
       b"Message-ID: <1@example.org>\r\n\r\nHello.\r\n")


def send(daemon: Daemon, qid: str = "4QID1", ip: str | None = "192.0.2.10", message: bytes = MSG, **kw):  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        return c.session(ip=ip, mail_from="alice@example.org", rcpts=["bob@example.net"], message=message,
                         macros={"i": qid, "j": "mx.mta.test", **kw})


def authserv_of(result) -> str:  # type: ignore[no-untyped-def]
    values = result.headers_named("Authentication-Results")
    assert values, f"no Authentication-Results in {result}"
    return values[0].strip().split(";", 1)[0].strip()


# -- sockets ----------------------------------------------------------------------------------


def test_unix_socket_serves_and_sigterm_removes_it(milterd):
    daemon = milterd()
    path = Path(daemon.address)
    assert stat.S_ISSOCK(path.lstat().st_mode)
    result = send(daemon)
    assert result.action == "accept"
    assert authserv_of(result) == "mx.test"
    assert daemon.stop() == 0
    assert not path.exists(), "SIGTERM must remove the unix socket"
    assert "stopped" in daemon.log()


def test_socket_mode_applied(milterd):
    daemon = milterd(socket_mode="0600")
    assert stat.S_IMODE(Path(daemon.address).stat().st_mode) == 0o600


def test_stale_socket_is_replaced(milterd, tmp_path):
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()                      # the path stays behind, nobody listens: stale
    assert stat.S_ISSOCK(path.lstat().st_mode)
    daemon = milterd(socket=f"unix:{path}")
    assert send(daemon).action == "accept"
    assert "replacing stale socket" in daemon.log()


def test_regular_file_at_socket_path_is_refused(milterd, tmp_path):
    path = tmp_path / "notasocket"
    path.write_text("precious\n")
    daemon = milterd(socket=f"unix:{path}", wait=False)
    assert daemon.wait_exit() != 0
    assert "is not a socket" in daemon.log()
    assert path.read_text() == "precious\n", "a regular file must never be removed"


def test_missing_socket_directory_is_named(milterd, tmp_path):
    daemon = milterd(socket=f"unix:{tmp_path}/nonexistent/m.sock", wait=False)
    assert daemon.wait_exit() != 0
    assert f"socket directory {tmp_path}/nonexistent does not exist" in daemon.log()


def test_live_socket_of_another_process_is_refused(milterd, tmp_path):
    first = milterd(workers=1)
    second = milterd(workers=1, wait=False)
    assert second.wait_exit() != 0
    assert "another process is listening" in second.log()
    assert send(first).action == "accept", "the running daemon keeps its socket"


def test_inet_socket(milterd):
    port = free_port()
    daemon = milterd(socket=f"inet:{port}@127.0.0.1", workers=1)
    assert daemon.address == ("127.0.0.1", port)
    assert authserv_of(send(daemon)) == "mx.test"


def test_inet6_socket(milterd):
    try:
        port = free_port("::1")
    except OSError:
        require(False, "no IPv6 loopback")
        return
    daemon = milterd(socket=f"inet6:{port}@::1", workers=1)
    assert authserv_of(send(daemon)) == "mx.test"


def test_bad_config_stops_startup_with_file_and_key(tmp_path, base_config):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml(merge(base_config, {"policy": {"on_internal_error": "discard"}})))
    proc = subprocess.run([str(AUTHMILTER), "run", "-c", str(cfg)], check=False, capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode != 0
    assert str(cfg) in proc.stderr and "policy.on_internal_error" in proc.stderr


def test_unusable_key_stops_startup_and_leaves_no_socket(milterd, tmp_path):
    ktab = tmp_path / "KeyTable"
    ktab.write_text("k1 example.org:sel:/nonexistent/sel.private\n")
    stab = tmp_path / "SigningTable"
    stab.write_text("*@example.org k1\n")
    daemon = milterd(wait=False, signing={"enabled": True, "key_table": str(ktab),
                                          "signing_table": f"refile:{stab}"})
    assert daemon.wait_exit() != 0
    assert daemon.wait_log(r"cannot start: .*/nonexistent/sel\.private")
    assert not Path(daemon.address).exists()


# -- signals ----------------------------------------------------------------------------------


def test_sigterm_lets_an_in_flight_message_finish(milterd):
    daemon = milterd(workers=1)
    with daemon.client() as c:
        c.negotiate()
        c.connect(ip="192.0.2.10", macros={"j": "mx.mta.test"})
        c.helo("client.example")
        c.mail("alice@example.org", macros={"i": "4INFLIGHT"})
        c.rcpt("bob@example.net")
        c.header("From", " alice@example.org")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_log(r"stopping: waiting for in-flight messages")
        c.header("Subject", " late")
        c.eoh()
        c.body(b"Hello.\r\n")
        result = c.eom(macros={"i": "4INFLIGHT"})
    assert result.action == "accept"
    assert authserv_of(result) == "mx.test"
    assert daemon.wait_exit() == 0
    assert "4INFLIGHT: action=accept" in daemon.log()
    assert not Path(daemon.address).exists()


def test_killed_worker_is_replaced_and_socket_survives(milterd):
    daemon = milterd(workers=2)
    assert daemon.wait_log(r"worker \d+ started pid=", count=2)
    victim = min(daemon.worker_pids())
    os.kill(victim, signal.SIGKILL)
    assert daemon.wait_log(rf"worker \d+ pid={victim} killed by signal 9; restarting")
    assert daemon.wait_log(r"worker \d+ started pid=", count=3)
    assert victim not in daemon.worker_pids() and len(daemon.worker_pids()) == 2
    assert stat.S_ISSOCK(Path(daemon.address).lstat().st_mode)
    for n in range(4):
        assert send(daemon, qid=f"4AFTER{n}").action == "accept"


def test_reload_applies_to_new_connections_only(milterd):
    daemon = milterd(workers=2)
    with daemon.client() as old:
        old.negotiate()                     # the connection exists now: it keeps mx.test
        old.connect(ip="192.0.2.10", macros={"j": "mx.mta.test"})
        daemon.write_config(merge(daemon.config, {"authserv_id": "mx2.test"}))
        daemon.signal(signal.SIGUSR1)
        assert daemon.wait_log(r"reloaded \(generation 2\)", count=2), daemon.log()
        assert authserv_of(send(daemon, qid="4NEW")) == "mx2.test"
        old.helo("client.example")
        result = old.message(mail_from="alice@example.org", rcpts=["bob@example.net"], message=MSG,
                             macros={"i": "4OLD"})
    assert authserv_of(result) == "mx.test"


def test_reload_with_broken_config_keeps_the_old_one(milterd):
    daemon = milterd(workers=2)
    good = daemon.config
    daemon.write_config(merge(good, {"authserv_id": "mx2.test"}))
    daemon.config_path.write_text(daemon.config_path.read_text() + "\nnot_a_key = 1\n")
    daemon.signal(signal.SIGUSR1)
    assert daemon.wait_log(r"reload failed, keeping the running configuration: .*not_a_key: unknown key")
    assert "reloaded" not in daemon.log()
    assert authserv_of(send(daemon)) == "mx.test"


def test_reload_with_unreadable_key_keeps_the_old_one(milterd, tmp_path):
    """Config valid, keys not: the reload validates keys too."""
    daemon = milterd(workers=1)
    ktab = tmp_path / "KeyTable"
    ktab.write_text("k1 example.org:sel:/nonexistent/sel.private\n")
    stab = tmp_path / "SigningTable"
    stab.write_text("*@example.org k1\n")
    daemon.write_config(merge(daemon.config, {
        "signing": {"enabled": True, "key_table": str(ktab), "signing_table": f"refile:{stab}"}}))
    daemon.signal(signal.SIGUSR1)
    assert daemon.wait_log(r"reload failed, keeping the running configuration: ")
    assert "reloaded" not in daemon.log()
    assert send(daemon).action == "accept"


# -- privileges -------------------------------------------------------------------------------


def _status_ids(pid: int) -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["Uid"].split()[1]), int(fields["Gid"].split()[1])


def test_root_binds_then_drops_privileges_and_a_worker_exit_keeps_the_socket(milterd):
    require(os.geteuid() == 0, "needs root to test the privilege drop")
    try:
        nobody = pwd.getpwnam("nobody")
        group = grp.getgrgid(nobody.pw_gid).gr_name
    except KeyError:
        require(False, "no user nobody")
        return
    # A directory the unprivileged user can read (pytest's tmp dirs are private to root);
    # the socket directory belongs to the user, like /run/authmilter from tmpfiles.d.
    top = Path(tempfile.mkdtemp(prefix="authmilter-priv-"))
    try:
        top.chmod(0o755)
        run = top / "run"
        run.mkdir()
        os.chown(run, nobody.pw_uid, nobody.pw_gid)
        daemon = milterd(directory=top, socket=f"unix:{run}/m.sock", user="nobody", group=group, workers=2)
        sock = Path(daemon.address)
        st = sock.stat()
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
        assert daemon.proc is not None
        assert _status_ids(daemon.proc.pid) == (nobody.pw_uid, nobody.pw_gid)
        assert daemon.wait_log(r"worker \d+ started pid=", count=2)
        workers = daemon.worker_pids()
        for pid in workers:
            assert _status_ids(pid) == (nobody.pw_uid, nobody.pw_gid)
        # A worker that stops on its own runs libmilter's listener shutdown as non-root,
        # which unlinks the socket path it bound: that must not take the socket away.
        victim = min(workers)
        os.kill(victim, signal.SIGTERM)
        assert daemon.wait_log(rf"worker \d+ pid={victim} exited with status 0; restarting")
        assert daemon.wait_log(r"worker \d+ started pid=", count=3)
        assert stat.S_ISSOCK(sock.lstat().st_mode)
        for n in range(3):
            assert send(daemon, qid=f"4PRIV{n}").action == "accept"
        assert daemon.stop() == 0
        assert not sock.exists()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_pid_file_written_and_removed(milterd, tmp_path):
    pid_file = tmp_path / "authmilter.pid"
    daemon = milterd(pid_file=str(pid_file), workers=1)
    assert daemon.proc is not None
    assert pid_file.read_text().strip() == str(daemon.proc.pid)
    assert daemon.stop() == 0
    assert not pid_file.exists()


@pytest.mark.parametrize("content", ["", "# emptied by a botched deploy\n", 'authserv_id = "mx.test"\n'])
def test_reload_that_would_fall_back_to_defaults_is_refused(milterd, content):
    """Hardening defect 8: an empty (or partial) file on SIGUSR1 turned signing off and
    moved DNS to the system resolver without a word. The file must say so itself."""
    daemon = milterd(workers=1)
    daemon.config_path.write_text(content)
    daemon.signal(signal.SIGUSR1)
    assert daemon.wait_log(r"reload failed, keeping the running configuration: .*reload refused: ")
    assert "reloaded" not in daemon.log()
    # still the loopback DNS server of the running configuration: SPF is evaluated
    assert "spf=" in send(daemon, qid="4KEPT").headers_named("Authentication-Results")[0]


def test_reload_that_says_so_explicitly_is_applied(milterd):
    daemon = milterd(workers=1)
    daemon.write_config(merge(daemon.config, {"authserv_id": "mx2.test", "verify": {"enabled": False}}))
    daemon.signal(signal.SIGUSR1)
    assert daemon.wait_log(r"reloaded \(generation 2\)"), daemon.log()
