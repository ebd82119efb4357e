"""`authmilter check-config`: validate everything start-up would load, print the MTA lines."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from . import preflight
from .config.postfix import PostfixLayout, debian_default, milter_value, read_layout
from .config.schema import Settings, load_settings
from .config.sendmail import mc_lines as sendmail_mc_lines
from .config.sockets import parse_socket
from .errors import AuthmilterError, ConfigError
from .ops.privileges import PrivilegeError, becomer, resolve_user
from .runtime import Runtime


def becoming_the_user(settings: Settings) -> tuple[Callable[[], None] | None, list[str]]:
    """(how the checking child becomes the daemon's user, notes): what `run` does after
    binding — preload every module, then drop to user/group."""
    try:
        ids = resolve_user(settings.user, settings.group)
    except PrivilegeError as exc:
        raise ConfigError(settings.source, "user", str(exc)) from None
    if ids is None:
        return None, []
    if os.geteuid() != 0:
        if ids[0] == os.geteuid():
            return None, []
        return None, [f"note: not root, so keys and tables were checked as uid {os.geteuid()}, "
                      f"not as user {settings.user!r} (run check-config as root to check as that user)"]
    return becomer(ids), []


def mta_lines(settings: Settings, layout: PostfixLayout | None = None) -> tuple[list[str], list[str]]:
    """(lines to print, errors): the Postfix main.cf lines for *layout* (default: Debian's
    stock chroot settings) and the Sendmail line; an error names a socket Postfix cannot reach."""
    layout = layout or debian_default()
    spec = parse_socket(settings.socket)
    smtpd, smtpd_error = milter_value(spec, layout.smtpd_chroot, layout, "smtpd_milters")
    cleanup, cleanup_error = milter_value(spec, layout.cleanup_chroot, layout, "non_smtpd_milters")
    errors = [e for e in (smtpd_error, cleanup_error) if e]
    lines = [f"# Postfix main.cf ({layout.source}; queue_directory = {layout.queue_directory})"]
    if layout.assumed:
        # Without the real master.cf a mismatch is only likely, not known.
        lines += [f"# warning: {e}" for e in errors]
        errors = []
    if spec.family == "unix":
        lines.append(f"# smtpd {'chrooted' if layout.smtpd_chroot else 'not chrooted'}, "
                     f"cleanup (sendmail(1) mail) {'chrooted' if layout.cleanup_chroot else 'not chrooted'}")
    lines += [
        f"smtpd_milters = {smtpd}",
        f"non_smtpd_milters = {cleanup}",
        "milter_default_action = tempfail",
        "milter_protocol = 6",
    ]
    if settings.srs.enabled and not settings.srs.socketmap:
        # A DSN Postfix writes itself (the next hop refused mail whose sender we rewrote)
        # goes to the SRS address through bounce(8) and cleanup, which calls milters only
        # for these classes: without it that recipient is never restored. (With the
        # socketmap, recipient_canonical_maps restores it in cleanup.)
        lines.append("internal_mail_filter_classes = bounce")
    if settings.srs.enabled and settings.srs.socketmap:
        # SRS for mail Postfix forwards through aliases (the milter never sees it expanded);
        # cleanup(8) queries the canonical maps.
        srs, srs_error = milter_value(parse_socket(settings.srs.socketmap), layout.cleanup_chroot, layout,
                                      "sender_canonical_maps")
        if srs_error:
            (lines.append(f"# warning: {srs_error}") if layout.assumed else errors.append(srs_error))
        lines += [f"sender_canonical_maps = socketmap:{srs}:forward",
                  "sender_canonical_classes = envelope_sender",
                  f"recipient_canonical_maps = socketmap:{srs}:reverse",
                  "recipient_canonical_classes = envelope_recipient, header_recipient"]
    lines += ["# Sendmail .mc (before the MAILER lines; then rebuild sendmail.cf)", *sendmail_mc_lines(settings)]
    return lines, errors


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate as `run` would (as the configured user), then print the MTA lines."""
    try:
        settings = load_settings(args.config)
        become, notes = becoming_the_user(settings)
        problems = preflight.check(settings, become, settings.user)
        runtime = None if problems else Runtime.load(settings)
    except AuthmilterError as exc:
        print(f"authmilter: configuration error: {exc}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"authmilter: configuration error: {problem}", file=sys.stderr)
    if runtime is None:
        return 1
    for line in notes + [f"warning: {w}" for w in preflight.warnings(settings)]:
        print(f"authmilter: {line}", file=sys.stderr)
    signer = runtime.signer
    print(f"{args.config}: OK" + (f" (checked as user {settings.user})" if become is not None else ""))
    if signer is not None:
        print(f"signing domains: {', '.join(sorted(signer.domains)) or '(none)'}")
    print(f"dmarc mode: {settings.verify.dmarc_mode}; dns: {', '.join(settings.dns.servers) or 'system resolver'}")
    print()
    layout = read_layout(args.postfix_config)
    lines, errors = mta_lines(settings, layout)
    print("\n".join(lines))
    for error in errors:
        print(f"authmilter: configuration error: {error}", file=sys.stderr)
    return 1 if errors else 0
