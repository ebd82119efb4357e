"""The ValiMail ARC conformance suite (RFC 8617), validation half, served over real DNS.

Data: tests/data/arc_test_suite/arc-draft-validation-tests.yml (MIT, see its README). Expected
`cv` values: Pass, Fail, None; an empty expectation concerns a chain whose earlier seal
already says cv=fail, which RFC 8617 §5.2 makes a fail.
"""
from pathlib import Path

import pytest
import yaml

from authmilter.checks.arc import check_arc
from authmilter.model import Message
from authmilter.results import Result

SUITE = Path(__file__).resolve().parents[1] / "data" / "arc_test_suite" / "arc-draft-validation-tests.yml"


def _cases():
    if not SUITE.exists():
        return []
    out = []
    with SUITE.open() as fh:
        for scenario in yaml.safe_load_all(fh):
            for name, test in scenario["tests"].items():
                out.append(pytest.param(scenario["txt-records"], test, id=name))
    return out


CASES = _cases()


def test_suite_is_present():
    assert len(CASES) >= 150, f"ARC suite missing or short at {SUITE}"


@pytest.mark.parametrize("records,test", CASES)
def test_rfc8617_validation(dns_server, resolver, records, test):
    for name, value in records.items():
        dns_server.add_txt(name, value)
    expected = {"pass": Result.PASS, "fail": Result.FAIL, "none": Result.NONE, "": Result.FAIL}[
        (test.get("cv") or "").lower()]
    raw = test["message"].encode("utf-8") if test["message"] else b""
    result = check_arc(Message.from_bytes(raw), resolver)
    if expected is Result.NONE and result.result is Result.NONE:
        return
    assert result.result is expected, f"{test.get('description')}: {result}"
