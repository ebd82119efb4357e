"""milter/apply.py: an Outcome becomes milter actions, in the one safe order."""
from __future__ import annotations

import Milter
import pytest

from authmilter.milter.apply import apply
from authmilter.outcome import Action, Direction, HeaderEdit, Outcome


class Recorder:
    """Stands in for the libmilter context: records the calls in order."""

    def __init__(self, leading_space: bool = True) -> None:
        self._protocol = Milter.P_HDR_LEADSPC if leading_space else 0
        self.calls: list[tuple] = []

    def chgheader(self, field, idx, value):  # type: ignore[no-untyped-def]
        self.calls.append(("chgheader", field, idx, value))

    def addheader(self, field, value, idx=-1):  # type: ignore[no-untyped-def]
        self.calls.append(("addheader", field, value, idx))

    def quarantine(self, reason):  # type: ignore[no-untyped-def]
        self.calls.append(("quarantine", reason))

    def setreply(self, rcode, xcode=None, msg=None, *ml):  # type: ignore[no-untyped-def]
        self.calls.append(("setreply", rcode, xcode, msg))


def outcome(action: Action = Action.ACCEPT, edits: tuple[HeaderEdit, ...] = (), **kw) -> Outcome:  # type: ignore[no-untyped-def]
    return Outcome(action=action, direction=Direction.INBOUND, edits=edits, **kw)


def test_deletions_first_highest_index_down_then_insertions_in_order():
    """OpenDKIM CVE-2022-48521: chgheader(name, i, NULL) renumbers what follows."""
    edits = (
        HeaderEdit("delete", "Authentication-Results", index=1),
        HeaderEdit("insert", "Authentication-Results", " mx.test; spf=pass", 0),
        HeaderEdit("delete", "Authentication-Results", index=3),
        HeaderEdit("insert", "Received-SPF", " pass", 0),
        HeaderEdit("delete", "Authentication-Results", index=2),
    )
    ctx = Recorder()
    assert apply(ctx, outcome(edits=edits)) == Milter.ACCEPT
    assert ctx.calls == [
        ("chgheader", "Authentication-Results", 3, None),
        ("chgheader", "Authentication-Results", 2, None),
        ("chgheader", "Authentication-Results", 1, None),
        ("addheader", "Authentication-Results", " mx.test; spf=pass", 0),
        ("addheader", "Received-SPF", " pass", 0),
    ]


def test_folded_values_use_lf_and_keep_the_leading_space_with_leadspc():
    edit = HeaderEdit("insert", "DKIM-Signature", " v=1; a=rsa-sha256;\r\n\tb=abc", 0)
    ctx = Recorder(leading_space=True)
    apply(ctx, outcome(edits=(edit,)))
    assert ctx.calls == [("addheader", "DKIM-Signature", " v=1; a=rsa-sha256;\n\tb=abc", 0)]


def test_without_leadspc_the_mta_adds_the_space_itself():
    edit = HeaderEdit("insert", "Authentication-Results", " mx.test; none", 0)
    ctx = Recorder(leading_space=False)
    apply(ctx, outcome(edits=(edit,)))
    assert ctx.calls == [("addheader", "Authentication-Results", "mx.test; none", 0)]


def test_reject_sets_the_reply_with_percent_doubled():
    ctx = Recorder()
    rc = apply(ctx, outcome(Action.REJECT, smtp_code="550", smtp_xcode="5.7.1",
                            smtp_text="rejected by DMARC policy for example.org: 100% fail\r\nX"))
    assert rc == Milter.REJECT
    assert ctx.calls == [("setreply", "550", "5.7.1", "rejected by DMARC policy for example.org: 100%% fail  X")]


def test_tempfail_without_text_leaves_the_mta_reply():
    ctx = Recorder()
    assert apply(ctx, outcome(Action.TEMPFAIL)) == Milter.TEMPFAIL
    assert ctx.calls == []


def test_quarantine_holds_and_accepts():
    ctx = Recorder()
    rc = apply(ctx, outcome(Action.QUARANTINE, quarantine_reason="DMARC p=quarantine for example.org",
                            edits=(HeaderEdit("insert", "Authentication-Results", " mx.test; dmarc=fail", 0),)))
    assert rc == Milter.ACCEPT
    assert ctx.calls[-1] == ("quarantine", "DMARC p=quarantine for example.org")
    assert ctx.calls[0][0] == "addheader"


def test_unknown_edit_is_our_bug_not_a_silent_skip():
    with pytest.raises(ValueError, match="unknown header edit"):
        apply(Recorder(), outcome(edits=(HeaderEdit("replace", "Subject", " x", 1),)))
