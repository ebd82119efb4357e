"""postgrey's allow-list files, read unchanged, and ``authmilter import-postgrey``.

An admin moving from postgrey keeps ``whitelist_clients`` and ``whitelist_recipients``
as they are (including the list Debian ships in /etc/postgrey). The grammar, as
postgrey(8) documents it, one entry per line, ``#`` comments:

clients
    a host name or domain (matches the client's verified name and every name under
    it), an IP address or the leading octets of one (``195.235.39`` matches that /24),
    a CIDR network (IPv4 or IPv6), or ``/regex/`` matched against the client name.
recipients
    ``user@domain``, ``user@`` (that local part in any domain), ``domain`` (that domain
    and its subdomains), or ``/regex/`` matched against the whole address.

Matching is case-insensitive. A line that cannot be read (a bad regex or network)
stops start-up naming file and line, like every other configuration error.
"""
from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _entries(path: str, setting: str) -> list[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(path, setting, f"cannot read: {exc.strerror}") from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("/") else line.strip()
        if line and not line.startswith("#"):
            out.append((number, line))
    return out


def _regex(entry: str, path: str, setting: str, number: int) -> re.Pattern[str]:
    try:
        return re.compile(entry[1:-1], re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(path, setting, f"bad regular expression {entry!r}: {exc}", number) from None


@dataclass(frozen=True)
class ClientAllowList:
    names: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def load(cls, paths: Sequence[str], setting: str = "greylist.whitelist_clients") -> ClientAllowList:
        names: set[str] = set()
        networks: list[Network] = []
        patterns: list[re.Pattern[str]] = []
        for path in paths:
            for number, entry in _entries(path, setting):
                if len(entry) > 1 and entry.startswith("/") and entry.endswith("/"):
                    patterns.append(_regex(entry, path, setting, number))
                    continue
                if re.fullmatch(r"[0-9.]+(/\d+)?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(/\d+)?", entry):
                    networks.append(_network(entry, path, setting, number))
                    continue
                names.add(entry.lower().strip(".").removeprefix("*."))
        return cls(frozenset(names), tuple(networks), tuple(patterns))

    def contains(self, ip: str | None, hostname: str = "") -> bool:
        if ip:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                addr = None
            if addr is not None and any(addr.version == n.version and addr in n for n in self.networks):
                return True
        # Postfix names an unverified client "[IP]" (or "unknown"): only real names count.
        host = hostname.lower().rstrip(".") if hostname and not hostname.startswith("[") else ""
        if host and host != "unknown":
            labels = host.split(".")
            if any(".".join(labels[i:]) in self.names for i in range(len(labels))):
                return True
            if any(p.search(host) for p in self.patterns):
                return True
        return False


def _network(entry: str, path: str, setting: str, number: int) -> Network:
    """An address, a CIDR, or postgrey's leading-octets form ("10.1.2" = 10.1.2.0/24)."""
    try:
        if ":" not in entry and "/" not in entry and entry.count(".") < 3:
            octets = entry.strip(".").split(".")
            bits = 8 * len(octets)
            return ipaddress.ip_network(".".join(octets + ["0"] * (4 - len(octets))) + f"/{bits}")
        return ipaddress.ip_network(entry, strict=False)
    except ValueError as exc:
        raise ConfigError(path, setting, f"{entry!r}: {exc}", number) from None


@dataclass(frozen=True)
class RecipientAllowList:
    addresses: frozenset[str] = frozenset()
    locals_: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    patterns: tuple[re.Pattern[str], ...] = field(default=())

    @classmethod
    def load(cls, paths: Sequence[str], setting: str = "greylist.whitelist_recipients") -> RecipientAllowList:
        addresses: set[str] = set()
        locals_: set[str] = set()
        domains: set[str] = set()
        patterns: list[re.Pattern[str]] = []
        for path in paths:
            for number, entry in _entries(path, setting):
                if len(entry) > 1 and entry.startswith("/") and entry.endswith("/"):
                    patterns.append(_regex(entry, path, setting, number))
                elif entry.endswith("@"):
                    locals_.add(entry[:-1].lower())
                elif "@" in entry:
                    addresses.add(entry.lower().lstrip("@") if entry.startswith("@") else entry.lower())
                    if entry.startswith("@"):
                        domains.add(entry[1:].lower())
                else:
                    domains.add(entry.lower().strip("."))
        return cls(frozenset(addresses), frozenset(locals_), frozenset(domains), tuple(patterns))

    def contains(self, address: str) -> bool:
        addr = address.lower().strip("<>")
        local, _, domain = addr.rpartition("@")
        if addr in self.addresses or (local and local in self.locals_):
            return True
        labels = domain.split(".")
        if any(".".join(labels[i:]) in self.domains for i in range(len(labels))):
            return True
        return any(p.search(addr) for p in self.patterns)


# -- authmilter import-postgrey ------------------------------------------------------------

DEFAULT_FILES = ("/etc/postgrey/whitelist_clients", "/etc/postgrey/whitelist_clients.local")
DEFAULT_RECIPIENTS = ("/etc/postgrey/whitelist_recipients",)


def _opts(defaults_file: str) -> tuple[list[str], str]:
    """POSTGREY_OPTS and POSTGREY_TEXT from a shell-variable file (/etc/default/postgrey)."""
    opts: list[str] = []
    text = ""
    with open(defaults_file, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            for name in ("POSTGREY_OPTS", "POSTGREY_TEXT"):
                if line.startswith(name + "="):
                    # The shell assignment's value (quotes removed), then its words.
                    value = " ".join(shlex.split(line.split("=", 1)[1], comments=True))
                    words = shlex.split(value)
                    if name == "POSTGREY_OPTS":
                        opts = words
                    else:
                        text = " ".join(words)
    return opts, text


def convert(defaults_file: str, exists: object = None) -> tuple[dict[str, object], list[str]]:
    """postgrey's options -> (the [greylist] table, notes on what was not carried over)."""
    import os

    present = exists if callable(exists) else os.path.exists
    opts, text = _opts(defaults_file)
    table: dict[str, object] = {"enabled": True}
    notes: list[str] = []
    clients: list[str] = []
    recipients: list[str] = []
    for opt in opts:
        name, eq, val = opt.partition("=")
        if name == "--delay":
            table["delay_s"] = int(val)
        elif name == "--max-age":
            table["max_age_days"] = int(val)
        elif name == "--retry-window":
            # postgrey: days, or hours with a trailing "h".
            table["retry_window_s"] = int(val[:-1]) * 3600 if val.endswith("h") else int(val) * 86400
        elif name == "--auto-whitelist-clients":
            table["auto_allow_after"] = int(val) if eq else 5
        elif name == "--ipv4cidr":
            table["ipv4_prefix"] = int(val)
        elif name == "--ipv6cidr":
            table["ipv6_prefix"] = int(val)
        elif name == "--lookup-by-host":
            table["ipv4_prefix"], table["ipv6_prefix"] = 32, 128
        elif name == "--whitelist-clients":
            clients.append(val)
        elif name == "--whitelist-recipients":
            recipients.append(val)
        elif name in ("--inet", "--unix", "--dbdir", "--pidfile", "--daemonize", "--user", "--group",
                      "--lookup-by-subnet", "--privacy", "--hostname", "--exim", "--syslog-facility"):
            continue   # the milter replaces the policy service: nothing to carry over
        else:
            notes.append(f"postgrey option {opt} has no authmilter equivalent and was not converted")
    table["whitelist_clients"] = clients or [f for f in DEFAULT_FILES if present(f)]
    table["whitelist_recipients"] = recipients or [f for f in DEFAULT_RECIPIENTS if present(f)]
    if text:
        notes.append("POSTGREY_TEXT is not carried over: authmilter's reply says when to retry")
    notes.append("greylisting keeps its state in [store] (SQLite by default; PostgreSQL for several MX hosts); "
                 "postgrey's database is not imported, so senders are greylisted once more")
    return table, notes


def cmd_import_postgrey(args: object) -> int:
    import sys

    from .tomlwrite import dumps

    defaults = getattr(args, "defaults", "/etc/default/postgrey")
    try:
        table, notes = convert(defaults)
        # The files must load as authmilter will read them: say so now, not at start.
        ClientAllowList.load(table["whitelist_clients"])  # type: ignore[arg-type]
        RecipientAllowList.load(table["whitelist_recipients"])  # type: ignore[arg-type]
    except (OSError, ValueError) as exc:
        print(f"authmilter: cannot convert {defaults}: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"authmilter: configuration error: {exc}", file=sys.stderr)
        return 1
    out = "".join(f"# {n}\n" for n in notes) + dumps({"greylist": table})
    output = getattr(args, "output", "-")
    if output == "-":
        sys.stdout.write(out)
    else:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(out)
    return 0
