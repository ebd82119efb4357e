"""The config files of the daemons authmilter replaces, read as they read them, and told apart.

Two grammars:

* ``Name value`` (opendkim.conf(5), opendmarc.conf(5)): ``#`` (and, for OpenDKIM, a CR)
  ends a line, the first word is the option name (case-insensitive), the rest of the line
  its value; the last setting of a name wins. OpenDKIM also reads ``Include FILE`` up to
  five levels deep; OpenDMARC 1.4 has no Include. Booleans: only the first character
  counts (``TtYy1`` true, ``FfNn0`` false).
* ``Name = value`` (policyd-spf.conf(5), postfix-policyd-spf-python): ``#`` starts a
  comment, a line splits on ``=`` into exactly two stripped parts, names are
  case-sensitive and values are strings; a line it cannot split is ignored (logged by
  policyd-spf), as is an unknown name.

`sniff` tells these files apart (and from authmilter's own TOML, Debian's
/etc/default shell files, postgrey's defaults and binaries), so that each importer can
refuse a file meant for another one and name the right command.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field

from ..errors import ConfigError
from .files import read_bytes

MAX_INCLUDE = 5          # OpenDKIM config.c MAXLEVEL

# Option names OpenDKIM 2.11 knows (opendkim.conf(5) and the Debian binary's table).
OPENDKIM_OPTIONS = (
    "AllowSHA1Only", "AlwaysAddARHeader", "ATPSDomains", "ATPSHashAlgorithm", "AuthservID",
    "AuthservIDWithJobID", "AutoRestart", "AutoRestartCount", "AutoRestartRate", "Background", "BaseDirectory",
    "BodyLengthDB", "BogusKey", "CaptureUnknownErrors", "Canonicalization", "ChangeRootDirectory", "ClockDrift",
    "Diagnostics", "DiagnosticDirectory", "DisableCryptoInit", "DNSConnect", "DNSTimeout", "Domain",
    "DomainKeysCompat", "DontSignMailTo", "EnableCoredumps", "ExemptDomains", "ExternalIgnoreList",
    "FinalPolicyScript", "FixCRLF", "IdentityHeader", "IdentityHeaderRemove", "IgnoreMalformedMail", "Include",
    "InternalHosts", "KeepAuthResults", "KeepTemporaryFiles", "KeyFile", "KeyTable", "LDAPAuthMechanism",
    "LDAPAuthName", "LDAPAuthRealm", "LDAPAuthUser", "LDAPBindPassword", "LDAPBindUser", "LDAPDisableCache",
    "LDAPKeepaliveIdle", "LDAPKeepaliveInterval", "LDAPKeepaliveProbes", "LDAPTimeout", "LDAPUseTLS",
    "LogResults", "LogWhy", "MacroList", "MaximumHeaders", "MaximumSignaturesToVerify", "MaximumSignedBytes",
    "MilterDebug", "Minimum", "MinimumKeyBits", "Mode", "MTA", "MTACommand", "MultipleSignatures", "MustBeSigned",
    "Nameservers", "NoHeaderB", "OmitHeaders", "On-BadSignature", "On-Default", "On-DNSError", "On-InternalError",
    "On-KeyNotFound", "On-NoSignature", "On-PolicyError", "On-Security", "On-SignatureError", "OversignHeaders",
    "PeerList", "PidFile", "POPDBFile", "Quarantine", "QueryCache", "RedirectFailuresTo", "RemoveARAll",
    "RemoveARFrom", "RemoveOldSignatures", "ReplaceHeaders", "ReplaceRules", "ReportAddress", "ReportBccAddress",
    "RequestReports", "RequiredHeaders", "RequireSafeKeys", "ResignAll", "ResignMailTo", "ResolverConfiguration",
    "ResolverTracing", "ScreenPolicyScript", "SelectCanonicalizationHeader", "Selector", "SenderHeaders",
    "SenderMacro", "SendReports", "SetupPolicyScript", "SignatureAlgorithm", "SignatureTTL", "SignHeaders",
    "SigningTable", "SMTPURI", "Socket", "SoftStart", "SoftwareHeader", "Statistics", "StatisticsName",
    "StatisticsPolicyScript", "StatisticsPrefix", "StrictHeaders", "StrictTestMode", "SubDomains", "Syslog",
    "SyslogFacility", "SyslogName", "SyslogSuccess", "TemporaryDirectory", "TestDNSData", "TestPublicKeys",
    "TrustAnchorFile", "TrustSignaturesFrom", "UMask", "UnprotectedKey", "UserID", "VBR-Certifiers",
    "VBR-PurgeFields", "VBR-TrustedCertifiers", "VBR-TrustedCertifiersOnly", "VBR-Type", "WeakSyntaxChecks",
)

# Option names OpenDMARC 1.4 knows: its configuration table (opendmarc-config.h), plus
# RejectString and IgnoreMailTo, which opendmarc.conf(5) documents and Debian's build reads.
OPENDMARC_OPTIONS = (
    "AuthservID", "AuthservIDWithJobID", "AutoRestart", "AutoRestartCount", "AutoRestartRate", "Background",
    "BaseDirectory", "ChangeRootDirectory", "CopyFailuresTo", "DNSTimeout", "DomainWhitelist",
    "DomainWhitelistFile", "DomainWhitelistSize", "EnableCoredumps", "FailureReports", "FailureReportsBcc",
    "FailureReportsOnNone", "FailureReportsSentBy", "HistoryFile", "HoldQuarantinedMessages",
    "IgnoreAuthenticatedClients", "IgnoreHosts", "IgnoreMailFrom", "IgnoreMailTo", "MilterDebug", "PidFile",
    "PublicSuffixList", "RecordAllMessages", "RejectFailures", "RejectMultiValueFrom", "RejectString",
    "ReportCommand", "RequiredHeaders", "Socket", "SoftwareHeader", "SPFIgnoreResults", "SPFSelfValidate",
    "Syslog", "SyslogFacility", "TestDNSData", "TrustedAuthservIDs", "UMask", "UserID",
)

# policyd-spf's names (spf_engine's configuration table, policyd-spf.conf(5)); case-sensitive.
POLICYD_SPF_OPTIONS = (
    "debugLevel", "HELO_reject", "Mail_From_reject", "PermError_reject", "TempError_Defer",
    "Mail_From_pass_restriction", "HELO_pass_restriction", "Prospective", "Whitelist", "skip_addresses",
    "HELO_Whitelist", "Domain_Whitelist", "Domain_Whitelist_PTR", "No_Mail", "Reject_Not_Pass_Domains",
    "Per_User", "TestOnly", "defaultSeedOnly", "SPF_Enhanced_Status_Codes", "Header_Type", "Hide_Receiver",
    "Authserv_Id", "Lookup_Time", "Whitelist_Lookup_Time", "Void_Limit", "Reason_Message", "Mock", "QueueID",
    "Socket", "PidFile", "UserID", "UMask", "InternalHosts", "MacroList",
)


def bool_value(value: str) -> bool | None:
    """OpenDKIM/OpenDMARC booleans: only the first character counts; None if neither."""
    first = value[:1]
    if first and first in "TtYy1":
        return True
    if first and first in "FfNn0":
        return False
    return None


@dataclass
class DaemonConf:
    """Settings of one daemon's config file, the last occurrence winning, with where each came from."""

    known: dict[str, str]                                               # lower name -> spelling
    values: dict[str, tuple[str, str, int]] = field(default_factory=dict)   # lower name -> (value, file, line)
    unknown: list[tuple[str, str, str, int]] = field(default_factory=list)  # (name, value, file, line)

    def get(self, name: str) -> str | None:
        item = self.values.get(name.lower())
        return None if item is None else item[0]

    def where(self, name: str) -> str:
        _, file, line = self.values[name.lower()]
        return f"{file}:{line}"

    def spelling(self, key: str) -> str:
        return self.known.get(key, key)


