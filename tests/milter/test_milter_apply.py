"""milter/apply.py: an Outcome becomes milter actions, in the one safe order."""
from __future__ import annotations

import Milter
import pytest

from authmilter.milter.apply import apply
from authmilter.outcome import (
    Action,
    AddRecipient,
    ChangeFrom,
    DeleteRecipient,
    Direction,
    HeaderDelete,
    HeaderInsert,
    Outcome,
)


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

    def chgfrom(self, sender, params=None):  # type: ignore[no-untyped-def]
        self.calls.append(("chgfrom", sender, params))

    def addrcpt(self, rcpt, params=None):  # type: ignore[no-untyped-def]
        self.calls.append(("addrcpt", rcpt))

    def delrcpt(self, rcpt):  # type: ignore[no-untyped-def]
        self.calls.append(("delrcpt", rcpt))


def outcome(action: Action = Action.ACCEPT, **kw) -> Outcome:  # type: ignore[no-untyped-def]
    return Outcome(action=action, direction=Direction.INBOUND, **kw)


def test_deletions_first_highest_index_down_then_insertions_in_order():
    """OpenDKIM CVE-2022-48521: chgheader(name, i, NULL) renumbers what follows."""
    deletions = (HeaderDelete("Authentication-Results", 1), HeaderDelete("Authentication-Results", 3),
                 HeaderDelete("Authentication-Results", 2))
    insertions = (HeaderInsert("Authentication-Results", " mx.test; spf=pass"), HeaderInsert("Received-SPF", " pass"))
    ctx = Recorder()
    assert apply(ctx, outcome(deletions=deletions, insertions=insertions)) == Milter.ACCEPT
    assert ctx.calls == [
        ("chgheader", "Authentication-Results", 3, None),
        ("chgheader", "Authentication-Results", 2, None),
        ("chgheader", "Authentication-Results", 1, None),
        ("addheader", "Authentication-Results", " mx.test; spf=pass", 0),
        ("addheader", "Received-SPF", " pass", 0),
    ]


def test_folded_values_use_lf_and_keep_the_leading_space_with_leadspc():
    edit = HeaderInsert("DKIM-Signature", " v=1; a=rsa-sha256;\r\n\tb=abc")
    ctx = Recorder(leading_space=True)
    apply(ctx, outcome(insertions=(edit,)))
    assert ctx.calls == [("addheader", "DKIM-Signature", " v=1; a=rsa-sha256;\n\tb=abc", 0)]


def test_without_leadspc_the_mta_adds_the_space_itself():
    edit = HeaderInsert("Authentication-Results", " mx.test; none")
    ctx = Recorder(leading_space=False)
    apply(ctx, outcome(insertions=(edit,)))
    assert ctx.calls == [("addheader", "Authentication-Results", "mx.test; none", 0)]


def test_reject_sets_the_reply_with_percent_doubled():
    ctx = Recorder()
    rc = apply(ctx, outcome(Action.REJECT, smtp_code="550", smtp_xcode="5.7.1",
                            smtp_text="rejected by DMARC policy for example.org: 100% fail\r\nX"))
    assert rc == Milter.REJECT
    assert ctx.calls == [("setreply", "550", "5.7.1", "rejected by DMARC policy for example.org: 100%% fail X")]


def test_tempfail_without_text_leaves_the_mta_reply():
    ctx = Recorder()
    assert apply(ctx, outcome(Action.TEMPFAIL)) == Milter.TEMPFAIL
    assert ctx.calls == []


def test_quarantine_holds_and_accepts():
    ctx = Recorder()
    rc = apply(ctx, outcome(Action.QUARANTINE, quarantine_reason="DMARC p=quarantine for example.org",
                            insertions=(HeaderInsert("Authentication-Results", " mx.test; dmarc=fail"),)))
    assert rc == Milter.ACCEPT
    assert ctx.calls[-1] == ("quarantine", "DMARC p=quarantine for example.org")
    assert ctx.calls[0][0] == "addheader"


def test_envelope_edits_come_first_in_the_order_listed():
    """SRS: the sender is rewritten and a bounce's recipient restored before any header edit."""
    ctx = Recorder()
    apply(ctx, outcome(envelope=(ChangeFrom("SRS0=abcd=TT=example.org=alice@fwd.example"),
                                 DeleteRecipient("<SRS0=x=TT=example.org=bob@fwd.example>"),
                                 AddRecipient("<bob@example.org>")),
                       insertions=(HeaderInsert("Authentication-Results", " mx.test; none"),)))
    assert [c[0] for c in ctx.calls] == ["chgfrom", "delrcpt", "addrcpt", "addheader"]
    assert ctx.calls[0] == ("chgfrom", "SRS0=abcd=TT=example.org=alice@fwd.example", None)


def test_reply_text_is_one_short_ascii_line():
    ctx = Recorder()
    apply(ctx, outcome(Action.TEMPFAIL, smtp_code="451", smtp_xcode="4.7.0",
                       smtp_text="temporary DNS failure looking up " + "x.example, " * 200 + "caf\u00e9"))
    (_, _, _, text), = ctx.calls
    assert len(text) <= 410 and text.isascii() and "\n" not in text


def test_unknown_envelope_edit_is_our_bug_not_a_silent_skip():
    with pytest.raises(TypeError, match="unknown envelope edit"):
        apply(Recorder(), outcome(envelope=(HeaderInsert("Subject", " x"),)))  # type: ignore[arg-type]
