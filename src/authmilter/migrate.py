"""Migrating from OpenDKIM: ``authmilter import-opendkim`` and ``authmilter which-key``.

import-opendkim reads an opendkim.conf(5) the way OpenDKIM's config.c does (``Name
value`` lines, ``#`` comments, ``Include`` up to five levels, the last setting of a name
wins) and writes an authmilter TOML that reuses the existing KeyTable, SigningTable,
InternalHosts and keys unchanged. Every option without an authmilter equivalent is
listed on stderr and as a comment in the output. The result is validated with
settings_from_dict, and the tables it names are parsed, before it is written.

which-key answers "which key would sign mail From this address, and why" with the
same Signer the milter uses.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from .config import tomlwrite
from .config.hostlist import HostList
from .config.opendkim import Dataset, KeyTable, SigningTable
from .config.schema import PolicySettings, SigningSettings, load_settings, settings_from_dict
from .config.sockets import parse_socket
from .errors import AuthmilterError, ConfigError
from .keys import check_key_permissions

MAX_INCLUDE = 5          # config.c MAXLEVEL

# Options OpenDKIM 2.11 knows (opendkim.conf(5) and the Debian binary's table).
KNOWN = {n.lower(): n for n in ["AllowSHA1Only", "AlwaysAddARHeader", "ATPSDomains", "ATPSHashAlgorithm", "AuthservID", "AuthservIDWithJobID", "AutoRestart", "AutoRestartCount", "AutoRestartRate", "Background", "BaseDirectory", "BodyLengthDB", "BogusKey", "CaptureUnknownErrors", "Canonicalization", "ChangeRootDirectory", "ClockDrift", "Diagnostics", "DiagnosticDirectory", "DisableCryptoInit", "DNSConnect", "DNSTimeout", "Domain", "DomainKeysCompat", "DontSignMailTo", "EnableCoredumps", "ExemptDomains", "ExternalIgnoreList", "FinalPolicyScript", "FixCRLF", "IdentityHeader", "IdentityHeaderRemove", "IgnoreMalformedMail", "Include", "InternalHosts", "KeepAuthResults", "KeepTemporaryFiles", "KeyFile", "KeyTable", "LDAPAuthMechanism", "LDAPAuthName", "LDAPAuthRealm", "LDAPAuthUser", "LDAPBindPassword", "LDAPBindUser", "LDAPDisableCache", "LDAPKeepaliveIdle", "LDAPKeepaliveInterval", "LDAPKeepaliveProbes", "LDAPTimeout", "LDAPUseTLS", "LogResults", "LogWhy", "MacroList", "MaximumHeaders", "MaximumSignaturesToVerify", "MaximumSignedBytes", "MilterDebug", "Minimum", "MinimumKeyBits", "Mode", "MTA", "MTACommand", "MultipleSignatures", "MustBeSigned", "Nameservers", "NoHeaderB", "OmitHeaders", "On-BadSignature", "On-Default", "On-DNSError", "On-InternalError", "On-KeyNotFound", "On-NoSignature", "On-PolicyError", "On-Security", "On-SignatureError", "OversignHeaders", "PeerList", "PidFile", "POPDBFile", "Quarantine", "QueryCache", "RedirectFailuresTo", "RemoveARAll", "RemoveARFrom", "RemoveOldSignatures", "ReplaceHeaders", "ReplaceRules", "ReportAddress", "ReportBccAddress", "RequestReports", "RequiredHeaders", "RequireSafeKeys", "ResignAll", "ResignMailTo", "ResolverConfiguration", "ResolverTracing", "ScreenPolicyScript", "SelectCanonicalizationHeader", "Selector", "SenderHeaders", "SenderMacro", "SendReports", "SetupPolicyScript", "SignatureAlgorithm", "SignatureTTL", "SignHeaders", "SigningTable", "SMTPURI", "Socket", "SoftStart", "SoftwareHeader", "Statistics", "StatisticsName", "StatisticsPolicyScript", "StatisticsPrefix", "StrictHeaders", "StrictTestMode", "SubDomains", "Syslog", "SyslogFacility", "SyslogName", "SyslogSuccess", "TemporaryDirectory", "TestDNSData", "TestPublicKeys", "TrustAnchorFile", "TrustSignaturesFrom", "UMask", "UnprotectedKey", "UserID", "VBR-Certifiers", "VBR-PurgeFields", "VBR-TrustedCertifiers", "VBR-TrustedCertifiersOnly", "VBR-Type", "WeakSyntaxChecks"]}

# Why an option is not carried over, for the ones an admin is likely to have set.
WHY_NOT = {
    "autorestart": "run authmilter under systemd (Restart=on-failure) instead",
    "autorestartcount": "run authmilter under systemd instead",
    "autorestartrate": "run authmilter under systemd instead",
    "background": "authmilter runs in the foreground (systemd Type=notify)",
    "syslogsuccess": "authmilter logs one line for every message",
    "logwhy": "authmilter logs why in its one line per message; log_level = \"debug\" adds detail",
    "logresults": "authmilter logs every result in its one line per message",
    "trustanchorfile": "DNSSEC validation is the resolver's job",
    "requiresafekeys": "authmilter always refuses group/world-writable or world-readable keys",
    "softwareheader": "authmilter adds no software header",
    "removeoldsignatures": "authmilter never removes existing signatures",
    "maximumsignedbytes": "authmilter never signs with l= (a body length lets others append text)",
    "bodylengthdb": "authmilter never signs with l= (a body length lets others append text)",
    "signaturealgorithm": "authmilter picks rsa-sha256 or ed25519-sha256 from the key itself",
    "on-badsignature": "inbound actions come from DMARC policy ([policy] settings)",
    "on-default": "inbound actions come from [policy] (on_dns_error, on_internal_error)",
    "on-dnserror": "see [policy] on_dns_error",
    "on-internalerror": "see [policy] on_internal_error",
    "on-keynotfound": "inbound actions come from DMARC policy ([policy] settings)",
    "on-nosignature": "inbound actions come from DMARC policy ([policy] settings)",
    "on-security": "inbound actions come from DMARC policy ([policy] settings)",
    "on-signatureerror": "see [signing] on_missing_key",
    "keepauthresults": "authmilter always removes forged Authentication-Results with its authserv-id",
    "peerlist": "let the MTA skip the milter for those clients (Postfix smtpd_milter_maps)",
    "exemptdomains": "no equivalent; mail of those domains is checked and signed like any other",
    "senderheaders": "authmilter always uses the From header (RFC 7489 Author Domain)",
    "omitheaders": "authmilter signs the headers listed in [signing] sign_headers",
    "syslogname": "authmilter logs as authmilter",
    "subdomains": "applied to the generated SigningTable",
    "selector": "applied to the generated KeyTable",
    "keyfile": "applied to the generated KeyTable",
    "domain": "applied to the generated SigningTable",
}



@dataclass
class OpendkimConf:
    """opendkim.conf settings, last occurrence winning, with where each came from."""

    values: dict[str, tuple[str, str, int]] = field(default_factory=dict)   # lower name -> (value, file, line)
    unknown: list[tuple[str, str, str, int]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        item = self.values.get(name.lower())
        return None if item is None else item[0]

    def where(self, name: str) -> str:
        _, file, line = self.values[name.lower()]
        return f"{file}:{line}"


def read_opendkim_conf(path: str, conf: OpendkimConf | None = None, level: int = 0) -> OpendkimConf:
    """Parse like config.c config_load_level(): ``#`` and CR end a line, the first word is
    the name (case-insensitive), the rest is the value; ``Include`` nests up to 5 levels."""
    conf = conf if conf is not None else OpendkimConf()
    if level > MAX_INCLUDE:
        raise ConfigError(path, "Include", "nesting too deep (more than 5 levels)")
    try:
        with open(path, "rb") as fh:
            data = fh.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except PermissionError:
        raise ConfigError(path, "", "permission denied") from None
    for n, raw in enumerate(data.split("\n"), 1):
        text = raw.split("#", 1)[0].split("\r", 1)[0]
        words = text.strip(" \t").split(None, 1)
        if not words:
            continue
        name = words[0]
        value = words[1].strip(" \t") if len(words) > 1 else ""
        if not value:
            raise ConfigError(path, name, "required value missing", n)
        key = name.lower()
        if key == "include":
            read_opendkim_conf(value, conf, level + 1)
        elif key in KNOWN or key == "userid":
            conf.values[key] = (value, path, n)
        else:
            conf.unknown.append((name, value, path, n))
    return conf


def _bool(value: str) -> bool | None:
    """OpenDKIM booleans: only the first character counts."""
    first = value[:1]
    if first in "TtYy1":
        return True
    if first in "FfNn0":
        return False
    return None


@dataclass
class Import:
    """The TOML being built: settings (nested dict), comments per dotted key, and notes."""

    data: dict[str, Any] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)       # "Name value -- reason"
    problems: list[str] = field(default_factory=list)      # what would stop authmilter from starting

    def set(self, dotted: str, value: Any, comment: str = "") -> None:
        *parents, leaf = dotted.split(".")
        node = self.data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        if comment:
            self.comments[dotted] = comment

    def drop(self, conf: OpendkimConf, key: str, reason: str) -> None:
        value, file, line = conf.values[key]
        self.dropped.append(f"{KNOWN.get(key, key)} {value}  ({file}:{line}) -- {reason}")


def _dataset_items(spec: str) -> list[str]:
    """The keys of a list-type dataset (OversignHeaders, MTA, Domain ...)."""
    return [r.key for r in Dataset.open(spec, icase=False).records]


def _socket(value: str) -> tuple[str, str]:
    """OpenDKIM's Socket (libmilter syntax) -> (authmilter socket, comment)."""

    text = value.strip()
    kind, _, rest = text.partition(":")
    if kind.lower() in ("inet", "inet6") and "@" not in rest:
        any_addr = "0.0.0.0" if kind.lower() == "inet" else "::"
        text = f"{kind}:{rest}@{any_addr}"
        comment = "OpenDKIM listened on every interface; consider 127.0.0.1"
    else:
        comment = ""
    parse_socket(text)
    return text, comment


