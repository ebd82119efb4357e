"""The SPF council's RFC 7208 test suite, run in full through check_spf / check_helo.

Data: tests/data/rfc7208-tests.yml (from the pyspf 2.0.14 sdist; licence in
rfc7208-tests.LICENSE). Each scenario's zonedata is served by the loopback DNS server,
so every lookup goes through the production resolver and the pyspf adapter.

Zone conventions of the suite, as its reference driver (pyspf's testspf.py) reads them:
an SPF-type record is also published as TXT unless the name lists its own TXT records
("TXT: NONE" suppresses that); "TIMEOUT" makes the name time out for the record types it
has no data for. We only ever query TXT (never type SPF), so a TIMEOUT name times out
when it has no TXT data — which is exactly where the driver would raise its timeout.
"""
from __future__ import annotations

from pathlib import Path

import dns.name
import pytest
import yaml

from authmilter.checks.spf import check_helo, check_spf
from authmilter.resolver import Resolver

SUITE = Path(__file__).resolve().parents[1] / "data" / "rfc7208-tests.yml"


def _load() -> list:
    with SUITE.open("rb") as fh:
        scenarios = list(yaml.safe_load_all(fh))
    cases = []
    for scenario in scenarios:
        for test_id, test in scenario["tests"].items():
            cases.append(pytest.param(scenario["zonedata"], test, id=test_id))
    return cases


CASES = _load()


def _owner(name: str) -> str:
    # The suite has names with spaces and other odd octets; the test server keys names
    # by their presentation form, so store them the way queries will spell them.
    return dns.name.from_text(name).to_text(omit_final_dot=True)


def _serve(dns_server, zonedata: dict) -> None:
    for name, records in zonedata.items():
        owner = _owner(name)
        spf_values, has_txt, timeout = [], False, False
        for item in records:
            if item == "TIMEOUT":
                timeout = True
                continue
            ((rtype, value),) = item.items()
            if value == []:
                # "null text": a TXT RR without character-strings is illegal (RFC 1035
                # §3.3.14) and cannot even be parsed by dnspython; the nearest legal record
                # is one empty string, which is equally "not an SPF record".
                value = [""]
            if rtype == "TXT":
                has_txt = True
                if value != "NONE":
                    dns_server.add_txt(owner, value)
            elif rtype == "SPF":
                spf_values.append(value)
                dns_server.add(owner, "SPF", value)
            elif rtype == "MX":
                pref, host = value
                dns_server.add(owner, "MX", f"{pref} {host.rstrip('.')}.")
            elif rtype in ("PTR", "CNAME"):
                dns_server.add(owner, rtype, value.rstrip(".") + ".")
            else:  # A, AAAA
                dns_server.add(owner, rtype, value)
        served_txt = [v for v in _txt_values(records) if v != "NONE"] if has_txt else spf_values
        if not has_txt:
            for value in spf_values:
                dns_server.add_txt(owner, value)
        if timeout and not served_txt:
            dns_server.set_fault(owner, "timeout")


def _txt_values(records: list) -> list:
    return [r["TXT"] for r in records if isinstance(r, dict) and "TXT" in r]


def test_suite_is_complete():
    # 2014.04 release of the suite: 203 tests; none may silently disappear.
    assert len(CASES) == 203


@pytest.mark.parametrize("zonedata,test", CASES)
def test_rfc7208(dns_server, zonedata, test):
    _serve(dns_server, zonedata)
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=1.0, cache_entries=0)
    expected = test["result"] if isinstance(test["result"], list) else [test["result"]]
    got = check_spf(test["host"], test["mailfrom"], test["helo"], res, receiver=test.get("receiver", ""))
    assert got.result.value in expected, f"{test['spec']}: {test.get('description', '')} -> {got}"
    if "explanation" in test:
        want = "" if test["explanation"] == "DEFAULT" else test["explanation"]
        assert got.explanation == want
    if not test["mailfrom"]:
        # With a null reverse-path the MAIL FROM check *is* the HELO check (RFC 7208 §2.4).
        helo = check_helo(test["host"], test["helo"], res, receiver=test.get("receiver", ""))
        assert helo.scope == "helo"
        assert helo.result is got.result
