"""``authmilter analyze FILE|- [--json] [-c CONFIG]``: read the file, optionally the
config (to recognise this server's own relays), print the analysis. Offline: no DNS."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from ..config.hostlist import HostList
from ..config.schema import load_settings
from ..errors import AuthmilterError
from .core import analyze
from .render import as_json, as_text


def _own_relays(path: str) -> tuple[Callable[[str], bool], tuple[str, ...]]:
    """This server's relays per the config: ``verify.trusted_relays`` and
    ``signing.internal_hosts`` (matched by address, through the one host-list grammar)."""
    settings = load_settings(path)
    relays = HostList.load(settings.verify.trusted_relays, source=settings.source,
                           setting="verify.trusted_relays", addresses_only=True)
    internal = HostList.load(settings.signing.internal_hosts, source=settings.source,
                             setting="signing.internal_hosts")
    return (lambda ip: relays.contains_ip(ip) or internal.contains_ip(ip)), settings.verify.trusted_relays


def cmd_analyze(args: argparse.Namespace) -> int:
    own: Callable[[str], bool] | None = None
    trusted: tuple[str, ...] = ()
    try:
        if args.config:
            own, trusted = _own_relays(args.config)
        if args.file == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as fh:
                raw = fh.read()
    except AuthmilterError as exc:
        print(f"authmilter: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"authmilter: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    result = analyze(raw, own_relay=own, trusted_relays=trusted)
    if args.json:
        print(json.dumps(as_json(result), indent=2))
    else:
        sys.stdout.write(as_text(result))
    return 0
