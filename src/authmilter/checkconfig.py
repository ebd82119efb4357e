"""`authmilter check-config`: validate everything start-up would load, print the MTA lines."""
from __future__ import annotations

import argparse
import sys

from .config.schema import Settings, load_settings
from .config.sockets import parse_socket
from .errors import AuthmilterError
from .runtime import Runtime


def load_runtime_or_explain(path: str, out=sys.stderr):  # type: ignore[no-untyped-def]
    """Load settings and the full runtime (tables, keys); print 'file: key: reason' on error."""
    try:
        settings = load_settings(path)
        return settings, Runtime.load(settings)
    except AuthmilterError as exc:
        print(f"authmilter: configuration error: {exc}", file=out)
        return None, None


def mta_lines(settings: Settings) -> list[str]:
    spec = parse_socket(settings.socket)
    postfix = spec.postfix()
    lines = [
        "# Postfix main.cf",
        f"smtpd_milters = {postfix}",
        f"non_smtpd_milters = {postfix}",
        "milter_default_action = tempfail",
        "milter_protocol = 6",
    ]
    if spec.family == "unix":
        lines.append("# a chrooted smtpd resolves the path inside its chroot (/var/spool/postfix):")
        lines.append("#   put the socket under /var/spool/postfix/... and name it relative to the chroot")
    if settings.srs.enabled and settings.srs.socketmap:
        # SRS for mail Postfix forwards through aliases (the milter never sees it expanded).
        srs = parse_socket(settings.srs.socketmap).postfix()
        lines += [f"sender_canonical_maps = socketmap:{srs}:forward",
                  "sender_canonical_classes = envelope_sender",
                  f"recipient_canonical_maps = socketmap:{srs}:reverse",
                  "recipient_canonical_classes = envelope_recipient, header_recipient"]
    lines += ["# Sendmail .mc",
              f"INPUT_MAIL_FILTER(`authmilter', `S={spec.sendmail()}, F=T, T=S:30s;R:2m;E:5m')"]
    return lines


def cmd_check_config(args: argparse.Namespace) -> int:
    settings, runtime = load_runtime_or_explain(args.config)
    if runtime is None or settings is None:
        return 1
    signer = runtime.signer
    print(f"{args.config}: OK")
    if signer is not None:
        print(f"signing domains: {', '.join(sorted(signer.domains)) or '(none)'}")
    print(f"dmarc mode: {settings.verify.dmarc_mode}; dns: {', '.join(settings.dns.servers) or 'system resolver'}")
    print()
    print("\n".join(mta_lines(settings)))
    return 0
