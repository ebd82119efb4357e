"""Migrating from OpenDMARC: ``authmilter import-opendmarc``.

Reads an opendmarc.conf(5) as OpenDMARC 1.4 reads it (``Name value`` lines, config/
daemonconf) and maps each option onto authmilter's settings, carrying the admin's current
behaviour where authmilter has the setting for it:

* RejectFailures (default false: OpenDMARC rejects nothing and temp-fails nothing, it only
  adds Authentication-Results) -> ``on_dmarc_reject`` reject / accept, and ``on_dns_error``
  tempfail / accept. p=quarantine failures were held only with RejectFailures *and*
  HoldQuarantinedMessages (opendmarc.c, 1.4.2) -> ``on_dmarc_quarantine`` quarantine
  (``quarantine = "hold"``) / accept.
* PublicSuffixList -> RFC 7489 mode with that list (what OpenDMARC 1.4 implements).
* IgnoreHosts (default 127.0.0.1) -> ``policy.trusted_forwarders``, unless the config it
  is merged into already treats those hosts as internal (their mail is outbound there).
* IgnoreAuthenticatedClients, TrustedAuthservIDs, RequiredHeaders, RejectString,
  DomainWhitelist(File) (ARC) -> their authmilter counterparts; HistoryFile and
  FailureReports* -> ``[reports]``.

Options with no counterpart are listed with the reason; `behaviour_changes` lists what
authmilter, configured as written (after the merge), does differently from OpenDMARC.
"""
from __future__ import annotations

import argparse
import os

from .config.daemonconf import OPENDMARC_OPTIONS, DaemonConf, bool_value, read_name_value
from .config.schema import Settings
from .errors import ConfigError
from .migrate import dmarc_words, own_domain_rule_applies, own_domain_words
from .migrate_common import Import, Importer, Taker, bool_setting, milter_options, run_import

# Why an option is not carried over.
WHY_NOT = {
    "authservidwithjobid": "authmilter's authserv-id never carries a queue id",
    "autorestart": "run authmilter under systemd (Restart=on-failure) instead",
    "autorestartcount": "run authmilter under systemd instead",
    "autorestartrate": "run authmilter under systemd instead",
    "background": "authmilter runs in the foreground (systemd Type=notify)",
    "basedirectory": "authmilter does not chdir; paths in its config are absolute",
    "changerootdirectory": "run authmilter with systemd's sandboxing (the shipped unit) instead of a chroot",
    "copyfailuresto": "authmilter never adds recipients; failures are quarantined or rejected ([policy])",
    "domainwhitelistsize": "a capacity hint; authmilter's lists have no fixed size",
    "enablecoredumps": "systemd's LimitCORE= decides core dumps",
    "failurereportsbcc": "no copy address for failure reports",
    "failurereportsonnone": "authmilter follows each domain's ruf=/fo= request, whatever its p=",
    "ignoremailfrom": "authmilter checks every From domain; list forwarders in [policy] trusted_forwarders",
    "ignoremailto": "authmilter keeps no per-recipient exclusion from report data",
    "milterdebug": "log_level = \"debug\" gives authmilter's detail",
    "recordallmessages": "authmilter records every DMARC evaluation of a domain with a record; the others "
                         "are not reportable",
    "softwareheader": "authmilter adds no software header",
    "spfignoreresults": "authmilter always checks SPF itself and never reads SPF results from headers",
    "spfselfvalidate": "authmilter always checks SPF itself and never reads SPF results from headers",
    "testdnsdata": "test-only option",
}


def read_opendmarc_conf(path: str) -> DaemonConf:
    """OpenDMARC's config.c: ``#`` ends a line, the first word (case-insensitive) is the
    name, the rest the value; no Include. Unknown names are collected (OpenDMARC would
    refuse to start on them)."""
    return read_name_value(path, OPENDMARC_OPTIONS, includes=False, cr_ends_line=False)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _host_file_items(path: str) -> list[str]:
    """IgnoreHosts names a file (opendmarc.conf(5)); authmilter's host lists read the
    same one-entry-a-line grammar."""
    return [f"file:{path}"] if path.startswith("/") else [path]


