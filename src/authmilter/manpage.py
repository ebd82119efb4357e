"""Man pages in roff, generated from the sources --help and the config loader use.

authmilter(8) walks cli.build_parser() (every subcommand with its options and help) and
cli.EXIT_STATUS; authmilter.toml(5) walks config/schema.Settings (every section and key
with its type, default, choices and doc metadata). The Debian package installs what
``authmilter man --section 8|5`` prints, so the pages cannot drift from the program.

The date in the header is SOURCE_DATE_EPOCH when set (reproducible builds), else today.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from . import __version__
from .config import tomlwrite
from .config.schema import DEFAULT_CONFIG_PATH, RELOAD_GUARDED, Settings

FILES = (
    (DEFAULT_CONFIG_PATH, "the configuration (authmilter.toml(5)); a conffile of the Debian package"),
    ("/etc/authmilter/keys/", "a place for the private DKIM keys named by the KeyTable (mode 0600, owned by the "
                              "configured user)"),
    ("/run/authmilter/authmilter.sock", "the default milter socket, for an MTA that is not chrooted"),
    ("/var/spool/postfix/authmilter/authmilter.sock", "the socket for Debian's Postfix, whose smtpd and cleanup run "
                                                      "chrooted in /var/spool/postfix (main.cf: "
                                                      "unix:authmilter/authmilter.sock)"),
    ("/var/lib/authmilter/", "state: the SQLite store and its journal"),
    ("/lib/systemd/system/authmilter.service", "the systemd unit (runs check-config, then run)"),
    ("/usr/lib/tmpfiles.d/authmilter.conf", "creates the two socket directories and the state directory at boot"),
)

SEE_ALSO = ("authmilter.toml(5)", "postconf(5)", "master(5)", "postqueue(1)", "systemd-tmpfiles(8)")


# ---------------------------------------------------------------------------------------
# roff


def esc(text: str) -> str:
    """Plain text -> roff text: backslashes escaped, no line may start a request."""
    text = text.replace("\\", "\\e")
    return "\n".join(("\\&" + line) if line[:1] in (".", "'") else line for line in text.split("\n"))


def opt(text: str) -> str:
    """An option, command or other literal: every '-' a real minus, so it can be copied."""
    return esc(text).replace("-", "\\-")


def prose(text: str) -> str:
    """A doc string: `literal` spans in bold, options (--x, -x) with real minus signs."""
    parts = re.split(r"`([^`]+)`", text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append("\\fB" + opt(part) + "\\fR")
        else:
            out.append(re.sub(r"(?<![\w-])(--?[A-Za-z][\w-]*)", lambda m: opt(m.group(1)), esc(part)))
    return "".join(out)


def _header(title: str, section: str, manual: str) -> list[str]:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    stamp = time.gmtime(int(epoch)) if epoch and epoch.isdigit() else time.gmtime()
    date = time.strftime("%Y-%m-%d", stamp)
    # .nh/.ad l: no hyphenation, ragged right (paths and keys must not be split or stretched)
    return [f'.TH {title} {section} "{date}" "authmilter {__version__}" "{manual}"', ".nh", ".ad l"]


# ---------------------------------------------------------------------------------------
# authmilter(8)


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) in the order cli.py defines them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, helps.get(name, ""), p) for name, p in action.choices.items()]
    return []


def _synopsis(parser: argparse.ArgumentParser) -> str:
    """The usage line in roff; a line may break between [options], never inside one."""
    usage = " ".join(parser.format_usage().removeprefix("usage: ").split())
    usage = re.sub(r"\[[^\]]*\]|\{[^}]*\}", lambda m: m.group(0).replace(" ", "\x00"), usage)
    return opt(usage).replace("\x00", "\\ ")


def _option_label(action: argparse.Action) -> str:
    if not action.option_strings:
        return "\\fI" + opt(action.metavar or action.dest) + "\\fR"   # type: ignore[arg-type]
    takes = action.nargs != 0
    metavar = action.metavar or (action.dest.upper() if takes else "")
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if action.choices and not action.metavar:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    names = ", ".join("\\fB" + opt(o) + "\\fR" for o in action.option_strings)
    return names + (" \\fI" + opt(str(metavar)) + "\\fR" if takes and metavar else "")


def help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """An option's help as --help prints it (%(default)s and the like expanded)."""
    return parser._get_formatter()._expand_help(action) if action.help else ""


