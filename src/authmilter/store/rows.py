"""`records.MessageRecord` <-> one row of ``message_records``.

Nested values (DKIM evidence, the published policy, overrides) are JSON text; every
other field is a column of the same name. `COLUMNS` follows the dataclass field order,
and a test checks that they agree, so a new field cannot be silently dropped: it needs
a migration.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from ..records import DkimEvidence, MessageRecord, PolicyPublished

COLUMNS: tuple[str, ...] = (
    "kind", "time", "reporter", "queue_id", "source_ip", "helo", "envelope_from",
    "envelope_from_domain", "header_from", "spf_result", "spf_domain", "spf_scope", "dkim",
    "dmarc_result", "dkim_aligned", "spf_aligned", "policy", "disposition", "overrides",
    "sample",                       # migration 3
)
# What the store writes: a record's columns plus its unique id (migration 4). The id is
# the store's, not the record's: it makes a replayed journal line land only once.
INSERT_COLUMNS: tuple[str, ...] = (*COLUMNS, "uid")

_FIELDS: dict[type, tuple[str, ...]] = {t: tuple(f.name for f in fields(t)) for t in (DkimEvidence, PolicyPublished)}


def _text(value: str) -> str:
    # Remote values (HELO, envelope From) may carry NUL, which PostgreSQL text refuses;
    # one such message must not poison the batch it is written with.
    return value.replace("\x00", "") if "\x00" in value else value


def _shallow(value: Any) -> dict[str, Any]:
    # dataclasses.asdict deep-copies every value; these hold only text, numbers and
    # tuples of text, and the conversion now runs before the reply (store.journal).
    return {name: getattr(value, name) for name in _FIELDS[type(value)]}


def to_row(record: MessageRecord) -> tuple[Any, ...]:
    row: list[Any] = []
    for name in COLUMNS:
        value = getattr(record, name)
        if name == "dkim":
            value = json.dumps([_shallow(d) for d in value], separators=(",", ":"))
        elif name == "policy":
            value = json.dumps(_shallow(value), separators=(",", ":"))
        elif name == "overrides":
            value = json.dumps([list(o) for o in value], separators=(",", ":"))
        if isinstance(value, str):
            value = _text(value)
        row.append(value)
    return tuple(row)


def from_row(row: Sequence[Any]) -> MessageRecord:
    """The inverse of `to_row` (for report building and tests)."""
    values = dict(zip(COLUMNS, row, strict=True))
    values["dkim"] = tuple(DkimEvidence(**d) for d in json.loads(values["dkim"]))
    policy = json.loads(values["policy"])
    policy["rua"], policy["ruf"] = tuple(policy["rua"]), tuple(policy["ruf"])
    values["policy"] = PolicyPublished(**policy)
    values["overrides"] = tuple((t, c) for t, c in json.loads(values["overrides"]))
    values["dkim_aligned"], values["spf_aligned"] = bool(values["dkim_aligned"]), bool(values["spf_aligned"])
    values["time"] = float(values["time"])
    return MessageRecord(**values)


def record_fields() -> tuple[str, ...]:
    return tuple(f.name for f in fields(MessageRecord))

