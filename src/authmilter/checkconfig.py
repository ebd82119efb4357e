"""`authmilter check-config`: validate everything start-up would load, print the MTA lines."""
from __future__ import annotations

import argparse
import sys

from .config.postfix import PostfixLayout, debian_default, milter_value, read_layout
from .config.schema import Settings, load_settings
from .config.sendmail import mc_lines as sendmail_mc_lines
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
    settings, runtime = load_runtime_or_explain(args.config)
    if runtime is None or settings is None:
        return 1
    signer = runtime.signer
    print(f"{args.config}: OK")
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