def _options(parser: argparse.ArgumentParser) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        out += [".TP", _option_label(action), prose(help_text(parser, action))]
        if action.choices and action.metavar:
            out[-1] += " (one of: " + ", ".join(opt(str(c)) for c in action.choices) + ")"
    return out


def page8() -> str:
    from .cli import DESCRIPTION, EXIT_STATUS, build_parser

    parser = build_parser()
    commands = _subcommands(parser)
    out = _header("AUTHMILTER", "8", "System Administration")
    out += [".SH NAME", "authmilter \\- email authentication milter for Postfix and Sendmail (DKIM, SPF, DMARC, ARC)"]
    out += [".SH SYNOPSIS", ".B authmilter", ".I COMMAND", "[\\fIOPTIONS\\fR]", ".br",
            ".B authmilter", "\\fICOMMAND\\fR \\fB\\-\\-help\\fR", ".br", ".B authmilter \\-\\-version"]
    out += [".SH DESCRIPTION", esc(DESCRIPTION), ".PP",
            "Outbound mail (SASL-authenticated clients, internal_hosts, the submission service, mail from "
            "sendmail(1)) is signed with the keys an OpenDKIM KeyTable and SigningTable choose; inbound mail "
            "is checked and gets one Authentication-Results header; the policy decides at end-of-message "
            "whether to accept, quarantine (Postfix hold queue), reject or tempfail. Nothing is discarded.",
            ".PP",
            "The configuration is described in \\fBauthmilter.toml\\fR(5). "
            "\\fBauthmilter check-config\\fR validates it as \\fBrun\\fR would, as the configured user, and "
            "prints the \\fBsmtpd_milters\\fR and \\fBnon_smtpd_milters\\fR lines for the running Postfix "
            "(relative to the queue directory for chrooted services) and the lines for sendmail.mc."]
    out += [".SH COMMANDS"]
    for name, helptext, sub in commands:
        out += [".SS " + opt(name), _synopsis(sub), ".PP", prose(sub.description or helptext)]
        out += _options(sub)
        if sub.epilog and name not in EXIT_STATUS:
            out += [".PP", prose(sub.epilog)]
    out += [".SH OPTIONS", "Before the command:"]
    out += _options(parser)
    out += [".TP", "\\fB\\-h\\fR, \\fB\\-\\-help\\fR", "print the help (of the command, after one) and exit"]
    out += [".SH EXIT STATUS", "Commands not listed exit 0 on success and non-zero on any error, "
            "with a message on standard error."]
    for name, codes in EXIT_STATUS.items():
        out += [".SS " + opt(name)]
        for code, what in codes:
            if code < 0:
                out += [".PP", prose(what)]
            else:
                out += [".TP", f"\\fB{code}\\fR", prose(what)]
    out += [".SH SIGNALS", "Sent to the master process of \\fBauthmilter run\\fR:",
            ".TP", "\\fBSIGUSR1\\fR, \\fBSIGHUP\\fR",
            "reload: the configuration, tables and keys are loaded and checked; if valid, every worker swaps "
            "to them (open connections finish with the old ones); if not, the old configuration stays and the "
            "error is logged.",
            ".TP", "\\fBSIGTERM\\fR, \\fBSIGINT\\fR",
            "graceful stop: workers finish the messages in flight."]
    out += [".SH FILES"]
    for path, what in FILES:
        out += [".TP", "\\fI" + opt(path) + "\\fR", esc(what)]
    out += [".SH SEE ALSO", ",\n".join(_xref(ref) for ref in SEE_ALSO)]
    return "\n".join(out) + "\n"


def _xref(ref: str) -> str:
    name, _, section = ref.partition("(")
    return f".BR {opt(name)} ({section}"


# ---------------------------------------------------------------------------------------
# authmilter.toml(5)


def _type_name(tp: Any) -> str:
    if tp is bool:
        return "boolean"
    if tp is int:
        return "integer"
    if tp is float:
        return "number"
    if tp is str:
        return "string"
    if typing.get_origin(tp) is tuple:
        return "list of strings"
    return str(tp)


