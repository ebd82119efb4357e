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

from .config.hostlist import HostList
from .config.schema import DnsSettings, Settings, parse_dns_server
from .domain import normalize_domain
from .errors import ConfigError, DomainError
from .resolver import Resolver, install_spf_adapter

if TYPE_CHECKING:  # pragma: no cover
    from .config.antispam import AntispamTables
    from .sealing import Sealer
    from .signing import Signer
    from .srs import SrsRules
    from .store import Store

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
    # Shared state (store/): None unless a feature needs it. The object is per process
    # and connects lazily, so a runtime loaded before fork is safe to inherit.
    store: Store | None = None
    # SRS codec and rules ([srs] enabled), secrets read once; None when off.
    srs: SrsRules | None = None
    # [greylist] allow lists and [dnsbl]/[dnswl] zones; None when all three are off.
    antispam: AntispamTables | None = None
    # ARC sealing keys ([arc] sealing_table), parsed once; None when sealing is off.
    sealer: Sealer | None = None
    # [arc] trusted_sealers, normalised.
    trusted_sealers: frozenset[str] = frozenset()
    hostname: str = field(default_factory=socket.getfqdn)
    loaded_at: float = field(default_factory=time.time)

    @classmethod
    def load(cls, settings: Settings) -> Runtime:
        """Build everything once; raises ConfigError / KeyError_ naming file, key and reason."""
        file = settings.source
        install_spf_adapter()
        resolver = resolver_for(settings.dns)
        signer = None
        if settings.signing.enabled and settings.signing.key_table:
            from .signing import Signer

            signer = Signer.from_settings(settings.signing, source=file)
        internal = signer.internal_hosts if signer is not None else \
            HostList.load(settings.signing.internal_hosts, source=file, setting="signing.internal_hosts")
        relays = HostList.load(settings.verify.trusted_relays, source=file, setting="verify.trusted_relays",
                               addresses_only=True)
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
        store = None
        if store_needed(settings):
            from .store import open_store

            store = open_store(settings.store, file)
        sealer = None
        if arc_sealing(settings):
            from .sealing import Sealer

            sealer = Sealer.from_settings(settings, signer)
        trusted_sealers = frozenset(normalize_domain(d) for d in settings.arc.trusted_sealers)
        return cls(settings=settings, resolver=resolver, signer=signer, internal_hosts=internal,
                   trusted_relays=relays, forwarders=forwarders, own_domains=frozenset(own), psl=psl,
                   store=store, srs=load_srs(settings), antispam=load_antispam(settings), sealer=sealer,
                   trusted_sealers=trusted_sealers)

    def init_store(self) -> None:
        """Create or migrate the store's schema now (the master, at start, before forking).

        A file that cannot be created or a schema newer than this program stops start-up
        (ConfigError naming store.url). A PostgreSQL server that cannot be reached only
        warns: the workers retry, and one database outage must not stop mail on every MX.
        """
        from .store import StoreError

        if self.store is None:
            return
        from .store import prepare_journal

        prepare_journal(self.settings.store, self.settings.source)   # ConfigError naming store.journal_dir
        try:
            self.store.init()  # type: ignore[attr-defined]
        except StoreError as exc:
            if not exc.transient:
                raise ConfigError(self.settings.source, "store.url", str(exc)) from None
            import logging

            logging.getLogger("authmilter.store").warning("store not reachable at start (workers retry): %s", exc)

    def authserv_id(self, mta_j: str = "") -> str:
        return self.settings.authserv_id or mta_j or self.hostname


def store_needed(settings: Settings) -> bool:
    """Whether this configuration uses the store. Features that keep state (reports,
    greylisting) add their switch here; with none on, nothing is opened or created, so
    a host without /var/lib/authmilter runs as before."""
    return settings.store.enabled or settings.reports.enabled or settings.greylist.enabled


