"""tests/infra/procs.stop_all: a fixture's teardown stops every server even when one fails."""
from __future__ import annotations

import pytest
from infra.procs import stop_all


class _Part:
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def stop(self) -> None:
        self.log.append(self.name)
        if self.fail:
            raise TimeoutError(f"{self.name} would not stop")


def test_every_part_is_stopped_and_the_first_failure_raised():
    log: list[str] = []
    parts = [_Part("postfix", log, fail=True), _Part("authmilter", log), _Part("knot", log, fail=True)]
    with pytest.raises(TimeoutError, match="postfix would not stop"):
        stop_all(parts)
    assert log == ["postfix", "authmilter", "knot"]


def test_no_failure_no_exception():
    log: list[str] = []
    stop_all([_Part("a", log), _Part("b", log)])
    assert log == ["a", "b"]
