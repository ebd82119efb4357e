"""import-policyd-spf: each policyd-spf.conf(5) option (semantics from spf_engine 3.0's
_get_resultcodes: HELO first, PermError_reject/TempError_Defer for both scopes unless the
scope is False, TestOnly = 0 rejecting nothing), the Debian default file, and the notes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from migrate_support import assert_mapping, dropped_entry, run

from authmilter.config.schema import load_settings
from authmilter.migrate_policyd_spf import convert, read_policyd_spf_conf

DATA = Path(__file__).resolve().parents[1] / "data" / "migrate"
LOOPBACK = ["127.0.0.0/8", "::ffff:127.0.0.0/104", "::1"]


def imported(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    p = tmp_path / "policyd-spf.conf"
    p.write_text(text)
    return convert(read_policyd_spf_conf(str(p)))


CASES: list[tuple[str, dict[str, Any]]] = [
    # nothing set: policyd-spf's own defaults (HELO_reject = Fail, Mail_From_reject = Fail)
    ("", {"policy.reject_helo_spf": ["fail"], "policy.reject_spf_fail": True, "policy.reject_spf_results": ["fail"],
          "policy.spf_reject_stage": "rcpt",
          "policy.spf_temperror_tempfail": False, "verify.spf_helo": True, "verify.add_received_spf": True,
          "policy.trusted_forwarders": LOOPBACK}),
    ("HELO_reject = Softfail\n", {"policy.reject_helo_spf": ["fail", "softfail"]}),
    ("HELO_reject = SPF_Not_Pass\n", {"policy.reject_helo_spf": ["fail", "softfail", "neutral"]}),
    ("HELO_reject = False\n", {"policy.reject_helo_spf": [], "verify.spf_helo": True}),
    ("HELO_reject = No_Check\n", {"policy.reject_helo_spf": [], "verify.spf_helo": False}),
    ("HELO_reject = Null\n", {"policy.reject_helo_spf": []}),
    ("Mail_From_reject = Softfail\n", {"policy.reject_spf_results": ["fail", "softfail"]}),
    ("Mail_From_reject = SPF_Not_Pass\n", {"policy.reject_spf_results": ["fail", "softfail", "neutral"]}),
    ("Mail_From_reject = False\n", {"policy.reject_spf_fail": False, "policy.reject_spf_results": None}),
    ("Mail_From_reject = No_Check\n", {"policy.reject_spf_fail": False}),
    ("PermError_reject = True\n", {"policy.reject_spf_results": ["fail", "permerror"],
                                   "policy.reject_helo_spf": ["fail", "permerror"]}),
    ("PermError_reject = True\nHELO_reject = False\n", {"policy.reject_helo_spf": []}),
    ("PermError_reject = true\n", {"policy.reject_spf_results": ["fail"]}),   # spf_engine compares == 'True'
    ("TempError_Defer = True\n", {"policy.spf_temperror_tempfail": True}),
    ("TestOnly = 0\n", {"policy.reject_spf_fail": False, "policy.reject_helo_spf": [], "policy.spf_reject_stage": None}),
    ("defaultSeedOnly = 0\n", {"policy.reject_spf_fail": False}),
    ("No_Mail = True\n", {"policy.reject_spf_fail": False, "policy.reject_helo_spf": []}),
    ("skip_addresses = 10.0.0.0/8\nWhitelist = 192.0.2.0/31,192.0.2.8\n",
     {"policy.trusted_forwarders": ["10.0.0.0/8", "192.0.2.0/31", "192.0.2.8"]}),
    ("HELO_Whitelist = relay.example.com\n", {"policy.trusted_forwarders": [*LOOPBACK, "relay.example.com"]}),
    ("Domain_Whitelist_PTR = yahoo.com\n", {"policy.trusted_forwarders": [*LOOPBACK, "yahoo.com", ".yahoo.com"]}),
    ("Header_Type = AR\n", {"verify.add_received_spf": False}),
    ("Header_Type = None\n", {"verify.add_received_spf": False}),
    ("Authserv_Id = mx.example.com\n", {"authserv_id": "mx.example.com"}),
    ("Authserv_Id = HOSTNAME\n", {"authserv_id": ""}),
    ("Lookup_Time = 30\n", {"dns.message_budget_s": 30.0}),
    ("debugLevel = 0\n", {"log_level": "error"}),
    ("debugLevel = 3\n", {"log_level": "debug"}),
    ("Socket = inet:8890@127.0.0.1\nUserID = pyspf-milter\nUMask = 007\nPidFile = /run/p.pid\n",
     {"socket": "inet:8890@127.0.0.1", "user": "pyspf-milter", "socket_mode": "0770", "pid_file": "/run/p.pid"}),
    # names are case-sensitive for spf_engine: helo_reject is not HELO_reject
    ("helo_reject = False\n", {"policy.reject_helo_spf": ["fail"]}),
]


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0].strip() or "(empty)" for c in CASES])
def test_option_mapping(tmp_path, text, expected):
    assert_mapping(imported(tmp_path, text), expected)


@pytest.mark.parametrize("line,reason", [
    ("Domain_Whitelist = pobox.com", "another domain's SPF record"),
    ("Reject_Not_Pass_Domains = aol.com", "no per-domain SPF rule"),
    ("Hide_Receiver = Yes", "never a recipient's host"),
    ("Void_Limit = 5", "void lookup limit of 2"),
    ("Whitelist_Lookup_Time = 10", "no whitelisting lookups"),
    ("SPF_Enhanced_Status_Codes = No", "RFC 7372"),
    ("Reason_Message = Message {rejectdefer} due to: {spf}.", "exp= text"),
    ("Mock = True", "milter"),
    ("Prospective = 192.168.0.4", "no equivalent"),
    ("HELO_pass_restriction = helo_passed_spf", "restriction classes"),
    ("helo_reject = False", "policyd-spf ignores it too"),
    ("Whitelist = 192.0.2.1/24", "not an address, network or host name"),
])
def test_options_without_equivalent_are_listed_with_the_reason(tmp_path, line, reason):
    entry = dropped_entry(imported(tmp_path, line + "\n"), line)
    assert reason in entry


def test_debian_default_policyd_spf_conf(tmp_path):
    out = tmp_path / "authmilter.toml"
    r = run("import-policyd-spf", str(DATA / "policyd-spf.conf"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    p = load_settings(out).policy
    assert (p.reject_spf_fail, p.reject_spf_results, p.reject_helo_spf, p.spf_temperror_tempfail) == (
        True, ("fail",), ("fail",), False)
    assert p.trusted_forwarders == tuple(LOOPBACK)
    assert p.spf_reject_stage == "rcpt"
    assert "SPF rejections happen at the end of DATA" not in r.stderr
    assert "behaviour change: DMARC is evaluated and acted on" in r.stderr
    assert "# Behaviour changes (what authmilter does differently from policyd-spf with this config):" in \
        out.read_text()


def test_spf_fail_no_longer_rejected_is_flagged(tmp_path):
    """Merged into a config that explicitly does not reject on SPF, the existing value wins
    and the admin is told that SPF fail is no longer rejected as under policyd-spf."""
    existing = tmp_path / "existing.toml"
    existing.write_text("[signing]\nenabled = false\n[policy]\nreject_spf_fail = false\n")
    out = tmp_path / "out.toml"
    r = run("import-policyd-spf", str(DATA / "policyd-spf.conf"), "-c", str(existing), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert load_settings(out).policy.reject_spf_fail is False
    assert "conflict: policy.reject_spf_fail" in r.stderr
    assert "SPF fail is no longer rejected" in r.stderr
    assert "#   - MAIL FROM SPF results rejected: nothing" in out.read_text()


SAMPLE_VALUES = {"debugLevel": "2", "HELO_reject": "Softfail", "Mail_From_reject": "Softfail",
                 "PermError_reject": "True", "TempError_Defer": "True", "Whitelist": "192.0.2.0/24",
                 "skip_addresses": "10.0.0.0/8", "HELO_Whitelist": "relay.example.com",
                 "Domain_Whitelist": "example.com", "Domain_Whitelist_PTR": "example.com", "No_Mail": "True",
                 "Reject_Not_Pass_Domains": "example.com", "TestOnly": "0", "defaultSeedOnly": "0",
                 "Header_Type": "AR", "Authserv_Id": "mx.example", "Lookup_Time": "30", "Void_Limit": "3",
                 "Socket": "inet:8890@127.0.0.1", "UMask": "007", "UserID": "p", "PidFile": "/run/p.pid",
                 "InternalHosts": "192.0.2.1", "MacroList": "daemon_name=ORIGINATING"}


def test_every_policyd_spf_option_is_carried_or_listed(tmp_path):
    """spf_engine's whole option table: each one changes the written settings or is listed
    as not carried over, never silently ignored."""
    from authmilter.config.daemonconf import POLICYD_SPF_OPTIONS
    from authmilter.migrate_common import flatten

    baseline = flatten(imported(tmp_path, "").data)
    silent = []
    for name in POLICYD_SPF_OPTIONS:
        imp = imported(tmp_path, f"{name} = {SAMPLE_VALUES.get(name, 'Yes')}\n")
        if flatten(imp.data) == baseline and not any(d.startswith(name + " ") for d in imp.dropped):
            silent.append(name)
    assert silent == []