def _host_items(spec: str) -> list[str] | None:
    """InternalHosts value -> internal_hosts items, or None when a list holds names or "!"."""
    kind = spec.partition(":")[0].lower() if ":" in spec and not spec.startswith("/") else ""
    if spec.startswith("/") or kind in ("file", "refile"):
        return [spec if kind else f"file:{spec}"]
    items = [r.key for r in Dataset.open(spec if kind == "csl" else f"csl:{spec}", icase=True).records]
    for item in items:
        try:
            ipaddress.ip_network(item.strip("[]"), strict=False)
        except ValueError:
            return None
    return [i.strip("[]") for i in items]


def _forwarder_items(spec: str) -> tuple[list[str], list[str]]:
    """ExternalIgnoreList entries (file:, csl: or a path) as trusted_forwarders items (IPs,
    CIDRs, names — a ".domain" becomes the domain, which also covers its subdomains); and
    the entries that cannot be carried (negations)."""
    if spec.startswith("/") or spec.lower().startswith(("file:", "csl:")):
        records = Dataset.open(spec, icase=True).records
    else:
        records = Dataset.open(f"csl:{spec}", icase=True).records
    out, skipped = [], []
    for r in records:
        item = r.key.strip("[]")
        if item.startswith("!"):
            skipped.append(r.key)
            continue
        out.append(item.lstrip("."))
    return out, skipped


