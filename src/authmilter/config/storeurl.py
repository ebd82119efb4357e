"""The ``[store] url`` grammar, checked when the configuration is loaded.

Two schemes:

``sqlite:///ABSOLUTE/PATH``
    One file on this host, as in ``file:`` URLs (RFC 8089): the part after
    ``sqlite://`` is an absolute path, so ``sqlite:///var/lib/authmilter/state.db`` is
    ``/var/lib/authmilter/state.db``. Relative paths are refused: a daemon's working
    directory is ``/`` under systemd and something else in a shell, and the same
    configuration must name the same file in both. (SQLAlchemy's rule, where three
    slashes mean a relative path and four an absolute one, would turn our default into
    a file under the working directory; four slashes are refused with a hint.)
``postgresql://...`` or ``postgres://...``
    A libpq connection URI (PostgreSQL documentation, "Connection URIs"), passed to
    psycopg as written: several MX hosts share one database.

This module imports nothing heavy: config validation uses it.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


@dataclass(frozen=True, slots=True)
class StoreUrl:
    kind: str          # SQLITE or POSTGRESQL
    path: str = ""     # sqlite: the database file
    dsn: str = ""      # postgresql: the URI for psycopg

    def redacted(self) -> str:
        """For logs: the URL without a password."""
        if self.kind == SQLITE:
            return f"sqlite://{self.path}"
        parts = urlsplit(self.dsn)
        if parts.password is None:
            return self.dsn
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))


def parse_url(url: str) -> StoreUrl:
    """Parse a ``[store] url``; ValueError with a reason an admin can act on."""
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"expected sqlite:///ABSOLUTE/PATH or postgresql://..., got {url!r}")
    if scheme == SQLITE:
        if rest.startswith("////"):
            raise ValueError(f"write an absolute path with three slashes: sqlite://{rest[3:]}")
        if not rest.startswith("///"):
            raise ValueError(f"expected sqlite:///ABSOLUTE/PATH (relative paths are not allowed), got {url!r}")
        path = rest[2:]
        if path.endswith("/") or "\x00" in path:
            raise ValueError(f"not a file name: {path!r}")
        return StoreUrl(SQLITE, path=path)
    if scheme in ("postgresql", "postgres"):
        if not rest.startswith("//"):
            raise ValueError(f"expected postgresql://[USER[:PASSWORD]@][HOST][:PORT]/DBNAME, got {url!r}")
        return StoreUrl(POSTGRESQL, dsn=url)
    raise ValueError(f"unknown scheme {scheme!r}: use sqlite:///ABSOLUTE/PATH or postgresql://...")
