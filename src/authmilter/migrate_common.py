"""What the importers (import-opendkim, import-opendmarc, import-policyd-spf) share.

Each importer turns one daemon's config into an `Import`: authmilter settings (a nested
dict shaped like the TOML), a comment per dotted key, the options it could not carry
(with why), and what would stop authmilter from starting. `run_import` then does the
same steps for all three:

1. refuse a file of another kind (config/daemonconf.sniff), naming the right command;
2. load and validate ``-c EXISTING`` when given;
3. merge the imported settings into it (`merge`): a key the existing file sets to
   something else is a *conflict*, reported, and the existing value is kept unless
   ``--prefer-imported``; the host and authserv-id lists that only widen exemptions
   (UNION_KEYS) are joined instead, since each old daemon's exemptions still apply;
4. validate the result with settings_from_dict and write it as TOML, preceded by comment
   blocks: conflicts, options not carried over, and the *behaviour changes* — what
   authmilter, configured as written, does differently from the old daemon. The same
   lists go to stderr.

Exit status: 0 written; 1 written, but something must be fixed before authmilter starts;
2 nothing written (wrong kind of file, unreadable or invalid input, invalid result).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import tomlwrite
from .config.daemonconf import DaemonConf, refusal, sniff
from .config.schema import Settings, load_settings, settings_from_dict
from .config.sockets import parse_socket
from .errors import ConfigError

# Lists whose entries each exempt something (a host from DMARC rejects, an upstream
# authserv-id's headers from removal): merging two daemons' lists keeps both.
UNION_KEYS = frozenset({"policy.trusted_forwarders", "verify.trusted_authserv_ids", "verify.trusted_relays",
                        "policy.own_domains", "arc.trusted_sealers"})
# Keys that only mean something together: a conflict on one decides both.
GROUPS = (("signing.key_table", "signing.signing_table"),)


@dataclass
class Import:
    """The settings being built, with comments per dotted key, and notes."""

    data: dict[str, Any] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)       # "Name value  (file:line) -- reason"
    problems: list[str] = field(default_factory=list)      # what would stop authmilter from starting
    notes: dict[str, Any] = field(default_factory=dict)    # importer facts for its behaviour-changes list

    def set(self, dotted: str, value: Any, comment: str = "") -> None:
        *parents, leaf = dotted.split(".")
        node = self.data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        if comment:
            self.comments[dotted] = comment

    def get(self, dotted: str, default: Any = None) -> Any:
        return get_dotted(self.data, dotted, default)

    def drop(self, conf: DaemonConf, key: str, reason: str) -> None:
        value, file, line = conf.values[key]
        self.dropped.append(f"{conf.spelling(key)} {value}  ({file}:{line}) -- {reason}")


def get_dotted(data: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


@dataclass
class Merged:
    data: dict[str, Any]
    conflicts: list[str]
    imported_keys: set[str]        # keys whose value (or part of it) came from the import


def merge(existing: Mapping[str, Any], imported: Mapping[str, Any], *, prefer_imported: bool,
          existing_name: str = "the existing config", imported_name: str = "the import") -> Merged:
    """*imported* over *existing* by the rule in the module docstring."""
    out = copy.deepcopy(dict(existing))
    old, new = flatten(existing), flatten(imported)
    conflicts: list[str] = []
    taken: set[str] = set()
    grouped = {k: g for g in GROUPS for k in g}
    decided: dict[tuple[str, ...], bool] = {}
    for key, value in new.items():
        if key not in old:
            _set_dotted(out, key, value)
            taken.add(key)
            continue
        before = old[key]
        if _same(before, value):
            continue
        if key in UNION_KEYS and isinstance(before, list) and isinstance(value, list):
            _set_dotted(out, key, list(dict.fromkeys([*before, *value])))
            taken.add(key)
            continue
        group = grouped.get(key, (key,))
        if group not in decided:
            decided[group] = prefer_imported
            kept = "the imported value" if prefer_imported else f"{existing_name}'s"
            conflicts.append(f"{key}: {existing_name} has {tomlwrite.value(before)}, {imported_name} "
                             f"{tomlwrite.value(value)}; kept {kept}"
                             + ("" if prefer_imported else " (--prefer-imported takes the other)"))
        if decided[group]:
            for k in group:
                if k in new:
                    _set_dotted(out, k, new[k])
                    taken.add(k)
    return Merged(out, conflicts, taken)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return bool(a == b and type(a) is type(b))


# ---------------------------------------------------------------------------
# Options the milters share (Socket, UMask, UserID, PidFile, Syslog, AuthservID, DNSTimeout)


def socket_value(value: str) -> tuple[str, str]:
    """A libmilter socket spec -> (authmilter socket, comment). Raises ValueError."""
    text = value.strip()
    kind, _, rest = text.partition(":")
    if kind.lower() in ("inet", "inet6") and "@" not in rest:
        any_addr = "0.0.0.0" if kind.lower() == "inet" else "::"
        text = f"{kind}:{rest}@{any_addr}"
        comment = "the old daemon listened on every interface; consider 127.0.0.1"
    else:
        comment = ""
    parse_socket(text)
    return text, comment


def bool_setting(conf: DaemonConf, imp: Import, key: str) -> bool | None:
    """An OpenDKIM/OpenDMARC boolean, or None (reported as dropped) when it is neither."""
    from .config.daemonconf import bool_value

    value = conf.get(key)
    if value is None:
        return None
    b = bool_value(value)
    if b is None:
        imp.drop(conf, key.lower(), "not a boolean (the daemon refuses to start)")
    return b


def milter_options(conf: DaemonConf, imp: Import, take: Callable[[str], str | None], daemon: str) -> None:
    """Socket, UMask, UserID, PidFile, Syslog(Facility), AuthservID, DNSTimeout: the
    process-level options OpenDKIM, OpenDMARC and pyspf-milter spell alike."""
    from .config.daemonconf import bool_value

    if (v := take("Socket")) is not None:
        try:
            sock, comment = socket_value(v)
            imp.set("socket", sock, comment or f"{daemon} Socket {v}")
        except ValueError as exc:
            imp.drop(conf, conf_key(conf, "socket"), f"not a socket authmilter understands: {exc}")
    if (v := take("UMask")) is not None:
        try:
            imp.set("socket_mode", f"{0o777 & ~int(v, 8):04o}", f"from UMask {v}")
        except ValueError:
            imp.drop(conf, conf_key(conf, "umask"), "not an octal number")
    if (v := take("UserID")) is not None:
        user, _, group = v.partition(":")
        imp.set("user", user, "authmilter binds the socket as root, then becomes this user")
        if group:
            imp.set("group", group)
    if (v := take("AuthservID")) is not None:
        if v == "HOSTNAME":
            imp.set("authserv_id", "", f"{daemon} AuthservID HOSTNAME: empty means the MTA's j macro, "
                    "else the host name")
        else:
            imp.set("authserv_id", v)
    if (v := take("PidFile")) is not None:
        imp.set("pid_file", v)
    if (v := take("Syslog")) is not None and bool_value(v):
        imp.set("log_target", "syslog", "facility mail")
        if (f := take("SyslogFacility")) is not None and f.lower() != "mail":
            imp.drop(conf, conf_key(conf, "syslogfacility"), "authmilter logs to facility mail")
    if (v := take("DNSTimeout")) is not None:
        try:
            if int(v, 0) > 0:
                imp.set("dns.timeout_s", float(int(v, 0)))
            else:
                imp.drop(conf, conf_key(conf, "dnstimeout"), "0 (wait forever) is not allowed; the default 5 s applies")
        except ValueError:
            imp.drop(conf, conf_key(conf, "dnstimeout"), "not a number")


class Taker:
    """``take(name)``: the value of option *name* in *conf* (or None), remembering that the
    importer handled it; `drop_rest` then reports every option it did not."""

    def __init__(self, conf: DaemonConf) -> None:
        self.conf = conf
        self.handled: set[str] = set()

    def __call__(self, name: str) -> str | None:
        self.handled.add(name.lower())
        return self.conf.get(name)

    def drop_rest(self, imp: Import, why_not: Mapping[str, str], unknown: str, *, separator: str = " ",
                  ignore: tuple[str, ...] = ()) -> None:
        """Each option set but not taken is dropped with its WHY_NOT reason; each name the
        daemon does not know as ``Name{separator}value  (file:line) -- {unknown}``."""
        conf = self.conf
        for key in conf.values:
            if key in self.handled or key in ignore:
                continue
            imp.drop(conf, key, why_not.get(key, "no equivalent in authmilter"))
        for name, value, file, line in conf.unknown:
            imp.dropped.append(f"{name}{separator}{value}  ({file}:{line}) -- {unknown}")


def conf_key(conf: DaemonConf, lower: str) -> str:
    """The key *conf.values* uses for an option (lower case for Name value files, the
    spelling for policyd-spf's case-sensitive names)."""
    if lower in conf.values:
        return lower
    return next((k for k in conf.values if k.lower() == lower), lower)


# ---------------------------------------------------------------------------
# The command


@dataclass(frozen=True)
class Importer:
    command: str                  # "import-opendmarc"
    kind: str                     # daemonconf KINDS key of the files it reads
    daemon: str                   # "OpenDMARC"
    build: Callable[[str, argparse.Namespace], Import]
    # (import, final settings, existing settings or None) -> behaviour changes
    changes: Callable[[Import, Settings, Settings | None], list[str]]
    check: Callable[[Import, Settings], list[str]] | None = None


def leading_comments(path: str) -> list[str]:
    """The comment lines at the top of *path*, verbatim (an earlier import's notes)."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            out.append(line.rstrip("\n"))
    return out


def render(imp: Import, importer: Importer, source: str, merged: Merged, existing: str | None,
           changes: list[str]) -> str:
    lines = [f"# authmilter configuration: {source} imported by `authmilter {importer.command}`"
             + (f",\n# merged into {existing} (its settings are kept; of its comments, only the notes at its "
                "top are)." if existing else "."),
             "# Check it with `authmilter check-config -c FILE` before starting authmilter."]
    blocks = [("Conflicts with the existing configuration", merged.conflicts),
              (f"{importer.daemon} options not carried over", imp.dropped),
              (f"Behaviour changes (what authmilter does differently from {importer.daemon} with this config)",
               changes),
              ("Must be fixed before authmilter starts", imp.problems)]
    for title, items in blocks:
        if items:
            lines += ["#", f"# {title}:"]
            lines += [f"#   - {item}" for item in items]
    earlier = leading_comments(existing) if existing else []
    if earlier:
        lines += ["#", f"# Notes of the earlier import(s), kept from {existing} as they were written (settings "
                  "they mention may since have changed):"]
        lines += ["# | " + line[1:].lstrip(" ") if line.startswith("# ") or line == "#" else "# | " + line[1:]
                  for line in earlier]
    comments = {k: v for k, v in imp.comments.items() if k in merged.imported_keys}
    return "\n".join(lines) + "\n\n" + tomlwrite.dumps(merged.data, comments)


def _write(path: str, text: str) -> None:
    """Write *path* whole or not at all (it may be the -c file itself)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".authmilter-import-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run_import(args: argparse.Namespace, importer: Importer, source: str) -> int:
    name = f"authmilter {importer.command}"

    def say(text: str) -> None:
        print(f"{name}: {text}", file=sys.stderr)

    out_path = getattr(args, "output", "-") or "-"
    existing_path = getattr(args, "config", None)
    try:
        why_not = refusal(source, sniff(source), importer.kind, name)
        if why_not is not None:
            say(why_not)
            return 2
        existing_data: dict[str, Any] = {}
        existing_settings = None
        if existing_path:
            existing_settings = load_settings(existing_path)      # validated: refuses a broken file
            with open(existing_path, "rb") as fh:
                existing_data = tomllib.load(fh)
        imp = importer.build(source, args)
        merged = merge(existing_data, imp.data, prefer_imported=bool(getattr(args, "prefer_imported", False)),
                       existing_name=existing_path or "the existing config", imported_name=source)
        settings = settings_from_dict(merged.data, source=out_path if out_path != "-" else f"<{importer.command}>")
        if importer.check is not None:
            imp.problems.extend(importer.check(imp, settings))
    except ConfigError as exc:
        say(str(exc))
        return 2
    changes = importer.changes(imp, settings, existing_settings)
    text = render(imp, importer, os.path.abspath(source), merged, existing_path, changes)
    if out_path == "-":
        sys.stdout.write(text)
    else:
        try:
            _write(out_path, text)
        except OSError as exc:
            say(f"{out_path}: cannot write: {exc.strerror or exc}; nothing written")
            return 2
        say(f"wrote {out_path}")
    for c in merged.conflicts:
        say(f"conflict: {c}")
    for d in imp.dropped:
        say(f"not carried over: {d}")
    for c in changes:
        say(f"behaviour change: {c}")
    for p in imp.problems:
        say(f"must be fixed before authmilter starts: {p}")
    return 1 if imp.problems else 0
