"""What `run` needs before it opens its socket, checked the way `run` will meet it.

`check-config` and `run` share this list, so a config that check-config passes does not
stop the daemon (issue 10, item 3). The parts the daemon does as root (bind the socket,
write the pid file) are checked in this process; the parts it does after the privilege
drop (read keys and tables, open the store, import optional dependencies) are checked in
a forked child that becomes the configured user first, so the parent keeps its
privileges and imports nothing it should not have imported yet (prometheus_client must
be imported only after the metrics directory is set up).
"""
from __future__ import annotations

import importlib
import os
import traceback
from collections.abc import Callable

from .config.schema import Settings
from .config.sockets import parse_socket
from .errors import AuthmilterError, ConfigError
from .runtime import Runtime


class Refused(ConfigError):
    """`run` refuses to start: the problems `check` found (each ``file: key: reason``);
    a ConfigError, so the daemon exits with EX_CONFIG like for any other config error."""

    def __init__(self, problems: list[str]) -> None:
        AuthmilterError.__init__(self, "; ".join(problems))
        self.file, self.key, self.reason, self.line = "", "", "; ".join(problems), None
        self.problems = problems


TMPFILES_HINT = "tmpfiles.d/authmilter.conf creates /run/authmilter and /var/spool/postfix/authmilter"


def check(settings: Settings, become: Callable[[], None] | None = None, user: str = "") -> list[str]:
    """Every problem that would stop `run`, as ``file: key: reason`` lines (empty: none).

    *become* switches the checking child to the daemon's user (preload + privilege drop);
    None checks as the current user."""
    file = settings.source
    problems = [f"{file}: {p}" for p in _root_side(settings)]
    problems += _as_user(settings, become, user)
    return problems


def warnings(settings: Settings) -> list[str]:
    """What is allowed but probably not meant."""
    out = []
    if settings.signing.enabled and not settings.signing.key_table:
        out.append(f"{settings.source}: signing.enabled is true but signing.key_table is empty: "
                   "outbound mail will not be signed")
    return out


def _root_side(settings: Settings) -> list[str]:
    """The socket directories and the pid file: used by the (root) master before the drop."""
    out = []
    sockets = [("socket", settings.socket)]
    if settings.srs.enabled and settings.srs.socketmap:
        sockets.append(("srs.socketmap", settings.srs.socketmap))
    for key, text in sockets:
        spec = parse_socket(text)
        if spec.family == "unix":
            problem = _writable_dir(os.path.dirname(os.path.abspath(spec.path)), "socket directory")
            if problem:
                out.append(f"{key}: {problem} ({TMPFILES_HINT})")
    if settings.pid_file:
        problem = _writable_dir(os.path.dirname(os.path.abspath(settings.pid_file)), "pid file directory")
        if problem:
            out.append(f"pid_file: {problem}")
    return out


def _writable_dir(directory: str, what: str) -> str:
    if not os.path.isdir(directory):
        return f"{what} {directory} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{what} {directory} is not writable by uid {os.geteuid()}"
    return ""


def _as_user(settings: Settings, become: Callable[[], None] | None, user: str) -> list[str]:
    """Run `_user_side` in a child that first becomes the daemon's user; its problems come
    back through a pipe, one per line."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's code
        code = 1      # a bug in loading fails the check (traceback on stderr), never passes it
        try:
            os.close(read_fd)
            problems = _user_side(settings, become, user)
            with os.fdopen(write_fd, "w", encoding="utf-8") as out:
                out.write("\n".join(p.replace("\n", " ") for p in problems))
            code = 0
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, encoding="utf-8") as inp:
        text = inp.read()
    _, status = os.waitpid(pid, 0)
    problems = [line for line in text.splitlines() if line]
    if os.waitstatus_to_exitcode(status) != 0:
        problems.append(f"{settings.source}: loading the configuration failed unexpectedly (see above)")
    return problems


def _user_side(settings: Settings, become: Callable[[], None] | None, user: str) -> list[str]:
    file = settings.source
    problems = []
    if settings.metrics.listen:
        try:
            importlib.import_module("prometheus_client")
        except ImportError:
            problems.append(f"{file}: metrics.listen: needs prometheus-client "
                            "(pip install 'authmilter[metrics]'), or leave listen empty")
    if become is not None:
        try:
            become()
        except (AuthmilterError, OSError) as exc:
            return problems + [f"{file}: user: cannot become {user!r}: {exc}"]
    try:
        Runtime.load(settings)
    except AuthmilterError as exc:
        problems.append(str(exc) + (f" (as user {user})" if user and become is not None else ""))
    return problems
