"""``[reports]``: off by default, and what an enabled section must say."""
from __future__ import annotations

import pytest

from authmilter.config.schema import settings_from_dict
from authmilter.errors import ConfigError
from authmilter.runtime import store_needed


def test_reports_are_off_by_default_and_enabling_them_opens_the_store() -> None:
    assert not settings_from_dict({}).reports.enabled and not store_needed(settings_from_dict({}))
    on = settings_from_dict({"reports": {"enabled": True, "from_address": "dmarc-reports@example.com"}})
    assert store_needed(on) and not on.store.enabled


@pytest.mark.parametrize("reports,key,reason", [
    ({"enabled": True}, "reports.from_address", "reports need a From address"),
    ({"interval_s": 0}, "reports.interval_s", "at least 1"),
    ({"retention_days": 7}, "reports.retention_days", "at least store.keep_records_days (31)"),
    ({"relay": "localhost"}, "reports.relay", 'expected "HOST:PORT"'),
    ({"failure_reports": "yes"}, "reports.failure_reports", "expected true or false"),
])
def test_bad_reports_settings_name_key_and_reason(reports: dict, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_dict({"reports": reports})
    assert info.value.key == key and reason in info.value.reason