def convert(conf: OpendkimConf) -> Import:
    """Map the OpenDKIM settings onto authmilter's schema (config/schema.py)."""
    imp = Import()
    handled: set[str] = set()

    def take(name: str) -> str | None:
        handled.add(name.lower())
        return conf.get(name)

    if (v := take("Socket")) is not None:
        try:
            sock, comment = _socket(v)
            imp.set("socket", sock, comment or f"OpenDKIM Socket {v}")
        except ValueError as exc:
            imp.drop(conf, "socket", f"not a socket authmilter understands: {exc}")
    if (v := take("UMask")) is not None:
        try:
            imp.set("socket_mode", f"{0o777 & ~int(v, 8):04o}", f"from UMask {v}")
        except ValueError:
            imp.drop(conf, "umask", "not an octal number")
    if (v := take("UserID")) is not None:
        user, _, group = v.partition(":")
        imp.set("user", user, "authmilter binds the socket as root, then becomes this user")
        if group:
            imp.set("group", group)
    if (v := take("AuthservID")) is not None:
        if v == "HOSTNAME":
            imp.set("authserv_id", "", "OpenDKIM AuthservID HOSTNAME: empty means the MTA's j macro, else the host name")
        else:
            imp.set("authserv_id", v)
    if (v := take("PidFile")) is not None:
        imp.set("pid_file", v)
    if (v := take("Syslog")) is not None and _bool(v):
        imp.set("log_target", "syslog", "facility mail")
        if (f := take("SyslogFacility")) is not None and f.lower() != "mail":
            imp.drop(conf, "syslogfacility", "authmilter logs to facility mail")
    if (v := take("Nameservers")) is not None:
        imp.set("dns.servers", [s.strip() for s in v.split(",") if s.strip()])
    if (v := take("DNSTimeout")) is not None:
        try:
            if int(v, 0) > 0:
                imp.set("dns.timeout_s", float(int(v, 0)))
            else:
                imp.drop(conf, "dnstimeout", "0 (wait forever) is not allowed; the default 5 s applies")
        except ValueError:
            imp.drop(conf, "dnstimeout", "not a number")

    mode = take("Mode")
    if mode is not None:
        imp.set("signing.enabled", "s" in mode, f"from Mode {mode}")
        imp.set("verify.enabled", "v" in mode,
                f"from Mode {mode}; authmilter's verifier also checks SPF and DMARC")

    kt, st = take("KeyTable"), take("SigningTable")
    keyfile, selector, domain = take("KeyFile"), take("Selector"), take("Domain")
    subdomains = _bool(take("SubDomains") or "no")
    if kt is not None or st is not None:
        if kt is not None:
            imp.set("signing.key_table", kt, "reused unchanged (OpenDKIM KeyTable)")
        if st is not None:
            imp.set("signing.signing_table", st, "reused unchanged (OpenDKIM SigningTable)")
        for name in ("keyfile", "selector", "domain"):
            if name in conf.values:
                imp.drop(conf, name, "ignored by OpenDKIM when a KeyTable is set")
        if subdomains and "subdomains" in conf.values:
            imp.drop(conf, "subdomains", "applies to the Domain list only; with a SigningTable, an entry "
                     "for .example.com (refile: *@*.example.com) signs the subdomains")
    elif keyfile and selector and domain:
        if not os.path.isabs(keyfile):
            # OpenDKIM opens it from its working directory: BaseDirectory, else / (daemonized).
            base = take("BaseDirectory") or "/"
            imp.comments["signing.key_table"] = f"relative KeyFile {keyfile} resolved against {base}"
            keyfile = os.path.normpath(os.path.join(base, keyfile))
        _single_key(imp, keyfile, selector, domain, bool(subdomains))
    elif keyfile or selector or domain:
        for name in ("keyfile", "selector", "domain"):
            if name in conf.values:
                imp.drop(conf, name, "KeyFile, Selector and Domain are needed together; OpenDKIM signs nothing")

    if (v := take("MultipleSignatures")) is not None:
        imp.set("signing.multiple_signatures", bool(_bool(v)))
    if (v := take("Canonicalization")) is not None:
        imp.set("signing.canonicalization", v.lower(),
                "" if "/" in v else "one word: the header canonicalization; the body stays simple")
    else:
        imp.set("signing.canonicalization", "simple", "OpenDKIM's default (authmilter's is relaxed/relaxed)")
    if (v := take("OversignHeaders")) is not None:
        imp.set("signing.oversign_headers", _dataset_items(v), "From is always oversigned as well")
    if (v := take("SignHeaders")) is not None:
        items = _dataset_items(v)
        if any(i.startswith(("*", "+", "-")) for i in items):
            defaults = list(SigningSettings().sign_headers)
            for i in items:
                if i.startswith("+"):
                    defaults.append(i[1:])
                elif i.startswith("-"):
                    defaults = [h for h in defaults if h.lower() != i[1:].lower()]
            items = defaults
        if not any(i.lower() == "from" for i in items):
            items = ["From", *items]   # OpenDKIM adds the mandatory From implicitly
        imp.set("signing.sign_headers", items)
    if (v := take("SignatureTTL")) is not None:
        try:
            imp.set("signing.expire_s", int(v, 0))
        except ValueError:
            imp.drop(conf, "signaturettl", "not a number")
    daemon_names: list[str] = []
    if (v := take("MTA")) is not None:
        daemon_names += _dataset_items(v)
    if (v := take("MacroList")) is not None:
        other = []
        spec = v if v.startswith("/") or v.lower().startswith(("file:", "csl:")) else f"csl:{v}"
        for r in Dataset.open(spec, icase=False).records:     # macro[=value|value...]
            if r.key.strip("{}").lower() == "daemon_name" and r.value:
                daemon_names += [x for x in r.value.split("|") if x]
            else:
                other.append(r.key + (f"={r.value}" if r.value else ""))
        if other:
            imp.dropped.append(f"MacroList entries {', '.join(other)} -- only daemon_name=VALUE has an "
                               "equivalent ([signing] sign_daemon_names)")
    if daemon_names:
        imp.set("signing.sign_daemon_names", list(dict.fromkeys(daemon_names)),
                "OpenDKIM MTA / MacroList daemon_name: {daemon_name} values whose mail is signed")

    v = take("InternalHosts")
    if v is None:
        imp.set("signing.internal_hosts", ["127.0.0.1"], "OpenDKIM's default InternalHosts")
    else:
        hosts = _host_items(v)
        if hosts is None:
            imp.drop(conf, "internalhosts", "host names or ! entries in an inline list: move them into a "
                     "file and set internal_hosts = [\"file:/path\"]")
        else:
            imp.set("signing.internal_hosts", hosts, "reused (OpenDKIM InternalHosts)")
    if (v := take("ExternalIgnoreList")) is not None and v.lower().startswith("refile:"):
        imp.drop(conf, "externalignorelist", "patterns have no equivalent; list the hosts in [policy] "
                 "trusted_forwarders")
    elif v is not None:
        forwarders, skipped = _forwarder_items(v)
        imp.set("policy.trusted_forwarders", forwarders,
                f"from ExternalIgnoreList {v}: hosts that send as our domains without signing; "
                "they are exempt from reject_own_domain_spoof and DMARC rejects")
        if skipped:
            imp.dropped.append(f"ExternalIgnoreList entries {' '.join(skipped)} -- negations have no equivalent")
    if (v := take("MinimumKeyBits")) is not None:
        try:
            imp.set("verify.dkim_min_rsa_bits", max(int(v, 0), 1024), "RFC 8301 never allows less than 1024")
        except ValueError:
            imp.drop(conf, "minimumkeybits", "not a number")
    if (v := take("MaximumSignaturesToVerify")) is not None:
        try:
            imp.set("verify.max_signatures", max(int(v, 0), 1))
        except ValueError:
            imp.drop(conf, "maximumsignaturestoverify", "not a number")

    for key in conf.values:
        if key in handled or key == "include":
            continue
        imp.drop(conf, key, WHY_NOT.get(key, "no equivalent in authmilter"))
    for name, value, file, line in conf.unknown:
        imp.dropped.append(f"{name} {value}  ({file}:{line}) -- not an OpenDKIM 2.11 option either")
    return imp


