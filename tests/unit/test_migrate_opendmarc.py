"""import-opendmarc: each opendmarc.conf(5) option, the Debian default file, and what the
admin is told (dropped options, behaviour changes). Option semantics: opendmarc.conf(5)
and opendmarc.c 1.4.2 (RejectFailures gates both rejection and holding)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from migrate_support import assert_mapping, dropped_entry, run

from authmilter.config.schema import load_settings, settings_from_dict
from authmilter.migrate_common import get_dotted
from authmilter.migrate_opendmarc import _ignore_hosts, behaviour_changes, convert, read_opendmarc_conf

DATA = Path(__file__).resolve().parents[1] / "data" / "migrate"


def imported(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    p = tmp_path / "opendmarc.conf"
    p.write_text(text)
    imp = convert(read_opendmarc_conf(str(p)))
    _ignore_hosts(imp, None)
    return imp


# (opendmarc.conf lines, {dotted key: expected value}); None = the key is not written
CASES: list[tuple[str, dict[str, Any]]] = [
    # RejectFailures false is OpenDMARC's default: nothing rejected, held or temp-failed
    ("", {"policy.on_dmarc_reject": "accept", "policy.on_dmarc_quarantine": "accept",
          "policy.on_dns_error": "accept"}),
    ("RejectFailures false\n", {"policy.on_dmarc_reject": "accept", "policy.on_dns_error": "accept"}),
    ("RejectFailures true\n", {"policy.on_dmarc_reject": "reject", "policy.on_dmarc_quarantine": "accept",
                               "policy.on_dns_error": "tempfail"}),
    ("RejectFailures yes\nHoldQuarantinedMessages true\n",
     {"policy.on_dmarc_reject": "reject", "policy.on_dmarc_quarantine": "quarantine", "policy.quarantine": "hold"}),
    # HoldQuarantinedMessages without RejectFailures held nothing in 1.4.2
    ("HoldQuarantinedMessages true\n", {"policy.on_dmarc_quarantine": "accept"}),
    ("RejectString rejected by policy of %s\n", {"policy.reject_text": "5.7.1 rejected by policy of {domain}"}),
    ("PublicSuffixList /usr/share/publicsuffix/public_suffix_list.dat\n",
     {"verify.dmarc_mode": "rfc7489", "verify.public_suffix_list": "/usr/share/publicsuffix/public_suffix_list.dat"}),
    ("TrustedAuthservIDs mx1.example.net, HOSTNAME,mx2.example.net\n",
     {"verify.trusted_authserv_ids": ["mx1.example.net", "mx2.example.net"]}),
    ("TrustedAuthservIDs HOSTNAME\n", {"verify.trusted_authserv_ids": None}),
    ("IgnoreHosts /etc/opendmarc/ignore.hosts\n", {"policy.trusted_forwarders": ["file:/etc/opendmarc/ignore.hosts"]}),
    ("", {"policy.trusted_forwarders": ["127.0.0.1"]}),      # the default IgnoreHosts
    ("IgnoreAuthenticatedClients true\n", {"policy.ignore_authenticated": True}),
    ("IgnoreAuthenticatedClients false\n", {"policy.ignore_authenticated": None}),
    ("RequiredHeaders true\n", {"policy.on_bad_from": "reject"}),
    ("RejectMultiValueFrom true\n", {"policy.on_bad_from": "reject"}),
    ("DomainWhitelist arc.example.net,Lists.Example.org.\n",
     {"arc.trusted_sealers": ["arc.example.net", "lists.example.org"]}),
    ("FailureReports true\nFailureReportsSentBy dmarc@example.com\n",
     {"reports.failure_reports": True, "reports.from_address": "dmarc@example.com"}),
    ("ReportCommand /usr/sbin/sendmail -t\n", {"reports.sendmail": "/usr/sbin/sendmail"}),
    ("HistoryFile /run/opendmarc/opendmarc.dat\n", {"reports.enabled": False}),
    ("HistoryFile /run/opendmarc/opendmarc.dat\nFailureReportsSentBy dmarc@example.com\n",
     {"reports.enabled": True, "reports.from_address": "dmarc@example.com"}),
    ("Socket inet:8893@localhost\n", {"socket": "inet:8893@localhost"}),
    ("Socket inet:8893\n", {"socket": "inet:8893@0.0.0.0"}),
    ("UMask 0002\nUserID opendmarc:mail\n", {"socket_mode": "0775", "user": "opendmarc", "group": "mail"}),
    ("AuthservID mx.example.com\n", {"authserv_id": "mx.example.com"}),
    ("AuthservID HOSTNAME\n", {"authserv_id": ""}),
    ("Syslog true\nPidFile /run/opendmarc/opendmarc.pid\nDNSTimeout 3\n",
     {"log_target": "syslog", "pid_file": "/run/opendmarc/opendmarc.pid", "dns.timeout_s": 3.0}),
]


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0].strip() or "(empty)" for c in CASES])
def test_option_mapping(tmp_path, text, expected):
    assert_mapping(imported(tmp_path, text), expected)


@pytest.mark.parametrize("line,reason", [
    ("SPFSelfValidate true", "always checks SPF itself"),
    ("SPFIgnoreResults true", "always checks SPF itself"),
    ("CopyFailuresTo postmaster@example.com", "never adds recipients"),
    ("IgnoreMailFrom example.net", "checks every From domain"),
    ("SoftwareHeader true", "no software header"),
    ("AutoRestart true", "systemd"),
    ("HistoryFile /run/opendmarc/opendmarc.dat", "authmilter reports send"),
    ("RequiredHeaders true", "other RFC 5322 counts"),
    ("HoldQuarantinedMessages true", "no effect without RejectFailures"),
    ("ChangeRootDirectory /var/chroot/opendmarc", "sandboxing"),
    ("NoSuchOption 1", "not an OpenDMARC 1.4 option"),
])
def test_options_without_equivalent_are_listed_with_the_reason(tmp_path, line, reason):
    entry = dropped_entry(imported(tmp_path, line + "\n"), line)
    assert reason in entry and ":1)" in entry


def test_debian_default_opendmarc_conf(tmp_path):
    out = tmp_path / "authmilter.toml"
    r = run("import-opendmarc", str(DATA / "opendmarc.conf"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    s = load_settings(out)
    assert (s.socket, s.user, s.pid_file, s.log_target) == (
        "local:/run/opendmarc/opendmarc.sock", "opendmarc", "/run/opendmarc/opendmarc.pid", "syslog")
    # OpenDMARC's default is not to reject: carried
    assert (s.policy.on_dmarc_reject, s.policy.on_dmarc_quarantine, s.policy.on_dns_error) == (
        "accept", "accept", "accept")
    text = out.read_text()
    assert "# Behaviour changes (what authmilter does differently from OpenDMARC with this config):" in text
    # no signing domains in a config of its own: the own-domain rule has nothing to protect
    assert "claiming one of our signing domains" not in r.stderr
    assert "behaviour change: a missing, repeated or unparsable From" in r.stderr
    assert "DMARC rejection" not in r.stderr      # unchanged: delivered with labels, as before


def test_dmarc_rejection_change_is_flagged_against_an_existing_config(tmp_path):
    """RejectFailures true imported into a config that explicitly keeps DMARC off: the
    conflict is reported and the behaviour change says rejection is now off."""
    conf = tmp_path / "opendmarc.conf"
    conf.write_text("RejectFailures true\n")
    existing = tmp_path / "existing.toml"
    existing.write_text('[signing]\nenabled = false\n[policy]\non_dmarc_reject = "accept"\n')
    out = tmp_path / "out.toml"
    r = run("import-opendmarc", str(conf), "-c", str(existing), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert load_settings(out).policy.on_dmarc_reject == "accept"
    assert f'conflict: policy.on_dmarc_reject: {existing} has "accept", {conf} "reject"' in r.stderr
    assert "behaviour change: DMARC rejection off:" in r.stderr
    assert "OpenDMARC: p=reject failures rejected" in r.stderr
    r = run("import-opendmarc", str(conf), "-c", str(existing), "-o", str(out), "--prefer-imported")
    assert r.returncode == 0 and load_settings(out).policy.on_dmarc_reject == "reject"
    assert "DMARC rejection" not in r.stderr


def test_ignore_hosts_already_internal_stay_outbound(tmp_path):
    """IgnoreHosts naming the hosts the existing config signs for: nothing to add."""
    from authmilter.config.schema import Settings, SigningSettings

    imp = imported(tmp_path, "IgnoreHosts /etc/opendkim/TrustedHosts\n")
    existing = Settings(signing=SigningSettings(key_table="csl:a=a.example:s:/k", signing_table="csl:*=a",
                                                internal_hosts=("file:/etc/opendkim/TrustedHosts",)))
    imp.data.pop("policy", None)
    _ignore_hosts(imp, existing)
    assert get_dotted(imp.data, "policy.trusted_forwarders") is None
    changes = behaviour_changes(imp, settings_from_dict(imp.data), existing)
    assert any("already signing.internal_hosts" in c for c in changes)


def test_failure_reports_without_the_store_are_flagged(tmp_path):
    imp = imported(tmp_path, "FailureReports true\n")
    changes = behaviour_changes(imp, settings_from_dict(imp.data))
    assert any(c.startswith("failure reports (FailureReports) are not sent") for c in changes)


def test_ignore_hosts_matches_internal_hosts_however_spelled(tmp_path):
    from authmilter.config.schema import Settings, SigningSettings

    imp = imported(tmp_path, "IgnoreHosts /etc/opendkim/TrustedHosts\n")
    imp.data.pop("policy", None)
    existing = Settings(signing=SigningSettings(key_table="csl:a=a.example:s:/k", signing_table="csl:*=a",
                                                internal_hosts=("refile:/etc/opendkim/TrustedHosts",)))
    _ignore_hosts(imp, existing)
    assert get_dotted(imp.data, "policy.trusted_forwarders") is None


def test_unreadable_public_suffix_list_must_be_fixed(tmp_path):
    conf = tmp_path / "opendmarc.conf"
    conf.write_text(f"PublicSuffixList {tmp_path}/missing.dat\n")
    out = tmp_path / "out.toml"
    r = run("import-opendmarc", str(conf), "-o", str(out))
    assert r.returncode == 1
    assert f"must be fixed before authmilter starts: verify.public_suffix_list {tmp_path}/missing.dat" in r.stderr


SAMPLE_VALUES = {"Socket": "inet:8893@localhost", "UMask": "007", "UserID": "opendmarc", "AuthservID": "mx.example",
                 "PidFile": "/run/o.pid", "DNSTimeout": "3", "PublicSuffixList": "/usr/share/psl.dat",
                 "TrustedAuthservIDs": "mx.example", "IgnoreHosts": "/etc/opendmarc/ignore",
                 "DomainWhitelist": "arc.example",
                 "FailureReportsSentBy": "d@example.com", "ReportCommand": "/usr/sbin/sendmail -t",
                 "RejectString": "no %s", "HistoryFile": "/run/o.dat", "SyslogFacility": "local0",
                 "IgnoreMailFrom": "example.net", "IgnoreMailTo": "r@example.net", "CopyFailuresTo": "p@example.com",
                 "FailureReportsBcc": "p@example.com", "AutoRestartRate": "10/1h", "AutoRestartCount": "3",
                 "BaseDirectory": "/var/lib/o", "ChangeRootDirectory": "/var/chroot", "DomainWhitelistSize": "10",
                 "MilterDebug": "1", "TestDNSData": "/tmp/d"}


def test_every_opendmarc_option_is_carried_or_listed(tmp_path):
    """opendmarc.conf(5)'s whole option table: each one changes the written settings or is
    listed as not carried over, never silently ignored."""
    from authmilter.config.daemonconf import OPENDMARC_OPTIONS
    from authmilter.migrate_common import flatten

    sealers = tmp_path / "whitelist.domains"
    sealers.write_text("# ARC sealers\narc.example.org\n")
    values = {**SAMPLE_VALUES, "DomainWhitelistFile": str(sealers)}
    baseline = flatten(imported(tmp_path, "").data)
    silent = []
    for name in OPENDMARC_OPTIONS:
        imp = imported(tmp_path, f"{name} {values.get(name, 'true')}\n")
        if flatten(imp.data) == baseline and not any(d.startswith(name + " ") for d in imp.dropped):
            silent.append(name)
    assert silent == []
