"""Migrating from OpenDKIM: ``authmilter import-opendkim`` and ``authmilter which-key``.

import-opendkim reads an opendkim.conf(5) the way OpenDKIM's config.c does (``Name
value`` lines, ``#`` comments, ``Include`` up to five levels, the last setting of a name
wins: config/daemonconf) and maps it onto an authmilter config that reuses the existing
KeyTable, SigningTable, InternalHosts and keys unchanged. Refusing a file of another kind,
merging into ``-c EXISTING``, validating, writing and the closing lists (options not
carried over, behaviour changes) are migrate_common's, shared with import-opendmarc
(migrate_opendmarc) and import-policyd-spf (migrate_policyd_spf).

which-key answers "which key would sign mail From this address, and why" with the
same Signer the milter uses.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

from .config.daemonconf import OPENDKIM_OPTIONS, DaemonConf, bool_value, read_name_value
from .config.hostlist import HostList, _check_host_entry
from .config.opendkim import Dataset, KeyTable, SigningTable
from .config.schema import Settings, SigningSettings, load_settings
from .errors import AuthmilterError, ConfigError
from .keys import check_key_permissions
from .migrate_common import Import, Importer, Taker, milter_options, run_import, socket_value

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



OpendkimConf = DaemonConf


def read_opendkim_conf(path: str) -> DaemonConf:
    """Parse like OpenDKIM's config.c: ``#`` and CR end a line, the first word is the
    name (case-insensitive), the rest is the value; ``Include`` nests up to 5 levels."""
    return read_name_value(path, OPENDKIM_OPTIONS, includes=True, cr_ends_line=True)


_bool = bool_value


def _dataset_items(spec: str) -> list[str]:
    """The keys of a list-type dataset (OversignHeaders, MTA, Domain ...)."""
    return [r.key for r in Dataset.open(spec, icase=False).records]


def _host_items(spec: str) -> tuple[list[str], list[str]]:
    """An OpenDKIM host-list dataset (InternalHosts, ExternalIgnoreList) as host-list items
    for authmilter, which reads the same grammar (config/hostlist): files stay files; an
    inline list keeps its IPs, CIDRs, names, ".domains" and "!" entries. Returns (items,
    entries OpenDKIM never matches, left out) -- ``InternalHosts -`` is a list holding
    only "-", which matches no client: no host is internal."""
    kind = spec.partition(":")[0].lower() if ":" in spec and not spec.startswith("/") else ""
    if spec.startswith("/"):
        return [f"file:{spec}"], []
    if kind in ("file", "refile"):
        return [spec], []
    items, never = [], []
    for r in Dataset.open(spec if kind == "csl" else f"csl:{spec}", icase=True).records:
        try:
            _check_host_entry(r.key, "<list>", None)
        except ConfigError:
            never.append(r.key)
            continue
        labels = r.key.lstrip("!").strip(".").split(".")
        if ":" not in r.key and "/" not in r.key and any(not x or x[0] == "-" or x[-1] == "-" for x in labels):
            never.append(r.key)      # not a host name a client can have ("-")
            continue
        items.append(r.key)
    return items, never


def convert(conf: OpendkimConf) -> Import:
    """Map the OpenDKIM settings onto authmilter's schema (config/schema.py)."""
    imp = Import()
    take = Taker(conf)

    milter_options(conf, imp, take, "OpenDKIM")
    if (v := take("Nameservers")) is not None:
        imp.set("dns.servers", [s.strip() for s in v.split(",") if s.strip()])

    mode = take("Mode")
    if mode is not None:
        imp.set("signing.enabled", "s" in mode, f"from Mode {mode}")
        imp.set("verify.enabled", "v" in mode,
                f"from Mode {mode}; authmilter's verifier also checks SPF and DMARC")

    kt, st = take("KeyTable"), take("SigningTable")
    keyfile, selector, domain = take("KeyFile"), take("Selector"), take("Domain")
    subdomains = _bool(take("SubDomains") or "no")
    if kt is not None and st is not None:
        imp.set("signing.key_table", kt, "reused unchanged (OpenDKIM KeyTable)")
        imp.set("signing.signing_table", st, "reused unchanged (OpenDKIM SigningTable)")
        for name in ("keyfile", "selector", "domain"):
            if name in conf.values:
                imp.drop(conf, name, "ignored by OpenDKIM when a KeyTable is set")
        if subdomains and "subdomains" in conf.values:
            imp.drop(conf, "subdomains", "applies to the Domain list only; with a SigningTable, an entry "
                     "for .example.com (refile: *@*.example.com) signs the subdomains")
    elif kt is not None:
        # opendkim.conf(5) Mode: signing needs KeyTable + SigningTable, or KeyTable + a Lua
        # SetupPolicyScript; OpenDKIM refuses to start in signing mode with a KeyTable alone
        # ("KeyTable requires SigningTable"). In verify-only mode the KeyTable is unused.
        imp.set("signing.key_table", kt, "reused unchanged (OpenDKIM KeyTable); add a signing_table to sign")
        signer = mode is None or "s" in mode
        script = conf.get("SetupPolicyScript")
        if not signer:
            imp.drop(conf, "keytable", "unused in verify-only mode (Mode v); kept as signing.key_table")
        elif script is not None:
            imp.set("signing.enabled", False, "OpenDKIM chose keys with a Lua SetupPolicyScript")
            imp.problems.append(f"KeyTable without SigningTable ({conf.where('KeyTable')}): OpenDKIM chose keys with "
                                f"SetupPolicyScript {script}, which authmilter cannot run; signing is off until a "
                                "[signing] signing_table maps From addresses to KeyTable keys")
        else:
            imp.set("signing.enabled", False, "OpenDKIM refuses to sign with a KeyTable but no SigningTable")
            imp.problems.append(f"KeyTable without SigningTable ({conf.where('KeyTable')}): OpenDKIM refuses to start "
                                "in signing mode with this (opendkim.conf(5) Mode: KeyTable needs SigningTable or "
                                "SetupPolicyScript); signing is off until [signing] signing_table is set")
        for name in ("keyfile", "selector", "domain", "subdomains"):
            if name in conf.values:
                imp.drop(conf, name, "ignored by OpenDKIM when a KeyTable is set")
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
    if not (kt or st or (keyfile and selector and domain)) and (mode is None or "s" in mode):
        imp.set("signing.enabled", False, "OpenDKIM had no signing key (no KeyTable, no KeyFile/Selector/Domain): "
                "it signed nothing")

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
        hosts, never = _host_items(v)
        imp.set("signing.internal_hosts", hosts,
                "reused (OpenDKIM InternalHosts)" if hosts else f"InternalHosts {v}: OpenDKIM treated no host as internal")
        if never:
            imp.dropped.append(f"InternalHosts entries {', '.join(never)}  ({conf.where('InternalHosts')}) -- "
                               "not an address, network or host name: OpenDKIM never matched them")
    if (v := take("ExternalIgnoreList")) is not None:
        forwarders, never = _host_items(v)
        imp.set("policy.trusted_forwarders", forwarders,
                f"from ExternalIgnoreList {v}: hosts that send as our domains without signing; "
                "they are exempt from reject_own_domain_spoof and DMARC rejects")
        if never:
            imp.dropped.append(f"ExternalIgnoreList entries {', '.join(never)}  ({conf.where('ExternalIgnoreList')}) "
                               "-- not an address, network or host name: OpenDKIM never matched them")
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

    take.drop_rest(imp, WHY_NOT, "not an OpenDKIM 2.11 option either", ignore=("include",))
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


