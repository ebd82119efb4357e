"""``authmilter analyze FILE|- [--json] [-c CONFIG] [--dns [--dns-server HOST[:PORT]]]``:
read the file, optionally the config (to recognise this server's own relays, and for
``--dns`` its ``[dns]`` servers and timeout), print the analysis.

Offline unless ``--dns`` is given: then SPF, the DKIM keys and DMARC are looked up
(`dnscheck`) through ``--dns-server``, else the config's ``[dns] servers``, else the
system's resolver, always asking for DNSSEC.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import dns.exception

from ..cliinput import read_message_arg
from ..config.hostlist import HostList
from ..config.schema import Settings, load_settings, parse_dns_server
from ..errors import AuthmilterError
from ..resolver import Resolver
from .core import analyze, read_message
from .dnscheck import DnsReport, lookup_all
from .render import as_json, as_text

DNS_BUDGET_S = 60.0        # all lookups of one analysis together (each one: [dns] timeout_s)


def _own_relays(settings: Settings) -> Callable[[str], bool]:
    """This server's relays per the config: ``verify.trusted_relays`` and
    ``signing.internal_hosts`` (matched by address, through the one host-list grammar)."""
    relays = HostList.load(settings.verify.trusted_relays, source=settings.source,
                           setting="verify.trusted_relays", addresses_only=True)
    internal = HostList.load(settings.signing.internal_hosts, source=settings.source,
                             setting="signing.internal_hosts")
    return lambda ip: relays.contains_ip(ip) or internal.contains_ip(ip)


def _resolver(args: argparse.Namespace, settings: Settings | None) -> tuple[Resolver, str]:
    timeout = settings.dns.timeout_s if settings is not None else 5.0
    if args.dns_server:
        try:
            servers = [parse_dns_server(args.dns_server)]
        except ValueError as exc:
            raise AuthmilterError(f"--dns-server {args.dns_server!r}: {exc}") from None
    elif settings is not None and settings.dns.servers:
        servers = [parse_dns_server(s) for s in settings.dns.servers]
    else:
        servers = []
    label = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in servers) or "the system's resolver"
    try:
        return Resolver(servers=servers, timeout_s=timeout, cache_entries=1000, dnssec=True), label
    except (dns.exception.DNSException, OSError) as exc:
        raise AuthmilterError(f"no resolver to ask: {exc}") from None


def cmd_analyze(args: argparse.Namespace) -> int:
    own: Callable[[str], bool] | None = None
    trusted: tuple[str, ...] = ()
    settings: Settings | None = None
    want_dns = bool(getattr(args, "dns", False) or getattr(args, "dns_server", None))
    try:
        if args.config:
            settings = load_settings(args.config)
            own, trusted = _own_relays(settings), settings.verify.trusted_relays
        resolver = _resolver(args, settings) if want_dns else None
        raw = read_message_arg(args.file)
    except AuthmilterError as exc:
        print(f"authmilter: {exc}", file=sys.stderr)
        return 2
    result = analyze(raw, own_relay=own, trusted_relays=trusted)
    report: DnsReport | None = None
    if resolver is not None:
        res, label = resolver
        report = lookup_all(read_message(raw), result, res.budget(DNS_BUDGET_S), resolver_label=label,
                            require_dnssec=settings is not None and settings.dns.dnssec == "require-for-keys")
    if args.json:
        print(json.dumps(as_json(result, report), indent=2))
    else:
        sys.stdout.write(as_text(result, report))
    return 0
