"""Apply an `Outcome` to the milter context at end-of-message; decide nothing.

Order matters:
1. envelope edits (smfi_chgfrom, smfi_delrcpt, smfi_addrcpt) in the order listed;
2. header deletions, by DESCENDING index: smfi_chgheader(name, i, NULL) renumbers the
   headers after i, so deleting 1, 2, 3 in forward order under Postfix removes 1, 3, (5)
   and leaves every second one — OpenDKIM CVE-2022-48521. This is the one place that
   orders them;
3. insertions with smfi_insheader in the order the pipeline listed them;
4. the verdict: quarantine (smfi_quarantine, then accept), reject/tempfail with
   smfi_setreply, or accept. There is no discard.
"""
from __future__ import annotations

import re
from typing import Protocol

import Milter  # type: ignore[import-untyped]

from ..outcome import Action, AddRecipient, ChangeFrom, DeleteRecipient, HeaderDelete, HeaderInsert, Outcome

_CTRL = re.compile(r"[\x00-\x1f\x7f]")


class MilterActions(Protocol):
    """The slice of Milter.Base this module uses (a test double can provide it)."""

    _protocol: int

    def chgheader(self, field: str, idx: int, value: str | None) -> None: ...
    def addheader(self, field: str, value: str, idx: int = -1) -> None: ...
    def quarantine(self, reason: str) -> None: ...
    def chgfrom(self, sender: str, params: str | None = None) -> None: ...
    def addrcpt(self, rcpt: str, params: str | None = None) -> None: ...
    def delrcpt(self, rcpt: str) -> None: ...
    def setreply(self, rcode: str, xcode: str | None = None, msg: str | None = None, *ml: str) -> None: ...


def header_value(edit: HeaderInsert, leading_space: bool) -> str:
    """The value as the MTA wants it: LF line ends; without SMFIP_HDR_LEADSPC the MTA
    writes ``Name: `` itself, so our own first space must go."""
    value = edit.value.replace("\r\n", "\n")
    if not leading_space and value[:1] in (" ", "\t"):
        value = value[1:]
    return value


REPLY_TEXT_MAX = 400   # libmilter refuses a reply over 980 octets (MAXREPLYLEN); keep it short


def reply_text(text: str) -> str:
    """One line of printable ASCII-safe text within smfi_setreply's limits: control
    characters become spaces, the length is capped at a word boundary, and '%' is doubled
    (libmilter drops a reply with a lone '%')."""
    # RFC 5321 §4.2: reply text is US-ASCII (an SPF exp= text may be anything).
    text = " ".join(_CTRL.sub(" ", text).encode("ascii", "replace").decode().split())
    if len(text) > REPLY_TEXT_MAX:
        text = text[:REPLY_TEXT_MAX].rsplit(" ", 1)[0] + " ..."
    return text.replace("%", "%%") or "rejected"


def ordered_deletions(outcome: Outcome) -> list[HeaderDelete]:
    """Header deletions, highest index first within each name (see the module docstring)."""
    return sorted(outcome.deletions, key=lambda e: (e.name.lower(), -e.index))


def apply(ctx: MilterActions, outcome: Outcome) -> int:
    """Perform the effects and return the libmilter status for eom."""
    for change in outcome.envelope:
        if isinstance(change, ChangeFrom):
            ctx.chgfrom(change.address, change.params or None)
        elif isinstance(change, DeleteRecipient):
            ctx.delrcpt(change.address)
        elif isinstance(change, AddRecipient):
            ctx.addrcpt(change.address)
        else:  # a new effect type the adapter does not know yet: never skip it silently
            raise TypeError(f"unknown envelope edit {change!r}")
    leading_space = bool(getattr(ctx, "_protocol", 0) & Milter.P_HDR_LEADSPC)
    for deletion in ordered_deletions(outcome):
        ctx.chgheader(deletion.name, deletion.index, None)
    for insertion in outcome.insertions:
        ctx.addheader(insertion.name, header_value(insertion, leading_space), max(insertion.index, 0))
    if outcome.action is Action.QUARANTINE:
        ctx.quarantine(reply_text(outcome.quarantine_reason or "quarantined by authmilter"))
        return Milter.ACCEPT
    if outcome.action in (Action.REJECT, Action.TEMPFAIL):
        if outcome.smtp_code:
            ctx.setreply(outcome.smtp_code, outcome.smtp_xcode or None, reply_text(outcome.smtp_text))
        return Milter.REJECT if outcome.action is Action.REJECT else Milter.TEMPFAIL
    return Milter.ACCEPT
