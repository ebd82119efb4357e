"""Milter socket specifications, and their Postfix spelling.

libmilter writes ``unix:/path`` (or ``local:/path``), ``inet:PORT@HOST`` and
``inet6:PORT@HOST``; Postfix's smtpd_milters writes ``unix:/path`` and
``inet:HOST:PORT``. Configuration data: config validation, check-config and the daemon all read it here.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SocketSpec:
    family: str          # "unix", "inet" or "inet6"
    path: str = ""       # unix
    host: str = ""       # inet/inet6
    port: int = 0

    def milter(self) -> str:
        """The libmilter spelling (smfi_setconn)."""
        if self.family == "unix":
            return f"unix:{self.path}"
        return f"{self.family}:{self.port}@{self.host}"

    def postfix(self) -> str:
        """The Postfix smtpd_milters spelling."""
        if self.family == "unix":
            return f"unix:{self.path}"
        if self.family == "inet6":
            return f"inet:[{self.host}]:{self.port}"
        return f"inet:{self.host}:{self.port}"

    def sendmail(self) -> str:
        """The Sendmail INPUT_MAIL_FILTER S= spelling."""
        if self.family == "unix":
            return f"local:{self.path}"
        return f"{self.family}:{self.port}@{self.host}"


def parse_socket(spec: str) -> SocketSpec:
    """Parse a libmilter socket spec; raises ValueError with a reason."""
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    if not sep:
        if text.startswith("/"):
            return SocketSpec("unix", path=text)
        raise ValueError(f"expected unix:/path, local:/path, inet:PORT@HOST or inet6:PORT@HOST, got {spec!r}")
    kind = kind.lower()
    if kind in ("unix", "local"):
        if not rest:
            raise ValueError("empty socket path")
        return SocketSpec("unix", path=rest)
    if kind in ("inet", "inet6"):
        port_s, at, host = rest.partition("@")
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ValueError(f"bad port in {spec!r} (expected {kind}:PORT@HOST)")
        host = host or ("127.0.0.1" if kind == "inet" else "::1")
        host = host.strip("[]")
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            if kind == "inet6" or not host.replace(".", "").replace("-", "").isalnum():
                raise ValueError(f"bad host in {spec!r}") from None
        else:
            if (addr.version == 6) != (kind == "inet6"):
                raise ValueError(f"{kind} needs an IPv{4 if kind == 'inet' else 6} address: {spec!r}")
        return SocketSpec(kind, host=host, port=int(port_s))
    raise ValueError(f"unknown socket type {kind!r} in {spec!r}")
