"""Records the pipeline hands to the store: plain values, one per inbound message.

A `MessageRecord` is what DMARC aggregate reports (RFC 9990) and failure reports
(RFC 9991) are built from later: who sent (source IP, HELO, envelope From), what the
checks found (SPF, each DKIM signature, DMARC), what the domain asked for (the policy
record as published) and what we did with it (disposition and every override). It is
computed from the typed results, never from rendered header text. The pipeline puts it
in `Outcome.records`; the milter adapter hands it to the store after the reply.

A value module: it imports only the check result values.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .results import DmarcPolicy


@dataclass(frozen=True, slots=True)
class DkimEvidence:
    """One DKIM signature's outcome, as a report row lists it (``auth_results/dkim``)."""

    domain: str
    selector: str
    result: str                 # RFC 8601 token: pass, fail, temperror, ...


# The published policy of a record is the check's own value (RFC 9990 policy_published).
PolicyPublished = DmarcPolicy


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One inbound message that reached a DMARC evaluation."""

    kind: str = "dmarc"         # record type, so a store can hold several kinds later
    time: float = 0.0           # seconds since the epoch, when the decision was made
    reporter: str = ""          # our authserv-id (which MX wrote it)
    queue_id: str = ""
    source_ip: str = ""
    helo: str = ""
    envelope_from: str = ""     # reverse-path ("" for <>)
    envelope_from_domain: str = ""
    header_from: str = ""       # From domain
    spf_result: str = "none"
    spf_domain: str = ""
    spf_scope: str = ""         # "mfrom" or "helo" as RFC 9990 names them
    dkim: tuple[DkimEvidence, ...] = ()
    dmarc_result: str = "none"
    dkim_aligned: bool = False
    spf_aligned: bool = False
    policy: DmarcPolicy = field(default_factory=DmarcPolicy)   # as published
    disposition: str = "none"   # what we applied: none, quarantine, reject
    overrides: tuple[tuple[str, str], ...] = ()   # (type, comment): RFC 9990 PolicyOverrideType
    # RFC 9991 failure report sample: the redacted header section, only when failure
    # reports are on and the domain asked for this failure (ruf=, fo=); else "".
    sample: str = ""
