"""What the pipeline hands the milter adapter: a verdict and a list of header edits.

The adapter applies these and nothing else; it makes no decisions of its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .records import MessageRecord


class Action(StrEnum):
    ACCEPT = "accept"          # deliver (possibly with header edits)
    REJECT = "reject"          # 5xx at end of DATA
    TEMPFAIL = "tempfail"      # 4xx: the MTA keeps the message and the client retries
    QUARANTINE = "quarantine"  # accept into the MTA's hold queue (smfi_quarantine)
    # There is deliberately no DISCARD: authmilter never loses mail.


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


@dataclass(frozen=True, slots=True)
class HeaderEdit:
    """One header change.

    op "delete": remove the ``index``-th (1-based, among headers of this name, in
    arrival order) header called ``name`` — smfi_chgheader(name, index, NULL).
    op "insert": insert ``name: value`` at position ``index`` (0 = top) — smfi_insheader.
    ``value`` starts with the whitespace that follows the colon and folds with "\\r\\n\\t";
    the adapter converts line ends to what the MTA expects.
    """

    op: str
    name: str
    value: str = ""
    index: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    direction: Direction
    smtp_code: str = ""        # "550" / "451" for REJECT/TEMPFAIL
    smtp_xcode: str = ""       # "5.7.1"
    smtp_text: str = ""
    quarantine_reason: str = ""
    edits: tuple[HeaderEdit, ...] = ()
    log: tuple[tuple[str, str], ...] = field(default=())   # key=value pairs for the one log line
    auth_results: str = ""     # the Authentication-Results value we add ("" if none)
    reasons: tuple[str, ...] = ()  # why this action, for `authmilter verify` and DEBUG logs
    records: tuple[MessageRecord, ...] = ()   # for the store, written after the reply

    def log_line(self, queue_id: str) -> str:
        from .ops.logsafe import sanitize

        parts = [f"{k}={sanitize(v)}" for k, v in self.log]
        return f"{queue_id or 'NOQUEUE'}: " + " ".join(parts)
