"""Command line: authmilter COMMAND [OPTIONS].

The command names and flags are a public interface (admins script against them):
run | demo | check-config | genkey | testkey | import-opendkim | import-opendmarc | import-policyd-spf |
import-postgrey | which-key | verify | analyze | store | reports | man. Each command lives in the module that owns its subject; this file only
parses. Every subcommand and option carries help text in plain words (no markup): the same text is
--help and the authmilter(8) man page (authmilter.manpage), and tests/unit/test_cli_help.py checks both.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .config.schema import DEFAULT_CONFIG_PATH

DESCRIPTION = ("One milter for Postfix and Sendmail: DKIM signing; SPF, DKIM, DMARC and ARC checks; "
               "ARC sealing, SRS, greylisting, DNS lists and DMARC reports.")

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
    "man": "authmilter.manpage:cmd_man",
}

# Documented exit statuses (--help epilog and the man page's EXIT STATUS). The numbers are
# the handlers' own (verify.EXIT_FOR, keys.EXIT_*, milter.server.EXIT_CONFIG); test_cli_help checks
# they agree. -1 marks a note rather than a status.
EXIT_STATUS: dict[str, tuple[tuple[int, str], ...]] = {
    "run": ((0, "stopped by SIGTERM or SIGINT"), (1, "could not start (socket, privileges)"),
            (78, "the configuration was refused (EX_CONFIG; systemd does not restart on it)")),
    "check-config": ((0, "the configuration is usable and the printed MTA lines are valid"),
                     (1, "a configuration error (printed with file, key and reason)")),
    "testkey": ((0, "the key is published and matches"), (2, "usage or configuration error"),
                (3, "no record published"), (4, "the published key does not match the private key"),
                (5, "key revoked (empty p=)"), (6, "weak key (RSA below 1024 bits)"), (7, "DNS temporary failure"),
                (8, "record syntax error"), (9, "private key unreadable or unsafe"),
                (-1, "with --all: the highest status over all keys")),
    "verify": ((0, "accept"), (3, "quarantine"), (4, "reject"), (5, "tempfail"),
               (2, "error: unreadable message or configuration")),
}
# import-opendkim, import-opendmarc, import-policyd-spf: migrate_common.run_import
_IMPORT_EXIT = ((0, "written"), (1, "written, but something must be fixed before authmilter starts (listed)"),
                (2, "nothing written: a file of another kind, unreadable or invalid input, or an invalid result"))
EXIT_STATUS.update({name: _IMPORT_EXIT for name in ("import-opendkim", "import-opendmarc", "import-policyd-spf")})


def _exit_epilog(command: str) -> str:
    return "exit status: " + ", ".join(f"{code} {what}" if code >= 0 else what for code, what in EXIT_STATUS[command])


def _config_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("-c", "--config", default=None if required else DEFAULT_CONFIG_PATH,
                   required=required, metavar="FILE", help=f"config file (default {DEFAULT_CONFIG_PATH})")


def _command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str,
             epilog: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose one-line help (the command list) is also its description (its --help)."""
    return sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".", epilog=epilog)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authmilter", description=DESCRIPTION,
                                     epilog="authmilter COMMAND --help describes each command; "
                                            "man authmilter and man authmilter.toml have the whole reference.")
    parser.add_argument("--version", action="version", version=f"authmilter {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    p = _command(sub, "run", "run the milter in the foreground (what the systemd unit starts)",
                 epilog=_exit_epilog("run"))
    _config_arg(p)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="override the number of worker processes (the config's workers)")
    p.add_argument("--socket", default=None, metavar="SPEC",
                   help="override the config's socket: unix:/path, inet:PORT@HOST or inet6:PORT@HOST")

    p = _command(sub, "demo", "run on the embedded demo configuration (what make run does)")
    p.add_argument("--dir", default=".", help="repository directory holding keys/ and run/ (default .)")
    p.add_argument("--socket", default=None, metavar="SPEC", help="socket (default unix:DIR/run/authmilter.sock)")
    p.add_argument("--print-only", action="store_true", help="set up and print, but do not start")

    p = _command(sub, "check-config", "validate a config as run would, as its user; print the MTA lines to use",
                 epilog=_exit_epilog("check-config"))
    _config_arg(p)
    p.add_argument("--postfix-config", default=None, metavar="DIR",
                   help="the Postfix whose master.cf chroot settings decide the printed lines "
                        "(default: postconf's own, $MAIL_CONFIG or /etc/postfix)")

    p = _command(sub, "genkey", "generate a DKIM key pair and its DNS record (opendkim-genkey's flags)")
    p.add_argument("-d", "--domain", required=True, help="the signing domain (d=)")
    p.add_argument("-s", "--selector", default="default",
                   help="the selector (s=); writes SELECTOR.private and SELECTOR.txt (default: default)")
    p.add_argument("-b", "--bits", type=int, default=2048, help="RSA key size in bits (default 2048)")
    p.add_argument("--type", choices=("rsa", "ed25519"), default="rsa", help="key algorithm (default rsa)")
    p.add_argument("-D", "--directory", default=".", metavar="DIR",
                   help="where to write the two files (default the current directory)")
    p.add_argument("-t", "--testmode", action="store_true", help="publish t=y in the record")
    p.add_argument("-r", "--restrict", action="store_true", help="publish s=email in the record")

    p = _command(sub, "testkey", "check published DKIM records against private keys", epilog=_exit_epilog("testkey"))
    p.add_argument("-d", "--domain", help="the signing domain of the key to check")
    p.add_argument("-s", "--selector", help="the selector of the key to check")
    p.add_argument("-k", "--keyfile", metavar="FILE", help="the private key file to compare with the record")
    p.add_argument("--all", action="store_true", help="check every KeyTable entry of the config")
    p.add_argument("-v", "--verbose", action="store_true", help="also report the keys that are fine (default: only problems are printed)")
    _config_arg(p)

    # -- migration: OpenDKIM, OpenDMARC, policyd-spf (one config, merged with -c) and postgrey --
    def _import_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("-o", "--output", default="-", metavar="FILE",
                       help="write the authmilter TOML here (default stdout); may be the -c file itself")
        p.add_argument("-c", "--config", default=None, metavar="EXISTING",
                       help="merge into this existing authmilter config (validated first) instead of starting "
                            "from the defaults; run the importers one after another on the same file")
        p.add_argument("--prefer-imported", action="store_true",
                       help="where the existing config sets a key differently, take the imported value "
                            "(default: keep the existing one; every conflict is listed either way)")

    p = _command(sub, "import-opendkim", "write (or merge into) an authmilter config equivalent to an opendkim.conf",
                 epilog=_exit_epilog("import-opendkim"))
    p.add_argument("opendkim_conf", nargs="?", default="/etc/opendkim.conf", metavar="OPENDKIM_CONF",
                   help="the opendkim.conf(5) to read (default /etc/opendkim.conf)")
    _import_args(p)
    p.add_argument("--defaults", default=None, metavar="FILE",
                   help="Debian's /etc/default/opendkim (its SOCKET overrides Socket); read by default "
                        "when importing /etc/opendkim.conf")

    p = _command(sub, "import-opendmarc", "write (or merge into) an authmilter config equivalent to an "
                                          "opendmarc.conf", epilog=_exit_epilog("import-opendmarc"))
    p.add_argument("opendmarc_conf", nargs="?", default="/etc/opendmarc.conf", metavar="OPENDMARC_CONF",
                   help="the opendmarc.conf(5) to read (default /etc/opendmarc.conf)")
    _import_args(p)

    p = _command(sub, "import-policyd-spf", "write (or merge into) an authmilter config equivalent to a "
                                            "policyd-spf.conf (postfix-policyd-spf-python)",
                 epilog=_exit_epilog("import-policyd-spf"))
    p.add_argument("policyd_spf_conf", nargs="?", default="/etc/postfix-policyd-spf-python/policyd-spf.conf",
                   metavar="POLICYD_SPF_CONF",
                   help="the policyd-spf.conf(5) to read (default /etc/postfix-policyd-spf-python/policyd-spf.conf)")
    _import_args(p)

    p = _command(sub, "import-postgrey", "write a [greylist] section equivalent to a postgrey setup")
    p.add_argument("defaults", nargs="?", default="/etc/default/postgrey", metavar="DEFAULTS",
                   help="the file setting POSTGREY_OPTS (default /etc/default/postgrey)")
    p.add_argument("-o", "--output", default="-", metavar="FILE", help="output file (default stdout)")

    p = _command(sub, "which-key", "show which key(s) would sign mail From this address, and why")
    p.add_argument("from_address", metavar="FROM_ADDRESS", help="the From address of the mail to sign")
    p.add_argument("--sasl-user", default="", metavar="USER", help="also apply the authenticated-user restriction")
    _config_arg(p)

    p = _command(sub, "verify", "run the inbound checks offline on a stored message (no private keys needed)",
                 epilog=_exit_epilog("verify"))
    p.add_argument("file", nargs="?", default="-", metavar="FILE", help="message file (default stdin)")
    p.add_argument("--client-ip", default="", metavar="IP",
                   help="the connecting client's address, for SPF (without it SPF is not checked)")
    p.add_argument("--helo", default="", metavar="NAME", help="the client's HELO name, for the SPF HELO check")
    p.add_argument("--mail-from", default=None, metavar="ADDRESS",
                   help="envelope sender (default: Return-Path of the message)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _config_arg(p)

    p = _command(sub, "analyze", "read a message's Received path and verdicts; find where authentication broke")
    p.add_argument("file", nargs="?", default="-", metavar="FILE",
                   help="message file, mbox From line allowed (default stdin)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-c", "--config", default=None, metavar="FILE",
                   help="recognise this server's relays (internal_hosts, trusted_relays) from this config; "
                        "with --dns, also its [dns] servers and timeout")
    p.add_argument("--dns", action="store_true",
                   help="look up SPF (for the origin address), the DKIM keys and DMARC now, with their DNSSEC "
                        "status (default: offline, no DNS)")
    p.add_argument("--dns-server", default=None, metavar="HOST[:PORT]",
                   help="ask this resolver (implies --dns; default: the config's [dns] servers, else the system's)")

    p = _command(sub, "store", "create or migrate the store's schema (init); count its rows (status)")
    p.add_argument("action", choices=("init", "status"), metavar="ACTION",
                   help="init: create or migrate the tables; status: count the rows in each")
    _config_arg(p)

    p = _command(sub, "reports", "DMARC aggregate reports: build and mail them (send); list pending and "
                                 "suppressed destinations (show)")
    p.add_argument("action", choices=("send", "show"), metavar="ACTION",
                   help="send: report every closed window; show: list pending and suppressed destinations")
    _config_arg(p)
    p.add_argument("--dry-run", action="store_true", help="write the reports and mails to --outdir instead of sending")
    p.add_argument("--outdir", default=None, metavar="DIR", help="where --dry-run writes .xml.gz and .eml files")
    p.add_argument("--until", default=None, metavar="now|TIME",
                   help="report up to this time (now, epoch seconds or ISO 8601) instead of the last closed window")
    p.add_argument("--unsuppress", default=None, metavar="ADDRESS", help="show: send to a suppressed destination again")

    p = _command(sub, "man", "print a man page in roff: authmilter(8) or authmilter.toml(5)")
    p.add_argument("--section", choices=("8", "5"), default="8",
                   help="8: the commands (authmilter.8); 5: the configuration file (authmilter.toml.5) (default 8)")

    # A command added with sub.add_parser(name, help=...) alone still gets a description.
    for choice in sub._choices_actions:
        command = sub.choices[choice.dest]
        if not command.description and choice.help:
            command.description = choice.help[:1].upper() + choice.help[1:] + "."
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
