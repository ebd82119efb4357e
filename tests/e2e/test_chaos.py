"""Chaos with a real Postfix: authmilter's workers and master are killed while a burst
of mail goes through, once over a unix socket and once over TCP.

Postfix runs with ``milter_default_action = tempfail``, so whatever authmilter is doing
when it dies, the SMTP client gets a 4xx and sends again, as real clients do. What must
hold: every message is in the end accepted, every accepted message is delivered exactly
once, and none is delivered without our Authentication-Results header.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import SENDER_IP
from .harness import MX_NAME, auth_results, make_message, wait_for

pytestmark = pytest.mark.e2e

HELO = "mail.example.org"
SENDER = "bob@chaos.test"
MESSAGES = 200           # per socket kind
CLIENTS = 6              # concurrent SMTP clients
RETRY_FOR_S = 90.0       # how long one client keeps retrying a tempfailed message
PACE_S = 0.1             # a client's pause between messages: the chaos spreads over the burst


class _Chaos:
    """Kills workers (SIGKILL) as the burst passes given numbers of accepted messages,
    and once the master, which it then restarts; after the restart the counts are taken
    from where the burst stood (the orphaned workers go on serving for up to a second)."""

    def __init__(self, e2e, total: int) -> None:  # type: ignore[no-untyped-def]
        self.e2e = e2e
        self.total = total
        self.accepted = 0
        self.lock = threading.Lock()
        self.events: list[str] = []
        self.done = threading.Event()
        self.plan = [(10, "worker"), (25, "worker"), (40, "worker"), (55, "master"), (10, "worker"),
                     (25, "worker")]

    def one_accepted(self) -> None:
        with self.lock:
            self.accepted += 1

    def run(self) -> None:
        base = 0
        for count, what in self.plan:
            while self.accepted < base + count:
                if self.done.wait(0.01):
                    return
            if what == "master":
                self.e2e.milter.kill_master()
                self.events.append(f"master killed at {self.accepted}")
                self.e2e.milter.start()
                self.events.append(f"restarted at {self.accepted}")
                base = self.accepted
            else:
                workers = self.e2e.milter.worker_pids()
                if workers:
                    os.kill(min(workers), signal.SIGKILL)
                    self.events.append(f"worker {min(workers)} killed")


def _deliver_with_retries(e2e, chaos: _Chaos, raw: bytes) -> tuple[int, list[str]]:  # type: ignore[no-untyped-def]
    """Send until Postfix accepts (250), retrying 4xx like an SMTP client; returns the
    number of attempts and the refusals seen."""
    refusals: list[str] = []
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        try:
            reply = e2e.postfix.smtp(raw, mail_from=SENDER, client_ip=SENDER_IP, client_name=HELO, helo=HELO)
        except OSError as exc:                      # Postfix itself is never killed, but be exact
            refusals.append(f"smtp: {exc}")
        else:
            if reply.accepted:
                chaos.one_accepted()
                time.sleep(PACE_S)
                return len(refusals) + 1, refusals
            assert 400 <= reply.code < 500, f"a permanent refusal under chaos: {reply}"
            refusals.append(f"{reply.stage} {reply.code}")
        assert time.monotonic() < deadline, f"never accepted after {len(refusals)} tries: {refusals[-5:]}"
        time.sleep(0.2)


def _burst(e2e, kind: str) -> None:  # type: ignore[no-untyped-def]
    tokens = [f"chaos{kind}{n:03d}{os.urandom(4).hex()}" for n in range(MESSAGES)]
    chaos = _Chaos(e2e, MESSAGES)
    killer = threading.Thread(target=chaos.run, daemon=True)
    killer.start()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            attempts = list(pool.map(
                lambda t: _deliver_with_retries(e2e, chaos, make_message(t, from_=SENDER, subject=f"chaos {kind}")),
                tokens))
    finally:
        chaos.done.set()
        killer.join(timeout=120)
    assert not killer.is_alive()
    assert any(e.startswith("restarted") for e in chaos.events), chaos.events
    assert sum(1 for e in chaos.events if e.startswith("worker")) == 5, chaos.events

    e2e.postfix.flush()
    wait_for(lambda: all(e2e.postfix.deliveries(t) for t in tokens), "every accepted message to be delivered",
             timeout_s=120, interval_s=0.5)
    wait_for(lambda: not [m for m in e2e.postfix.queue() if m["sender"] == SENDER],
             "Postfix's queue to drain of the chaos mail", timeout_s=60)
    lost, twice, unstamped = [], [], []
    for t in tokens:
        copies = e2e.postfix.deliveries(t)
        if not copies:
            lost.append(t)
        elif len(copies) > 1:
            twice.append(t)
        if any(len(auth_results(raw, MX_NAME)) != 1 for raw in copies):
            unstamped.append(t)
    retried = sum(1 for n, _ in attempts if n > 1)
    summary = f"{kind}: {MESSAGES} messages, {retried} needed retries; chaos: {chaos.events}"
    assert not lost, f"lost {len(lost)}: {summary}"
    assert not twice, f"delivered twice {len(twice)}: {summary}"
    assert not unstamped, f"delivered without our Authentication-Results {len(unstamped)}: {summary}"


@pytest.mark.parametrize("kind", ["unix", "inet"])
def test_killing_workers_and_master_during_a_burst_loses_nothing(e2e, kind):
    milter = e2e.milter
    if kind == "unix":
        milter.settings["socket_mode"] = "0666"          # Postfix's smtpd runs as postfix
        spec = f"unix:{e2e.base}/authmilter.sock"
    else:
        spec = None                                      # the suite's inet socket
    milter.stop()
    milter.use_socket(spec)
    milter.start()
    e2e.postfix.set_milter(milter.postfix_socket)
    try:
        _burst(e2e, kind)
    finally:                                             # the rest of the suite expects inet
        milter.settings.pop("socket_mode", None)
        if kind == "unix":
            milter.stop()
            milter.use_socket(None)
            milter.start()
            e2e.postfix.set_milter(milter.postfix_socket)
