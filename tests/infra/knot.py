"""Knot DNS (knotd) serving zones built at run time, for the e2e suite and bench/.

knotd runs in the foreground in its own session, authoritative for the given zones, on a
loopback address; `start()` returns once every zone answers its SOA.
"""
from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from .procs import Process, free_port, wait_for

KNOTD = "/usr/sbin/knotd"


def knotd_path() -> str:
    return shutil.which("knotd") or KNOTD


def txt_strings(value: str) -> str:
    """A TXT value in zone-file syntax, split into <=255-octet character-strings."""
    data = value.encode()
    chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    return " ".join('"' + c.decode().replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


class Zone:
    """One zone file, built record by record. ``Zone(".")`` is the root zone."""

    def __init__(self, origin: str, *, ttl: int = 300, negative_ttl: int = 60, ns_ip: str = "127.0.0.1") -> None:
        self.origin = origin.rstrip(".").lower()
        self.lines = [
            f"$ORIGIN {self.origin}.",
            f"$TTL {ttl}",
            f"@ SOA ns.{self.fqdn} hostmaster.{self.fqdn} 1 3600 600 86400 {negative_ttl}",
            f"@ NS ns.{self.fqdn}",
            f"ns A {ns_ip}",
        ]

    @property
    def fqdn(self) -> str:
        return f"{self.origin}." if self.origin else ""

    @property
    def file_name(self) -> str:
        return f"{self.origin or 'root'}.zone"

    def _owner(self, name: str) -> str:
        name = name.rstrip(".").lower()
        if name == self.origin:
            return "@"
        if self.origin and not name.endswith("." + self.origin):
            raise ValueError(f"{name} is not in zone {self.origin}")
        return name + "."

    def add(self, name: str, rdtype: str, rdata: str) -> Zone:
        self.lines.append(f"{self._owner(name)} {rdtype} {rdata}")
        return self

    def txt(self, name: str, value: str) -> Zone:
        return self.add(name, "TXT", txt_strings(value))

    def raw(self, text: str) -> Zone:
        """Zone-file text as is (e.g. the SELECTOR.txt written by `authmilter genkey`)."""
        self.lines.append(text.rstrip("\n"))
        return self

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class Knot:
    """knotd in the foreground, authoritative for *zones*, on HOST@PORT (a free port by default).

    *workers* bounds knotd's UDP/TCP/background threads (None: knotd's default, one per
    CPU); files and the log (knotd.log) live under ``base/knot``.
    """

    def __init__(self, base: Path, zones: Iterable[Zone], port: int | None = None, *, host: str = "127.0.0.1",
                 workers: int | None = 1, log_level: str = "info", semantic_checks: bool = True) -> None:
        self.dir = base / "knot"
        self.host = host
        self.port = port or free_port(host)
        self.zones = list(zones)
        self.workers = workers
        self.log_level = log_level
        self.semantic_checks = semantic_checks
        self.log = self.dir / "knotd.log"
        self.process = Process("knotd", [knotd_path(), "-c", str(self.dir / "knot.conf")], self.log)
        self._written = False

    def _write(self) -> None:
        (self.dir / "zones").mkdir(parents=True, exist_ok=True)
        for zone in self.zones:
            (self.dir / "zones" / zone.file_name).write_text(zone.text())
        zone_list = "\n".join(f"  - domain: {z.fqdn or '.'}\n    file: {z.file_name}" for z in self.zones)
        workers = "" if self.workers is None else (
            f"    udp-workers: {self.workers}\n    tcp-workers: {self.workers}\n"
            f"    background-workers: {self.workers}\n")
        checks = "" if self.semantic_checks else "    semantic-checks: off\n"
        (self.dir / "knot.conf").write_text(f"""\
server:
    rundir: "{self.dir}"
    listen: {self.host}@{self.port}
{workers}log:
  - target: stderr
    any: {self.log_level}
database:
    storage: "{self.dir}/db"
control:
    listen: "{self.dir}/knot.sock"
template:
  - id: default
    storage: "{self.dir}/zones"
{checks}    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
{zone_list}
""")
        self._written = True

    def start(self) -> None:
        if not self._written:
            self._write()
        self.process.start()
        for zone in self.zones:
            name = zone.fqdn or "."
            wait_for(functools.partial(self._answers, name, "SOA"), f"knot to serve {name}")

    def stop(self) -> None:
        self.process.stop()

    @property
    def running(self) -> bool:
        return self.process.running

    def _answers(self, name: str, rdtype: str) -> bool:
        if not self.running:
            raise AssertionError(f"knotd exited: {self.process.log_tail(2000)}")
        try:
            return bool(self.query(name, rdtype).answer)
        except (OSError, dns.exception.Timeout):
            return False

    def query(self, name: str, rdtype: str) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype)
        return dns.query.udp(q, self.host, port=self.port, timeout=1.0)

    def txt(self, name: str) -> bytes | None:
        """The first TXT record at *name*, its strings joined (what dkimpy's dnsfunc returns)."""
        resp = self.query(name, "TXT")
        for rrset in resp.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                for rdata in rrset:
                    return b"".join(rdata.strings)
        return None

    def dkim_dnsfunc(self) -> Callable[..., bytes | None]:
        def dnsfunc(name: str | bytes, timeout: int = 5) -> bytes | None:
            text = name.decode() if isinstance(name, bytes) else name
            return self.txt(text)
        return dnsfunc
