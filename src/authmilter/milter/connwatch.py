"""The MTA connections of one worker, seen from the kernel: counted for a graceful stop,
closed when they go quiet, and checked for TCP_NODELAY.

Why this exists: Debian builds libmilter with its worker pool (_FFR_WORKERS_POOL). A
session waiting for the MTA's next command sits in the pool controller's poll() set, and
the controller looks for sessions idle longer than smfi_settimeout() only once every
600 s (DT_CHECK_OLD_SESSIONS, counted from start-up). So with ``milter_timeout_s = 30``
a connection on which the MTA goes quiet stays open for up to ten minutes, and one that
never sends the option negotiation never reaches Python at all. The watch closes both
after ``milter_timeout_s``, as a libmilter without the pool would.

An accepted connection is a socket whose local address is the listener's (outbound
sockets, e.g. a database client, have their own). A connection that Python callbacks
have seen is mapped to its descriptor through libmilter's context (`_ctx_fd`), so that a
message being processed (a long end-of-message with slow DNS) is never taken for idle:
idle means no callback running, none for ``milter_timeout_s``, and no unread input.
Closing is shutdown(), never close(): the descriptor stays libmilter's, which sees the
end of stream, calls the close callback and frees the session as usual.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import stat
import struct
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..ops import logging as ops_logging

log = ops_logging.get_logger("server")

LIBMILTER_DEFAULT_TIMEOUT_S = 7210      # smfi_settimeout() default, when none is configured


# -- libmilter's descriptor for a pymilter context ----------------------------------------
#
# pymilter's milterContext is {PyObject_HEAD; SMFICTX *ctx; ...} and libmilter's SMFICTX
# (struct smfi_str, libmilter.h) starts {pthread_t ctx_id; int ctx_sd; ...}. Neither API
# exposes the descriptor, so it is read from there and only trusted when it names an
# accepted connection of our listener (a wrong layout reads a number that does not).
# TCP_QUICKACK (Linux): ACK the next segment at once instead of after the delayed-ACK
# timer. The MTA sends its no-reply steps (headers, body, end-of-message) as separate
# small writes, and with Nagle on its side each write after the first waits for our ACK
# of the previous one; since we send nothing back on those steps, our kernel delays the
# ACK ~40 ms, and each message waited that long over TCP. The flag is not sticky (the
# kernel leaves quick-ACK mode on its own), so it is re-armed after every callback.
_LIBC = ctypes.CDLL(None, use_errno=True)
_ONE = ctypes.c_int(1)
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)


def _quickack(fd: int) -> None:
    _LIBC.setsockopt(fd, socket.IPPROTO_TCP, _TCP_QUICKACK, ctypes.byref(_ONE), ctypes.sizeof(_ONE))


_CTX_PTR_OFFSET = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p)   # PyObject_HEAD
_SD_OFFSET = ctypes.sizeof(ctypes.c_ulong)                                           # pthread_t


def _ctx_fd(ctx: object) -> int:
    try:
        smfictx = ctypes.c_void_p.from_address(id(ctx) + _CTX_PTR_OFFSET).value
        if not smfictx:
            return -1
        return int(ctypes.c_int.from_address(smfictx + _SD_OFFSET).value)
    except (ValueError, OSError):
        return -1


@dataclass
class _Session:
    """What the callbacks tell us about one connection."""

    fd: int
    inode: int = 0        # the fd number may be reused after a close we did not see
    busy: int = 0
    last: float = field(default_factory=time.monotonic)


@dataclass
class _Conn:
    inode: int
    first_seen: float
    family: int


def _inode(fd: int) -> int:
    try:
        return os.fstat(fd).st_ino if fd >= 0 else 0
    except OSError:
        return 0


def _unread(fd: int) -> int:
    """Bytes the MTA sent that libmilter has not read yet (FIONREAD)."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


