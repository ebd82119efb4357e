"""One exception root for authmilter's own errors.

Remote problems (bad DNS records, broken signatures) are *results*, never exceptions;
these classes are for our bugs and for configuration the admin must fix.
"""
from __future__ import annotations


class AuthmilterError(Exception):
    """Root of every exception authmilter raises on purpose."""


class ConfigError(AuthmilterError):
    """A configuration problem that stops start-up: names the file, the key and why."""

    def __init__(self, file: str, key: str, reason: str, line: int | None = None) -> None:
        self.file, self.key, self.reason, self.line = file, key, reason, line
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")


class KeyError_(AuthmilterError):
    """A signing key that cannot be used (unreadable, unsafe permissions, bad format)."""


class DomainError(AuthmilterError, ValueError):
    """A string that is not a valid domain name."""


class InputError(AuthmilterError):
    """An input file named on the command line that cannot be read."""