def _single_key(imp: Import, keyfile: str, selector: str, domain: str, subdomains: bool) -> None:
    """KeyFile + Selector + Domain (OpenDKIM's one-key mode) as inline csl: tables.

    OpenDKIM signs mail From each listed domain with d=<that domain> (SubDomains: d= the
    listed parent); Domain "*" means every domain, with d= the From domain.
    """
    if any(c in keyfile for c in ",="):
        imp.problems.append(f"KeyFile {keyfile}: a path with ',' or '=' cannot go into a csl: KeyTable; "
                            "write a KeyTable file")
        return
    domains = _dataset_items(domain)
    keys, rules = [], []
    for d in domains:
        if d == "*":
            keys.append(f"any=%:{selector}:{keyfile}")
            rules.append("*=any")
            continue
        keys.append(f"{d}={d}:{selector}:{keyfile}")
        rules.append(f"{d}={d}")
        if subdomains:
            rules.append(f".{d}={d}")
    imp.set("signing.key_table", "csl:" + ",".join(keys),
            imp.comments.get("signing.key_table") or f"from KeyFile {keyfile}, Selector {selector}")
    imp.set("signing.signing_table", "csl:" + ",".join(rules),
            f"from Domain {domain}" + (" with SubDomains" if subdomains else ""))


