"""``authmilter run``: the listening socket, pre-forked workers, signals and reload.

Process model (one master, N workers, optionally one metrics exporter)::

    master  binds the socket (as root if need be), chowns it, drops to user/group,
            loads the runtime (settings + tables + keys) to validate it, forks the
            workers and supervises them. It never handles mail and has no threads,
            so forking a replacement worker is always safe. Signals are taken
            synchronously with sigtimedwait():
              SIGTERM/SIGINT  graceful stop: workers finish in-flight messages
              SIGUSR1/SIGHUP  reload: validate config + tables + keys; if valid, tell
                              every worker to reload, else keep everything and log why
              SIGCHLD         reap; restart a worker that died (with backoff)
    worker  runs libmilter's smfi_main() on the inherited listening socket. libmilter
            owns SIGTERM/SIGHUP/SIGINT through its own sigwait thread; Python signal
            handlers would never run while the main thread sits in smfi_main(), so a
            dedicated sigwait thread takes the master's requests:
              SIGUSR1  re-load the runtime and swap runtime.HOLDER (open connections
                       keep the runtime they started with)
              SIGUSR2  drain: accept nothing new, finish open connections, exit
            (under systemd use KillMode=mixed, so that only the master gets SIGTERM).
            A third thread, the connection watch (connwatch.py), closes MTA
            connections quiet for milter_timeout_s, which libmilter's pool does not.

libmilter deletes a unix socket's path when a non-root process's listener stops
(mi_closener). With several workers sharing one socket, a single worker exiting would
take the path away from the others. So libmilter binds a temporary name in the same
directory, which is renamed into place: the path libmilter remembers no longer exists,
and only the master removes the real one, at shutdown, if it is still ours.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass

from .. import preflight
from ..config.schema import Settings, load_settings, reload_refusal
from ..config.sockets import SocketSpec, parse_socket
from ..config.storeurl import POSTGRESQL, parse_url
from ..errors import AuthmilterError, ConfigError
from ..ops import logging as ops_logging
from ..ops import sdnotify
from ..ops.logsafe import sanitize
from ..ops.metrics import METRICS, serve_forever
from ..ops.privileges import becomer as _becomer
from ..ops.privileges import drop_privileges, resolve_user
from ..ops.privileges import preload_modules as _preload_modules
from .connwatch import WATCH

log = ops_logging.get_logger("server")

MASTER_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD}
WORKER_SIGNALS = {signal.SIGUSR1, signal.SIGUSR2}          # reload, drain: our thread
LIBMILTER_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}  # libmilter's thread
STOP_GRACE_S = 30.0          # a draining worker waits this long for open connections to finish
LIBMILTER_STOP_GRACE_S = 5.0
KILL_AFTER_S = STOP_GRACE_S + 15.0
EXIT_CONFIG = 78             # sysexits EX_CONFIG: systemd does not restart-loop on it by default
EXIT_FAILURE = 1


class StartupError(AuthmilterError):
    """The daemon cannot start (socket in the way, bad user, ...)."""


# ---------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class Overrides:
    """Command-line values that win over the config file, on start and on every reload."""

    socket: str | None = None
    workers: int | None = None

    def apply(self, settings: Settings) -> Settings:
        changes: dict[str, object] = {}
        if self.socket:
            try:
                parse_socket(self.socket)
            except ValueError as exc:
                raise ConfigError("--socket", "socket", str(exc)) from None
            changes["socket"] = self.socket
        if self.workers is not None:
            if self.workers < 0:
                raise ConfigError("--workers", "workers", "must not be negative")
            changes["workers"] = self.workers
        return dataclasses.replace(settings, **changes) if changes else settings  # type: ignore[arg-type]


def load(config: str, overrides: Overrides) -> Settings:
    return overrides.apply(load_settings(config))


def worker_count(settings: Settings) -> int:
    """``workers = 0``: two per CPU. Each worker serves its connections on libmilter
    threads that take turns at one GIL; the pymilter transport cost per message grows
    with connections per process (bench/: 0.24 ms at 1, 0.46-0.62 ms at 8-32), so
    spreading connections over more processes than cores buys throughput."""
    return settings.workers or 2 * (os.cpu_count() or 1)


def _one_line(exc: BaseException) -> str:
    """Our own error text (file, key, reason) on one log line."""
    return " ".join(str(exc).split()) or type(exc).__name__


# ---------------------------------------------------------------------------------------
# the listening socket


def _fds() -> set[int]:
    try:
        return {int(n) for n in os.listdir("/proc/self/fd")}
    except OSError:
        return set()


class Listener:
    """The one listening socket, opened through libmilter (smfi_opensocket)."""

    def __init__(self, spec: SocketSpec) -> None:
        self.spec = spec
        self.path = spec.path if spec.family == "unix" else ""
        self.inode: tuple[int, int] | None = None
        self.fd = -1                              # libmilter's listening fd (same number in workers)
        self.sock: socket.socket | None = None   # our own dup of it

    # -- before binding ----------------------------------------------------------------
    def check_path(self) -> None:
        """A stale socket may be replaced; anything else at the path is refused."""
        path = self.path
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            raise StartupError(f"socket directory {directory} does not exist")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise StartupError(f"cannot create the socket in {directory}: permission denied")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise StartupError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect(path)
        except OSError:
            log.info("replacing stale socket %s", path)
            return
        finally:
            probe.close()
        raise StartupError(f"{path}: another process is listening on this socket")

    def check_inet(self) -> None:
        """Bind once ourselves first: libmilter only says 'cannot open socket'."""
        family = socket.AF_INET6 if self.spec.family == "inet6" else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.spec.host, self.spec.port))
            except OSError as exc:
                raise StartupError(f"cannot listen on {self.spec.milter()}: {exc.strerror}") from None

    # -- binding -------------------------------------------------------------------------
    def open(self, mode: int, owner: tuple[int, int] | None, backlog: int = 0) -> None:
        import milter  # type: ignore[import-not-found]

        if self.path:
            self.check_path()
            tmp = os.path.join(os.path.dirname(self.path) or ".", f".authmilter.{os.getpid()}.sock")
            if len(tmp.encode()) > 107 or len(self.path.encode()) > 107:
                raise StartupError(f"socket path too long (max 107 bytes): {self.path}")
            if os.path.lexists(tmp):
                os.unlink(tmp)
            conn = f"unix:{tmp}"
        else:
            self.check_inet()
            conn = self.spec.milter()
        milter.setconn(conn)
        if backlog:
            milter.setbacklog(backlog)
        try:
            milter.opensocket(False)
        except milter.error as exc:
            raise StartupError(f"cannot listen on {self.spec.milter()}: {exc}") from None
        self._adopt_fd(tmp if self.path else (self.spec.host, self.spec.port))
        if self.path:
            os.chmod(tmp, mode)
            if owner is not None:
                os.chown(tmp, *owner)
            # Atomic: replaces a stale socket and never shows a socket with the wrong mode.
            os.rename(tmp, self.path)
            st = os.stat(self.path)
            self.inode = (st.st_dev, st.st_ino)

    def _adopt_fd(self, bound: str | tuple[str, int]) -> None:
        """Find libmilter's listening fd (by its address) and make it non-blocking.

        All workers wait in select() on the same socket; without O_NONBLOCK the losers of
        a race block inside accept() and do not notice a stop request until the next
        connection. Accepted sockets do not inherit the flag on Linux.
        """
        for fd in sorted(_fds()):
            try:
                if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                    continue
                sock = socket.socket(fileno=os.dup(fd))
            except OSError:
                continue
            try:
                name = sock.getsockname()
                if isinstance(bound, tuple) and isinstance(name, tuple):
                    match = name[1] == bound[1] and sock.family in (socket.AF_INET, socket.AF_INET6)
                else:
                    match = name == bound
                if match and sock.type == socket.SOCK_STREAM:
                    sock.setblocking(False)
                    if sock.family != socket.AF_UNIX:
                        # Linux copies TCP_NODELAY to accepted sockets. Without it the
                        # eom reply (header edits, then the verdict: several small
                        # writes) waits for the MTA's delayed ACK: ~40 ms per message.
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.sock, self.fd = sock, fd
                    return
            except OSError:
                pass
            sock.close()
        log.warning("could not find the listening socket; stopping may take a few seconds longer")

    def release(self) -> None:
        """Close this process's references to the listening socket.

        Never shutdown(): the socket is shared with the workers, and on a TCP listener
        shutdown() wakes every worker's libmilter listener with an error it treats as
        fatal ("cannot run main"), dropping the sessions that worker had in flight. Once
        the master has closed its copies and every worker has parked its own, the kernel
        closes the socket and the MTA gets "connection refused" instead of waiting in a
        backlog nobody accepts from.
        """
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1

    def remove(self) -> None:
        """Unlink the unix socket path if it is still the one we created."""
        if not self.path or self.inode is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self.inode:
                os.unlink(self.path)
        except OSError:
            pass
        self.inode = None


def open_plain_listener(spec: SocketSpec, mode: int, owner: tuple[int, int] | None) -> tuple[socket.socket, tuple[int, int] | None]:
    """A listening socket we serve ourselves (the SRS socketmap), with the milter socket's
    checks: a stale unix socket is replaced, anything else at the path refused; the path
    gets *mode* and *owner* before it appears (bound under a temporary name, renamed)."""
    probe = Listener(spec)
    if spec.family == "unix":
        probe.check_path()
        tmp = os.path.join(os.path.dirname(spec.path) or ".", f".authmilter-srs.{os.getpid()}.sock")
        if len(tmp.encode()) > 107 or len(spec.path.encode()) > 107:
            raise StartupError(f"socket path too long (max 107 bytes): {spec.path}")
        if os.path.lexists(tmp):
            os.unlink(tmp)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(tmp)
        os.chmod(tmp, mode)
        if owner is not None:
            os.chown(tmp, *owner)
        sock.listen(64)
        os.rename(tmp, spec.path)
        st = os.stat(spec.path)
        return sock, (st.st_dev, st.st_ino)
    probe.check_inet()
    sock = socket.socket(socket.AF_INET6 if spec.family == "inet6" else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((spec.host, spec.port))
    sock.listen(64)
    return sock, None


# ---------------------------------------------------------------------------------------
# privileges: resolve_user, drop_privileges, preload_modules live in ops/privileges.py
# (check-config's preflight uses them too)


# ---------------------------------------------------------------------------------------
# pymilter set-up (shared by master and workers: set before fork)


def register_milter(settings: Settings) -> None:
    import Milter  # type: ignore[import-untyped]
    import milter  # type: ignore[import-not-found]

    from .handler import ACTIONS, ENVELOPE_ACTIONS, Handler, eom_callback, install_excepthook, session_callback

    Milter.factory = Handler
    # Every callback runs inside WATCH.track: the connection watch must know which
    # sessions are busy (an eom waiting for DNS is not an idle connection).
    track = WATCH.track
    milter.set_connect_callback(track(Milter.connect_callback))
    milter.set_helo_callback(track(session_callback("hello")))
    milter.set_envfrom_callback(track(session_callback("envfrom_bytes")))
    milter.set_envrcpt_callback(track(session_callback("envrcpt_bytes")))
    milter.set_header_callback(track(session_callback("header_bytes")))
    milter.set_eoh_callback(track(session_callback("eoh")))
    milter.set_body_callback(track(session_callback("body")))
    milter.set_eom_callback(track(eom_callback))
    milter.set_abort_callback(track(session_callback("abort")))
    milter.set_close_callback(WATCH.closed(Milter.close_callback))
    milter.set_flags(ACTIONS | ENVELOPE_ACTIONS)   # the most we may ask for; negotiate narrows it
    # pymilter failing to build a callback's arguments (bytes that are not UTF-8) reports
    # through sys.excepthook, which marks the session failed; it is answered at eom with
    # on_internal_error. CONTINUE keeps the no-reply steps in step with the MTA: a TEMPFAIL
    # there is a reply the MTA never reads, and libmilter then waits for an abort that
    # never comes (the session hung until the MTA's timeout). eom_callback has its own
    # guard, so eom itself can never fall through to CONTINUE (accept).
    install_excepthook()
    milter.set_exception_policy(milter.CONTINUE)
    if settings.milter_timeout_s:
        milter.settimeout(settings.milter_timeout_s)
    milter.register("authmilter", data=track(session_callback("data")),
                    unknown=track(session_callback("unknown")),
                    negotiate=track(Milter.negotiate_callback))


def _install_dns_metrics(runtime: object) -> None:
    resolver = getattr(runtime, "resolver", None)
    if METRICS.enabled and resolver is not None and hasattr(resolver, "observer"):
        resolver.observer = METRICS.observe_dns


# ---------------------------------------------------------------------------------------
# worker


def _wait_idle(grace_s: float) -> None:
    """Until every open connection closed; after *grace_s*, only while a message is in
    flight; after twice that, give up (the MTA applies its milter_default_action)."""
    from .handler import ACTIVE

    def open_connections() -> int:
        # Python sees a connection only from its option negotiation on; libmilter may
        # have accepted more just before the listener was parked, and owes them service.
        return max(ACTIVE.connections, WATCH.count())

    deadline = time.monotonic() + grace_s
    while open_connections() > 0:
        now = time.monotonic()
        if now > deadline and ACTIVE.messages == 0:
            break
        if now > deadline + grace_s:
            log.warning("worker pid=%d: giving up on %d open connection(s)", os.getpid(), open_connections())
            break
        time.sleep(0.05)


def _exit_worker(code: int) -> None:
    from ..store import close_all

    close_all()   # write the records still queued in this worker, then close its connections
    log.info("worker pid=%d stopped", os.getpid())
    for handler in ops_logging.get_logger().handlers:
        handler.flush()
    os._exit(code)


class Worker:
    """One worker process: libmilter in the main thread, our signals in another.

    Graceful stop (SIGUSR2 from the master) must not go through libmilter's own stop:
    Debian builds libmilter with its worker pool (_FFR_WORKERS_POOL), whose controller
    stops serving open sessions as soon as smfi_stop()/SIGTERM sets the stop flag, so an
    in-flight message would hang. Instead the worker "parks" libmilter's listener on a
    listening socket nobody can reach (dup2 over the listening fd): libmilter keeps
    serving its open sessions but accepts nothing new; when they are done the process
    exits.
    """

    def __init__(self, config: str, overrides: Overrides, slot: int, listen_fd: int, master: int) -> None:
        self.config = config
        self.overrides = overrides
        self.slot = slot
        self.listen_fd = listen_fd
        self.master = master
        self.pid = os.getpid()
        self._parked: socket.socket | None = None

    def run(self) -> int:
        import milter  # type: ignore[import-not-found]

        # The inherited mask blocks TERM/INT/HUP/USR1/USR2 in this thread; threads created
        # from now on inherit it, so only libmilter's sigwait thread takes TERM/INT/HUP and
        # only ours USR1/USR2.
        signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS | LIBMILTER_SIGNALS)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        threading.Thread(target=self._signals, name="signals", daemon=True).start()
        if self.listen_fd >= 0:
            WATCH.attach(self.listen_fd)      # before any park: it learns the listener's address
            WATCH.start()
        log.info("worker %d started pid=%d", self.slot, self.pid)
        from ..runtime import HOLDER

        store = HOLDER.get().store
        if store is not None:   # open this worker's journal; replay the records of dead workers' journals
            store.start()
        try:
            milter.main()
        except milter.error as exc:
            log.error("worker pid=%d: libmilter failed: %s", self.pid, exc)
            return EXIT_FAILURE
        # libmilter stopped on its own (SIGTERM/SIGHUP/SIGINT sent to this process, not via
        # the master). Its pool no longer serves open sessions; a thread-per-connection
        # build still might, so give them a moment.
        _wait_idle(LIBMILTER_STOP_GRACE_S)
        _exit_worker(0)
        return 0

    def _signals(self) -> None:
        while True:
            info = signal.sigtimedwait(WORKER_SIGNALS, 1.0)
            if info is None:
                if os.getppid() != self.master:   # orphaned: the master died
                    log.warning("worker pid=%d: master gone, stopping", self.pid)
                    self._drain()
                continue
            if info.si_signo == signal.SIGUSR1:
                self._reload()
            elif info.si_signo == signal.SIGUSR2:
                self._drain()

    def _drain(self) -> None:
        self._park_listener()
        _wait_idle(STOP_GRACE_S)
        _exit_worker(0)

    def _park_listener(self) -> None:
        if self.listen_fd < 0 or self._parked is not None:
            return
        parked = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        parked.bind("")                   # Linux autobind: a random abstract name, no file
        parked.listen(1)
        parked.setblocking(False)         # a stray wake-up gets EAGAIN, not a hang
        try:
            # Also drops this process's reference to the shared socket (see Listener.release).
            os.dup2(parked.fileno(), self.listen_fd, inheritable=False)
        except OSError as exc:            # libmilter closed its listener on its own
            log.warning("worker pid=%d: could not park the listener: %s", self.pid, exc.strerror)
            parked.close()
            return
        self._parked = parked

    def _reload(self) -> None:
        from ..runtime import HOLDER, Runtime

        try:
            settings = load(self.config, self.overrides)
            runtime = Runtime.load(settings)
        except Exception as exc:  # keep serving with what we have
            log.error("worker pid=%d: reload failed, keeping the running configuration: %s",
                      self.pid, _one_line(exc))
            log.debug("reload traceback", exc_info=exc)
            return
        _install_dns_metrics(runtime)
        HOLDER.swap(runtime)
        ops_logging.set_level(settings.log_level)
        log.info("worker pid=%d reloaded (generation %d)", self.pid, HOLDER.generation)


# ---------------------------------------------------------------------------------------
# master


@dataclass
class _Child:
    slot: int
    kind: str            # "worker" or "metrics"
    started: float


class Master:
    def __init__(self, config: str, overrides: Overrides, settings: Settings) -> None:
        self.config = config
        self.overrides = overrides
        self.settings = settings
        self.listener: Listener | None = None
        self.children: dict[int, _Child] = {}
        self.pending: list[tuple[float, int, str]] = []   # (when, slot, kind) to (re)start
        self.failures: list[float] = []
        self.stopping = False
        self.stop_deadline = 0.0
        self.pid_file = ""
        self.master_pid = os.getpid()
        # [srs] socketmap: our own listening socket, served by the "srsmap" child.
        self.srsmap: socket.socket | None = None
        self.srsmap_inode: tuple[int, int] | None = None

    # -- start ---------------------------------------------------------------------------
    def start(self) -> None:
        from ..runtime import HOLDER, Runtime

        s = self.settings
        spec = parse_socket(s.socket)
        ids = resolve_user(s.user, s.group)
        am_root = os.geteuid() == 0
        if ids is not None and not am_root and ids[0] != os.geteuid():
            log.warning("user=%s ignored: not started as root", s.user)
            ids = None
        register_milter(s)
        # Everything the workers will load (keys as the configured user, tables, store,
        # optional dependencies) loads before the socket opens: the same list as
        # check-config, so the MTA never finds a socket nobody will serve.
        problems = preflight.check(s, _becomer(ids) if ids is not None and am_root else None, s.user)
        if problems:
            raise preflight.Refused(problems)
        self.listener = Listener(spec)
        self.listener.open(int(s.socket_mode, 8), (ids[0], ids[1]) if ids and am_root else None)
        if s.srs.enabled and s.srs.socketmap:
            self.srsmap, self.srsmap_inode = open_plain_listener(
                parse_socket(s.srs.socketmap), int(s.socket_mode, 8), (ids[0], ids[1]) if ids and am_root else None)
        if s.pid_file:
            with open(s.pid_file, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            self.pid_file = s.pid_file
        # psycopg only for a PostgreSQL store: installed beside an SQLite one it was the
        # largest import of every process (a reload that switches stores imports it then).
        _preload_modules(("psycopg",) if parse_url(s.store.url).kind == POSTGRESQL else ())
        if ids is not None and am_root:
            drop_privileges(*ids)
            log.info("dropped privileges to %s (uid %d, gid %d)", ids[2], ids[0], ids[1])
        elif am_root:
            log.warning("running as root: set user = \"...\" to drop privileges after binding")
        if s.metrics.listen and not METRICS.enable():
            log.warning("metrics.listen is set but prometheus-client is not installed; metrics are off")
        runtime = Runtime.load(s)   # after the drop: keys are read as the configured user
        runtime.init_store()        # schema created/migrated once, before any worker forks
        _install_dns_metrics(runtime)
        HOLDER.swap(runtime)
        if METRICS.enabled:
            self._spawn(0, "metrics")
        for slot in range(worker_count(s)):
            self._spawn(slot, "worker")
        if self.srsmap is not None:
            self._spawn(0, "srsmap")
            log.info("srs socketmap on %s", s.srs.socketmap)
        log.info("listening on %s with %d worker(s)", spec.milter(), worker_count(s))
        sdnotify.ready(f"listening on {spec.milter()}")

    def _spawn(self, slot: int, kind: str) -> None:
        pid = os.fork()
        if pid == 0:  # child: never return into the master's code
            code = EXIT_FAILURE
            try:
                if self.srsmap is not None and kind != "srsmap":
                    self.srsmap.close()           # only the srsmap child serves it
                if kind == "srsmap":
                    from .socketmap import run_child

                    if self.listener is not None:
                        self.listener.release()
                    assert self.srsmap is not None
                    code = run_child(self.srsmap, self._child_reload, self.master_pid)
                elif kind == "metrics":
                    if self.listener is not None:
                        self.listener.release()   # or it would keep the socket open at stop
                    serve_forever(self.settings.metrics.listen, METRICS.directory)
                    code = 0
                else:
                    listen_fd = -1
                    if self.listener is not None:
                        listen_fd = self.listener.fd
                        if self.listener.sock is not None:   # the worker parks listen_fd only
                            self.listener.sock.close()
                    code = Worker(self.config, self.overrides, slot, listen_fd, self.master_pid).run()
            except BaseException as exc:
                log.error("%s %d crashed: %s: %s", kind, slot, type(exc).__name__, sanitize(str(exc)))
                log.debug("traceback", exc_info=exc)
            finally:
                for h in ops_logging.get_logger().handlers:
                    h.flush()
                os._exit(code)
        self.children[pid] = _Child(slot, kind, time.monotonic())
        if kind == "metrics":
            log.info("metrics exporter on %s pid=%d", self.settings.metrics.listen, pid)

    def _child_reload(self) -> None:
        """SIGUSR1 in the srsmap child: the new runtime (secrets, domain lists) or the old one."""
        from ..runtime import HOLDER, Runtime

        try:
            HOLDER.swap(Runtime.load(load(self.config, self.overrides)))
            log.info("srs socketmap pid=%d reloaded", os.getpid())
        except Exception as exc:  # noqa: BLE001 - keep serving with what we have
            log.error("srs socketmap pid=%d: reload failed, keeping the running configuration: %s",
                      os.getpid(), _one_line(exc))

    # -- loop ------------------------------------------------------------------------------
    def run(self) -> int:
        while True:
            if self.stopping and not self.children:
                return 0
            timeout = 1.0
            now = time.monotonic()
            if self.pending:
                timeout = max(0.0, min(timeout, min(p[0] for p in self.pending) - now))
            info = signal.sigtimedwait(MASTER_SIGNALS, timeout)
            if info is not None:
                self._on_signal(info.si_signo)
            self._reap()
            self._start_pending()
            if self.stopping and time.monotonic() > self.stop_deadline:
                self._kill_all(signal.SIGKILL, "stop timeout")

    def _on_signal(self, sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            if self.stopping:
                self._kill_all(signal.SIGKILL, "second stop signal")
            else:
                self.stop()
        elif sig in (signal.SIGUSR1, signal.SIGHUP) and not self.stopping:
            self.reload()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            abnormal = not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
            how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exited with status {os.WEXITSTATUS(status)}")
            if self.stopping:
                log.info("%s %d pid=%d %s", child.kind, child.slot, pid, how)
                continue
            delay = 0.0
            if abnormal:
                now = time.monotonic()
                self.failures = [t for t in self.failures if now - t < 60.0] + [now]
                # first failure: restart at once; repeated ones: 0.5 s, 1 s, 2 s ... 30 s
                delay = 0.0 if len(self.failures) <= 1 else min(30.0, 0.5 * 2 ** (len(self.failures) - 2))
            log.warning("%s %d pid=%d %s; restarting%s", child.kind, child.slot, pid, how,
                        f" in {delay:.1f}s" if delay else "")
            self.pending.append((time.monotonic() + delay, child.slot, child.kind))

    def _start_pending(self) -> None:
        if self.stopping or not self.pending:
            return
        now = time.monotonic()
        due = [p for p in self.pending if p[0] <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        for _, slot, kind in due:
            self._spawn(slot, kind)

    def _kill_all(self, sig: int, why: str) -> None:
        if self.children:
            log.warning("sending signal %d to %d child process(es): %s", sig, len(self.children), why)
        for pid in list(self.children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    # -- stop and reload ---------------------------------------------------------------------
    def stop(self) -> None:
        self.stopping = True
        self.pending.clear()
        self.stop_deadline = time.monotonic() + KILL_AFTER_S
        sdnotify.stopping()
        log.info("stopping: waiting for in-flight messages")
        for pid, child in list(self.children.items()):
            try:
                os.kill(pid, signal.SIGUSR2 if child.kind == "worker" else signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self.listener is not None:
            self.listener.release()
        if self.srsmap is not None:
            self.srsmap.close()

    def reload(self) -> None:
        from ..runtime import HOLDER, Runtime

        sdnotify.reloading()
        try:
            settings = load(self.config, self.overrides)
            refusal = reload_refusal(self.settings, settings)
            if refusal is not None:
                raise ConfigError(self.config, "", f"reload refused: {refusal}")
            runtime = Runtime.load(settings)
        except Exception as exc:
            METRICS.reload(False)
            log.error("reload failed, keeping the running configuration: %s", _one_line(exc))
            if not isinstance(exc, AuthmilterError):
                log.debug("reload traceback", exc_info=exc)
            sdnotify.ready("reload failed; running configuration kept")
            return
        for key in ("socket", "socket_mode", "user", "group", "workers", "pid_file", "metrics"):
            if getattr(settings, key) != getattr(self.settings, key):
                log.warning("%s changed: takes effect at the next restart", key)
        HOLDER.swap(runtime)
        self.settings = dataclasses.replace(
            settings, **{k: getattr(self.settings, k) for k in ("socket", "socket_mode", "user", "group",
                                                                 "workers", "pid_file", "metrics")})
        ops_logging.set_level(settings.log_level)
        workers = [pid for pid, c in self.children.items() if c.kind == "worker"]
        for pid in workers:
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
        for pid in [pid for pid, c in self.children.items() if c.kind == "srsmap"]:
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
        METRICS.reload(True)
        log.info("reloaded %s; signalled %d worker(s)", self.config, len(workers))
        sdnotify.ready("reloaded")

    def cleanup(self) -> None:
        if self.listener is not None:
            self.listener.remove()
        if self.srsmap_inode is not None and self.settings.srs.socketmap.startswith(("unix:", "local:")):
            path = parse_socket(self.settings.srs.socketmap).path
            try:
                st = os.lstat(path)
                if (st.st_dev, st.st_ino) == self.srsmap_inode:
                    os.unlink(path)
            except OSError:
                pass
        if self.pid_file:
            try:
                os.unlink(self.pid_file)
            except OSError:
                pass
        METRICS.cleanup()


# ---------------------------------------------------------------------------------------
# entry point


def cmd_run(args: argparse.Namespace) -> int:
    """``authmilter run -c FILE [--socket SPEC] [--workers N]`` in the foreground."""
    overrides = Overrides(socket=getattr(args, "socket", None), workers=getattr(args, "workers", None))
    try:
        settings = load(args.config, overrides)
    except ConfigError as exc:
        print(f"authmilter: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    ops_logging.setup(settings.log_level, settings.log_target)
    # Block the signals before any fork: the master takes them with sigtimedwait() and
    # the children start with them blocked (see Worker.run).
    signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS | WORKER_SIGNALS)
    master = Master(args.config, overrides, settings)
    try:
        master.start()
    except Exception as exc:  # our errors name file/key/reason; anything else is a bug
        log.error("cannot start: %s", _one_line(exc))
        if not isinstance(exc, (AuthmilterError, OSError)):
            log.debug("start-up traceback", exc_info=exc)
        master.stopping = True
        master._kill_all(signal.SIGTERM, "start-up failed")
        master.cleanup()
        return EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_FAILURE
    try:
        return master.run()
    finally:
        master.cleanup()
        log.info("stopped")

