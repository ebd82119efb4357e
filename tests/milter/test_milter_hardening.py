"""The daemon under stress, over its real socket: graceful stop with many sessions in
flight, a DNS server that never answers, MTA connections that go quiet, TCP options.

Bounds in these tests are wide safety nets against hangs and queueing (a reply that
comes after several message budgets is a bug), never measurements of speed.
"""
from __future__ import annotations

import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from milterclient import MilterClient, MilterProtocolError
from milterd import Daemon, free_port

MSG = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: load\r\n"
       b"Message-ID: <1@example.org>\r\n\r\nHello.\r\n")


def _socket_spec(kind: str, tmp_path: Path) -> str:
    return f"unix:{tmp_path}/m.sock" if kind == "unix" else f"inet:{free_port()}@127.0.0.1"


# -- graceful stop under load ------------------------------------------------------------


class _Burst:
    """Clients that open session after session until the daemon refuses them.

    A session counts as *accepted* once the milter answered its option negotiation:
    from then on the daemon owes it an end-of-message reply, stop or no stop.
    """

    def __init__(self, daemon: Daemon, clients: int) -> None:
        self.daemon = daemon
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)]

    def __enter__(self) -> _Burst:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _count(self, what: str, detail: str = "") -> None:
        with self._lock:
            self.outcomes[what] += 1
            if detail:
                self.failures.append(detail)

    def _run(self, n: int) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            qid = f"4B{n}X{seq}"
            try:
                client = MilterClient(self.daemon.address, timeout=30)
            except OSError:
                self._count("refused")
                return                         # the listener is gone: this client is done
            with client:
                try:
                    client.negotiate()
                except (OSError, MilterProtocolError, ValueError):
                    self._count("refused")     # in the backlog when the listener closed
                    return
                try:
                    client.connect(ip="192.0.2.10", macros={"j": "mx.mta.test"})
                    client.helo("client.example")
                    client.mail("alice@example.org", macros={"i": qid})
                    client.header("From", " Alice <alice@example.org>")
                    time.sleep(0.02)           # keep sessions open across the stop signal
                    client.header("Subject", " load")
                    client.eoh()
                    client.body(b"Hello.\r\n")
                    result = client.eom(macros={"i": qid})
                except (OSError, MilterProtocolError, ValueError) as exc:
                    self._count("lost", f"{qid}: {type(exc).__name__}: {exc}")
                    continue
                self._count(result.action)


@pytest.mark.parametrize("kind", ["unix", "inet"])
def test_sigterm_under_load_answers_every_accepted_session(milterd, tmp_path, kind):
    daemon = milterd(socket=_socket_spec(kind, tmp_path), workers=2)
    with _Burst(daemon, clients=12) as burst:
        deadline = time.monotonic() + 30
        while sum(burst.outcomes.values()) < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        daemon.signal(signal.SIGTERM)
        code = daemon.wait_exit()
    log = daemon.log()
    assert burst.outcomes["lost"] == 0, f"{burst.outcomes}: {burst.failures[:5]}\n{log[-3000:]}"
    assert burst.outcomes["accept"] >= 40, burst.outcomes
    assert code == 0, log[-3000:]
    assert "libmilter failed" not in log


# -- connections that go quiet -------------------------------------------------------------


def _wait_closed_by_peer(sock: socket.socket) -> float:
    """Seconds until the milter closes *sock* (EOF or reset); fails after WAIT bound."""
    started = time.monotonic()
    sock.settimeout(30)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError("the milter never closed an idle connection") from None
    return time.monotonic() - started


@pytest.mark.parametrize("kind", ["unix", "inet"])
def test_connection_that_sends_nothing_is_closed_after_milter_timeout(milterd, tmp_path, kind):
    daemon = milterd(socket=_socket_spec(kind, tmp_path), workers=1, milter_timeout_s=2)
    family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as raw:
        raw.connect(daemon.address)
        quiet = _wait_closed_by_peer(raw)
    assert quiet >= 1.5, "closed before milter_timeout_s"
    assert daemon.wait_log(r"closing an MTA connection idle for \d+s")
    assert _send_one(daemon).action == "accept", "the worker goes on serving"


