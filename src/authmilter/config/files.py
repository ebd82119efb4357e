"""Reading a config file's bytes, with the reasons it cannot be read as ConfigError."""
from __future__ import annotations

from ..errors import ConfigError


def read_bytes(path: str, what: str | None = "config file", limit: int = -1) -> bytes:
    """The first *limit* bytes of *path* (all when negative). ConfigError when the file is
    missing, unreadable or (when *what* is given) a directory, "not a {what}"; with *what*
    None, IsADirectoryError propagates."""
    try:
        with open(path, "rb") as fh:
            return fh.read(limit)
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except PermissionError:
        raise ConfigError(path, "", "permission denied") from None
    except IsADirectoryError:
        if what is None:
            raise
        raise ConfigError(path, "", f"is a directory, not a {what}") from None
