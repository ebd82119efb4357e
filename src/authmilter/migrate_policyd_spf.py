"""Migrating from policyd-spf (Debian's postfix-policyd-spf-python): ``authmilter import-policyd-spf``.

Reads a policyd-spf.conf(5) as spf_engine reads it (``Name = value``, config/daemonconf)
and maps it onto authmilter's SPF rules ([policy] reject_spf_fail, reject_spf_results,
reject_helo_spf, spf_temperror_tempfail; [verify] spf_helo, add_received_spf). Unset
options take policyd-spf's own defaults (HELO_reject = Fail, Mail_From_reject = Fail,
skip_addresses = the loopback networks, Header_Type = SPF), because that is what the
admin's server does today.

How policyd-spf decides (spf_engine, 3.0): the HELO identity is checked first; its result
is rejected per HELO_reject (Fail: fail; Softfail: fail, softfail; SPF_Not_Pass: fail,
softfail, neutral; Null: fail, for the null sender only; False / No_Check: never). Then
the MAIL FROM identity per Mail_From_reject (same words, no Null). PermError_reject =
True adds permerror to both unless the scope is False; TempError_Defer = True defers a
temperror. TestOnly = 0 (sic: 1 is the normal mode) never rejects. skip_addresses,
Whitelist, HELO_Whitelist and Domain_Whitelist(_PTR) skip the check for the client.
"""
from __future__ import annotations

import argparse

from .config.daemonconf import POLICYD_SPF_OPTIONS, DaemonConf, read_key_equals_value
from .config.hostlist import _check_host_entry
from .config.schema import Settings
from .errors import ConfigError
from .migrate import dmarc_words, own_domain_rule_applies, own_domain_words
from .migrate_common import Import, Importer, Taker, milter_options, run_import

DEFAULTS = {                 # spf_engine's defaultConfigData, for the options mapped here
    "HELO_reject": "Fail",
    "Mail_From_reject": "Fail",
    "PermError_reject": "False",
    "TempError_Defer": "False",
    "skip_addresses": "127.0.0.0/8,::ffff:127.0.0.0/104,::1",
    "TestOnly": "1",
    "Header_Type": "SPF",
}

SCOPE_RESULTS = {
    "Fail": ["fail"],
    "Softfail": ["fail", "softfail"],
    "SPF_Not_Pass": ["fail", "softfail", "neutral"],
    "False": [],
    "No_Check": [],
    "Null": [],
}

WHY_NOT = {
    "domain_whitelist": "no equivalent: authmilter does not exempt a client because another domain's SPF "
                        "record lists it; a forwarder's mail is judged by DMARC and ARC ([arc] trusted_sealers), "
                        "or list its addresses in [policy] trusted_forwarders",
    "whitelist_lookup_time": "authmilter makes no whitelisting lookups",
    "void_limit": "authmilter applies RFC 7208's void lookup limit of 2",
    "spf_enhanced_status_codes": "authmilter always answers with RFC 7372 codes (5.7.23, 5.7.24)",
    "reason_message": "authmilter replies with the domain's exp= text or \"SPF check failed for ADDRESS\"",
    "mock": "a workaround for policy-server headers milters could not see; authmilter is the milter",
    "queueid": "authmilter's one log line per message always starts with the queue id",
    "per_user": "no per-recipient SPF settings in authmilter",
    "prospective": "outbound SPF prediction has no equivalent",
    "helo_pass_restriction": "Postfix restriction classes are not triggered by authmilter",
    "mail_from_pass_restriction": "Postfix restriction classes are not triggered by authmilter",
    "hide_receiver": "authmilter's Received-SPF names its authserv-id as receiver, never a recipient's host",
    "macrolist": "see [signing] sign_daemon_names for daemon_name-based classification",
    "reject_not_pass_domains": "no per-domain SPF rule in authmilter; those domains' DMARC p=reject, when "
                               "published, is applied",
    "no_mail": "carried as no SPF rejection (see the behaviour changes)",
}


def read_policyd_spf_conf(path: str) -> DaemonConf:
    return read_key_equals_value(path, POLICYD_SPF_OPTIONS)


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _hosts(conf: DaemonConf, imp: Import, key: str, items: list[str]) -> list[str]:
    good, bad = [], []
    for item in items:
        try:
            _check_host_entry(item.strip("[]"), "<list>", None)
            good.append(item.strip("[]"))
        except ConfigError:
            bad.append(item)
    if bad:
        where = f"  ({conf.where(key)})" if key.lower() in conf.values else ""
        imp.dropped.append(f"{conf.spelling(key.lower())} entries {', '.join(bad)}{where} -- not an address, "
                           "network or host name authmilter can match")
    return good


