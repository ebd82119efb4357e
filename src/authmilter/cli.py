"""Command line: ``authmilter COMMAND ...``.

The command names and flags are a public interface (admins script against them):
run | demo | check-config | genkey | testkey | import-opendkim | import-opendmarc |
import-policyd-spf | import-postgrey | which-key | verify | analyze | store | reports.
Each command lives in the module that owns its subject; this file only parses.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .config.schema import DEFAULT_CONFIG_PATH

# command -> "module:function"; the function takes the parsed Namespace, returns an exit code
HANDLERS: dict[str, str] = {
    "run": "authmilter.milter.server:cmd_run",
    "demo": "authmilter.demo:cmd_demo",
    "check-config": "authmilter.checkconfig:cmd_check_config",
    "genkey": "authmilter.keys:cmd_genkey",
    "testkey": "authmilter.keys:cmd_testkey",
    "import-opendkim": "authmilter.migrate:cmd_import_opendkim",
    "import-opendmarc": "authmilter.migrate_opendmarc:cmd_import_opendmarc",
    "import-policyd-spf": "authmilter.migrate_policyd_spf:cmd_import_policyd_spf",
    "import-postgrey": "authmilter.config.postgrey:cmd_import_postgrey",
    "which-key": "authmilter.migrate:cmd_which_key",
    "verify": "authmilter.verify:cmd_verify",
    "analyze": "authmilter.analyze.command:cmd_analyze",
    "store": "authmilter.store.admin:cmd_store",
    "reports": "authmilter.reports.command:cmd_reports",
}


def _config_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("-c", "--config", default=None if required else DEFAULT_CONFIG_PATH,
                   required=required, metavar="FILE", help=f"config file (default {DEFAULT_CONFIG_PATH})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authmilter", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"authmilter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the milter in the foreground")
    _config_arg(p)
    p.add_argument("--workers", type=int, default=None, help="override the number of worker processes")
    p.add_argument("--socket", default=None, help="override the socket from the config")

    p = sub.add_parser("demo", help="run on the embedded demo configuration (what `make run` does)")
    p.add_argument("--dir", default=".", help="repository directory holding keys/ and run/ (default .)")
    p.add_argument("--socket", default=None, help="socket (default unix:DIR/run/authmilter.sock)")
    p.add_argument("--print-only", action="store_true", help="set up and print, but do not start")

    p = sub.add_parser("check-config", help="validate a config; print the Postfix lines to use")
    _config_arg(p)
    p.add_argument("--postfix-config", default=None, metavar="DIR",
                   help="the Postfix whose master.cf chroot settings decide the printed lines "
                        "(default: postconf's own, $MAIL_CONFIG or /etc/postfix)")

    p = sub.add_parser("genkey", help="generate a DKIM key pair (opendkim-genkey flags)")
    p.add_argument("-d", "--domain", required=True)
    p.add_argument("-s", "--selector", default="default")
    p.add_argument("-b", "--bits", type=int, default=2048)
    p.add_argument("--type", choices=("rsa", "ed25519"), default="rsa")
    p.add_argument("-D", "--directory", default=".")
    p.add_argument("-t", "--testmode", action="store_true", help="publish t=y in the record")
    p.add_argument("-r", "--restrict", action="store_true", help="publish s=email in the record")

    p = sub.add_parser("testkey", help="check published DKIM records against private keys")
    p.add_argument("-d", "--domain")
    p.add_argument("-s", "--selector")
    p.add_argument("-k", "--keyfile")
    p.add_argument("--all", action="store_true", help="check every KeyTable entry of the config")
    p.add_argument("-v", "--verbose", action="store_true")
    _config_arg(p)

    # -- migration from OpenDKIM, OpenDMARC, policyd-spf and postgrey -----------------------
    def _import_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("-o", "--output", default="-", metavar="FILE",
                       help="write the authmilter TOML here (default stdout); may be the -c file itself")
        p.add_argument("-c", "--config", default=None, metavar="EXISTING",
                       help="merge into this existing authmilter config (validated first) instead of starting "
                            "from the defaults; run the importers one after another on the same file")
        p.add_argument("--prefer-imported", action="store_true",
                       help="where the existing config sets a key differently, take the imported value "
                            "(default: keep the existing one; every conflict is listed either way)")

    p = sub.add_parser("import-opendkim", help="write (or merge into) an authmilter config equivalent to an "
                                               "opendkim.conf")
    p.add_argument("opendkim_conf", nargs="?", default="/etc/opendkim.conf",
                   help="the opendkim.conf to read (default /etc/opendkim.conf)")
    _import_args(p)
    p.add_argument("--defaults", default=None, metavar="FILE",
                   help="Debian's /etc/default/opendkim (its SOCKET overrides Socket); read by default "
                        "when importing /etc/opendkim.conf")

    p = sub.add_parser("import-opendmarc", help="write (or merge into) an authmilter config equivalent to an "
                                                "opendmarc.conf")
    p.add_argument("opendmarc_conf", nargs="?", default="/etc/opendmarc.conf",
                   help="the opendmarc.conf to read (default /etc/opendmarc.conf)")
    _import_args(p)

    p = sub.add_parser("import-policyd-spf", help="write (or merge into) an authmilter config equivalent to a "
                                                  "policyd-spf.conf (postfix-policyd-spf-python)")
    p.add_argument("policyd_spf_conf", nargs="?", default="/etc/postfix-policyd-spf-python/policyd-spf.conf",
                   help="the policyd-spf.conf to read (default /etc/postfix-policyd-spf-python/policyd-spf.conf)")
    _import_args(p)

    p = sub.add_parser("import-postgrey", help="write a [greylist] section equivalent to a postgrey setup")
    p.add_argument("defaults", nargs="?", default="/etc/default/postgrey",
                   help="the file setting POSTGREY_OPTS (default /etc/default/postgrey)")
    p.add_argument("-o", "--output", default="-", help="output file (default stdout)")

    p = sub.add_parser("which-key", help="show which key(s) would sign mail From this address, and why")
    p.add_argument("from_address")
    p.add_argument("--sasl-user", default="", help="also apply the authenticated-user restriction")
    _config_arg(p)

    p = sub.add_parser("verify", help="run the inbound pipeline offline on a stored message",
                       epilog="exit status: 0 accept, 3 quarantine, 4 reject, 5 tempfail, 2 error")
    p.add_argument("file", nargs="?", default="-", help="message file (default stdin)")
    p.add_argument("--client-ip", default="")
    p.add_argument("--helo", default="")
    p.add_argument("--mail-from", default=None, help="envelope sender (default: Return-Path of the message)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _config_arg(p)

    p = sub.add_parser("analyze", help="read a message's Received path and verdicts; find where authentication broke")
    p.add_argument("file", nargs="?", default="-", help="message file, mbox From line allowed (default stdin)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-c", "--config", default=None, metavar="FILE",
                   help="recognise this server's relays (internal_hosts, trusted_relays) from this config")

    p = sub.add_parser("store", help="create or migrate the store's schema (init); count its rows (status)")
    p.add_argument("action", choices=("init", "status"))
    _config_arg(p)

    p = sub.add_parser("reports", help="DMARC aggregate reports: build and mail them (send); list pending and "
                                       "suppressed destinations (show)")
    p.add_argument("action", choices=("send", "show"))
    _config_arg(p)
    p.add_argument("--dry-run", action="store_true", help="write the reports and mails to --outdir instead of sending")
    p.add_argument("--outdir", default=None, metavar="DIR", help="where --dry-run writes .xml.gz and .eml files")
    p.add_argument("--until", default=None, metavar="now|TIME",
                   help="report up to this time (now, epoch seconds or ISO 8601) instead of the last closed window")
    p.add_argument("--unsuppress", default=None, metavar="ADDRESS", help="show: send to a suppressed destination again")
    return parser


def _resolve(target: str) -> Callable[[argparse.Namespace], int]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _resolve(HANDLERS[args.command])
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