def behaviour_changes(imp: Import) -> list[str]:
    """What authmilter, configured as imported, treats differently from OpenDKIM: OpenDKIM
    only verified and labelled; authmilter's [policy] acts on its results by default."""
    verify = imp.data.get("verify", {}).get("enabled", True)
    if not verify:
        return []
    policy = PolicySettings()
    out = [f"DMARC is evaluated and acted on: p=reject failures -> on_dmarc_reject = "
           f"\"{policy.on_dmarc_reject}\", p=quarantine -> \"{policy.on_dmarc_quarantine}\" (OpenDKIM only "
           "added Authentication-Results; set [policy] dry_run = true to log decisions without acting)",
           f"missing, multiple or unparsable From headers -> on_bad_from = \"{policy.on_bad_from}\""]
    if policy.reject_own_domain_spoof:
        out.append("mail from outside claiming one of the signing domains in From without an aligned SPF or "
                   "DKIM pass is rejected (reject_own_domain_spoof = true); list hosts that legitimately "
                   "send as you unsigned in [policy] trusted_forwarders")
    out.append("SPF is checked and reported (reject_spf_fail = "
               f"{str(policy.reject_spf_fail).lower()}); OpenDKIM did no SPF")
    return out


# ---------------------------------------------------------------------------
# TOML output