def dmarc_words(s: Settings) -> str:
    """What authmilter does with DMARC failures under *s*, in words."""
    p = s.policy
    if p.dry_run:
        return "logs DMARC decisions but delivers everything (policy.dry_run = true)"
    how = {"evidence": "rejected unless something suggests forwarding or a mailing list (then quarantined)",
           "reject": "rejected", "quarantine": "quarantined", "tempfail": "tempfailed", "accept": "delivered"}
    held = "held in the MTA's hold queue" if p.quarantine == "hold" else f"delivered with {p.quarantine_header}"
    q = {"quarantine": held, "reject": "rejected", "accept": "delivered"}
    return (f"p=reject failures are {how[p.on_dmarc_reject]} (on_dmarc_reject = \"{p.on_dmarc_reject}\"), "
            f"p=quarantine failures are {q[p.on_dmarc_quarantine]} (on_dmarc_quarantine = \"{p.on_dmarc_quarantine}\")")


def own_domain_rule_applies(s: Settings) -> bool:
    """reject_own_domain_spoof has domains to protect: the SigningTable's or own_domains."""
    p = s.policy
    return p.reject_own_domain_spoof and not p.dry_run and (
        bool(p.own_domains) or (s.signing.enabled and bool(s.signing.signing_table)))


def own_domain_words(s: Settings) -> str:
    return ("mail from outside claiming one of our signing domains (or policy.own_domains) in From without an "
            "aligned SPF or DKIM pass is rejected (policy.reject_own_domain_spoof = true); list hosts that "
            "legitimately send as you unsigned in [policy] trusted_forwarders")