def convert(conf: DaemonConf) -> Import:
    imp = Import()
    take = Taker(conf)

    def value(name: str) -> str:
        v = take(name)
        return DEFAULTS[name] if v is None else v

    milter_options(conf, imp, take, "pyspf-milter")

    # -- rejection rules ---------------------------------------------------------------
    test_only = take("TestOnly")
    if test_only is None:
        test_only = take("defaultSeedOnly")
    testing = (test_only or DEFAULTS["TestOnly"]).strip() == "0"
    no_mail = (take("No_Mail") or "False") == "True"
    helo_policy, mfrom_policy = value("HELO_reject"), value("Mail_From_reject")
    permerror = value("PermError_reject") == "True"
    temperror = value("TempError_Defer") == "True"
    for key, policy in (("HELO_reject", helo_policy), ("Mail_From_reject", mfrom_policy)):
        if policy not in SCOPE_RESULTS or (key == "Mail_From_reject" and policy == "Null"):
            if key.lower() in conf.values:
                imp.drop(conf, key.lower(), "not a value policyd-spf knows; it rejects nothing for this identity")
    helo = list(SCOPE_RESULTS.get(helo_policy, []))
    mfrom = list(SCOPE_RESULTS.get(mfrom_policy, [])) if mfrom_policy != "Null" else []
    if permerror:
        helo += ["permerror"] if helo_policy not in ("False", "No_Check") else []
        mfrom += ["permerror"] if mfrom_policy not in ("False", "No_Check") else []
    imp.notes.update(helo_policy=helo_policy, mfrom_policy=mfrom_policy, testing=testing, no_mail=no_mail,
                     temperror=temperror)
    if testing or no_mail:
        helo, mfrom = [], []
    imp.notes.update(helo=helo, mfrom=mfrom)
    why = "TestOnly = 0: policyd-spf rejected nothing" if testing else (
        "No_Mail = True: policyd-spf rejected only \"v=spf1 -all\" domains" if no_mail else "")
    imp.set("policy.reject_helo_spf", helo, why or f"policyd-spf HELO_reject = {helo_policy}"
            + (", PermError_reject = True" if permerror and helo else ""))
    imp.set("policy.reject_spf_fail", bool(mfrom), why or f"policyd-spf Mail_From_reject = {mfrom_policy}")
    if mfrom or helo:
        imp.set("policy.spf_reject_stage", "rcpt", "policyd-spf answered at RCPT TO, before the message was sent")
    if mfrom:
        imp.set("policy.reject_spf_results", mfrom, f"policyd-spf Mail_From_reject = {mfrom_policy}"
                + (", PermError_reject = True" if permerror else ""))
        imp.set("policy.spf_temperror_tempfail", temperror, f"policyd-spf TempError_Defer = {value('TempError_Defer')}")
    if helo_policy == "No_Check":
        imp.set("verify.spf_helo", False, "policyd-spf HELO_reject = No_Check: the HELO identity was not checked")
    elif helo_policy != "Null":
        imp.set("verify.spf_helo", True, "the HELO identity is checked, as policyd-spf did")

    # -- who is not checked ------------------------------------------------------------
    skip = _hosts(conf, imp, "skip_addresses", _list(value("skip_addresses")))
    allow = _hosts(conf, imp, "Whitelist", _list(take("Whitelist") or ""))
    helo_names = _hosts(conf, imp, "HELO_Whitelist", _list(take("HELO_Whitelist") or ""))
    ptr: list[str] = []
    for d in _list(take("Domain_Whitelist_PTR") or ""):
        d = d.strip(".").lower()
        ptr += [d, f".{d}"]
    ptr = _hosts(conf, imp, "Domain_Whitelist_PTR", ptr)
    internal = []
    if (v := take("InternalHosts")) is not None:
        internal = _hosts(conf, imp, "InternalHosts", _list(v))
    forwarders = list(dict.fromkeys(skip + allow + helo_names + ptr + internal))
    imp.notes.update(skip=skip, allow=allow, helo_names=helo_names, ptr=ptr)
    if forwarders:
        imp.set("policy.trusted_forwarders", forwarders,
                "policyd-spf skip_addresses / Whitelist / HELO_Whitelist / Domain_Whitelist_PTR: clients whose SPF "
                "was not checked; never rejected on SPF or DMARC")

    # -- headers and identifiers -----------------------------------------------------------
    header = value("Header_Type")
    imp.notes["header"] = header
    if "SPF" in header and "AR" not in header:
        imp.set("verify.add_received_spf", True, "policyd-spf Header_Type = SPF: downstream filters read Received-SPF")
    elif "AR" in header:
        imp.set("verify.add_received_spf", False, "policyd-spf Header_Type = AR (authmilter always adds "
                "Authentication-Results)")
    else:
        imp.set("verify.add_received_spf", False, f"policyd-spf Header_Type = {header}")
        if "header_type" in conf.values:
            imp.drop(conf, "header_type", "authmilter always adds Authentication-Results")
    if (v := take("Authserv_Id")) is not None:
        imp.set("authserv_id", "" if v == "HOSTNAME" else v,
                "policyd-spf Authserv_Id HOSTNAME: empty means the MTA's j macro, else the host name"
                if v == "HOSTNAME" else "")
    if (v := take("Lookup_Time")) is not None:
        try:
            imp.set("dns.message_budget_s", float(int(v)),
                    f"policyd-spf Lookup_Time = {v} (it applied per SPF check; authmilter's budget is per message)")
        except ValueError:
            imp.drop(conf, "lookup_time", "not a number")
    if (v := take("debugLevel")) is not None:
        try:
            level = int(v)
            imp.set("log_level", "error" if level <= 0 else "info" if level == 1 else "debug",
                    f"policyd-spf debugLevel = {v}")
        except ValueError:
            imp.drop(conf, "debuglevel", "not a number")
    if (v := conf.get("Void_Limit")) is not None and v.strip() == "2":
        take.handled.add("void_limit")      # the RFC's limit, which authmilter applies

    take.drop_rest(imp, WHY_NOT, "policyd-spf ignores it too (not one of its options, or not one Name = value "
                   "pair)", separator=" = ")
    return imp