def render(imp: Import, source: str) -> str:
    lines = [f"# authmilter configuration imported from {source} by `authmilter import-opendkim`.",
             "# Tables and keys are reused where they are; check with `authmilter check-config -c FILE`",
             "# and compare `authmilter which-key ADDRESS -c FILE` with what OpenDKIM signed."]
    if imp.dropped:
        lines += ["#", "# Not carried over (no authmilter equivalent):"]
        lines += [f"#   {d}" for d in imp.dropped]
    changes = behaviour_changes(imp)
    if changes:
        lines += ["#", "# Behaviour changes (treated differently from OpenDKIM):"]
        lines += [f"#   {c}" for c in changes]
    if imp.problems:
        lines += ["#", "# Must be fixed before authmilter starts:"]
        lines += [f"#   {p}" for p in imp.problems]
    lines.append("")

    return "\n".join(lines) + "\n" + tomlwrite.dumps(imp.data, imp.comments)


def _check_tables(imp: Import, source: str) -> None:
    """Parse the tables (not the keys' contents) as authmilter will, and check key files."""
    signing = imp.data.get("signing", {})
    try:
        HostList.load(signing.get("internal_hosts", ()), source=source)
    except ConfigError as exc:
        imp.problems.append(str(exc))
    kt_spec, st_spec = signing.get("key_table"), signing.get("signing_table")
    if not kt_spec or not st_spec:
        return
    try:
        kt = KeyTable.load(kt_spec, source=source)
        st = SigningTable.load(st_spec, source=source)
        for rec in st.records():
            name = SigningTable.keyname_of(rec)
            if name != "%" and kt.get(name) is None:
                imp.problems.append(f"{rec.where()}: key {name!r} is not in the KeyTable")
    except ConfigError as exc:
        imp.problems.append(str(exc))
        return
    for entry in kt.entries.values():
        if entry.inline or "%" in entry.keypath:
            continue
        try:
            check_key_permissions(entry.keypath)
        except AuthmilterError as exc:
            imp.problems.append(str(exc))


DEBIAN_DEFAULTS = "/etc/default/opendkim"


def read_defaults(path: str) -> dict[str, str]:
    """Debian's /etc/default/opendkim: shell ``NAME=value`` lines, ``$NAME``/``${NAME}``
    expanded from earlier lines (what its init script and unit generator source)."""
    values: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line.split("#", 1)[0].rstrip())
            if m:
                value = m.group(2).strip().strip('"').strip("'")
                values[m.group(1)] = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
                                            lambda v: values.get(v.group(1), ""), value)
    return values


def apply_defaults(imp: Import, path: str) -> None:
    """SOCKET in the defaults file is what opendkim was started with (-p), whatever
    opendkim.conf says."""
    sock = read_defaults(path).get("SOCKET")
    if sock:
        try:
            value, comment = _socket(sock)
        except ValueError as exc:
            imp.dropped.append(f"SOCKET={sock}  ({path}) -- not a socket authmilter understands: {exc}")
            return
        imp.set("socket", value, comment or f"from SOCKET in {path} (it overrides opendkim.conf's Socket)")