def _read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8", "surrogateescape")


def read_name_value(path: str, options: tuple[str, ...], *, includes: bool, cr_ends_line: bool,
                    conf: DaemonConf | None = None, level: int = 0) -> DaemonConf:
    """Parse a ``Name value`` file (opendkim.conf, opendmarc.conf). A name without a value
    is an error (both daemons refuse to start); unknown names are collected, not fatal."""
    conf = conf if conf is not None else DaemonConf({n.lower(): n for n in options})
    if level > MAX_INCLUDE:
        raise ConfigError(path, "Include", "nesting too deep (more than 5 levels)")
    for n, raw in enumerate(_read_text(path).split("\n"), 1):
        text = raw.split("#", 1)[0]
        if cr_ends_line:
            text = text.split("\r", 1)[0]
        words = text.strip(" \t\r").split(None, 1)
        if not words:
            continue
        name = words[0]
        value = words[1].strip(" \t\r") if len(words) > 1 else ""
        if not value:
            raise ConfigError(path, name, "required value missing", n)
        key = name.lower()
        if includes and key == "include":
            read_name_value(value, options, includes=includes, cr_ends_line=cr_ends_line, conf=conf, level=level + 1)
        elif key in conf.known:
            conf.values[key] = (value, path, n)
        else:
            conf.unknown.append((name, value, path, n))
    return conf