def behaviour_changes(imp: Import, s: Settings, existing: Settings | None = None) -> list[str]:
    """What authmilter, configured as written, treats differently from OpenDKIM: OpenDKIM
    only verified and labelled; authmilter's [policy] acts on its results."""
    if not s.verify.enabled:
        return []
    p = s.policy
    out = []
    if not p.dry_run and (p.on_dmarc_reject != "accept" or p.on_dmarc_quarantine != "accept"):
        out.append(f"DMARC is evaluated and acted on: {dmarc_words(s)}; OpenDKIM only added "
                   "Authentication-Results (import-opendmarc carries OpenDMARC's settings; policy.dry_run = true "
                   "logs decisions without acting)")
    if p.on_bad_from != "accept" and not p.dry_run:
        out.append(f"missing, multiple or unparsable From headers -> on_bad_from = \"{p.on_bad_from}\"")
    if own_domain_rule_applies(s):
        out.append(own_domain_words(s))
    out.append(f"SPF is checked and reported (reject_spf_fail = {str(p.reject_spf_fail).lower()}); OpenDKIM did no SPF")
    return out


def _check_tables(imp: Import, s: Settings) -> list[str]:
    """Parse the tables (not the keys' contents) as authmilter will, and check key files."""
    problems: list[str] = []
    source = s.source
    for setting, items in (("signing.internal_hosts", s.signing.internal_hosts),
                           ("policy.trusted_forwarders", s.policy.trusted_forwarders)):
        try:
            HostList.load(items, source=source, setting=setting)
        except ConfigError as exc:
            problems.append(str(exc))
    kt_spec, st_spec = s.signing.key_table, s.signing.signing_table
    if not s.signing.enabled or not kt_spec or not st_spec:
        return problems
    try:
        kt = KeyTable.load(kt_spec, source=source)
        st = SigningTable.load(st_spec, source=source)
        for rec in st.records():
            name = SigningTable.keyname_of(rec)
            if name != "%" and kt.get(name) is None:
                problems.append(f"{rec.where()}: key {name!r} is not in the KeyTable")
    except ConfigError as exc:
        problems.append(str(exc))
        return problems
    for entry in kt.entries.values():
        if entry.inline or "%" in entry.keypath:
            continue
        try:
            check_key_permissions(entry.keypath)
        except AuthmilterError as exc:
            problems.append(str(exc))
    return problems


DEBIAN_DEFAULTS = "/etc/default/opendkim"


def read_defaults(path: str) -> dict[str, str]:
    """Debian's /etc/default/opendkim: shell ``NAME=value`` lines, ``$NAME``/``${NAME}``
    expanded from earlier lines (what its init script and unit generator source)."""
    values: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(path, "", exc.strerror or "cannot read") from None
    for line in text.splitlines():
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
            value, comment = socket_value(sock)
        except ValueError as exc:
            imp.dropped.append(f"SOCKET={sock}  ({path}) -- not a socket authmilter understands: {exc}")
            return
        imp.set("socket", value, comment or f"from SOCKET in {path} (it overrides opendkim.conf's Socket)")


def _build(source: str, args: argparse.Namespace) -> Import:
    defaults = getattr(args, "defaults", None)
    if defaults is None and os.path.abspath(source) == "/etc/opendkim.conf" and os.path.exists(DEBIAN_DEFAULTS):
        defaults = DEBIAN_DEFAULTS     # the system's opendkim.conf goes with the system's defaults
    imp = convert(read_opendkim_conf(source))
    if defaults:
        apply_defaults(imp, defaults)
    return imp


IMPORTER = Importer("import-opendkim", "opendkim", "OpenDKIM", _build, behaviour_changes, _check_tables)


def cmd_import_opendkim(args: argparse.Namespace) -> int:
    """Write the authmilter TOML; exit 0 when it is complete, 1 when something must be
    fixed first, 2 when nothing was written (see migrate_common)."""
    return run_import(args, IMPORTER, args.opendkim_conf)


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