def schema_sections() -> list[tuple[str, str, list[tuple[str, str, Any, str, tuple[str, ...]]]]]:
    """[(section name or "", section doc, [(key, type, default, doc, choices)])], top level first."""
    top: list[tuple[str, str, Any, str, tuple[str, ...]]] = []
    sections = []
    hints = typing.get_type_hints(Settings)
    for f in fields(Settings):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        if isinstance(tp, type) and is_dataclass(tp):
            sub_hints = typing.get_type_hints(tp)
            keys = [(g.name, _type_name(sub_hints[g.name]), g.default, g.metadata.get("doc", ""),
                     tuple(g.metadata.get("choices", ()))) for g in fields(tp)]
            sections.append((f.name, f.metadata.get("doc", ""), keys))
        else:
            assert f.default is not MISSING
            top.append((f.name, _type_name(tp), f.default, f.metadata.get("doc", ""),
                        tuple(f.metadata.get("choices", ()))))
    return [("", "top-level keys, before any [section]", top), *sections]


def page5() -> str:
    out = _header("AUTHMILTER.TOML", "5", "File Formats")
    out += [".SH NAME", "authmilter.toml \\- authmilter configuration file"]
    out += [".SH SYNOPSIS", "\\fI" + opt(DEFAULT_CONFIG_PATH) + "\\fR"]
    out += [".SH DESCRIPTION",
            "The configuration of \\fBauthmilter\\fR(8), in TOML. Every key is optional: a key not written "
            "has the default shown below. An unknown key, a value of the wrong type or a bad value stops "
            "\\fBauthmilter run\\fR and \\fBauthmilter check-config\\fR with the file, the dotted key and the "
            "reason. Durations and sizes carry their unit in the key's name (\\fBtimeout_s\\fR, "
            "\\fBmax_report_bytes\\fR).",
            ".PP",
            "Lists are TOML arrays of strings; where a key's description says so, a single string "
            "\"file:/path\" names a file with one entry per line instead. The KeyTable, SigningTable and "
            "TrustedHosts files of OpenDKIM are read unchanged, in their own grammar.",
            ".PP",
            "\\fBauthmilter check-config \\-c\\fR \\fIFILE\\fR checks a file as \\fBrun\\fR would. "
            "SIGUSR1 or SIGHUP to the running master reloads it; a reload refuses a file that no longer sets "
            + ", ".join("\\fB" + opt(k) + "\\fR" for k in RELOAD_GUARDED)
            + " when the running configuration set them (an emptied or truncated file must not silently stop "
              "signing or checking)."]
    for name, doc, keys in schema_sections():
        if name:
            out += [".SH [" + opt(name) + "]", prose(doc[:1].upper() + doc[1:] + ".")]
        else:
            out += [".SH TOP-LEVEL KEYS", prose(doc[:1].upper() + doc[1:] + ".")]
        for key, type_name, default, kdoc, choices in keys:
            label = "\\fB" + opt(key) + "\\fR (" + esc(type_name) + ")"
            body = prose(kdoc[:1].upper() + kdoc[1:] + ".")
            if choices:
                body += "\n.br\nOne of: " + ", ".join("\\fB" + opt(str(c)) + "\\fR" for c in choices) + "."
            body += "\n.br\nDefault: \\fB" + opt(tomlwrite.value(default)) + "\\fR"
            out += [".TP", label, body]
    out += [".SH EXAMPLE",
            "A host that signs for example.com with keys from an OpenDKIM KeyTable and SigningTable, behind "
            "Debian's chrooted Postfix:",
            ".PP", ".nf", ".RS 4",
            *[opt(line) for line in _EXAMPLE.splitlines()],
            ".RE", ".fi",
            ".PP", "Every key with its default, as a file: /usr/share/doc/authmilter/examples/authmilter.toml."]
    out += [".SH FILES", "\\fI" + opt(DEFAULT_CONFIG_PATH) + "\\fR"]
    out += [".SH SEE ALSO", ",\n".join(_xref(r) for r in ("authmilter(8)", "opendkim.conf(5)", "postconf(5)"))]
    return "\n".join(out) + "\n"


_EXAMPLE = """\
socket = "unix:/var/spool/postfix/authmilter/authmilter.sock"
user = "authmilter"
authserv_id = "mx.example.com"

[signing]
key_table = "/etc/authmilter/KeyTable"
signing_table = "refile:/etc/authmilter/SigningTable"
internal_hosts = ["127.0.0.1", "::1", "192.0.2.0/24"]

[policy]
on_dmarc_reject = "evidence"
quarantine = "hold"
"""


def cmd_man(args: argparse.Namespace) -> int:
    sys.stdout.write(page5() if args.section == "5" else page8())
    return 0


if __name__ == "__main__":
    cmd_man(argparse.Namespace(section=sys.argv[1] if len(sys.argv) > 1 else "8"))
