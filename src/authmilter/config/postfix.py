"""Which milter lines work with this Postfix: read its master.cf chroot settings.

A chrooted Postfix daemon resolves a ``unix:`` milter path inside its chroot, the queue
directory (Debian's stock master.cf chroots smtpd *and* cleanup, so ``smtpd_milters`` and
``non_smtpd_milters`` both need the path relative to ``/var/spool/postfix``). Postfix
daemons run with the queue directory as their working directory, so a relative path is
right inside and outside the chroot; a socket outside the queue directory cannot be
reached from a chrooted daemon at all (postconf(5) ``smtpd_milters``, master(5) chroot).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from .sockets import SocketSpec

POSTCONF = "/usr/sbin/postconf"
DEBIAN_QUEUE = "/var/spool/postfix"
INET_ALTERNATIVE = 'socket = "inet:8891@127.0.0.1" and {param} = inet:127.0.0.1:8891'


@dataclass(frozen=True, slots=True)
class PostfixLayout:
    """What decides how Postfix reaches a unix socket: the queue directory and which of
    the milter clients (smtpd for SMTP mail, cleanup for sendmail(1) mail) are chrooted."""

    queue_directory: str
    smtpd_chroot: tuple[str, ...]     # master.cf services ("smtp/inet") running smtpd chrooted
    cleanup_chroot: tuple[str, ...]   # ... running cleanup chrooted
    source: str                       # where this came from, for the printed comment
    assumed: bool = False             # not read from a Postfix: problems are warnings


def read_layout(config_dir: str | None = None) -> PostfixLayout | None:
    """The layout of the Postfix whose config is in *config_dir* (default: postconf's own,
    i.e. $MAIL_CONFIG or /etc/postfix); None when Postfix is absent or not configured."""
    postconf = shutil.which("postconf") or POSTCONF
    if not os.access(postconf, os.X_OK):
        return None
    base = [postconf] + (["-c", config_dir] if config_dir else [])
    try:
        queue = subprocess.run(base + ["-h", "queue_directory"], capture_output=True, text=True,
                               timeout=30, check=False)
        master = subprocess.run(base + ["-F"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    if queue.returncode != 0 or master.returncode != 0 or not queue.stdout.strip():
        return None
    return parse_layout(queue.stdout.strip(), master.stdout,
                        f"postconf{' -c ' + config_dir if config_dir else ''}")


def parse_layout(queue_directory: str, postconf_f: str, source: str) -> PostfixLayout:
    """Build the layout from ``postconf -F`` output (``name/type/field = value`` lines).

    A chroot field of ``-`` is the default, "n" since Postfix 3.0."""
    fields: dict[str, dict[str, str]] = {}
    for line in postconf_f.splitlines():
        key, sep, value = line.partition(" = ")
        service, _, field = key.rpartition("/")
        if sep and service:
            fields.setdefault(service, {})[field] = value.strip()
    chrooted: dict[str, list[str]] = {"smtpd": [], "cleanup": []}
    for service, f in fields.items():
        program = (f.get("command", "").split() or [""])[0]
        if program in chrooted and f.get("chroot") == "y":
            chrooted[program].append(service)
    return PostfixLayout(queue_directory.rstrip("/") or "/", tuple(chrooted["smtpd"]),
                         tuple(chrooted["cleanup"]), source)


def debian_default() -> PostfixLayout:
    """Debian's stock master.cf (smtpd and cleanup chrooted in /var/spool/postfix): what
    check-config assumes when no Postfix configuration can be read."""
    return PostfixLayout(DEBIAN_QUEUE, ("smtp/inet",), ("cleanup/unix",),
                         "assumed: Debian's stock master.cf (no Postfix configuration readable)", True)


def unchrooted(queue_directory: str = DEBIAN_QUEUE) -> PostfixLayout:
    """A Postfix with chroot off everywhere (the demo's, a test instance's)."""
    return PostfixLayout(queue_directory, (), (), "no chroot", True)


def milter_value(spec: SocketSpec, chrooted: tuple[str, ...], layout: PostfixLayout,
                 param: str) -> tuple[str, str]:
    """(value for *param*, error) — error is empty when the value works."""
    if spec.family != "unix":
        return spec.postfix(), ""
    path = os.path.normpath(spec.path)
    inside = path.startswith(layout.queue_directory.rstrip("/") + "/")
    if not chrooted:
        return f"unix:{path}", ""
    if not inside:
        return f"unix:{path}", (
            f"{param}: Postfix runs {', '.join(chrooted)} chrooted in {layout.queue_directory} "
            f"(master.cf chroot = y); it cannot reach {path}. Put the socket under the queue "
            f'directory (socket = "unix:{layout.queue_directory}/authmilter/authmilter.sock") '
            f"or use TCP on loopback: {INET_ALTERNATIVE.format(param=param)}")
    return f"unix:{os.path.relpath(path, layout.queue_directory)}", ""
