"""Everything a message needs that is loaded once: settings, resolver, signer, tables.

A Runtime is immutable and swapped whole on reload (SIGUSR1); a connection keeps the
runtime it started with, so a reload never changes the rules halfway through a message.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config.opendkim import HostList
from .config.schema import Settings
from .domain import normalize_domain
from .errors import ConfigError, DomainError
from .resolver import Resolver, install_spf_adapter

if TYPE_CHECKING:  # pragma: no cover
    from .signing import Signer

@dataclass(frozen=True)
class Runtime:
    settings: Settings
    resolver: Resolver
    signer: Signer | None
    # Host lists in OpenDKIM's grammar (IPs, CIDRs, names, ".domain", "!"), parsed once.
    internal_hosts: HostList
    trusted_relays: HostList
    forwarders: HostList
    own_domains: frozenset[str]
    psl: Any = None
    hostname: str = field(default_factory=socket.getfqdn)
    loaded_at: float = field(default_factory=time.time)

    @classmethod
    def load(cls, settings: Settings) -> Runtime:
        """Build everything once; raises ConfigError / KeyError_ naming file, key and reason."""
        file = settings.source
        install_spf_adapter()
        resolver = Resolver.from_settings(settings.dns)
        signer = None
        if settings.signing.enabled and settings.signing.key_table:
            from .signing import Signer

            signer = Signer.from_settings(settings.signing, source=file)
        internal = signer.internal_hosts if signer is not None else \
            HostList.load(settings.signing.internal_hosts, source=file, setting="signing.internal_hosts")
        relays = HostList.load(settings.verify.trusted_relays, source=file, setting="verify.trusted_relays")
        forwarders = HostList.load(settings.policy.trusted_forwarders, source=file,
                                   setting="policy.trusted_forwarders")
        own = set(signer.domains) if signer is not None else set()
        for d in settings.policy.own_domains:
            try:
                own.add(normalize_domain(d))
            except DomainError as exc:
                raise ConfigError(file, "policy.own_domains", str(exc)) from None
        psl = None
        if settings.verify.dmarc_mode == "rfc7489":
            psl = load_psl(settings.verify.public_suffix_list, file)
        return cls(settings=settings, resolver=resolver, signer=signer, internal_hosts=internal,
                   trusted_relays=relays, forwarders=forwarders, own_domains=frozenset(own), psl=psl)

    def authserv_id(self, mta_j: str = "") -> str:
        return self.settings.authserv_id or mta_j or self.hostname


def load_psl(path: str, file: str) -> Any:
    from publicsuffixlist import PublicSuffixList

    if not path:
        return PublicSuffixList()
    try:
        with open(path, "rb") as fh:
            return PublicSuffixList(fh)
    except OSError as exc:
        raise ConfigError(file, "verify.public_suffix_list", f"cannot read {path}: {exc.strerror}") from None


class RuntimeHolder:
    """The current runtime of this process; swapped atomically on reload."""

    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()
        self.generation = 0

    def get(self) -> Runtime:
        rt = self._runtime
        if rt is None:
            raise RuntimeError("no runtime loaded")
        return rt

    def swap(self, new: Runtime) -> Runtime | None:
        with self._lock:
            old, self._runtime = self._runtime, new
            self.generation += 1
            return old


HOLDER = RuntimeHolder()
