"""Operations around the daemon: systemd notification, log format, Prometheus metrics."""
from __future__ import annotations

import logging
import logging.handlers
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest
from milterd import WAIT_S, Daemon, free_port, sample, scrape, wait_sample

from authmilter.ops import logging as ops_logging
from authmilter.ops import sdnotify

MSG = b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: ops\r\n\r\nHello.\r\n"


def send(daemon: Daemon, qid: str):  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        return c.session(ip="192.0.2.10", mail_from="alice@example.org", rcpts=["bob@example.net"],
                         message=MSG, macros={"i": qid})


# -- sd_notify ---------------------------------------------------------------------------------


class NotifySocket:
    """What systemd listens on: a unix datagram socket."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(WAIT_S)

    def next(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines() if "=" in line)

    def close(self) -> None:
        self.sock.close()


def test_sd_notify_ready_reloading_stopping(milterd, tmp_path):
    path = str(tmp_path / "notify")
    listener = NotifySocket(path)
    try:
        daemon = milterd(workers=1, env={"NOTIFY_SOCKET": path})
        ready = listener.next()
        assert ready["READY"] == "1"
        # READY only once the socket accepts connections.
        assert send(daemon, "4NOTIFY").action == "accept"

        daemon.signal(signal.SIGUSR1)
        reloading = listener.next()
        assert reloading["RELOADING"] == "1"
        usec = int(reloading["MONOTONIC_USEC"])
        assert 0 < usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert listener.next()["READY"] == "1"

        # A failed reload still ends the RELOADING state.
        daemon.config_path.write_text(daemon.config_path.read_text() + "\nbogus_key = 1\n")
        daemon.signal(signal.SIGUSR1)
        assert listener.next()["RELOADING"] == "1"
        after_failure = listener.next()
        assert after_failure["READY"] == "1" and "failed" in after_failure.get("STATUS", "")

        assert daemon.stop() == 0
        assert listener.next()["STOPPING"] == "1"
    finally:
        listener.close()


def test_sd_notify_abstract_namespace(monkeypatch):
    name = f"authmilter-test-{os.getpid()}"
    listener = NotifySocket(b"\0" + name.encode())
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready("up")
        assert listener.next() == {"READY": "1", "STATUS": "up"}
    finally:
        listener.close()


def test_sd_notify_is_a_no_op_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.stopping() is False


# -- logging -----------------------------------------------------------------------------------


def test_log_lines_carry_syslog_priorities_under_systemd(milterd):
    daemon = milterd(workers=1, env={"JOURNAL_STREAM": "8:12345"})
    send(daemon, "4JOURNAL")
    assert daemon.wait_log(r"(?m)^<6>4JOURNAL: action=accept")
    assert re.search(r"(?m)^<6>listening on unix:", daemon.log())
    assert re.search(r"(?m)^<4>running as root", daemon.log()) or os.geteuid() != 0


def test_plain_log_lines_by_hand(milterd):
    daemon = milterd(workers=1)
    send(daemon, "4PLAIN")
    lines = daemon.wait_log(r"(?m)^\d{4}-\d\d-\d\d [\d:,]+ INFO \[\d+\] 4PLAIN: action=accept")
    assert lines and "<6>" not in daemon.log()


def test_syslog_target_uses_facility_mail(tmp_path, monkeypatch):
    # A syslog socket of the test's own (this machine may have no /dev/log: then the target
    # falls back to stderr, tests/unit/test_logging_targets.py).
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "log"))
    monkeypatch.setattr(ops_logging, "SYSLOG_SOCKET", str(tmp_path / "log"))
    logger = ops_logging.setup("info", "syslog")
    try:
        handlers = [h for h in logger.handlers if isinstance(h, logging.handlers.SysLogHandler)]
        assert len(handlers) == 1
        assert handlers[0].facility == logging.handlers.SysLogHandler.LOG_MAIL
    finally:
        ops_logging.setup("info", "stderr")
        receiver.close()


def test_remote_values_cannot_forge_log_lines(milterd):
    daemon = milterd(workers=1)
    with daemon.client() as c:
        c.session(ip="192.0.2.10", mail_from="alice@example.org", rcpts=["bob@example.net"],
                  message=b"From: x@evil.example\r\n\r\nbody\r\n", macros={"i": "4INJECT\n4FAKE: action=reject"})
    assert daemon.wait_log(r"4INJECT\?4FAKE")
    assert not re.search(r"(?m)\] 4FAKE: ", daemon.log())


# -- metrics -----------------------------------------------------------------------------------


def test_prometheus_metrics_summed_over_workers(milterd):
    pytest.importorskip("prometheus_client")
    port = free_port()
    daemon = milterd(workers=2, metrics={"listen": f"127.0.0.1:{port}"})
    for n in range(4):
        assert send(daemon, f"4METRIC{n}").action == "accept"
    text = wait_sample(port, "authmilter_messages_total", 4, direction="inbound", action="accept")
    assert sample(text, "authmilter_eom_seconds_count") == 4
    assert (sample(text, "authmilter_results_total", method="spf", result="none") or 0) >= 4
    assert (sample(text, "authmilter_results_total", method="dmarc", result="none") or 0) >= 4
    assert (sample(text, "authmilter_dns_lookup_seconds_count", rdtype="TXT", status="nxdomain") or 0) >= 1

    # A worker that dies takes none of the counts with it.
    victim = min(daemon.worker_pids())
    os.kill(victim, signal.SIGKILL)
    assert daemon.wait_log(rf"pid={victim} killed by signal 9")
    assert sample(scrape(port), "authmilter_messages_total", direction="inbound", action="accept") == 4

    daemon.signal(signal.SIGUSR1)
    wait_sample(port, "authmilter_reloads_total", 1, result="ok")
    assert daemon.stop() == 0
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)


def test_metrics_off_by_default(milterd):
    daemon = milterd(workers=1)
    assert daemon.wait_log(r"worker 0 started")
    assert "metrics exporter" not in daemon.log()


def test_a_sender_cannot_create_metric_series(milterd):
    """Architecture issue: metrics once re-parsed our rendered Authentication-Results, so
    MAIL FROM x;evil=pass@evil.example made a new series {method="evil",result="pass"}."""
    pytest.importorskip("prometheus_client")
    port = free_port()
    daemon = milterd(workers=1, metrics={"listen": f"127.0.0.1:{port}"})
    with daemon.client() as c:
        r = c.session(ip="192.0.2.10", mail_from="x;evil=pass@evil.example", rcpts=["bob@example.net"],
                      message=MSG, macros={"i": "4INJECT", "j": "mx.test"})
    assert r.action == "accept"
    text = wait_sample(port, "authmilter_messages_total", 1, direction="inbound", action="accept")
    methods = set(re.findall(r'authmilter_results_total\{[^}]*method="([^"]*)"', text))
    assert methods and methods <= {"spf", "dkim", "dmarc", "arc"}, methods
    assert sample(text, "authmilter_results_total", method="evil") is None
