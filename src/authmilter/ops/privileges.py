"""Becoming the configured user: what the daemon does after binding its socket, and
what check-config's checking child does before it loads keys and tables (preflight)."""
from __future__ import annotations

import grp
import importlib
import os
import pkgutil
import pwd
from collections.abc import Callable, Iterator, Sequence

from .. import __path__ as package_path
from ..errors import AuthmilterError


class PrivilegeError(AuthmilterError):
    """The configured user/group does not exist, or the drop did not happen."""


def resolve_user(user: str, group: str) -> tuple[int, int, str] | None:
    """(uid, gid, name) of the configured user/group; None when none is configured."""
    if not user:
        if group:
            raise PrivilegeError("group is set but user is not")
        return None
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"user {user!r} does not exist") from None
    gid = pw.pw_gid
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f"group {group!r} does not exist") from None
    return pw.pw_uid, gid, pw.pw_name


def drop_privileges(uid: int, gid: int, name: str) -> None:
    """setgroups (the user's groups), setgid, setuid — in that order, and irreversibly."""
    os.initgroups(name, gid)
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise PrivilegeError("could not drop root privileges")


# Modules of the other commands (analyze, the importers, the man page, sending reports,
# store administration, offline verify, the demo set-up). `run` never imports them, so
# preloading them would only make every worker larger: together with psycopg for an
# SQLite store they were about 20 MB of each process's RSS. tests/unit/test_layers.py
# checks that nothing the run command imports can reach them.
COMMAND_ONLY = ("authmilter.analyze", "authmilter.migrate", "authmilter.migrate_common",
                "authmilter.migrate_opendmarc", "authmilter.migrate_policyd_spf", "authmilter.manpage",
                "authmilter.demo", "authmilter.reports.command", "authmilter.store.admin", "authmilter.verify",
                "authmilter.checkconfig", "authmilter.cliinput", "authmilter.__main__")


def _command_only(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in COMMAND_ONLY)


def daemon_modules(path: Sequence[str] = tuple(package_path), prefix: str = "authmilter.") -> Iterator[str]:
    """The package's modules but the other commands' (found on disk: walking with
    pkgutil.walk_packages would import every subpackage, the skipped ones too)."""
    for info in pkgutil.iter_modules(path, prefix):
        if _command_only(info.name):
            continue
        yield info.name
        if info.ispkg:
            base = getattr(info.module_finder, "path", "")
            yield from daemon_modules([os.path.join(base, info.name.rpartition(".")[2])], info.name + ".")


def preload_modules(optional: Sequence[str] = ("psycopg",)) -> None:
    """Import every module of the package the daemon can use (and so the standard-library
    and third-party modules they import) while we can still read everything: after the
    privilege drop the daemon user may not be able to read the Python installation (a
    pyenv under /root, say), and a module imported lazily then ("No module named 'uuid'")
    would stop start-up or a worker. The *optional* dependencies are imported too when
    installed (psycopg, for a PostgreSQL store)."""
    for name in daemon_modules():
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    # Not prometheus_client: it picks its multiprocess mode from PROMETHEUS_MULTIPROC_DIR
    # when first imported, and that variable is only set by METRICS.enable() (imported
    # earlier, the workers' counters stayed in per-process memory and the exporter summed
    # nothing).
    for name in optional:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def becomer(ids: tuple[int, int, str]) -> Callable[[], None]:
    """Preload, then drop to *ids*: the daemon's step after binding, for a checking child."""
    def become() -> None:
        preload_modules()
        drop_privileges(*ids)
    return become