def convert(conf: DaemonConf) -> Import:
    imp = Import()
    take = Taker(conf)

    milter_options(conf, imp, take, "OpenDMARC")

    # -- what is done with failures -----------------------------------------------------
    reject = bool_setting(conf, imp, "RejectFailures")
    take("RejectFailures")
    hold = bool_setting(conf, imp, "HoldQuarantinedMessages")
    take("HoldQuarantinedMessages")
    reject = bool(reject)
    imp.notes["reject_failures"] = reject
    imp.notes["hold"] = bool(hold)
    if reject:
        imp.set("policy.on_dmarc_reject", "reject",
                "OpenDMARC RejectFailures true: p=reject failures were rejected (\"evidence\" would quarantine "
                "forwarded and mailing-list mail instead, RFC 9989)")
        imp.set("policy.on_dns_error", "tempfail", "OpenDMARC RejectFailures true temp-failed unfinished evaluations")
        if hold:
            imp.set("policy.on_dmarc_quarantine", "quarantine", "OpenDMARC HoldQuarantinedMessages true")
            imp.set("policy.quarantine", "hold", "the MTA's hold queue, as OpenDMARC's smfi_quarantine")
        else:
            imp.set("policy.on_dmarc_quarantine", "accept",
                    "OpenDMARC without HoldQuarantinedMessages delivered p=quarantine failures")
    else:
        imp.set("policy.on_dmarc_reject", "accept",
                "OpenDMARC RejectFailures false (its default): failures were only labelled in "
                "Authentication-Results")
        imp.set("policy.on_dmarc_quarantine", "accept", "OpenDMARC RejectFailures false: nothing was held")
        imp.set("policy.on_dns_error", "accept", "OpenDMARC RejectFailures false: nothing was temp-failed")
        if hold and "holdquarantinedmessages" in conf.values:
            imp.drop(conf, "holdquarantinedmessages", "has no effect without RejectFailures in OpenDMARC 1.4 "
                     "(nothing was held); carried as on_dmarc_quarantine = \"accept\"")
    if (v := take("RejectString")) is not None:
        imp.set("policy.reject_text", "5.7.1 " + v.replace("%s", "{domain}"), "from RejectString")

    # -- what is checked -----------------------------------------------------------------
    if (v := take("PublicSuffixList")) is not None:
        imp.set("verify.dmarc_mode", "rfc7489",
                "OpenDMARC 1.4 found organizational domains with a Public Suffix List (RFC 7489); "
                "\"rfc9989\" is the DNS tree walk of RFC 9989")
        imp.set("verify.public_suffix_list", v)
    imp.notes["psl"] = v is not None
    if (v := take("TrustedAuthservIDs")) is not None:
        ids = [i for i in _csv(v) if i != "HOSTNAME"]
        imp.notes["trusted_ids"] = _csv(v)
        if ids:
            imp.set("verify.trusted_authserv_ids", ids,
                    "OpenDMARC read SPF/DKIM results from these Authentication-Results; authmilter checks "
                    "SPF and DKIM itself and only keeps their Received-SPF")
    spf_ignore = bool_setting(conf, imp, "SPFIgnoreResults")
    imp.notes["spf_ignore"] = bool(spf_ignore)
    required = bool_setting(conf, imp, "RequiredHeaders")
    take("RequiredHeaders")
    imp.notes["required_headers"] = bool(required)
    if required:
        imp.set("policy.on_bad_from", "reject", "OpenDMARC RequiredHeaders true rejected a From without a domain")
        imp.dropped.append(f"RequiredHeaders {conf.get('RequiredHeaders')}  ({conf.where('RequiredHeaders')}) -- "
                           "its From rule is carried (on_bad_from = \"reject\"); its other RFC 5322 counts "
                           "(one Date, at most one To/Cc/Subject/Message-Id ...) are not checked by authmilter")
    multi = bool_setting(conf, imp, "RejectMultiValueFrom")
    take("RejectMultiValueFrom")
    imp.notes["reject_multi_from"] = bool(multi)
    if multi:
        imp.set("policy.on_bad_from", "reject", "OpenDMARC RejectMultiValueFrom true")

    # -- who is not checked --------------------------------------------------------------
    v = take("IgnoreHosts")
    imp.notes["ignore_hosts"] = _host_file_items(v) if v is not None else ["127.0.0.1"]
    imp.notes["ignore_hosts_spec"] = v
    auth = bool_setting(conf, imp, "IgnoreAuthenticatedClients")
    take("IgnoreAuthenticatedClients")
    imp.notes["ignore_auth"] = bool(auth)
    if auth:
        imp.set("policy.ignore_authenticated", True, "OpenDMARC IgnoreAuthenticatedClients true")

    # -- ARC: domains whose chains are trusted --------------------------------------------
    sealers: list[str] = []
    if (v := take("DomainWhitelist")) is not None:
        sealers += _csv(v)
    if (v := take("DomainWhitelistFile")) is not None:
        try:
            with open(v, encoding="utf-8") as fh:
                sealers += [w for line in fh for w in [line.split("#", 1)[0].strip()] if w]
        except OSError as exc:
            imp.problems.append(f"DomainWhitelistFile {v} ({conf.where('DomainWhitelistFile')}): cannot read it "
                                f"({exc.strerror}); list its domains in [arc] trusted_sealers")
    if sealers:
        imp.set("arc.trusted_sealers", list(dict.fromkeys(s.lower().rstrip(".") for s in sealers)),
                "OpenDMARC DomainWhitelist(File): ARC sealers whose verdicts let a DMARC failure through")

    # -- reports -------------------------------------------------------------------------
    if (v := take("FailureReportsSentBy")) is not None and "@" in v and "USER@HOSTNAME" not in v:
        imp.set("reports.from_address", v, "from FailureReportsSentBy")
    if (v := take("FailureReports")) is not None and bool_value(v):
        imp.set("reports.failure_reports", True, "OpenDMARC FailureReports true (RFC 9991 failure reports)")
    if (v := take("ReportCommand")) is not None:
        prog = v.split()[0]
        if os.path.isabs(prog):
            imp.set("reports.sendmail", prog, f"from ReportCommand {v}")
        else:
            imp.drop(conf, "reportcommand", "not an absolute program path")
    if (v := take("HistoryFile")) is not None:
        imp.notes["history"] = v
        if imp.get("reports.from_address"):
            imp.set("reports.enabled", True, "OpenDMARC wrote a HistoryFile for opendmarc-reports: authmilter "
                    "keeps the report data in its store and `authmilter reports send` mails the reports")
        else:
            imp.set("reports.enabled", False, "OpenDMARC HistoryFile: set from_address and enabled = true to "
                    "collect aggregate report data and send it with `authmilter reports send`")
        imp.drop(conf, "historyfile", "authmilter keeps report data in its store ([store] url), not a text file; "
                 "`authmilter reports send` replaces opendmarc-importstats + opendmarc-reports")

    take.drop_rest(imp, WHY_NOT, "not an OpenDMARC 1.4 option (opendmarc refuses to start with it)")
    return imp