def test_session_stalled_after_negotiation_is_closed(milterd):
    daemon = milterd(workers=1, milter_timeout_s=2)
    with daemon.client() as c:
        c.negotiate()
        c.connect(ip="192.0.2.10", macros={"j": "mx.mta.test"})
        quiet = _wait_closed_by_peer(c.sock)
    assert quiet >= 1.5, "closed before milter_timeout_s"
    assert daemon.wait_log(r"closing an MTA connection idle for \d+s")
    assert "cannot map libmilter sessions" not in daemon.log()
    assert _send_one(daemon).action == "accept"


def test_message_in_processing_is_not_taken_for_an_idle_connection(milterd, dns_server):
    """An eom that waits on DNS longer than milter_timeout_s is busy, not idle."""
    dns_server.set_fault("slow.example", "timeout")
    dns_server.set_fault("_dmarc.slow.example", "timeout")
    daemon = milterd(workers=1, milter_timeout_s=1, dns={"timeout_s": 1.0, "message_budget_s": 4.0})
    message = MSG.replace(b"alice@example.org", b"alice@slow.example")
    with daemon.client() as c:
        result = c.session(ip="192.0.2.10", mail_from="alice@slow.example", rcpts=["bob@example.net"],
                           message=message, macros={"i": "4SLOW", "j": "mx.mta.test"})
    assert result.action == "tempfail", result
    assert "closing an MTA connection" not in daemon.log()


def _send_one(daemon: Daemon, qid: str = "4AFTER"):  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        return c.session(ip="192.0.2.10", mail_from="alice@example.org", rcpts=["bob@example.net"],
                         message=MSG, macros={"i": qid, "j": "mx.mta.test"})


# -- TCP options ----------------------------------------------------------------------------


def test_accepted_tcp_connections_have_nodelay_from_the_listener(milterd):
    """The eom reply is several small writes; with Nagle each message waited ~40 ms for
    the MTA's delayed ACK. The worker's connection watch logs the option it finds on
    each accepted connection, and sets it itself (saying so) only if it was missing."""
    daemon = milterd(socket=f"inet:{free_port()}@127.0.0.1", workers=1, log_level="debug")
    with daemon.client() as c:
        c.negotiate()
        found = daemon.wait_log(r"MTA connection fd=\d+ tcp_nodelay=1(.*)", timeout=30)
    assert found, daemon.log()[-2000:]
    assert "set by the watch" not in found[0].group(1), "the listener's TCP_NODELAY was not inherited"


# -- a DNS server that never answers ---------------------------------------------------------


class _BlackHole:
    """A loopback UDP "DNS server" that reads every query and answers none."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recv(4096)
                self.queries += 1
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def black_hole() -> Iterator[_BlackHole]:
    server = _BlackHole()
    yield server
    server.close()


def test_dns_budget_holds_for_every_message_of_a_burst(milterd, black_hole):
    """With DNS dead, every message is answered 451 within about its budget, however many
    sessions reach end-of-message together: no reply waits behind other messages' budgets
    (the sum of the budgets queued in one worker here is 24 x 4 s / 2 workers = 48 s)."""
    budget = 4.0
    sessions = 24
    daemon = milterd(workers=2, dns={"servers": [f"127.0.0.1:{black_hole.port}"], "timeout_s": budget,
                                     "message_budget_s": budget})
    clients = []
    for n in range(sessions):            # everything up to the body, on every connection
        c = daemon.client()
        c.negotiate()
        c.connect(ip="192.0.2.10", macros={"j": "mx.mta.test"})
        c.helo("mail.example.org")
        c.mail("alice@example.org", macros={"i": f"4DNS{n}"})
        for name, value in (("From", " Alice <alice@example.org>"), ("Subject", " dns")):
            c.header(name, value)
        c.eoh()
        c.body(b"Hello.\r\n")
        clients.append(c)
    replies: dict[int, tuple[str, str | None, float]] = {}

    def finish(n: int) -> None:
        started = time.monotonic()
        result = clients[n].eom(macros={"i": f"4DNS{n}"})
        replies[n] = (result.action, result.reply, time.monotonic() - started)

    threads = [threading.Thread(target=finish, args=(n,)) for n in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for c in clients:
        c.close()
    assert len(replies) == sessions, replies
    assert black_hole.queries > 0
    for n, (action, reply, took) in sorted(replies.items()):
        assert action == "tempfail" and reply and reply.startswith("451"), (n, action, reply)
        # A correctness bound, not a speed check: the budget, one short probe of the dead
        # server and a wide margin; a reply queued behind one other message's budget
        # would take twice the budget.
        assert took < budget + 3.0, f"session {n}: eom reply after {took:.1f}s: {sorted(replies.items())}"
