"""What the pipeline hands the milter adapter: a verdict and typed effects.

Effects are values, one type per thing the MTA can be asked to do (RFC-free names for
the milter actions): delete a header, insert a header, change the envelope sender, add
or remove a recipient. The adapter (`milter/apply.py`) applies them in one safe order and
decides nothing; metrics and the log line read the typed fields (the results, the keys
used), never the header text rendered from them.

This is a value module: it imports only other value modules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .records import MessageRecord
from .results import ResInfo


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
class HeaderDelete:
    """Remove the ``index``-th (1-based, among headers of this name, in arrival order)
    header called ``name`` (smfi_chgheader with no value)."""

    name: str
    index: int


@dataclass(frozen=True, slots=True)
class HeaderInsert:
    """Insert ``name: value`` at position ``index`` (0 = top; smfi_insheader).

    ``value`` starts with the whitespace that follows the colon and folds with "\\r\\n\\t";
    the adapter converts line ends to what the MTA expects.
    """

    name: str
    value: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class ChangeFrom:
    """Replace the envelope sender (smfi_chgfrom), e.g. an SRS rewrite."""

    address: str
    params: str = ""            # ESMTP parameters, "" for none


@dataclass(frozen=True, slots=True)
class AddRecipient:
    """Add an envelope recipient (smfi_addrcpt)."""

    address: str


@dataclass(frozen=True, slots=True)
class DeleteRecipient:
    """Remove an envelope recipient (smfi_delrcpt), as the MTA spelled it."""

    address: str


EnvelopeEdit = ChangeFrom | AddRecipient | DeleteRecipient


@dataclass(frozen=True, slots=True)
class SignedWith:
    """One DKIM signature we added: which key."""

    domain: str
    selector: str
    algorithm: str


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    direction: Direction
    smtp_code: str = ""        # "550" / "451" for REJECT/TEMPFAIL
    smtp_xcode: str = ""       # "5.7.1"
    smtp_text: str = ""
    quarantine_reason: str = ""
    deletions: tuple[HeaderDelete, ...] = ()      # any order: the adapter orders them
    insertions: tuple[HeaderInsert, ...] = ()     # applied in this order
    envelope: tuple[EnvelopeEdit, ...] = ()
    results: tuple[ResInfo, ...] = ()             # what our Authentication-Results says
    signed: tuple[SignedWith, ...] = ()
    records: tuple[MessageRecord, ...] = ()       # for the store, written after the reply
    log: tuple[tuple[str, str], ...] = field(default=())   # key=value pairs for the one log line
    reasons: tuple[str, ...] = ()  # why this action, for `authmilter verify` and DEBUG logs
    # [dns] dnssec report / require-for-keys: (check, every answer it read was DNSSEC-
    # validated) for spf, dkim (the keys), dmarc, each check that read an answer.
    dnssec: tuple[tuple[str, bool], ...] = ()

    def inserted(self, name: str) -> str | None:
        """The value of the first header of this name we insert, or None."""
        key = name.lower()
        return next((h.value for h in self.insertions if h.name.lower() == key), None)