class ConnectionWatch:
    """One per worker process; `track` wraps every libmilter callback."""

    def __init__(self, timeout_s: Callable[[], float]) -> None:
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._sessions: dict[int, _Session] = {}      # id(milter context) -> session
        self._conns: dict[int, _Conn] = {}            # fd -> accepted connection
        self._not_ours: dict[int, int] = {}           # fd -> inode of a socket that is not
        self._family = -1
        self._tcp = False                              # re-arm TCP_QUICKACK per callback
        self._address: Any = None
        self._warned = False
        # Set once a descriptor read through `_ctx_fd` named one of our connections: the
        # layout is then known to be right for this libmilter/pymilter pair, and later
        # sessions are not probed again (a socket object and three syscalls each).
        self._layout_ok = False

    def attach(self, listen_fd: int) -> None:
        """Learn the listener's address (in the worker, before the listener is parked)."""
        try:
            probe = socket.socket(fileno=os.dup(listen_fd))
        except OSError:
            return
        with probe:
            self._family = probe.family
            self._address = probe.getsockname()
        self._tcp = self._family in (socket.AF_INET, socket.AF_INET6)

    # -- callbacks (libmilter threads) --------------------------------------------------------
    def track(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a pymilter callback ``fn(ctx, ...)``: busy while it runs."""

        # No lock around busy/last: libmilter runs one session's callbacks one at a time,
        # so each _Session has a single writer, and the watch reads the two fields without
        # the lock anyway. `last` is refreshed before `busy` drops, so a watch that sees
        # the session not busy also sees its fresh time. The lock guards only the dict's
        # size changes (the watch iterates it), and the probe of a new connection (a few
        # syscalls, each releasing the GIL) runs outside it: under load, holding the lock
        # there made the other sessions' callbacks queue on it (bench: ~0.05 ms CPU/msg).
        def call(ctx: object, *args: Any) -> Any:
            key = id(ctx)
            sess = self._sessions.get(key)
            if sess is None:
                fd = self._claim(ctx)
                new = _Session(fd, _inode(fd))
                with self._lock:
                    sess = self._sessions.setdefault(key, new)
            sess.busy += 1
            sess.last = time.monotonic()
            try:
                return fn(ctx, *args)
            finally:
                if self._tcp and sess.fd >= 0:
                    _quickack(sess.fd)
                sess.last = time.monotonic()
                sess.busy -= 1

        return call

    def closed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap the close callback: the context is freed after it."""

        def call(ctx: object, *args: Any) -> Any:
            try:
                return fn(ctx, *args)
            finally:
                with self._lock:
                    self._sessions.pop(id(ctx), None)

        return call

    def _claim(self, ctx: object) -> int:
        """The descriptor of a new session, or -1 (and one warning) if it cannot be known."""
        if self._address is None:            # not attached: the watch does not run
            return -1
        fd = _ctx_fd(ctx)
        if fd >= 0 and self._layout_ok:
            return fd
        if fd >= 0 and self._is_ours(fd):
            self._layout_ok = True
            return fd
        if not self._warned:
            self._warned = True
            log.warning("worker pid=%d: cannot map libmilter sessions to their connections; "
                        "idle sessions are left to libmilter", os.getpid())
        return -1

    # -- the kernel's view (watch thread, drain) ----------------------------------------------
    def _is_ours(self, fd: int) -> bool:
        try:
            sock = socket.socket(fileno=fd)  # borrowed: detached below, never closed
        except OSError:                      # closed (or reused) since it was listed
            return False
        try:
            if sock.family != self._family or sock.type != socket.SOCK_STREAM:
                return False
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                return False
            name = sock.getsockname()
            if isinstance(name, tuple):
                return name[:2] == self._address[:2]
            return bool(name) and name == self._address
        except OSError:
            return False
        finally:
            sock.detach()

    def scan(self) -> dict[int, _Conn]:
        """The accepted MTA connections open in this process, by descriptor."""
        if self._address is None:
            return {}
        with self._scan_lock:
            return self._scan()

    def _scan(self) -> dict[int, _Conn]:
        now = time.monotonic()
        seen: dict[int, _Conn] = {}
        try:
            names = os.listdir("/proc/self/fd")
        except OSError:
            return dict(self._conns)
        for name in names:
            fd = int(name)
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if not stat.S_ISSOCK(st.st_mode):
                continue
            known = self._conns.get(fd)
            if known is not None and known.inode == st.st_ino:
                seen[fd] = known
                continue
            if self._not_ours.get(fd) == st.st_ino:
                continue
            if self._is_ours(fd):
                seen[fd] = _Conn(st.st_ino, now, self._family)
                self._check_nodelay(fd)
            else:
                self._not_ours[fd] = st.st_ino
        self._conns = seen
        self._not_ours = {fd: ino for fd, ino in self._not_ours.items() if fd not in seen}
        return seen

    def count(self) -> int:
        return len(self.scan())

    def _check_nodelay(self, fd: int) -> None:
        """Linux copies TCP_NODELAY from the listener to accepted sockets; make sure."""
        if self._family not in (socket.AF_INET, socket.AF_INET6):
            return
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            return
        try:
            on = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            if not on:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            log.debug("worker pid=%d: MTA connection fd=%d tcp_nodelay=%d%s", os.getpid(), fd, 1,
                      "" if on else " (set by the watch)")
        except OSError:
            pass
        finally:
            sock.detach()

    def idle(self, now: float | None = None) -> list[tuple[int, _Conn, float]]:
        """Connections quiet for longer than the timeout: (fd, conn, seconds quiet)."""
        now = time.monotonic() if now is None else now
        limit = self._timeout_s()
        conns = self.scan()
        with self._lock:
            by_fd = {s.fd: s for s in self._sessions.values()
                     if s.fd < 0 or (s.fd in conns and conns[s.fd].inode == s.inode)}
        # With a session we could not map alive, an unclaimed connection may be its.
        mapped = -1 not in by_fd
        out = []
        for fd, conn in conns.items():
            sess = by_fd.get(fd)
            if sess is not None:
                if sess.busy:
                    continue
                quiet = now - sess.last
            elif mapped:
                quiet = now - conn.first_seen      # never reached a callback
            else:
                continue                           # cannot tell which session it is
            if quiet > limit and _unread(fd) == 0:
                out.append((fd, conn, quiet))
        return out

    def close_idle(self) -> int:
        closed = 0
        for fd, conn, quiet in self.idle():
            try:
                dup = os.dup(fd)       # pins the file: the number may be reused meanwhile
            except OSError:
                continue
            try:
                if os.fstat(dup).st_ino != conn.inode:
                    continue
                sock = socket.socket(fileno=dup)
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                finally:
                    sock.detach()
                closed += 1
                log.info("worker pid=%d: closing an MTA connection idle for %.0fs (milter_timeout_s)",
                         os.getpid(), quiet)
            finally:
                os.close(dup)
        return closed

    def run(self) -> None:
        """The watch thread: a few scans per timeout, at most one a second."""
        while True:
            interval = max(0.2, min(1.0, self._timeout_s() / 4))
            time.sleep(interval)
            try:
                self.close_idle()
            except Exception as exc:  # noqa: BLE001 - the watch must never take the worker down
                log.warning("worker pid=%d: connection watch: %s: %s", os.getpid(), type(exc).__name__, exc)

    def start(self) -> None:
        if self._address is not None:
            threading.Thread(target=self.run, name="connwatch", daemon=True).start()


def _timeout_from_runtime() -> float:
    from ..runtime import HOLDER

    return float(HOLDER.get().settings.milter_timeout_s or LIBMILTER_DEFAULT_TIMEOUT_S)


WATCH = ConnectionWatch(_timeout_from_runtime)
