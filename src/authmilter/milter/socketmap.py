"""The SRS socketmap: Postfix's socketmap protocol on a second socket (``[srs] socketmap``).

A milter never sees the recipients Postfix makes by alias expansion (aliases,
virtual_alias_maps, .forward), so mail forwarded that way gets SRS from Postfix's own
address rewriting, as with postsrsd::

    sender_canonical_maps    = socketmap:unix:/run/authmilter/srs.sock:forward
    recipient_canonical_maps = socketmap:unix:/run/authmilter/srs.sock:reverse

The protocol (Postfix socketmap_table(5)): each request is a netstring ``NAME KEY``, each
reply a netstring ``OK VALUE``, ``NOTFOUND ``, ``TEMP REASON`` or ``PERM REASON``; a
client keeps its connection for many requests. The rules are the milter's
(srs.SrsRules): ``forward`` rewrites a sender outside local_domains and exclude_domains,
``reverse`` restores an SRS address at our SRS domain whose hash and age are valid.

Process: one "srsmap" child of the master (beside the metrics exporter), supervised and
restarted like a worker. Why not a thread in every worker: libmilter owns the workers'
signals and threads, and their graceful stop parks the milter listener; a separate
process keeps both paths simple, the master stays single-threaded, and a crash in one
never takes the other down. Lookups are a few microseconds of HMAC, so one process with
a thread per Postfix connection is plenty.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from ..ops import logging as ops_logging
from ..ops.logsafe import sanitize
from ..srs import Reversal, SrsRules

log = ops_logging.get_logger("srsmap")

MAX_REQUEST = 10000        # Postfix's socketmap keys are addresses; this is generous
IDLE_TIMEOUT_S = 600.0     # Postfix reconnects when we close an idle connection


class NetstringError(Exception):
    pass


def netstring(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data + b","


def answer(rules: SrsRules | None, request: bytes, now: float | None = None) -> bytes:
    """The reply payload for one request payload (without netstring framing)."""
    name, _, key = request.decode("utf-8", "surrogateescape").partition(" ")
    if name not in ("forward", "reverse"):
        return b"PERM unknown map " + name.encode("utf-8", "surrogateescape")[:100] + b" (forward or reverse)"
    if rules is None:
        return b"TEMP SRS is not enabled ([srs] enabled = false)"
    key = key.strip()
    if name == "forward":
        value = rules.forward_sender(key, now)
    else:
        rev = rules.reverse_recipient(key, now)
        value = rev.address if rev.status is Reversal.RESTORED else None
    if value is None:
        return b"NOTFOUND "
    return b"OK " + value.encode("utf-8", "surrogateescape")


def read_netstring(reader: BinaryIO) -> bytes | None:
    """One netstring from a buffered reader (socket.makefile("rb")); None at a clean end."""
    digits = b""
    while True:
        ch = reader.read(1)
        if not ch:
            if digits:
                raise NetstringError("connection closed inside a length")
            return None
        if ch == b":":
            break
        if not ch.isdigit() or len(digits) > 6:
            raise NetstringError("bad netstring length")
        digits += ch
    if not digits:
        raise NetstringError("empty netstring length")
    size = int(digits)
    if size > MAX_REQUEST:
        raise NetstringError(f"request of {size} bytes is too long")
    data = reader.read(size + 1)
    if len(data) != size + 1 or data[-1:] != b",":
        raise NetstringError("netstring not terminated by ','")
    return bytes(data[:-1])


def serve_connection(conn: socket.socket, rules_of: Callable[[], SrsRules | None]) -> None:
    """Answer requests on one Postfix connection until it closes or idles out."""
    conn.settimeout(IDLE_TIMEOUT_S)
    try:
        with conn, conn.makefile("rb") as rfile:
            while True:
                try:
                    request = read_netstring(rfile)
                except NetstringError as exc:
                    conn.sendall(netstring(b"PERM " + str(exc).encode()))
                    return
                if request is None:
                    return
                try:
                    reply = answer(rules_of(), request)
                except Exception as exc:  # noqa: BLE001 - our bug: Postfix retries a TEMP
                    log.error("srsmap: internal error: %s", sanitize(repr(exc)))
                    reply = b"TEMP internal error"
                conn.sendall(netstring(reply))
    except (OSError, TimeoutError):
        return


def serve(sock: socket.socket, rules_of: Callable[[], SrsRules | None], stop: threading.Event) -> None:
    """Accept connections on the listening *sock* until *stop* is set; a thread each."""
    sock.settimeout(1.0)
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        except OSError as exc:
            if stop.is_set():
                return
            log.warning("srsmap: accept failed: %s", exc.strerror)
            time.sleep(0.1)
            continue
        conn.setblocking(True)
        threading.Thread(target=serve_connection, args=(conn, rules_of), name="srsmap-conn", daemon=True).start()


def run_child(sock: socket.socket, reload: Callable[[], None], master: int) -> int:
    """The srsmap process: serve in a thread; this thread takes the master's signals
    (SIGTERM/SIGINT stop, SIGUSR1 reload) and stops when the master is gone."""
    from ..runtime import HOLDER

    stop = threading.Event()
    signals = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)   # before the thread starts: it inherits the mask
    server = threading.Thread(target=serve, args=(sock, lambda: HOLDER.get().srs, stop), name="srsmap", daemon=True)
    server.start()
    log.info("srs socketmap pid=%d started", os.getpid())
    while True:
        info = signal.sigtimedwait(signals, 1.0)
        if info is None:
            if os.getppid() != master:
                break
            continue
        if info.si_signo == signal.SIGUSR1:
            reload()
            continue
        break
    stop.set()
    server.join(timeout=5.0)
    sock.close()
    log.info("srs socketmap pid=%d stopped", os.getpid())
    return 0