def _words(results: list[str] | tuple[str, ...]) -> str:
    return ", ".join(results) if results else "nothing"


def behaviour_changes(imp: Import, s: Settings, existing: Settings | None = None) -> list[str]:
    """What authmilter, configured as written, does differently from policyd-spf."""
    n, p = imp.notes, s.policy
    out: list[str] = []
    if not s.verify.enabled:
        return ["nothing is checked (verify.enabled = false in the merged config): SPF is not checked at all"]
    final_mfrom = list(p.reject_spf_results) if p.reject_spf_fail else []
    final_helo = list(p.reject_helo_spf) if s.verify.spf_helo or p.reject_helo_spf else []
    if p.dry_run and (n["mfrom"] or n["helo"]):
        out.append("nothing is rejected on SPF (policy.dry_run = true); policyd-spf rejected "
                   f"MAIL FROM {_words(n['mfrom'])} and HELO {_words(n['helo'])}")
    else:
        if sorted(final_mfrom) != sorted(n["mfrom"]):
            out.append(f"MAIL FROM SPF results rejected: {_words(final_mfrom)} (the merged config's "
                       f"reject_spf_fail/reject_spf_results); policyd-spf rejected {_words(n['mfrom'])}"
                       + (" -- SPF fail is no longer rejected" if "fail" in n["mfrom"] and
                          "fail" not in final_mfrom else ""))
        if sorted(final_helo) != sorted(n["helo"]):
            out.append(f"HELO SPF results rejected: {_words(final_helo)}; policyd-spf rejected {_words(n['helo'])}")
        if (final_mfrom or final_helo) and p.spf_reject_stage != "rcpt":
            out.append("SPF rejections happen at the end of DATA (550 5.7.23), after the message was sent "
                       "(spf_reject_stage = \"data\"); policyd-spf refused at RCPT TO, before it")
    if n["helo_policy"] == "Null":
        out.append("HELO_reject = Null (reject HELO fail for the null sender only) has no equivalent: HELO "
                   "results are not rejected")
    if n["no_mail"]:
        out.append("No_Mail = True (reject only domains publishing \"v=spf1 -all\") has no equivalent: nothing "
                   "is rejected on SPF; DMARC p=reject of such domains still applies")
    if n["temperror"] != p.spf_temperror_tempfail and final_mfrom:
        out.append("an SPF temperror is " + ("temp-failed" if p.spf_temperror_tempfail else "treated as no result")
                   + f" (spf_temperror_tempfail); policyd-spf TempError_Defer = {n['temperror']}")
    exempt = [h for h in n["skip"] + n["allow"] + n["ptr"] if h in p.trusted_forwarders]
    if exempt:
        out.append(f"clients in {', '.join(exempt)} (skip_addresses/Whitelist/Domain_Whitelist_PTR) are SPF-checked "
                   "and reported but never rejected on SPF or DMARC (policy.trusted_forwarders); policyd-spf "
                   "skipped their check and added an X-header")
    if n["helo_names"]:
        out.append(f"HELO_Whitelist {', '.join(n['helo_names'])}: matched against the client's verified host name "
                   "(reverse DNS), not against the HELO name's address records")
    if n["header"] != "None" or s.verify.add_received_spf:
        out.append("results are in Authentication-Results (spf=, and smtp.helo when checked)"
                   + (" and Received-SPF" if s.verify.add_received_spf else "")
                   + f"; policyd-spf added {'Received-SPF' if 'SPF' in n['header'] else n['header']}")
    if not p.dry_run and (p.on_dmarc_reject != "accept" or p.on_dmarc_quarantine != "accept"):
        out.append(f"DMARC is evaluated and acted on: {dmarc_words(s)}; policyd-spf did no DMARC")
    if own_domain_rule_applies(s):
        out.append(own_domain_words(s))
    return out


def _build(source: str, args: argparse.Namespace) -> Import:
    return convert(read_policyd_spf_conf(source))


def _check(imp: Import, s: Settings) -> list[str]:
    from .config.hostlist import HostList

    try:
        HostList.load(s.policy.trusted_forwarders, source=s.source, setting="policy.trusted_forwarders")
    except ConfigError as exc:
        return [str(exc)]
    return []


IMPORTER = Importer("import-policyd-spf", "policyd-spf", "policyd-spf", _build, behaviour_changes, _check)


def cmd_import_policyd_spf(args: argparse.Namespace) -> int:
    """Write (or merge into) the authmilter TOML; exit codes as in migrate_common."""
    return run_import(args, IMPORTER, args.policyd_spf_conf)