def recipients_needed(settings: Settings) -> bool:
    """Whether a feature reads the envelope recipients (SRS, greylisting add their switch
    here). Without one, RCPT is not even sent to us (SMFIP_NORCPT): each recipient would
    cost the MTA two packets and a worker a callback."""
    return settings.srs.enabled or rcpt_reply_needed(settings) or settings.greylist.enabled or arc_sealing(settings)


def arc_sealing(settings: Settings) -> bool:
    """ARC sealing is configured: a sealing_table and a place to seal (inbound, or mail
    re-submitted with our Authentication-Results). The key follows the recipient domain."""
    a = settings.arc
    return bool(a.sealing_table) and (a.seal_inbound or a.seal_resubmitted)


def antispam_enabled(settings: Settings) -> bool:
    """Greylisting or a DNS list is configured."""
    return settings.greylist.enabled or bool(settings.dnsbl.zones) or bool(settings.dnswl.zones)


def rcpt_reply_needed(settings: Settings) -> bool:
    """Whether RCPT may be answered with something other than "continue": greylisting
    at RCPT, or a blocklist that rejects or tempfails there. Then RCPT must not be
    negotiated no-reply (SMFIP_NR_RCPT)."""
    g = settings.greylist
    return ((g.enabled and g.stage == "rcpt") or (bool(settings.dnsbl.zones) and settings.dnsbl.action != "header")
            or spf_at_rcpt(settings))


def spf_at_rcpt(settings: Settings) -> bool:
    """The SPF rules answer RCPT (``[policy] spf_reject_stage = "rcpt"``, as policyd-spf)."""
    p = settings.policy
    return settings.verify.enabled and p.spf_reject_stage == "rcpt" and (p.reject_spf_fail or bool(p.reject_helo_spf))


def load_antispam(settings: Settings) -> AntispamTables | None:
    """``[greylist]`` allow-list files and ``[dnsbl]``/``[dnswl]`` zones, read once."""
    if not antispam_enabled(settings):
        return None
    from .config.antispam import AntispamTables

    return AntispamTables.load(settings)


def envelope_edits_needed(settings: Settings) -> bool:
    """Whether a feature changes the envelope (SRS: smfi_chgfrom, smfi_delrcpt/addrcpt);
    only then are those milter actions requested."""
    return settings.srs.enabled


def load_srs(settings: Settings) -> SrsRules | None:
    """``[srs]``: the secrets (one per line, the first signs) and the two domain lists in
    the host-list grammar (names, ``.domain``, ``file:``). ConfigError names the key."""
    from .srs import SrsCodec, SrsRules, read_secrets

    srs, file = settings.srs, settings.source
    if not srs.enabled:
        return None
    try:
        with open(srs.secret_file, encoding="utf-8", errors="surrogateescape") as fh:
            secrets = read_secrets(fh.read())
    except OSError as exc:
        raise ConfigError(file, "srs.secret_file", f"cannot read {srs.secret_file}: {exc.strerror}") from None
    if not secrets:
        raise ConfigError(file, "srs.secret_file", f"{srs.secret_file} holds no secret")
    local = HostList.load(srs.local_domains, source=file, setting="srs.local_domains")
    exclude = HostList.load(srs.exclude_domains, source=file, setting="srs.exclude_domains")
    codec = SrsCodec(normalize_domain(srs.domain), secrets, max_age_days=srs.max_age_days)
    return SrsRules(codec, is_local=local.contains_host, is_excluded=exclude.contains_host)


def resolver_for(dns: DnsSettings) -> Resolver:
    """The resolver ``[dns]`` describes (the resolver itself knows nothing of config)."""
    return Resolver(servers=[parse_dns_server(s) for s in dns.servers], timeout_s=dns.timeout_s,
                    cache_entries=dns.cache_entries, max_ttl_s=dns.max_ttl_s, negative_ttl_s=dns.negative_ttl_s,
                    derived_entries=dns.result_cache_entries, dnssec=dns.dnssec != "ignore")


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
