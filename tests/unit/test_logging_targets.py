"""Logs where admins look (issue 10, item 5): the syslog target writes facility mail to the
syslog socket; without one it falls back to stderr and says so, instead of logging nothing."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from authmilter.ops import logging as ops_logging

AUTHMILTER = str(Path(sys.executable).with_name("authmilter"))
LOG_MAIL_INFO = 2 * 8 + 6          # RFC 5424 PRI: facility mail (2), severity info (6)


@pytest.fixture
def restore_logging():
    yield
    ops_logging.setup("info", "stderr")


def test_syslog_target_sends_facility_mail_to_the_syslog_socket(tmp_path, monkeypatch, restore_logging):
    path = str(tmp_path / "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:   # what rsyslog/journald bind
        receiver.bind(path)
        receiver.settimeout(30)
        monkeypatch.setattr(ops_logging, "SYSLOG_SOCKET", path)
        ops_logging.setup("info", "syslog").info("4SYSLOG: action=accept")
        data = receiver.recv(4096).decode()
    assert data.startswith(f"<{LOG_MAIL_INFO}>authmilter[{os.getpid()}]: 4SYSLOG: action=accept"), data


def test_syslog_target_without_a_socket_falls_back_to_stderr_with_a_warning(tmp_path, monkeypatch,
                                                                            restore_logging):
    monkeypatch.setattr(ops_logging, "SYSLOG_SOCKET", str(tmp_path / "missing"))
    stream = io.StringIO()
    ops_logging.setup("info", "syslog", stream=stream).info("4FALLBACK: action=accept")
    text = stream.getvalue()
    assert f'log_target = "syslog" but {tmp_path}/missing cannot be used' in text
    assert "4FALLBACK: action=accept" in text


def test_console_script_warns_on_stderr_when_there_is_no_dev_log(tmp_path):
    if os.path.exists("/dev/log"):
        pytest.skip("this machine has a syslog socket; the in-process tests cover the fallback")
    cfg = tmp_path / "a.toml"
    cfg.write_text(f'socket = "unix:{tmp_path}/a.sock"\nlog_target = "syslog"\nworkers = 1\n'
                   f'pid_file = "{tmp_path}/missing/a.pid"\n[signing]\nenabled = false\n')
    out = subprocess.run([AUTHMILTER, "run", "-c", str(cfg)], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0           # the pid file directory is missing: it stops at once
    assert 'log_target = "syslog" but /dev/log cannot be used' in out.stderr
    assert "pid_file: pid file directory" in out.stderr   # ... and that error reached stderr too


def test_the_stderr_time_stamp_is_the_standard_one_across_second_boundaries():
    import logging

    fmt = "%(asctime)s %(levelname)s [%(process)d] %(message)s"
    ours, standard = ops_logging._StampFormatter(fmt), logging.Formatter(fmt)
    for created in (1796470596.0, 1796470596.5, 1796470596.999, 1796470597.0, 1796470596.25, 1796557000.001):
        record = logging.LogRecord("authmilter", logging.INFO, "", 0, "QID: action=accept", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == standard.format(record)