def read_key_equals_value(path: str, options: tuple[str, ...]) -> DaemonConf:
    """Parse a ``Name = value`` file as spf_engine does: names are case-sensitive; a line
    that does not split into exactly two parts on ``=`` is collected as unknown."""
    conf = DaemonConf({n.lower(): n for n in options})
    for n, raw in enumerate(_read_text(path).split("\n"), 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        parts = [p.strip() for p in text.split("=")]
        if len(parts) != 2 or conf.known.get(parts[0].lower()) != parts[0]:
            name, _, value = text.partition("=")
            conf.unknown.append((name.strip(), value.strip(), path, n))
            continue
        conf.values[parts[0].lower()] = (parts[1], path, n)     # stored like the Name value files
    return conf


# ---------------------------------------------------------------------------
# Which kind of file is this?

KINDS = {
    "opendkim": ("an opendkim.conf", "authmilter import-opendkim"),
    "opendmarc": ("an opendmarc.conf", "authmilter import-opendmarc"),
    "policyd-spf": ("a policyd-spf.conf (postfix-policyd-spf-python)", "authmilter import-policyd-spf"),
    "authmilter": ("an authmilter TOML configuration", "authmilter check-config -c"),
    "postgrey": ("postgrey's /etc/default/postgrey", "authmilter import-postgrey"),
    "defaults": ("a Debian /etc/default shell file", ""),
    "binary": ("a binary file, not a configuration file", ""),
}


@dataclass(frozen=True)
class Sniffed:
    """What a file looks like: *kind* (a KINDS key, "either" for a Name value file naming
    only options OpenDKIM and OpenDMARC share, "empty", or "unknown") and the lines that
    show it."""

    kind: str
    evidence: tuple[str, ...] = ()


_LOWER_DKIM = {n.lower() for n in OPENDKIM_OPTIONS}     # Include too: OpenDMARC has none
_LOWER_DMARC = {n.lower() for n in OPENDMARC_OPTIONS}
_DKIM_ONLY = _LOWER_DKIM - _LOWER_DMARC
_DMARC_ONLY = _LOWER_DMARC - _LOWER_DKIM
_SPF_NAMES = set(POLICYD_SPF_OPTIONS)
_SPF_ONLY = {n for n in POLICYD_SPF_OPTIONS if n.lower() not in _LOWER_DKIM | _LOWER_DMARC}
_ASSIGN = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*=(.*)$")
_SHELL = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(\S.*|)$")


def _authmilter_keys() -> set[str]:
    from .schema import Settings

    return {f.name for f in Settings.__dataclass_fields__.values() if not f.metadata.get("internal")}


def sniff(path: str, limit: int = 1 << 20) -> Sniffed:
    """Classify the file at *path* from its first *limit* bytes. Raises ConfigError when
    it cannot be read."""
    data = read_bytes(path, limit=limit)
    if b"\0" in data:
        return Sniffed("binary", ("contains NUL bytes",))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Sniffed("binary", ("not UTF-8 text",))
    lines = [line.split("#", 1)[0].strip() for line in text.replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line]
    if not lines:
        return Sniffed("empty")

    spf_hits, assigned, shell, tables, dkim_only, dmarc_only, shared = [], [], [], [], [], [], []
    for line in lines:
        if line.startswith("[") and line.endswith("]"):
            tables.append(line)
            continue
        m = _ASSIGN.match(line)
        if m:
            assigned.append(m.group(1))
            if m.group(1) in _SPF_NAMES:
                spf_hits.append(m.group(1))
            if _SHELL.fullmatch(line):
                shell.append(m.group(1))
            continue
        first = line.split(None, 1)[0].lower()
        if first in _DKIM_ONLY:
            dkim_only.append(line.split(None, 1)[0])
        elif first in _DMARC_ONLY:
            dmarc_only.append(line.split(None, 1)[0])
        elif first in _LOWER_DKIM:
            shared.append(line.split(None, 1)[0])

    if "POSTGREY_OPTS" in shell:
        return Sniffed("postgrey", ("POSTGREY_OPTS=",))
    toml_keys: set[str] = set()
    try:
        toml_keys = set(tomllib.loads(text))
    except tomllib.TOMLDecodeError:
        pass
    ours = toml_keys & _authmilter_keys()
    if tables or (ours and not spf_hits):
        return Sniffed("authmilter", tuple(sorted(ours) or tables[:3]))
    if any(n in _SPF_ONLY for n in spf_hits) or (spf_hits and len(spf_hits) * 2 >= len(assigned)):
        return Sniffed("policyd-spf", tuple(dict.fromkeys(spf_hits))[:4])
    if shell and len(shell) * 2 >= len(lines):
        return Sniffed("defaults", tuple(dict.fromkeys(shell))[:4])
    if dkim_only and not dmarc_only:
        return Sniffed("opendkim", tuple(dict.fromkeys(dkim_only))[:4])
    if dmarc_only and not dkim_only:
        return Sniffed("opendmarc", tuple(dict.fromkeys(dmarc_only))[:4])
    if dmarc_only and dkim_only:
        kind = "opendkim" if len(dkim_only) >= len(dmarc_only) else "opendmarc"
        return Sniffed(kind, tuple(dict.fromkeys(dkim_only + dmarc_only))[:6])
    if shared:
        return Sniffed("either", tuple(dict.fromkeys(shared))[:4])
    return Sniffed("unknown", tuple(lines[:2]))


def refusal(path: str, found: Sniffed, wanted: str, command: str) -> str | None:
    """The message refusing *path* for *command* (which reads *wanted* files), or None
    when the file may be what *command* reads."""
    if found.kind == wanted or found.kind == "empty" or (found.kind == "either" and wanted in ("opendkim", "opendmarc")):
        return None
    what, right = KINDS.get(wanted, (wanted, command))
    if found.kind == "unknown":
        return (f"{path} does not look like {what}: no line names one of its options "
                f"(first: {found.evidence[0]!r}); nothing written")
    if found.kind == "either":
        return f"{path} names only milter options ({', '.join(found.evidence)}), not {what}; nothing written"
    desc, cmd = KINDS[found.kind]
    hint = f"; use `{cmd} {path}`" if cmd else ""
    if found.kind == "defaults":
        hint = "; import-opendkim reads /etc/default/opendkim with --defaults FILE"
    evidence = f" ({', '.join(found.evidence[:4])}{', ...' if len(found.evidence) > 4 else ''})" \
        if found.evidence else ""
    return f"{path} is {desc}{evidence}, not {what}{hint}; nothing written"
