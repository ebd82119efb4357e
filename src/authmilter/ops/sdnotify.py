"""systemd readiness notification (sd_notify(3)) without a dependency.

A ``Type=notify`` unit waits for ``READY=1``; ``RELOADING=1`` with ``MONOTONIC_USEC``
(systemd >= 253, ``Type=notify-reload`` semantics) marks a reload, ``STOPPING=1`` a
shutdown. The protocol is one datagram of newline-separated ``KEY=VALUE`` lines to the
AF_UNIX socket named by ``$NOTIFY_SOCKET``; a leading ``@`` names the abstract namespace.
Outside systemd (no variable) every call is a no-op.
"""
from __future__ import annotations

import os
import socket
import time


def _address(path: str) -> str | bytes:
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


def notify(*states: str) -> bool:
    """Send the given ``KEY=VALUE`` states; True when a notification socket took them."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path or not states:
        return False
    data = "\n".join(states).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_address(path))
            sock.sendall(data)
    except OSError:
        # systemd gone or the socket not ours: notification is best effort by design.
        return False
    return True


def ready(status: str = "") -> bool:
    return notify("READY=1", *((f"STATUS={status}",) if status else ()))


def reloading() -> bool:
    """RELOADING=1 must carry the CLOCK_MONOTONIC time in µs (sd_notify(3))."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def stopping() -> bool:
    return notify("STOPPING=1")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")