def cmd_import_opendkim(args: argparse.Namespace) -> int:
    """Write the authmilter TOML; exit 0 when it is complete, 1 when something must be fixed first."""
    out_path = args.output
    defaults = getattr(args, "defaults", None)
    if defaults is None and os.path.abspath(args.opendkim_conf) == "/etc/opendkim.conf" \
            and os.path.exists(DEBIAN_DEFAULTS):
        defaults = DEBIAN_DEFAULTS     # the system's opendkim.conf goes with the system's defaults
    try:
        conf = read_opendkim_conf(args.opendkim_conf)
        imp = convert(conf)
        if defaults:
            apply_defaults(imp, defaults)
        _check_tables(imp, args.opendkim_conf)
        settings_from_dict(imp.data, source=out_path if out_path != "-" else "<import-opendkim>")
    except ConfigError as exc:
        print(f"authmilter import-opendkim: {exc}", file=sys.stderr)
        return 2
    text = render(imp, os.path.abspath(args.opendkim_conf))
    if out_path == "-":
        sys.stdout.write(text)
    else:
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        print(f"authmilter import-opendkim: wrote {out_path}", file=sys.stderr)
    for d in imp.dropped:
        print(f"authmilter import-opendkim: not carried over: {d}", file=sys.stderr)
    for c in behaviour_changes(imp):
        print(f"authmilter import-opendkim: behaviour change: {c}", file=sys.stderr)
    for p in imp.problems:
        print(f"authmilter import-opendkim: must be fixed before authmilter starts: {p}", file=sys.stderr)
    return 1 if imp.problems else 0


# ---------------------------------------------------------------------------
# which-key

def _bare_address(text: str) -> str:
    addr = text.strip()
    if "<" in addr and addr.endswith(">"):
        addr = addr[addr.rindex("<") + 1:-1]
    return addr.strip()


def _tried(signing_table: SigningTable, address: str) -> str:
    if signing_table.kind == "refile":
        return f"no pattern in {signing_table.dataset.source} matches {address}"
    user, _, domain = address.rpartition("@")
    domain = domain.lower()
    steps = [f"{user}@{domain}", domain]
    i = domain.find(".")
    while i != -1:
        steps += [f"{user}@{domain[i:]}", domain[i:]]
        i = domain.find(".", i + 1)
    steps += [f"{user}@*", "*"]
    return f"no key in {signing_table.dataset.source} matches; tried " + ", ".join(steps)


def cmd_which_key(args: argparse.Namespace) -> int:
    """Print the key(s) that would sign mail From the address, and why. Exit 0 if one would,
    1 if none would, 2 on a configuration or key error."""
    from .signing import Signer

    try:
        settings = load_settings(args.config)
        s = settings.signing
        if not s.enabled or not s.key_table:
            print(f"nothing would sign: signing is {'disabled' if not s.enabled else 'not configured'} "
                  f"in {settings.source}")
            return 1
        signer = Signer.from_settings(s, source=settings.source)
    except AuthmilterError as exc:
        print(f"authmilter which-key: {exc}", file=sys.stderr)
        return 2
    address = _bare_address(args.from_address)
    sasl = args.sasl_user or ""
    choice = signer.choose(address, sasl)
    who = f"mail From {address}" + (f" (SASL user {sasl})" if sasl else "")
    if choice.refused:
        print(f"nothing would sign {who}: {choice.refused}")
        return 1
    if choice.missing:
        action = "tempfail" if s.on_missing_key == "tempfail" else "deliver unsigned"
        print(f"nothing would sign {who}; the milter would {action} (on_missing_key): key(s) not usable:")
        for m in choice.missing:
            print(f"  {m}")
        return 1
    if not choice.keys:
        print(f"nothing would sign {who}: {_tried(signer.signing_table, address)}")
        return 1
    print(f"{who} would be signed with:")
    for i, key in enumerate(choice.keys):
        ident = choice.identities[i] if i < len(choice.identities) else None
        print(f"  d={key.domain} s={key.selector} ({key.algorithm}, {key.bits} bits) key {key.path}"
              + (f" i={ident}" if ident else ""))
        print(f"    because {choice.why[i]}")
    if not s.multiple_signatures:
        print("  (the first SigningTable match only: multiple_signatures = false)")
    return 0