def _list_path(item: str) -> str:
    for prefix in ("file:", "refile:"):
        if item.startswith(prefix):
            return item[len(prefix):]
    return item


def _ignore_hosts(imp: Import, existing: Settings | None) -> None:
    """IgnoreHosts: OpenDMARC skipped those clients' mail. In authmilter, mail from
    signing.internal_hosts is outbound (signed, not checked) when signing is on; any other
    ignored host becomes a trusted forwarder (checked and labelled, never rejected or
    quarantined on DMARC or as an own-domain spoof)."""
    items = imp.notes["ignore_hosts"]
    internal: set[str] = set()
    signing = existing is not None and existing.signing.enabled and bool(existing.signing.key_table)
    if signing and existing is not None:
        # the same host list, however it is spelled (file:/refile: prefix or a bare path)
        internal = {_list_path(i) for i in existing.signing.internal_hosts}
    rest = [i for i in items if _list_path(i) not in internal]
    imp.notes["ignore_hosts_internal"] = [i for i in items if _list_path(i) in internal]
    if rest:
        spec = imp.notes["ignore_hosts_spec"]
        imp.set("policy.trusted_forwarders", rest,
                (f"from IgnoreHosts {spec}" if spec else "OpenDMARC's default IgnoreHosts (127.0.0.1)")
                + ": mail from these hosts is never rejected or quarantined on DMARC")


def behaviour_changes(imp: Import, s: Settings, existing: Settings | None = None) -> list[str]:
    """What authmilter, configured as written, does differently from OpenDMARC."""
    n, p = imp.notes, s.policy
    out: list[str] = []
    if not s.verify.enabled:
        return ["nothing is checked (verify.enabled = false in the merged config): no DMARC evaluation at all, "
                "OpenDMARC evaluated every message"]
    before_reject = "rejected" if n["reject_failures"] else "delivered with Authentication-Results"
    before_quar = "held" if n["reject_failures"] and n["hold"] else "delivered"
    same_reject = (p.on_dmarc_reject == "reject") if n["reject_failures"] else (p.on_dmarc_reject == "accept")
    same_quar = (p.on_dmarc_quarantine == "quarantine" and p.quarantine == "hold") if before_quar == "held" \
        else p.on_dmarc_quarantine == "accept"
    if p.dry_run and n["reject_failures"]:
        out.append(f"DMARC rejection off: {dmarc_words(s)}; OpenDMARC rejected p=reject failures")
    elif not (same_reject and same_quar) and not p.dry_run:
        out.append(f"DMARC rejection {'on' if p.on_dmarc_reject != 'accept' else 'off'}: {dmarc_words(s)}; "
                   f"OpenDMARC: p=reject failures {before_reject}, p=quarantine failures {before_quar}")
    if p.on_dns_error == "tempfail" and not n["reject_failures"] and not p.dry_run:
        out.append("a DNS failure that could change the verdict is temp-failed (on_dns_error = \"tempfail\"); "
                   "OpenDMARC without RejectFailures never temp-failed")
    if own_domain_rule_applies(s):
        out.append(own_domain_words(s) + "; OpenDMARC only applied the published policy of those domains")
    if p.on_bad_from != "accept" and not p.dry_run and not n["required_headers"]:
        out.append(f"a missing, repeated or unparsable From (or one naming different domains) -> on_bad_from = "
                   f"\"{p.on_bad_from}\"; OpenDMARC without RequiredHeaders/RejectMultiValueFrom delivered such "
                   "mail unevaluated (CVE-2019-16378 class); on_bad_from = \"accept\" restores that")
    if p.ignore_authenticated and not n["ignore_auth"]:
        out.append("mail from SASL-authenticated clients is treated as outbound (signed, not DMARC-checked; "
                   "policy.ignore_authenticated = true); OpenDMARC checked it (IgnoreAuthenticatedClients false)")
    trusted = [h for h in n["ignore_hosts"] if h in p.trusted_forwarders]
    if trusted:
        out.append(f"mail from {', '.join(trusted)} (IgnoreHosts) is now checked and gets Authentication-Results, "
                   "but is never rejected or quarantined on DMARC (policy.trusted_forwarders); OpenDMARC skipped it")
    if n.get("ignore_hosts_internal"):
        out.append(f"mail from {', '.join(n['ignore_hosts_internal'])} (IgnoreHosts, already signing.internal_hosts) "
                   "is outbound: signed and not checked, as before")
    ids = [i for i in n.get("trusted_ids", []) if i != "HOSTNAME"]
    if ids or not n["spf_ignore"]:
        out.append("DMARC uses authmilter's own SPF and DKIM checks; OpenDMARC took them from "
                   + (f"Authentication-Results of {', '.join(ids)} and " if ids else "")
                   + "SPF headers (Received-SPF) added before it -- if those came from your own relays, "
                   "list the relays' addresses in [verify] trusted_relays")
    if not n["psl"] and s.verify.dmarc_mode == "rfc9989":
        out.append("organizational domains are found by the RFC 9989 DNS tree walk; OpenDMARC without a "
                   "PublicSuffixList compared exact domains only, so relaxed alignment passes more mail")
    elif n["psl"] and s.verify.dmarc_mode == "rfc9989":
        out.append("organizational domains are found by the RFC 9989 DNS tree walk, not OpenDMARC's "
                   "PublicSuffixList")
    if n.get("history") and not s.reports.enabled:
        out.append(f"no aggregate report data is collected (OpenDMARC wrote {n['history']}): set [reports] "
                   "from_address and enabled = true")
    if s.reports.failure_reports:
        if not (s.reports.enabled or s.store.enabled):
            out.append("failure reports (FailureReports) are not sent: they need the store ([reports] enabled = "
                       "true with a from_address) and `authmilter reports send`; OpenDMARC mailed each at once")
        else:
            out.append("failure reports are mailed by `authmilter reports send` runs (hourly limits per "
                       "destination), not at once through ReportCommand")
    if s.reports.enabled and n.get("history"):
        out.append("aggregate report data goes to the store and `authmilter reports send` (a cron job or timer) "
                   "mails the reports, replacing opendmarc-importstats/opendmarc-reports")
    return out


def _build(source: str, args: argparse.Namespace) -> Import:
    imp = convert(read_opendmarc_conf(source))
    existing = None
    if getattr(args, "config", None):
        from .config.schema import load_settings

        existing = load_settings(args.config)
    _ignore_hosts(imp, existing)
    return imp


def _check(imp: Import, s: Settings) -> list[str]:
    problems = []
    from .config.hostlist import HostList

    try:
        HostList.load(s.policy.trusted_forwarders, source=s.source, setting="policy.trusted_forwarders")
    except ConfigError as exc:
        problems.append(str(exc))
    if s.verify.public_suffix_list and not os.access(s.verify.public_suffix_list, os.R_OK):
        problems.append(f"verify.public_suffix_list {s.verify.public_suffix_list}: not readable (install Debian's "
                        "publicsuffix package or point it at a copy of the list)")
    return problems


IMPORTER = Importer("import-opendmarc", "opendmarc", "OpenDMARC", _build, behaviour_changes, _check)


def cmd_import_opendmarc(args: argparse.Namespace) -> int:
    """Write (or merge into) the authmilter TOML; exit codes as in migrate_common."""
    return run_import(args, IMPORTER, args.opendmarc_conf)
